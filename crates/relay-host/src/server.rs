//! The host's local HTTP server: `/ts/{feed}` ingest, `/ws/{feed}` local websocket clients,
//! the REST rule API under `/api` (plus `GET /api/status`, each destination's link state,
//! which the reference did not have), and `/healthcheck`.
//!
//! It listens on 127.0.0.1 by default (the reference listened on all interfaces with no
//! authentication, B14), and refuses browser requests from other origins, so a web page
//! cannot reconfigure the experiment or read its tokens. It also refuses requests whose
//! `Host` is not a loopback name or address, the listen address or a configured name
//! (`VW_ALLOWED_HOSTS`): a page whose own name was rebound to 127.0.0.1 (DNS rebinding)
//! is same-origin for the browser, so only `Host` still shows the foreign name.

use crate::commands::{self, add_stream_rule, StreamRule, API_FEED};
use crate::destinations::{strip_leading_slash, DestinationRule, DELETE_ALL};
use crate::drops::DropTotals;
use crate::hub::{Kind, Message};
use crate::ingest::{frame_bursts, IngestError, FRAME_GAP};
use crate::state::HostState;
use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Local websocket clients: ping period, silence limit, largest message (as the reference).
const WS_PING_EVERY: Duration = Duration::from_secs(54);
const WS_PONG_WAIT: Duration = Duration::from_secs(60);
/// Default deadline for one write to a local websocket client (as the relay's
/// `RELAY_WRITE_TIMEOUT`): a program that stops reading is disconnected, not waited on.
pub const DEFAULT_WS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const WS_MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Messages that may wait for one local websocket client before newer ones are dropped.
const WS_QUEUE: usize = 256;

/// Which browser origins may use the local API (requests without `Origin`, such as curl,
/// ffmpeg or websocat, are always allowed).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Extra origins allowed besides localhost ones, e.g. `http://lab-pc:3000`; `*` allows any.
    pub allowed: Vec<String>,
}

impl OriginPolicy {
    fn allows(&self, origin: &str) -> bool {
        if self.allowed.iter().any(|a| a == "*" || a == origin) {
            return true;
        }
        let host = origin.split("://").nth(1).unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// Which `Host` names the local API answers (against DNS rebinding). Requests without
/// `Host` (not from a browser) are allowed.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Extra host names (`VW_ALLOWED_HOSTS`), with or without `:port`, compared without case.
    pub allowed: Vec<String>,
    /// The listen address, allowed as a literal when it is a specific (not unspecified) IP.
    pub listen: Option<IpAddr>,
}

impl HostPolicy {
    /// Whether a `Host` header value names this host: `localhost`, a 127.0.0.0/8 or `[::1]`
    /// address, the listen address, or a configured name, each with or without a port.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = if let Some(rest) = host.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return false;
            };
            if !(after.is_empty() || is_port(after)) {
                return false;
            }
            inside
        } else {
            match host.rsplit_once(':') {
                Some((name, port)) if is_port(&format!(":{port}")) => name,
                Some(_) => return false,
                None => host.as_str(),
            }
        };
        if name == "localhost" {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            if ip.is_loopback() || self.listen.is_some_and(|l| !l.is_unspecified() && l == ip) {
                return true;
            }
        }
        self.allowed.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            allowed == name || allowed == host
        })
    }
}

/// `:digits` (a port suffix).
fn is_port(text: &str) -> bool {
    text.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// The local API's browser checks: `Origin` and `Host`.
#[derive(Debug, Clone, Default)]
struct LocalPolicy {
    origins: OriginPolicy,
    hosts: HostPolicy,
}

/// Builds the router for a host.
pub fn router(state: Arc<HostState>, origins: OriginPolicy, hosts: HostPolicy) -> Router {
    let origins = Arc::new(LocalPolicy { origins, hosts });
    Router::new()
        .route("/api", any(|| async { StatusCode::OK }))
        .route("/api/destinations", any(add_destination))
        .route("/api/destinations/{*id}", get(show_destination).delete(delete_destination))
        .route("/api/status", get(|State(state): State<Arc<HostState>>| async move { Json(state.destinations.status()) }))
        .route("/api/drops", get(|State(state): State<Arc<HostState>>| async move { Json(DropTotals::of(&state)) }))
        .route("/api/streams", any(add_stream))
        .route("/api/streams/{*stream}", get(show_stream).delete(delete_stream))
        .route("/ts/{*feed}", any(ingest))
        .route("/ws/{*feed}", any(local_client))
        .layer(middleware::from_fn_with_state(origins, check_origin))
        .route("/healthcheck", get(|| async { "\"ok\"\n" }))
        .with_state(state)
}

async fn check_origin(
    State(policy): State<Arc<LocalPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let host = String::from_utf8_lossy(host.as_bytes());
        if !policy.hosts.allows(&host) {
            tracing::warn!(host = %host, path = %request.uri().path(), "request for a foreign host name refused");
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "host name {host:?} is not allowed: use localhost or 127.0.0.1, or add the name to VW_ALLOWED_HOSTS\n"
                ),
            )
                .into_response();
        }
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !policy.origins.allows(origin) {
            tracing::warn!(origin, path = %request.uri().path(), "request from a foreign origin refused");
            return (
                StatusCode::FORBIDDEN,
                format!("origin {origin:?} is not allowed\n"),
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The reference accepts PUT, POST and the non-standard UPDATE for adding rules.
fn is_add_method(method: &Method) -> bool {
    method == Method::PUT || method == Method::POST || method.as_str() == "UPDATE"
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

#[derive(serde::Deserialize)]
struct ListQuery {
    /// `?tokens=true` shows tokens, which are hidden otherwise.
    #[serde(default)]
    tokens: bool,
}

/// The shared shape of the two "add rule" routes: method check, JSON body, apply, echo.
fn add_rule<R, S, E>(
    method: &Method,
    body: &[u8],
    what: &str,
    apply: impl FnOnce(R) -> Result<S, E>,
) -> Response
where
    R: serde::de::DeserializeOwned,
    S: serde::Serialize,
    E: std::fmt::Display,
{
    if !is_add_method(method) {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    match serde_json::from_slice(body) {
        Ok(rule) => match apply(rule) {
            Ok(stored) => Json(stored).into_response(),
            Err(e) => bad_request(e),
        },
        Err(e) => bad_request(format!("{what} rule is not valid JSON: {e}")),
    }
}

async fn add_destination(
    State(state): State<Arc<HostState>>,
    method: Method,
    body: Bytes,
) -> Response {
    add_rule(&method, &body, "destination", |rule: DestinationRule| {
        state.destinations.add(rule)
    })
}

async fn show_destination(
    State(state): State<Arc<HostState>>,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    if id == "all" {
        return Json(state.destinations.list(query.tokens)).into_response();
    }
    // The reference answers an unknown id with the zero rule and 200.
    let rule = state.destinations.get(&id).unwrap_or_default();
    Json(if query.tokens { rule } else { rule.redacted() }).into_response()
}

async fn delete_destination(
    State(state): State<Arc<HostState>>,
    Path(id): Path<String>,
) -> Response {
    if id == "all" {
        state.delete_all_destinations();
        return Json(DELETE_ALL).into_response();
    }
    state.destinations.delete(&id);
    Json(id).into_response()
}

async fn add_stream(State(state): State<Arc<HostState>>, method: Method, body: Bytes) -> Response {
    add_rule(&method, &body, "stream", |rule: StreamRule| {
        add_stream_rule(&state, rule)
    })
}

async fn show_stream(State(state): State<Arc<HostState>>, Path(stream): Path<String>) -> Response {
    if stream == "all" {
        return Json(state.hub.stream_rules()).into_response();
    }
    match state.hub.stream_rule(&strip_leading_slash(&stream)) {
        Some(feeds) => Json(feeds).into_response(),
        None => (StatusCode::NOT_FOUND, "Stream not found\n").into_response(),
    }
}

async fn delete_stream(
    State(state): State<Arc<HostState>>,
    Path(stream): Path<String>,
) -> Response {
    if stream == "all" {
        state.hub.delete_all_stream_rules();
        return Json(DELETE_ALL).into_response();
    }
    state.hub.delete_stream_rule(&strip_leading_slash(&stream));
    Json(stream).into_response()
}

/// `/ts/{feed}`: one binary message per burst of the request body; replies when it ends.
///
/// The body is read in its own task: ffmpeg closes the connection right after the last
/// chunk without waiting for the reply, and hyper then drops the handler. The task still
/// drains the body to its end, so the last frames are published rather than lost.
async fn ingest(
    State(state): State<Arc<HostState>>,
    Path(feed): Path<String>,
    body: Body,
) -> Response {
    let (done, result) = tokio::sync::oneshot::channel();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let sender = state.hub.new_client_id();
        tracing::info!(feed, "ingest started");
        let framing = frame_bursts(
            body.into_data_stream(),
            FRAME_GAP,
            state.max_frame,
            |frame| {
                state
                    .hub
                    .publish(&feed, Some(sender), Message::binary(frame));
            },
        );
        // An ingest may run past shutdown's grace period (ffmpeg streams forever); it is
        // cut then, so the listener can finish.
        let result = tokio::select! {
            result = framing => result,
            () = state.stop_now.cancelled() => Err(IngestError::ShuttingDown),
        };
        match &result {
            Ok(summary) => tracing::info!(
                feed,
                frames = summary.frames,
                bytes = summary.bytes,
                "ingest ended"
            ),
            Err(e) => tracing::warn!(feed, error = %e, "ingest ended with an error"),
        }
        let _ = done.send(result);
    });
    match result.await {
        Ok(Ok(summary)) => {
            format!("{} frames, {} bytes\n", summary.frames, summary.bytes).into_response()
        }
        Ok(Err(e @ IngestError::ShuttingDown)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ingest task failed\n").into_response(),
    }
}

/// `/ws/{feed}`: a local program (a serial bridge, a viewer, a configuration tool).
async fn local_client(
    State(state): State<Arc<HostState>>,
    Path(feed): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    upgrade
        .protocols(["null"])
        .max_message_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let tasks = state.tasks.clone();
            tasks.track_future(serve_local_client(state, feed, agent, socket))
        })
}

async fn serve_local_client(state: Arc<HostState>, feed: String, agent: String, socket: WebSocket) {
    let mut subscription = state.hub.subscribe(&feed, WS_QUEUE);
    tracing::info!(feed, agent, "local websocket client connected");
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + WS_PING_EVERY, WS_PING_EVERY);
    let mut last_heard = Instant::now();
    let write_timeout = state.ws_write_timeout;
    let reason = loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                let close = ws::CloseFrame { code: ws::close_code::AWAY, reason: "relay host shutting down".into() };
                let _ = tokio::time::timeout(write_timeout, sink.send(ws::Message::Close(Some(close)))).await;
                break "host shutting down".to_string();
            }
            frame = stream.next() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(ws::Message::Text(text))) => { subscription.publish(Message::text(Bytes::from(text))); }
                    Some(Ok(ws::Message::Binary(data))) => { subscription.publish(Message::binary(data)); }
                    Some(Ok(ws::Message::Close(_))) | None => break "closed by client".to_string(),
                    Some(Err(e)) => break format!("read error: {e}"),
                    Some(Ok(_ping_or_pong)) => {}
                }
            }
            message = subscription.recv() => {
                let Some(first) = message else { break "hub closed".to_string() };
                if let Err(reason) = write_batch(&mut sink, &mut subscription, first, write_timeout).await {
                    break reason;
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(write_timeout, sink.send(ws::Message::Ping(Bytes::new()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break format!("ping failed: {e}"),
                    Err(_) => break format!("ping stalled for {write_timeout:?}"),
                }
            }
            _ = tokio::time::sleep_until(last_heard + WS_PONG_WAIT) => break "silent past the pong wait".to_string(),
        }
    };
    tracing::info!(
        feed,
        reason,
        dropped = subscription.dropped(),
        "local websocket client disconnected"
    );
}

/// Writes `first` and everything already queued behind it with one flush, within
/// `write_timeout`; the error is the reason to disconnect.
async fn write_batch(
    sink: &mut futures_util::stream::SplitSink<WebSocket, ws::Message>,
    subscription: &mut crate::hub::Subscription,
    first: Message,
    write_timeout: Duration,
) -> Result<(), String> {
    let mut batch = vec![first];
    while let Some(more) = subscription.try_recv() {
        batch.push(more);
    }
    let write = async {
        for message in batch {
            sink.feed(to_axum(message)).await?;
        }
        sink.flush().await
    };
    match tokio::time::timeout(write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write error: {e}")),
        Err(_) => Err(format!("write stalled for {write_timeout:?}")),
    }
}

fn to_axum(message: Message) -> ws::Message {
    match message.kind {
        Kind::Binary => ws::Message::Binary(message.data),
        Kind::Text => match ws::Utf8Bytes::try_from(message.data.clone()) {
            Ok(text) => ws::Message::Text(text),
            Err(_) => ws::Message::Binary(message.data),
        },
    }
}

/// Starts the command API listener on feed `api`.
pub fn spawn_command_api(state: &Arc<HostState>) {
    let subscription = state.hub.subscribe(API_FEED, WS_QUEUE);
    state
        .tasks
        .spawn(commands::run(state.clone(), subscription));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_policy_allows_loopback_listen_and_listed_names_only() {
        let policy = HostPolicy {
            allowed: vec!["Lab-PC".into(), "lab.example:8080".into()],
            listen: Some("192.168.1.5".parse().unwrap()),
        };
        for good in [
            "localhost",
            "localhost:8888",
            "127.0.0.1",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8888",
            "192.168.1.5:8888",
            "lab-pc",
            "LAB-PC:8888",
            "lab.example:8080",
        ] {
            assert!(policy.allows(good), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:8888",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "[::1]x",
            "localhost:port",
            "lab.example:9090",
            "",
        ] {
            assert!(!policy.allows(bad), "{bad}");
        }
        let any = HostPolicy {
            allowed: vec![],
            listen: Some("0.0.0.0".parse().unwrap()),
        };
        assert!(!any.allows("0.0.0.0"));
    }

    #[test]
    fn origin_policy_allows_local_origins_and_listed_ones_only() {
        let policy = OriginPolicy {
            allowed: vec!["http://lab:3000".into()],
        };
        assert!(policy.allows("http://localhost:8888"));
        assert!(policy.allows("http://127.0.0.1"));
        assert!(policy.allows("http://[::1]:80"));
        assert!(policy.allows("http://lab:3000"));
        assert!(!policy.allows("https://evil.example"));
        assert!(!policy.allows("http://localhost.evil.example"));
        assert!(!policy.allows("null"));
        assert!(OriginPolicy {
            allowed: vec!["*".into()]
        }
        .allows("https://evil.example"));
    }
}
