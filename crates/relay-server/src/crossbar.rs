//! The relay port: `/session/{topic}?code=…` and `/shell/{topic}?code=…` websocket
//! admission, plus `/stats` and `/demo` (pages for humans, with the vendored
//! `/vendor/jsmpeg.min.js`) and `/healthz`.
//!
//! Shell connections (shell spec §1.6) follow the same admission; on top, a shell client's
//! connection gets a salted pair topic, its arrival makes the relay send the host's
//! management connection a `connect` action with a fresh code for that pair, its first
//! bytes wait for the first byte from the host, and when either end of the pair leaves
//! the other is closed and the host gets a `disconnect` action.
//!
//! Admission happens before the upgrade: a missing, unknown, reused or expired code, a
//! token for another topic or audience, a denied booking or a token with neither `read`
//! nor `write` gets an HTTP error with a JSON reason (the reference upgraded first and then
//! left the socket open and silent). The connection caps ([`crate::limits`]) are the last
//! check: past `RELAY_MAX_CONNECTIONS` or `RELAY_MAX_CONNECTIONS_PER_BOOKING` the answer is
//! 503.

use crate::admission::{check_ticket, Endpoint, Refusal};
use crate::connection::{self, ConnectionOptions};
use crate::direct::{DirectSocket, DirectWriter};
use crate::hub::JoinRequest;
use crate::limits::Slot;
use crate::state::AppState;
use crate::stats::STATS_TOPIC;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use relay_auth::{Ticket, SCOPE_READ, SCOPE_STATS, SCOPE_WRITE};
use relay_common::action::ConnectionAction;
use relay_common::connection::{ConnectionType, UnknownConnectionType};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The relay port's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/stats", get(stats_page))
        .route("/demo", get(demo_page))
        .route("/vendor/jsmpeg.min.js", get(jsmpeg_script))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(entry)
        .with_state(state)
}

const STATS_PAGE: &str = include_str!("../pages/stats.html");

async fn stats_page(State(state): State<Arc<AppState>>) -> Html<String> {
    with_access_url(STATS_PAGE, &state)
}

/// The browser demo: video and commands through the relay (issue #8).
const DEMO_PAGE: &str = include_str!("../pages/demo.html");
/// JSMpeg (MIT, from npm `@cycjimmy/jsmpeg-player`), vendored so the demo needs no CDN.
const JSMPEG_SCRIPT: &str = include_str!("../pages/vendor/jsmpeg.min.js");

async fn demo_page(State(state): State<Arc<AppState>>) -> Html<String> {
    with_access_url(DEMO_PAGE, &state)
}

async fn jsmpeg_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JSMPEG_SCRIPT,
    )
}

/// A page with its `"{{ACCESS_URL}}"` placeholder replaced by the access API URL (JSON).
fn with_access_url(page: &str, state: &AppState) -> Html<String> {
    let access = serde_json::to_string(&state.audience).unwrap_or_else(|_| "\"\"".into());
    Html(page.replace("\"{{ACCESS_URL}}\"", &access))
}

/// Split a request path into connection type and topic, as the reference does:
/// normalise slashes, the first segment is the prefix, the (percent-decoded) rest the topic.
pub fn parse_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let (prefix, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    (decode(prefix), decode(rest))
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

async fn entry(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<CodeQuery>, QueryRejection>,
    direct: Option<Extension<DirectSocket>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (prefix, topic) = parse_path(uri.path());
    match admit(&state, &prefix, &topic, &headers, query, upgrade).await {
        Ok(admitted) => {
            state.metrics.handshake("ok");
            let direct = direct.map(|Extension(socket)| socket);
            upgrade_to_connection(state, admitted, topic, &headers, peer, direct)
        }
        Err(refusal) => {
            state.metrics.handshake(refusal.label());
            let err = refusal.into_api_error();
            tracing::info!(
                path = uri.path(),
                status = err.status.as_u16(),
                body = err.body(),
                "websocket refused"
            );
            err.into_response()
        }
    }
}

/// Admission on the relay port: a known connection type from an allowed origin, a
/// websocket upgrade, a code whose ticket passes [`check_ticket`], and the relay's own
/// rules for that ticket; then a place under the connection caps.
async fn admit<U>(
    state: &AppState,
    prefix: &str,
    topic: &str,
    headers: &HeaderMap,
    query: Result<Query<CodeQuery>, QueryRejection>,
    upgrade: Result<U, WebSocketUpgradeRejection>,
) -> Result<Admitted<U>, Refusal> {
    let connection = prefix
        .parse::<ConnectionType>()
        .map_err(|UnknownConnectionType(prefix)| Refusal::UnknownConnectionType(prefix))?;
    check_origin(state, headers)?;
    // Checked before the code is exchanged, so a plain GET does not burn a code.
    let upgrade = upgrade.map_err(|e| Refusal::NotWebsocket(e.to_string()))?;
    let code = query
        .ok()
        .and_then(|Query(q)| q.code)
        .filter(|c| !c.is_empty())
        .ok_or(Refusal::NoCode)?;
    if state.caps.is_full() {
        // Refused before the code is redeemed, so the client can use it once there is room.
        return Err(Refusal::TooManyConnections);
    }
    let ticket = state
        .codes
        .exchange(&code, state.now_instant())
        .await
        .map_err(Refusal::from)?;
    check_ticket(state, &ticket, Endpoint::Relay, topic)?;
    check_relay_scopes(state, &ticket, topic)?;
    if ticket.connection() != connection {
        return Err(Refusal::WrongConnectionType(connection));
    }
    if ticket.alerts_host() {
        check_host_online(state, topic).await?;
    }
    // A place under the connection caps is taken before the host is told to dial in.
    let slot = state.caps.admit(ticket.booking_id())?;
    let host_code = if ticket.alerts_host() {
        // The host's code for this pair is issued now, so a full code store refuses the
        // client before the upgrade rather than leaving it waiting for a host that is
        // never told.
        let code = state
            .codes
            .submit(ticket.host_end(), state.now_instant())
            .await
            .map_err(Refusal::from)?;
        Some(code)
    } else {
        None
    };
    Ok(Admitted {
        ticket,
        upgrade,
        host_code,
        slot,
    })
}

/// What admission hands to the upgrade (`U` is the upgrade: axum's, or `()` when
/// [`admit_request`] runs admission alone).
struct Admitted<U = WebSocketUpgrade> {
    ticket: Ticket,
    upgrade: U,
    /// A shell client's: the code its host dials in with.
    host_code: Option<String>,
    /// Its place under the connection caps, freed when the connection ends.
    slot: Slot,
}

/// Admission of a websocket request for `uri` with `headers`, as [`entry`] runs it (the
/// path split, the `code` query, every check, a place under the caps and a shell host's
/// code) but with the upgrade handshake itself taken as valid, since only hyper can make
/// one. Returns the redeemed ticket; its place under the caps is given back at once.
///
/// Public for the fuzz targets (`fuzz/`, issue 19); the relay port goes through [`router`].
pub async fn admit_request(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Ticket, Refusal> {
    let (prefix, topic) = parse_path(uri.path());
    let query = Query::<CodeQuery>::try_from_uri(uri);
    admit(state, &prefix, &topic, headers, query, Ok(()))
        .await
        .map(|admitted| admitted.ticket)
}

/// With an allow list configured, a browser's `Origin` must be on it (non-browser clients
/// send none).
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let allowed = &state.config.allowed_origins;
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) if !allowed.is_empty() && !allowed.iter().any(|o| o == origin) => {
            Err(Refusal::OriginNotAllowed(origin.to_owned()))
        }
        _ => Ok(()),
    }
}

/// A connection must be able to read or write, and the stats topic may need `relay:stats`.
fn check_relay_scopes(state: &AppState, ticket: &Ticket, topic: &str) -> Result<(), Refusal> {
    if !ticket.has_scope(SCOPE_READ) && !ticket.has_scope(SCOPE_WRITE) {
        return Err(Refusal::NoReadOrWrite);
    }
    if topic == STATS_TOPIC && state.config.stats_require_scope && !ticket.has_scope(SCOPE_STATS) {
        return Err(Refusal::NoStatsScope);
    }
    Ok(())
}

/// Without its host a shell client's connection would wait for a banner that never comes.
/// In a cluster the host's management connection may be on another node.
async fn check_host_online(state: &AppState, topic: &str) -> Result<(), Refusal> {
    if state.hub.members(&shell_host_key(topic)) > 0 {
        return Ok(());
    }
    let host = topic.split('/').next().unwrap_or(topic);
    match &state.cluster {
        Some(cluster) if cluster.host_online(host).await => Ok(()),
        _ => Err(Refusal::HostOffline(host.to_owned())),
    }
}

/// Hub key of a shell host's management topic for a shell topic `id` or `id/connection`.
fn shell_host_key(topic: &str) -> String {
    format!("shell:{}", topic.split('/').next().unwrap_or(topic))
}

/// Where a connection is routed and how it is reported.
struct Routing {
    /// Reported topic.
    topic: String,
    /// Hub key.
    key: String,
    /// One end of a shell connection pair.
    paired: bool,
}

fn routing(ticket: &Ticket, topic: String) -> Routing {
    if ticket.connection() != ConnectionType::Shell {
        return Routing {
            key: topic.clone(),
            topic,
            paired: false,
        };
    }
    if topic == STATS_TOPIC {
        // One stats feed covers sessions and shells alike.
        return Routing {
            key: topic.clone(),
            topic,
            paired: false,
        };
    }
    let salt = ticket.topic_salt().unwrap_or_default();
    Routing {
        key: format!("shell:{topic}{salt}"),
        topic: format!("shell/{topic}"),
        paired: !salt.is_empty(),
    }
}

/// A shell client's connection tells the host to dial in (a fresh code for the same pair
/// topic) when it arrives, and to hang up when it leaves.
struct HostAlert {
    host_key: String,
    uuid: String,
}

impl HostAlert {
    fn connect(state: &AppState, ticket: &Ticket, code: &str) -> Self {
        let alert = HostAlert {
            host_key: shell_host_key(ticket.topic()),
            uuid: uuid::Uuid::new_v4().to_string(),
        };
        let uri = format!(
            "{}/{}/{}?code={}",
            state.relay_url,
            ticket.connection(),
            ticket.topic(),
            code
        );
        alert.send(
            state,
            ConnectionAction::Connect {
                uri,
                uuid: alert.uuid.clone(),
            },
        );
        alert
    }

    fn disconnect(&self, state: &AppState) {
        let uuid = self.uuid.clone();
        self.send(state, ConnectionAction::Disconnect { uuid });
    }

    fn send(&self, state: &AppState, action: ConnectionAction) {
        let json = action.to_json();
        let hosts = state.publish_from_relay(
            &self.host_key,
            &axum::extract::ws::Message::Text(json.into()),
        );
        let action = match action {
            ConnectionAction::Connect { .. } => "connect",
            ConnectionAction::Disconnect { .. } => "disconnect",
        };
        tracing::info!(action, uuid = %self.uuid, hosts, "shell host alerted");
    }
}

fn upgrade_to_connection(
    state: Arc<AppState>,
    admitted: Admitted,
    topic: String,
    headers: &HeaderMap,
    peer: SocketAddr,
    direct: Option<DirectSocket>,
) -> Response {
    let Admitted {
        ticket,
        upgrade,
        host_code,
        slot,
    } = admitted;
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let forwarded = header_text(header::HeaderName::from_static("x-forwarded-for"));
    let remote_addr = if forwarded.is_empty() {
        peer.ip().to_string()
    } else {
        forwarded
    };
    let now = state.now_unix();
    let expires_in = ticket
        .expires_at()
        .map(|exp| Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)));
    let route = routing(&ticket, topic);
    let request = JoinRequest {
        can_read: ticket.has_scope(SCOPE_READ),
        can_write: ticket.has_scope(SCOPE_WRITE),
        topic: route.topic,
        key: route.key,
        paired: route.paired,
        booking_id: ticket.booking_id().to_owned(),
        scopes: ticket.scopes().to_vec(),
        expires_at: ticket.expires_at(),
        user_agent: header_text(header::USER_AGENT),
        remote_addr,
    };
    let span = tracing::info_span!("conn", topic = %request.topic, booking_id = %request.booking_id, peer = %request.remote_addr);
    let cfg = &state.config;
    // Shutdown waits for every upgraded connection through this tracker.
    let tasks = state.tasks.clone();
    connection::with_size_limits(upgrade.protocols(["null"]), cfg)
        .on_failed_upgrade(|e| tracing::info!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |mut socket| {
            let connection = async move {
                let (membership, inbox) = state.join(request);
                let alert = host_code
                    .as_deref()
                    .map(|code| HostAlert::connect(&state, &ticket, code));
                let options = ConnectionOptions {
                    expires_at: expires_in.map(|d| tokio::time::Instant::now() + d),
                    gate_until_first_write: ticket.alerts_host(),
                };
                // Direct writes (only present with `RELAY_DIRECT_WRITES` on plain
                // connections): not with coalescing, which needs the queue.
                let direct = direct
                    .filter(|_| !state.config.coalesce_binary)
                    .and_then(|socket| socket.socket());
                match direct {
                    Some(share) => {
                        let direct = DirectWriter::claim(share, options.gate_until_first_write);
                        // Borrowed: the socket is held once, by this future.
                        connection::serve_direct(
                            &mut socket,
                            direct,
                            state.clone(),
                            membership,
                            inbox,
                            options,
                        )
                        .await;
                    }
                    None => {
                        // Boxed: the bigger queued path must not size every directly
                        // written connection's task.
                        Box::pin(connection::serve(
                            socket,
                            state.clone(),
                            membership,
                            inbox,
                            options,
                        ))
                        .await;
                    }
                }
                if let Some(alert) = alert {
                    alert.disconnect(&state);
                }
                // The connection's place under the caps is free from here.
                drop(slot);
            }
            .instrument(span);
            tasks.track_future(connection)
        })
}

#[cfg(test)]
mod tests {
    use super::parse_path;

    #[test]
    fn paths_split_like_the_reference() {
        let split = |p: &str| {
            let (a, b) = parse_path(p);
            (a, b)
        };
        assert_eq!(split("/session/123"), ("session".into(), "123".into()));
        assert_eq!(split("/session/123/"), ("session".into(), "123".into()));
        assert_eq!(split("session/123"), ("session".into(), "123".into()));
        assert_eq!(split("/foo%20bar/glum"), ("foo bar".into(), "glum".into()));
        assert_eq!(
            split("/session/session%20ID/connection%20ID"),
            ("session".into(), "session ID/connection ID".into())
        );
        assert_eq!(split("/"), (String::new(), String::new()));
    }
}
