//! The access API (`RELAY_PORT_ACCESS`): trade a JWT for a one-time websocket URL, manage
//! the booking deny/allow lists, and report status.
//!
//! Routes, query names, status codes and bodies follow the reference (spec §2.3), apart
//! from the deliberate fixes listed in `docs/COMPATIBILITY.md`: invalid tokens get 401
//! rather than 500, missing time claims are refused rather than crashing, and a `Bearer `
//! prefix is accepted.

use crate::error::{json_line, ApiError};
use crate::state::AppState;
use crate::status::status_reports;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use relay_auth::{Audience, Claims, SCOPE_ADMIN, SCOPE_STATS};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The access API router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/session/{session_id}", post(session))
        .route("/shell/{shell_id}", post(shell))
        .route("/bids/deny", post(deny).get(deny_list))
        .route("/bids/allow", post(allow).get(allow_list))
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(cors(&state.config.allowed_origins))
        .with_state(state)
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

/// Read and verify the token in `Authorization` (raw, or with a `Bearer ` prefix), and
/// check its audience.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("");
    let token = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated for invalid credentials",
        ));
    }
    let claims = state
        .verifier
        .verify(token, state.now_unix())
        .map_err(|e| {
            ApiError::with_reason(StatusCode::UNAUTHORIZED, "token invalid", e.to_string())
        })?;
    if !claims.aud.contains(&state.audience) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "aud {:?} does not match this host {}",
                claims.aud.0, state.audience
            ),
        ));
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
    Path(SessionPath { session_id }): Path<SessionPath>,
    headers: HeaderMap,
) -> Response {
    access_reply(
        &state,
        &session_id,
        issue_code(&state, &session_id, &headers),
    )
}

/// Answer an access request with `{"uri":…}` or its error, counting and logging refusals.
fn access_reply(
    state: &AppState,
    topic: &str,
    outcome: Result<String, (&'static str, ApiError)>,
) -> Response {
    match outcome {
        Ok(uri) => {
            state.metrics.access("ok");
            json_line(&json!({ "uri": uri }))
        }
        Err((result, err)) => {
            state.metrics.access(result);
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

fn issue_code(
    state: &AppState,
    session_id: &str,
    headers: &HeaderMap,
) -> Result<String, (&'static str, ApiError)> {
    let claims = authenticate(state, headers).map_err(|e| ("bad_token", e))?;
    let refuse = |result, status, message: &str| (result, ApiError::handler(status, message));
    if !claims.has_required_session_claims() {
        return Err(refuse(
            "missing_claims",
            StatusCode::UNAUTHORIZED,
            "Token Missing Required Claims",
        ));
    }
    if claims.topic != session_id {
        return Err(refuse(
            "wrong_topic",
            StatusCode::UNAUTHORIZED,
            "Token Wrong Topic",
        ));
    }
    if claims.prefix == crate::crossbar::SHELL_PREFIX {
        // Shell tickets carry the shell scope rules; they are only issued by /shell/{id}.
        return Err(refuse(
            "wrong_prefix",
            StatusCode::UNAUTHORIZED,
            "Token Wrong Connection Type",
        ));
    }
    if claims.booking_id.is_empty() && !state.config.allow_no_booking_id {
        return Err(refuse(
            "no_booking_id",
            StatusCode::BAD_REQUEST,
            "empty bookingID field is not permitted",
        ));
    }
    if state.deny.is_denied(&claims.booking_id) {
        return Err(refuse(
            "denied",
            StatusCode::BAD_REQUEST,
            "bookingID has been deny-listed, probably because the session was cancelled",
        ));
    }
    let exp = claims.exp.unwrap_or_default();
    state.deny.allow(&claims.booking_id, exp);
    let ticket = Claims {
        topic: session_id.to_owned(),
        ..claims
    };
    Ok(code_uri(state, ticket))
}

/// Store `ticket` (re-addressed to the relay) under a fresh code and return the websocket
/// URI that redeems it.
fn code_uri(state: &AppState, ticket: Claims) -> String {
    let ticket = Claims {
        aud: Audience::single(state.relay_url.clone()),
        ..ticket
    };
    let path = format!("{}/{}/{}", state.relay_url, ticket.prefix, ticket.topic);
    let code = state.codes.submit(ticket, state.now_instant());
    format!("{path}?code={code}")
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
    Path(ShellPath { shell_id }): Path<ShellPath>,
    headers: HeaderMap,
) -> Response {
    access_reply(
        &state,
        &format!("shell/{shell_id}"),
        issue_shell_code(&state, &shell_id, &headers),
    )
}

fn issue_shell_code(
    state: &AppState,
    shell_id: &str,
    headers: &HeaderMap,
) -> Result<String, (&'static str, ApiError)> {
    use relay_auth::{SCOPE_SHELL_CLIENT, SCOPE_SHELL_HOST, SCOPE_SHELL_STATS};
    let claims = authenticate(state, headers).map_err(|e| ("bad_token", e))?;
    let refuse =
        |result, message: &str| (result, ApiError::handler(StatusCode::UNAUTHORIZED, message));
    if !claims.has_required_session_claims() {
        return Err(refuse("missing_claims", "Token Missing Required Claims"));
    }
    if claims.topic != shell_id {
        return Err(refuse("wrong_topic", "ShellID Does Not Match Token"));
    }
    let (host, client, stats) = (
        claims.has_scope(SCOPE_SHELL_HOST),
        claims.has_scope(SCOPE_SHELL_CLIENT),
        claims.has_scope(SCOPE_SHELL_STATS),
    );
    if stats && shell_id != "stats" {
        return Err(refuse("wrong_topic", "Path Not Valid for Stats Scope"));
    }
    if !stats && shell_id == "stats" {
        return Err(refuse("wrong_topic", "Path Not Valid Without Stats Scope"));
    }
    if !(host || client || stats) {
        return Err(refuse("no_scope", "Missing client, host or stats Scope"));
    }
    if host && client {
        return Err(refuse(
            "bad_scope",
            "Can only have Client Or Host Scope, Not Both",
        ));
    }
    if state.deny.is_denied(&claims.booking_id) {
        return Err((
            "denied",
            ApiError::handler(
                StatusCode::BAD_REQUEST,
                "bookingID has been deny-listed, probably because the session was cancelled",
            ),
        ));
    }
    let scopes = vec![
        relay_auth::SCOPE_READ.to_owned(),
        relay_auth::SCOPE_WRITE.to_owned(),
    ];
    // The ticket is always a shell one, whatever the token's prefix: its read/write scopes
    // must never reach a session topic.
    let claims = Claims {
        prefix: crate::crossbar::SHELL_PREFIX.to_owned(),
        ..claims
    };
    let ticket = if client {
        let connection = uuid::Uuid::new_v4();
        Claims {
            topic: format!("{shell_id}/{connection}"),
            topic_salt: Some(uuid::Uuid::new_v4().simple().to_string()),
            alert_host: true,
            scopes,
            ..claims
        }
    } else {
        Claims {
            topic: shell_id.to_owned(),
            topic_salt: None,
            alert_host: false,
            scopes,
            ..claims
        }
    };
    Ok(code_uri(state, ticket))
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
    Ok(StatusCode::NO_CONTENT)
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
    Ok(StatusCode::NO_CONTENT)
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

/// `GET /status` (v0.7.0): every connection, for dashboards; needs `relay:stats`.
async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = authenticate(&state, &headers)?;
    if !claims.has_required_admin_claims() || !claims.has_scope(SCOPE_STATS) {
        return Err(ApiError::handler(
            StatusCode::UNAUTHORIZED,
            "token missing relay:stats scope",
        ));
    }
    Ok(json_line(&status_reports(&state.hub)))
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
