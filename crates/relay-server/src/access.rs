//! The access API (`RELAY_PORT_ACCESS`): trade a JWT for a one-time websocket URL, manage
//! the booking deny/allow lists, and report status.
//!
//! Routes, query names, status codes and bodies follow the reference (spec §2.3), apart
//! from the deliberate fixes listed in `docs/COMPATIBILITY.md`: invalid tokens get 401
//! rather than 500, missing time claims are refused rather than crashing, and a `Bearer `
//! prefix is accepted.
//!
//! `POST /session` and `POST /shell` are rate limited ([`crate::limits`]): per booking for
//! valid tokens, per client address for failed authentications (429 with `Retry-After`).

use crate::admission::{check_ticket, Endpoint, Refusal};
use crate::client_addr::client_ip;
use crate::cluster::denies::{share, Op};
use crate::error::{json_line, ApiError};
use crate::state::AppState;
use crate::stats::STATS_TOPIC;
use crate::status::{cluster_nodes, cluster_status, status_reports};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use relay_auth::{Claims, Ticket, SCOPE_ADMIN, SCOPE_READ, SCOPE_STATS, SCOPE_WRITE};
use relay_common::connection::{ConnectionType, UnknownConnectionType};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The access API router.
pub fn router(state: Arc<AppState>) -> Router {
    let routes = Router::new()
        .route("/session/{session_id}", post(session))
        .route("/shell/{shell_id}", post(shell))
        .route("/bids/deny", post(deny).get(deny_list))
        .route("/bids/allow", post(allow).get(allow_list))
        .route("/status", get(status))
        .route("/status/cluster", get(status_nodes))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(not_found);
    let cors_on = state.config.cors;
    let allowed_origins = state.config.allowed_origins.clone();
    // The routes' `Allow` header is set outside route layers, so the 405 body is added
    // around the whole router.
    let routes = Router::new()
        .fallback_service(routes.with_state(state))
        .layer(axum::middleware::from_fn(method_not_allowed_body));
    if cors_on {
        routes.layer(cors(&allowed_origins))
    } else {
        routes
    }
}

fn cors(allowed: &[String]) -> CorsLayer {
    let origins = if allowed.is_empty() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(allowed.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("path {} was not found", uri.path()),
    )
}

/// A known path with the wrong method: 405 with the `Allow` header and a body in the
/// reference's error shape, `{"code":405,"message":"method GET is not allowed, but [POST] are"}`
/// (axum's own 405 has an empty body).
async fn method_not_allowed_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut answer = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed, but [{allowed}] are"),
    )
    .into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// Read and verify the token in `Authorization` (raw, or with a `Bearer ` prefix), and
/// check its audience.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Claims, Refusal> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let token = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
    if token.is_empty() {
        return Err(Refusal::NoCredentials);
    }
    let claims = state
        .verifier
        .verify(token, state.now_unix())
        .map_err(Refusal::InvalidToken)?;
    if !claims.aud.contains(&state.audience) {
        return Err(Refusal::ForeignAudience {
            aud: claims.aud.0,
            host: state.audience.clone(),
        });
    }
    Ok(claims)
}

/// [`authenticate`] for the access routes, with their rate limits: a valid token takes one
/// request from its booking's bucket; a failed one takes one from the client address's
/// failed-authentication bucket, and once that is empty the answer is 429, not 401.
fn authenticate_access(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Claims, Refusal> {
    match authenticate(state, headers) {
        Ok(claims) => {
            state.rates.check_booking(&claims.booking_id)?;
            Ok(claims)
        }
        Err(refusal) => {
            let client = client_ip(peer, headers, &state.config.trusted_proxies);
            state.rates.check_bad_auth(client)?;
            Err(refusal)
        }
    }
}

/// [`authenticate_access`] plus the claims every code request needs (topic, scopes,
/// audience, expiry), shared by the session and shell routes.
fn authenticate_for_code(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Claims, Refusal> {
    let claims = authenticate_access(state, headers, peer)?;
    if !claims.has_required_session_claims() {
        return Err(Refusal::MissingClaims);
    }
    Ok(claims)
}

#[derive(Deserialize)]
struct SessionPath {
    session_id: String,
}

/// `POST /session/{session_id}` → `{"uri":"<relay_url>/<prefix>/<topic>?code=<code>"}`.
async fn session(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(SessionPath { session_id }): Path<SessionPath>,
    headers: HeaderMap,
) -> Response {
    access_reply(
        &state,
        &session_id,
        issue_code(&state, &session_id, &headers, peer).await,
    )
}

/// Answer an access request with `{"uri":…}` or its error, counting and logging refusals.
fn access_reply(state: &AppState, topic: &str, outcome: Result<String, Refusal>) -> Response {
    match outcome {
        Ok(uri) => {
            state.metrics.access("ok");
            json_line(&json!({ "uri": uri }))
        }
        Err(refusal) => {
            state.metrics.access(refusal.label());
            let err = refusal.into_api_error();
            tracing::info!(
                topic,
                status = err.status.as_u16(),
                body = err.body().trim(),
                "access refused"
            );
            err.into_response()
        }
    }
}

/// The session route's checks: a complete token for this topic ([`check_ticket`]), not a
/// shell token, and with a booking id unless those may be empty.
async fn issue_code(
    state: &AppState,
    session_id: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<String, Refusal> {
    let claims = authenticate_for_code(state, headers, peer)?;
    let ticket = Ticket::grant(
        &claims,
        ConnectionType::Session,
        claims.topic.clone(),
        state.relay_url.clone(),
    );
    check_ticket(state, &ticket, Endpoint::SessionAccess, session_id)?;
    let connection = claims.prefix.parse::<ConnectionType>();
    if connection == Ok(ConnectionType::Shell) {
        // Shell tickets carry the shell scope rules; they are only issued by /shell/{id}.
        return Err(Refusal::ShellTokenOnSessionRoute);
    }
    if claims.booking_id.is_empty() && !state.config.allow_no_booking_id {
        return Err(Refusal::NoBookingId);
    }
    // Refuse if denied, else record as allowed: one step, which never removes a deny
    // entry, so a request racing `POST /bids/deny` cannot undo it.
    state
        .deny
        .admit(&claims.booking_id, claims.exp.unwrap_or_default())
        .map_err(|_| Refusal::Denied(Endpoint::SessionAccess))?;
    match connection {
        Ok(_) => code_uri(state, ticket).await,
        // As ever, the answer names the token's own connection type, which the relay port
        // refuses (404) before it reads the code; so no ticket is stored for it.
        Err(UnknownConnectionType(prefix)) => Ok(format!(
            "{}/{prefix}/{session_id}?code={}",
            state.relay_url,
            uuid::Uuid::new_v4()
        )),
    }
}

/// Store `ticket` under a fresh code and return the websocket URI that redeems it; refused
/// when the booking or the relay has too many unused codes waiting.
async fn code_uri(state: &AppState, ticket: Ticket) -> Result<String, Refusal> {
    let path = format!(
        "{}/{}/{}",
        ticket.relay(),
        ticket.connection(),
        ticket.topic()
    );
    let code = state
        .codes
        .submit(ticket, state.now_instant())
        .await
        .map_err(Refusal::from)?;
    Ok(format!("{path}?code={code}"))
}

#[derive(Deserialize)]
struct ShellPath {
    shell_id: String,
}

/// `POST /shell/{shell_id}`: a host's management connection (scope `host`), one admin TCP
/// connection (scope `client`, which gets its own salted pair topic), or the stats feed
/// (scope `stats`, path `stats`), with the shell relay's rules (shell spec §1.4).
async fn shell(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(ShellPath { shell_id }): Path<ShellPath>,
    headers: HeaderMap,
) -> Response {
    access_reply(
        &state,
        &format!("shell/{shell_id}"),
        issue_shell_code(&state, &shell_id, &headers, peer).await,
    )
}

/// What a shell-route token asks for (shell spec §1.4).
enum ShellRole {
    /// The experiment's management connection.
    Host,
    /// One admin TCP connection, with its own salted pair topic.
    Client,
    /// The statistics feed.
    Stats,
}

/// The shell route's scope rules: exactly one of `host`, `client`, `stats`, and `stats`
/// exactly on the `stats` path.
fn shell_role(claims: &Claims, shell_id: &str) -> Result<ShellRole, Refusal> {
    use relay_auth::{SCOPE_SHELL_CLIENT, SCOPE_SHELL_HOST, SCOPE_SHELL_STATS};
    let (host, client, stats) = (
        claims.has_scope(SCOPE_SHELL_HOST),
        claims.has_scope(SCOPE_SHELL_CLIENT),
        claims.has_scope(SCOPE_SHELL_STATS),
    );
    match (host, client, stats) {
        (_, _, true) if shell_id != STATS_TOPIC => Err(Refusal::StatsScopeOffStatsPath),
        (_, _, false) if shell_id == STATS_TOPIC => Err(Refusal::StatsPathWithoutStatsScope),
        (false, false, false) => Err(Refusal::NoShellScope),
        (true, true, _) => Err(Refusal::HostAndClientScope),
        (true, false, _) => Ok(ShellRole::Host),
        (false, true, _) => Ok(ShellRole::Client),
        (false, false, true) => Ok(ShellRole::Stats),
    }
}

/// The shell route's checks: a complete token for this shell ([`check_ticket`]) with one
/// shell role. The ticket is always a shell one with read and write, whatever the token's
/// prefix: its scopes must never reach a session topic.
async fn issue_shell_code(
    state: &AppState,
    shell_id: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<String, Refusal> {
    let claims = authenticate_for_code(state, headers, peer)?;
    let grant = |topic: String| {
        Ticket::grant(
            &claims,
            ConnectionType::Shell,
            topic,
            state.relay_url.clone(),
        )
        .with_scopes(&[SCOPE_READ, SCOPE_WRITE])
    };
    let ticket = grant(claims.topic.clone());
    check_ticket(state, &ticket, Endpoint::ShellAccess, shell_id)?;
    let ticket = match shell_role(&claims, shell_id)? {
        ShellRole::Client => {
            let connection = uuid::Uuid::new_v4();
            grant(format!("{shell_id}/{connection}"))
                .shell_client(uuid::Uuid::new_v4().simple().to_string())
        }
        ShellRole::Host | ShellRole::Stats => ticket,
    };
    code_uri(state, ticket).await
}

/// Query of the deny/allow routes. Both are strings here so that missing and malformed
/// values get the reference's 422 rather than axum's generic rejection.
#[derive(Deserialize)]
struct BidQuery {
    bid: Option<String>,
    exp: Option<String>,
}

fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    deny_wording: bool,
) -> Result<(), ApiError> {
    let claims = authenticate(state, headers)?;
    let missing = if !claims.has_required_admin_claims() {
        Some("Token Missing Required Claims")
    } else if !claims.has_scope(SCOPE_ADMIN) {
        Some("Missing relay:admin Scope")
    } else {
        None
    };
    match missing {
        None => Ok(()),
        Some(why) if deny_wording => Err(ApiError::handler(
            StatusCode::UNAUTHORIZED,
            format!("is token missing relay:admin scope? {why}"),
        )),
        Some(_) => Err(ApiError::handler(
            StatusCode::UNAUTHORIZED,
            "token missing relay:admin scope",
        )),
    }
}

fn parse_bid_query(q: BidQuery) -> Result<(String, i64), ApiError> {
    let unprocessable =
        |code: u16, message: &str| ApiError::coded(StatusCode::UNPROCESSABLE_ENTITY, code, message);
    let bid = q
        .bid
        .filter(|b| !b.is_empty())
        .ok_or_else(|| unprocessable(602, "bid in query is required"))?;
    let exp = q
        .exp
        .filter(|e| !e.is_empty())
        .ok_or_else(|| unprocessable(602, "exp in query is required"))?;
    let exp = exp
        .parse::<i64>()
        .map_err(|_| unprocessable(601, "exp in query must be of type int64"))?;
    Ok((bid, exp))
}

/// `POST /bids/deny?bid=…&exp=…`: deny the booking, destroy its unused codes and close its
/// live connections.
async fn deny(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<BidQuery>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers, true)?;
    let (bid, exp) = parse_bid_query(q)?;
    if exp < state.now_unix() {
        return Err(ApiError::handler(
            StatusCode::BAD_REQUEST,
            format!("booking expiry time (exp) of [{exp}] missing or in the past"),
        ));
    }
    state.deny.deny(&bid, exp);
    let codes = state.codes.delete_by_booking_id(&bid);
    let closed = state.hub.deny(&bid);
    tracing::info!(booking_id = %bid, exp, codes_deleted = codes, connections_closed = closed, "booking denied");
    saved(&state, "booking denied").await?;
    shared(&state, &bid, Op::Deny, exp, "booking denied").await
}

/// In a cluster, record a deny or allow in the cluster's bucket (every node applies it,
/// and it survives restarts); a failure is a 503 that says the change is in force on this
/// node only.
async fn shared(
    state: &AppState,
    bid: &str,
    op: Op,
    exp: i64,
    what: &str,
) -> Result<StatusCode, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(StatusCode::NO_CONTENT);
    };
    match share(cluster, bid, op, exp).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(reason) => {
            tracing::warn!(booking_id = %bid, reason = %reason, "{what} on this node only: the cluster's deny list is unreachable");
            Err(ApiError::with_reason(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{what} on this node only: the cluster's deny list is unreachable; retry"),
                reason,
            ))
        }
    }
}

/// Save the deny list after a change; a failure is a 500 that says the change is in force
/// but will not survive a restart.
async fn saved(state: &Arc<AppState>, what: &str) -> Result<StatusCode, ApiError> {
    match state.save_deny_list().await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => {
            tracing::error!(error = %e, "cannot save the deny list");
            Err(ApiError::with_reason(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "{what}, but the deny list could not be saved: the change is lost on restart"
                ),
                e.to_string(),
            ))
        }
    }
}

/// `POST /bids/allow?bid=…&exp=…`: take the booking off the deny list.
async fn allow(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<BidQuery>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers, false)?;
    let (bid, exp) = parse_bid_query(q)?;
    if exp < state.now_unix() {
        return Err(ApiError::handler(
            StatusCode::BAD_REQUEST,
            "exp (booking expiry time) missing or in the past",
        ));
    }
    state.deny.allow(&bid, exp);
    tracing::info!(booking_id = %bid, exp, "booking allowed");
    saved(&state, "booking allowed").await?;
    shared(&state, &bid, Op::Allow, exp, "booking allowed").await
}

async fn deny_list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, false)?;
    Ok(json_line(&json!({ "booking_ids": state.deny.deny_list() })))
}

async fn allow_list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers, false)?;
    Ok(json_line(
        &json!({ "booking_ids": state.deny.allow_list() }),
    ))
}

/// The status routes need an admin-shaped token with `relay:stats`.
fn require_stats(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let claims = authenticate(state, headers)?;
    if !claims.has_required_admin_claims() || !claims.has_scope(SCOPE_STATS) {
        return Err(ApiError::handler(
            StatusCode::UNAUTHORIZED,
            "token missing relay:stats scope",
        ));
    }
    Ok(())
}

/// `GET /status` (v0.7.0): every connection, for dashboards; needs `relay:stats`.
async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_stats(&state, &headers)?;
    match &state.cluster {
        None => Ok(json_line(&status_reports(&state.hub))),
        Some(cluster) => Ok(json_line(&cluster_status(&state, cluster).await)),
    }
}

/// `GET /status/cluster`: every node's cluster health (NATS connection, drops,
/// connections); needs `relay:stats`. On a single node: 404.
async fn status_nodes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_stats(&state, &headers)?;
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this relay is not part of a cluster (no --nats)",
        ));
    };
    Ok(json_line(&cluster_nodes(&state, cluster).await))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
