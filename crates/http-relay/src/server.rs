//! `relay http serve`: the public relay server. Users call `/client/{name}/…` (or any path
//! with `X-Server-Name`); relay-clients long-poll `/server/request`, post response messages
//! to `/server/response` and pull upgraded-connection bytes from `/server/requeststream`.
//! Routes, status codes and messages follow the reference (spec §3–§6, §9, §10).

use crate::auth::PollerAuth;
use crate::broker::{
    backend_of, new_request_id, Broker, BrokerError, BrokerTimeouts, Delivered, Dispatch,
    NextMessage, RelayedRequest, UpstreamPull,
};
use crate::metrics::{self, Metrics};
use crate::proto::{self, HttpRequest, HttpResponse};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use prometheus_client::registry::Registry;
use prost::Message as _;
use relay_common::goduration::format as go_duration;
use relay_common::shutdown::{CancellationToken, TaskTracker};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Header carrying the request ID on relay-generated errors.
pub const RELAY_ID_HEADER: &str = "x-cloudrobotics-http-relay";
/// Query parameter by which a relay-client says it can pull request bodies in pieces.
pub const BODY_STREAM_PARAM: &str = "body_stream";

/// Default of [`ServerConfig::max_request_body`]: 10 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// Default of [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Configuration of the relay server (flags of spec §3.1 plus our safer extras).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one (default `0.0.0.0:80`).
    pub listen: SocketAddr,
    /// Read size in bytes for the user's side of an upgraded (101) connection (default
    /// 10240, the reference's `--block_size`).
    pub block_size: usize,
    /// A request with no response message for this long is reaped: 504 before headers,
    /// an aborted body after (default 60 s).
    pub inactive_request_timeout: Duration,
    /// A backend with no activity for this long is forgotten with its metric series
    /// (default 30 min).
    pub inactive_backend_timeout: Duration,
    /// How often the reapers run (default 10 s).
    pub reaper_interval: Duration,
    /// Dispatch, long-poll and response-post waits (default 10 s, 30 s, 45 s).
    pub timeouts: BrokerTimeouts,
    /// Largest accepted user request body in bytes; larger ones get 413. Protects the
    /// server's memory: a reference relay-client needs the whole body in one message, so
    /// the server buffers it (default [`DEFAULT_MAX_REQUEST_BODY`], 10 MiB; 0 means no
    /// limit, the reference's behaviour, and must be set explicitly).
    pub max_request_body: u64,
    /// Longest time a client may take to send a request's headers before the connection
    /// is closed (HTTP/1.1; a 408 is sent when possible). Protects against slowloris
    /// clients holding connections open with a trickle of header bytes (default 10 s).
    pub header_read_timeout: Duration,
    /// Most connections served at once; further connections get `503` with the body
    /// "too many connections" and are counted in `http_relay_connections_refused`.
    /// Protects file descriptors and memory (default [`DEFAULT_MAX_CONNECTIONS`]; 0 means no
    /// cap).
    pub max_connections: usize,
    /// Bodies longer than this many bytes are streamed to relay-clients that support it
    /// instead of being buffered whole (default 256 KiB).
    pub body_stream_threshold: usize,
    /// Poller authorisation; `None` (the default) trusts every poller, as the reference does.
    pub auth: Option<PollerAuth>,
    /// Graceful shutdown budget before open connections are dropped (default 20 s).
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            block_size: 10240,
            inactive_request_timeout: Duration::from_secs(60),
            inactive_backend_timeout: Duration::from_secs(30 * 60),
            reaper_interval: Duration::from_secs(10),
            timeouts: BrokerTimeouts::default(),
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            header_read_timeout: Duration::from_secs(10),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_stream_threshold: 256 * 1024,
            auth: None,
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

/// Why the server must not start on `listen`: a non-loopback address without poller
/// authorisation lets anyone on the network poll any server name and read its users'
/// requests. `None` when the address is loopback, a secret is set, or the operator
/// accepted the risk with `insecure` (e.g. an ingress authenticates Go relay-clients).
pub fn exposure_refusal(
    listen: std::net::IpAddr,
    has_auth: bool,
    insecure: bool,
) -> Option<String> {
    if has_auth || insecure || listen.to_canonical().is_loopback() {
        return None;
    }
    Some(format!(
        "refusing to listen on {listen} without relay-client authorisation: anyone who can \
         reach it could poll any server name and read its users' requests. Set --auth_secret \
         (RELAY_HTTP_SECRET), bind a loopback address (--bind=127.0.0.1), or pass --insecure \
         (RELAY_HTTP_INSECURE=true) if something in front (an ingress) authenticates relay-clients"
    ))
}

/// The reference's programmatic port rule: -1 means 80, anything else is kept (0 = any).
pub fn port_from_flag(port: i32) -> Result<u16, String> {
    if port == -1 {
        return Ok(80);
    }
    u16::try_from(port).map_err(|_| format!("port {port} is out of range 0..=65535"))
}

#[derive(Clone)]
struct AppState {
    broker: Arc<Broker>,
    config: Arc<ServerConfig>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    /// The listener, the reapers, upgraded connections and streamed request bodies;
    /// shutdown waits on it (within the shutdown budget).
    tasks: TaskTracker,
}

/// A relay server running on a background task (used by tests and embedders).
pub struct RunningServer {
    addr: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Bind `config.listen` and serve until [`RunningServer::shutdown`].
    pub async fn start(config: ServerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let (broker, app) = build(config, shutdown.clone());
        let task = tokio::spawn(serve_app(listener, app, shutdown.clone()));
        Ok(RunningServer {
            addr,
            broker,
            shutdown,
            task,
        })
    }

    /// The address actually bound (with the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's broker, for tests that inspect backends and in-flight requests.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stop accepting, let open connections and the server's tasks finish for at most
    /// `shutdown_timeout`, and return once the server task has ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Serve on `listener` until `shutdown` fires, then drain connections and every task the
/// server started for at most the configured budget (the reference panicked instead when
/// long streams remained).
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (_, app) = build(config, shutdown.clone());
    serve_app(listener, app, shutdown).await
}

/// What [`serve_app`] runs: the routes, the shutdown budget and the server's tasks.
struct App {
    router: Router,
    budget: Duration,
    tasks: TaskTracker,
    limits: ConnectionLimits,
}

/// Per-connection protections applied by [`accept_loop`].
struct ConnectionLimits {
    header_read_timeout: Duration,
    /// `None` when there is no cap.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    metrics: Metrics,
}

/// What a connection past the cap receives before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 59\r\nRetry-After: 1\r\n\
Connection: close\r\n\r\nrelay: too many connections (--max_connections); try again\n";

/// Accept connections and serve each with hyper (HTTP/1.1 with upgrades, or h2c), with a
/// header-read timeout and the connection cap, until `shutdown`; then finish open
/// connections gracefully.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let service = hyper_util::service::TowerToHyperService::new(router);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let permit = match &limits.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    limits.metrics.connections_refused.inc();
                    tracing::warn!(%peer, "connection refused: --max_connections reached");
                    tokio::spawn(refuse(stream));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
            .into_owned();
        let conn = graceful.watch(conn);
        let open = limits.metrics.connections_open.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answer a connection past the cap with a 503 and close it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let write = async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

fn build(config: ServerConfig, shutdown: CancellationToken) -> (Arc<Broker>, App) {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let broker = Broker::new(config.timeouts.clone(), metrics);
    broker.set_max_upstream_pull(config.block_size.saturating_mul(8).max(64 * 1024));
    if config.auth.is_none() {
        tracing::warn!("relay-client authorisation is off: any poller may serve any server name (set a secret to require http:server:<name> scopes)");
    }
    let budget = config.shutdown_timeout;
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout,
        slots: (config.max_connections > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_connections))),
        metrics: broker.metrics.clone(),
    };
    let state = AppState {
        broker: Arc::clone(&broker),
        config: Arc::new(config),
        registry: Arc::new(registry),
        shutdown,
        tasks: TaskTracker::new(),
    };
    spawn_reapers(&state);
    let tasks = state.tasks.clone();
    let app = App {
        router: router(state),
        budget,
        tasks,
        limits,
    };
    (broker, app)
}

async fn serve_app(
    listener: TcpListener,
    app: App,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let App {
        router,
        budget,
        tasks,
        limits,
    } = app;
    let port = listener.local_addr()?.port();
    tracing::info!(Port = port, "Relay server listening");
    let server = tasks.spawn(accept_loop(listener, router, limits, shutdown.clone()));
    shutdown.cancelled().await;
    let drained = async {
        let result = server.await;
        tasks.close();
        tasks.wait().await;
        result
    };
    match tokio::time::timeout(budget, drained).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!(budget = %go_duration(budget), "connections still open after the shutdown budget; closing them");
            Ok(())
        }
    }
}

fn spawn_reapers(state: &AppState) {
    let broker = Arc::downgrade(&state.broker);
    let config = Arc::clone(&state.config);
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(config.reaper_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(broker) = broker.upgrade() else {
                return;
            };
            let now = tokio::time::Instant::now();
            if let Some(threshold) = now.checked_sub(config.inactive_request_timeout) {
                broker.reap_inactive_requests(threshold);
            }
            if let Some(threshold) = now.checked_sub(config.inactive_backend_timeout) {
                broker.reap_inactive_backends(threshold);
            }
        }
    });
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", any(health))
        .route("/metrics", any(metrics_handler))
        .route("/server/request", any(server_request))
        .route("/server/requeststream", any(server_request_stream))
        .route("/server/response", any(server_response))
        .fallback(user_request)
        .with_state(state)
}

/// Go's `http.Error`: text/plain, nosniff, body plus newline.
fn text_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

async fn health(State(app): State<AppState>) -> Response {
    let waited = app.broker.health();
    if waited > Duration::from_secs(8) {
        tracing::warn!(
            waited_ms = waited.as_millis() as u64,
            "health check: broker lock was slow"
        );
    }
    ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

async fn metrics_handler(State(app): State<AppState>) -> Response {
    match metrics::encode_text(&app.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::TEXT_CONTENT_TYPE)], text).into_response(),
        Err(e) => text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        ),
    }
}

/// Refuse a relay-client call for `server_name` when authorisation is on and fails.
fn authorise(app: &AppState, headers: &HeaderMap, server_name: &str) -> Result<(), Box<Response>> {
    let Some(auth) = &app.config.auth else {
        return Ok(());
    };
    auth.check(headers, server_name, relay_auth::unix_now())
        .map_err(|e| {
            tracing::warn!(ServerName = %server_name, error = %e, "relay-client refused");
            Box::new(text_error(
                StatusCode::FORBIDDEN,
                format!("not allowed to serve {server_name:?}: {e}"),
            ))
        })
}

async fn server_request(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let server = query.get("server").map(String::as_str).unwrap_or_default();
    if server.is_empty() {
        return text_error(StatusCode::BAD_REQUEST, "Missing server query parameter");
    }
    if let Err(refused) = authorise(&app, &headers, server) {
        return *refused;
    }
    let streams_bodies = query.get(BODY_STREAM_PARAM).is_some_and(|v| v == "1");
    tracing::info!(ServerName = %server, "Relay client connected");
    let dispatch = match app.broker.get_request(server, &app.shutdown).await {
        Ok(dispatch) => dispatch,
        Err(BrokerError::PollTimeout) => {
            return text_error(StatusCode::REQUEST_TIMEOUT, BrokerError::PollTimeout)
        }
        Err(e) => return text_error(StatusCode::REQUEST_TIMEOUT, e),
    };
    let Dispatch {
        mut request,
        body_rest,
    } = dispatch;
    let id = request.id.clone().unwrap_or_default();
    if let Some(rest) = body_rest {
        if streams_bodies {
            request.body_continues = Some(true);
            let broker = Arc::clone(&app.broker);
            let block = app.config.block_size.max(64 * 1024);
            let stream_id = id.clone();
            app.tasks
                .spawn(async move { broker.stream_request_body(&stream_id, rest, block).await });
        } else {
            // A reference relay-client needs the whole body in the message.
            match read_rest(rest, &request, app.config.max_request_body).await {
                Ok(full) => request.body = Some(full),
                Err(status) => {
                    let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large(app.config.max_request_body)
                    } else {
                        format!("relay: could not read the request body ({status})")
                    };
                    fail_request(&app.broker, &id, status, &reason).await;
                    return text_error(StatusCode::REQUEST_TIMEOUT, "request dropped; poll again");
                }
            }
        }
    }
    tracing::info!(ID = %id, "Relay client accepted request");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, proto::CONTENT_TYPE_REQUEST)],
        request.encode_to_vec(),
    )
        .into_response()
}

async fn read_rest(rest: Body, request: &HttpRequest, limit: u64) -> Result<Bytes, StatusCode> {
    let prefix = request.body.clone().unwrap_or_default();
    let mut full = BytesMut::from(prefix.as_ref());
    let mut rest = rest;
    while let Some(frame) = rest.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        if let Ok(data) = frame.into_data() {
            full.extend_from_slice(&data);
            if limit > 0 && full.len() as u64 > limit {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
        }
    }
    Ok(full.freeze())
}

/// Answer a dispatched request ourselves (the body could not be read).
async fn fail_request(broker: &Broker, id: &str, status: StatusCode, reason: &str) {
    let msg = HttpResponse {
        status_code: Some(i32::from(status.as_u16())),
        header: vec![proto::HttpHeader {
            name: Some("Content-Type".into()),
            value: Some("text/plain".into()),
        }],
        body: Some(Bytes::from(format!("{reason}\n"))),
        eof: Some(true),
        ..HttpResponse::for_id(id)
    };
    let _ = broker.send_response(msg).await;
}

async fn server_request_stream(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = query.get("id").filter(|id| !id.is_empty()) else {
        return text_error(StatusCode::BAD_REQUEST, "Missing id query parameter");
    };
    if let Err(refused) = authorise(&app, &headers, backend_of(id)) {
        return *refused;
    }
    match app.broker.get_upstream(id).await {
        UpstreamPull::Data(bytes) => (
            [(header::CONTENT_TYPE, proto::CONTENT_TYPE_UPSTREAM)],
            bytes,
        )
            .into_response(),
        UpstreamPull::KeepAlive => (
            [(header::CONTENT_TYPE, proto::CONTENT_TYPE_UPSTREAM)],
            Bytes::new(),
        )
            .into_response(),
        UpstreamPull::Gone => {
            text_error(StatusCode::GONE, format!("No ongoing request with id {id}"))
        }
    }
}

async fn server_response(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match HttpResponse::decode(body) {
        Ok(msg) => msg,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(id) = msg.id.clone() else {
        return text_error(StatusCode::BAD_REQUEST, BrokerError::MissingId);
    };
    if let Err(refused) = authorise(&app, &headers, backend_of(&id)) {
        return *refused;
    }
    match app.broker.send_response(msg).await {
        Ok(Delivered::Delivered | Delivered::Duplicate) => {
            ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
        }
        Err(e @ BrokerError::ResponseBusy(_)) => text_error(StatusCode::SERVICE_UNAVAILABLE, e),
        Err(e) => text_error(StatusCode::BAD_REQUEST, e),
    }
}

/// Where a user request goes: backend name and the path to forward.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// Server name whose relay-client should answer: percent-decoded from
    /// `/client/{name}/…`, or the `X-Server-Name` value.
    pub backend: String,
    /// Path to forward to the backend, still percent-encoded; `/` when `/client/{name}`
    /// has nothing after the name.
    pub path: String,
}

/// Pick the backend from `/client/{name}/…` or the `X-Server-Name` header (spec §3.4).
/// The forwarded path stays percent-encoded as received (the reference decoded `%2F`).
pub fn extract_backend_and_path(path: &str, headers: &HeaderMap) -> Result<Route, String> {
    if let Some(rest) = path.strip_prefix("/client/") {
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err(format!("request path too short: {path:?} missing remote server identifier after \"/client/\""));
        }
        let backend = percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .into_owned();
        return Ok(Route {
            backend,
            path: format!("/{tail}"),
        });
    }
    match headers.get("x-server-name") {
        Some(value) => Ok(Route {
            backend: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            path: path.to_owned(),
        }),
        None => Err(format!(
            "missing required header: \"X-Server-Name\" missing for path {path:?}"
        )),
    }
}

/// The 413 text for a body over `limit` bytes.
fn too_large(limit: u64) -> String {
    format!("request body larger than {limit} bytes (the relay's --max_request_body)")
}

/// Read the request body until it ends or passes `threshold` bytes. Returns what was read
/// and the remaining body if it did not end.
async fn read_body_prefix(
    mut body: Body,
    threshold: usize,
    limit: u64,
) -> Result<(Bytes, Option<Body>), Response> {
    let mut buf = BytesMut::new();
    while buf.len() <= threshold {
        match body.frame().await {
            None => return Ok((buf.freeze(), None)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(text_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading request body: {e}"),
                ))
            }
        }
        if limit > 0 && buf.len() as u64 > limit {
            return Err(text_error(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit)));
        }
    }
    Ok((buf.freeze(), Some(body)))
}

/// A user's request: find its backend, relay it to that backend's relay-client, and answer
/// with the backend's response, streamed as it comes (or, after a 101, the upgraded
/// connection).
async fn user_request(State(app): State<AppState>, mut req: Request) -> Response {
    let route = match extract_backend_and_path(req.uri().path(), req.headers()) {
        Ok(route) => route,
        Err(message) => return text_error(StatusCode::BAD_REQUEST, message),
    };
    let id = new_request_id(&route.backend);
    let on_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let version = req.version();
    let dispatch = match relay_message(&app.config, &route, &id, req).await {
        Ok(dispatch) => dispatch,
        Err(response) => return response,
    };
    let mut relayed = match dispatch_to_backend(&app.broker, &route.backend, &id, dispatch).await {
        Ok(relayed) => relayed,
        Err(response) => return response,
    };
    let (status, first) = match response_head(&app, &route.backend, &mut relayed).await {
        Ok(head) => head,
        Err(response) => return response,
    };
    let headers = response_headers(&id, &first);
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let on_upgrade = on_upgrade.filter(|_| version < Version::HTTP_2);
        return switch_protocols(&app, relayed, on_upgrade, first, headers);
    }
    streamed_response(&app, relayed, first, status, headers, route.backend)
}

/// The user's request as the message a relay-client polls for: method, the forwarded path
/// and query, headers, host and the start of the body (up to the body-stream threshold;
/// the rest, if any, travels separately).
async fn relay_message(
    config: &ServerConfig,
    route: &Route,
    id: &str,
    req: Request,
) -> Result<Dispatch, Response> {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let mut url = format!("http://invalid{}", route.path);
    if let Some(query) = parts.uri.query().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    let limit = config.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if limit > 0 && declared.is_some_and(|len| len > limit) {
        return Err(text_error(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit)));
    }
    let (prefix, body_rest) =
        read_body_prefix(body, config.body_stream_threshold, config.max_request_body).await?;
    let request = HttpRequest {
        id: Some(id.to_owned()),
        method: Some(parts.method.as_str().to_owned()),
        url: Some(url),
        header: proto::headers_to_proto(&parts.headers, &["host", "transfer-encoding"]),
        body: Some(prefix),
        host,
        body_continues: None,
    };
    Ok(Dispatch { request, body_rest })
}

/// Queue the request for `backend`'s relay-client: 503 (with the request ID) when no
/// relay-client of that name is known.
async fn dispatch_to_backend(
    broker: &Arc<Broker>,
    backend: &str,
    id: &str,
    dispatch: Dispatch,
) -> Result<RelayedRequest, Response> {
    match broker.relay_request(backend, dispatch).await {
        Ok(relayed) => Ok(relayed),
        Err(e @ BrokerError::UnknownBackend(_)) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            [(
                HeaderName::from_static(RELAY_ID_HEADER),
                HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("")),
            )],
            e.to_string(),
        )
            .into_response()),
        Err(e) => Err(text_error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

/// Wait for the first response message, which carries the status and headers, counting
/// the outcome: 504 if none comes in time, 500 if it has no status, 502 if the status is
/// not a valid HTTP status.
async fn response_head(
    app: &AppState,
    backend: &str,
    relayed: &mut RelayedRequest,
) -> Result<(StatusCode, HttpResponse), Response> {
    let count = |result| {
        app.broker
            .metrics
            .count_response(metrics::METHOD_CLIENT, result, backend)
    };
    let first = match relayed.next_message().await {
        NextMessage::Message(msg) => msg,
        NextMessage::Ended => {
            count(metrics::RESULT_MISSING_MESSAGE);
            return Err(text_error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "Timeout after {}, indicating that the backend request took too long",
                    go_duration(app.config.inactive_request_timeout)
                ),
            ));
        }
    };
    let Some(status) = first.status_code else {
        count(metrics::RESULT_MISSING_HEADER);
        return Err(text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Received no header from relay client",
        ));
    };
    count(metrics::RESULT_OK);
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok());
    let Some(status) = status else {
        return Err(text_error(
            StatusCode::BAD_GATEWAY,
            format!(
                "relay client sent an invalid status code {:?}",
                first.status_code
            ),
        ));
    };
    Ok((status, first))
}

/// The backend's response headers, minus `Transfer-Encoding` (hyper frames the body
/// itself); headers that are not valid HTTP are dropped with a warning.
fn response_headers(id: &str, first: &HttpResponse) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let invalid = proto::append_proto_headers(&mut headers, &first.header, &["transfer-encoding"]);
    if invalid > 0 {
        tracing::warn!(ID = %id, invalid, "dropped invalid response headers from relay client");
    }
    headers
}

/// Answer a backend's 101: hand the user's connection to [`run_upgraded`] and send the
/// 101 with the backend's headers. Without an upgradable connection (HTTP/2, or none
/// offered) the user gets a 500 instead.
fn switch_protocols(
    app: &AppState,
    relayed: RelayedRequest,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    first: HttpResponse,
    headers: HeaderMap,
) -> Response {
    let Some(on_upgrade) = on_upgrade else {
        let mut response = text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Backend returned 101 Switching Protocols, which is not supported by the relay server",
        );
        response.headers_mut().extend(headers);
        return response;
    };
    let block_size = app.config.block_size.max(1);
    app.tasks.spawn(run_upgraded(
        Arc::clone(&app.broker),
        relayed,
        on_upgrade,
        first,
        block_size,
        app.shutdown.clone(),
    ));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = headers;
    response
}

/// The backend's response with its body streamed from the response messages as they
/// arrive (see [`RelayBody`]).
fn streamed_response(
    app: &AppState,
    relayed: RelayedRequest,
    first: HttpResponse,
    status: StatusCode,
    headers: HeaderMap,
    backend: String,
) -> Response {
    let body = RelayBody::new(relayed, first, &headers, Arc::clone(&app.broker), backend);
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(
        body.into_stream(),
    )));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The error that aborts a user response instead of ending it cleanly (HTTP/1: the
/// connection closes without the final chunk; HTTP/2: RST_STREAM).
#[derive(Debug, thiserror::Error)]
#[error("relayed response ended abnormally: {0}")]
pub struct TruncatedResponse(String);

/// Turns response messages into body frames: data per message (each written and flushed
/// as it comes), trailers accumulated and sent at the end.
struct RelayBody {
    relayed: RelayedRequest,
    frames: VecDeque<Result<Frame<Bytes>, TruncatedResponse>>,
    trailers: HeaderMap,
    /// `Grpc-*` response headers, repeated as trailers for gRPC Trailers-Only answers.
    grpc_headers: HeaderMap,
    done: bool,
    broker: Arc<Broker>,
    backend: String,
}

impl RelayBody {
    fn new(
        relayed: RelayedRequest,
        first: HttpResponse,
        headers: &HeaderMap,
        broker: Arc<Broker>,
        backend: String,
    ) -> Self {
        let mut grpc_headers = HeaderMap::new();
        for (name, value) in headers {
            if name.as_str().starts_with("grpc-") {
                grpc_headers.append(name.clone(), value.clone());
            }
        }
        let mut body = RelayBody {
            relayed,
            frames: VecDeque::new(),
            trailers: HeaderMap::new(),
            grpc_headers,
            done: false,
            broker,
            backend,
        };
        body.take(first);
        body
    }

    fn take(&mut self, msg: HttpResponse) {
        proto::append_proto_headers(&mut self.trailers, &msg.trailer, &[]);
        if let Some(body) = msg.body.filter(|b| !b.is_empty()) {
            self.frames.push_back(Ok(Frame::data(body)));
        }
        if msg.eof == Some(true) {
            self.done = true;
            if let Some(reason) = msg.abort_reason {
                self.frames.push_back(Err(TruncatedResponse(format!(
                    "backend response failed: {reason}"
                ))));
                return;
            }
            let mut trailers = std::mem::take(&mut self.trailers);
            for (name, value) in std::mem::take(&mut self.grpc_headers) {
                if let Some(name) = name {
                    if !trailers.contains_key(&name) {
                        trailers.append(name, value);
                    }
                }
            }
            if !trailers.is_empty() {
                self.frames.push_back(Ok(Frame::trailers(trailers)));
            }
        }
    }

    fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, TruncatedResponse>> + Send {
        futures_util::stream::unfold(self, |mut body| async move {
            loop {
                if let Some(frame) = body.frames.pop_front() {
                    return Some((frame, body));
                }
                if body.done {
                    return None;
                }
                match body.relayed.next_message().await {
                    NextMessage::Message(msg) => {
                        body.broker.metrics.count_response(
                            metrics::METHOD_CLIENT,
                            metrics::RESULT_OK,
                            &body.backend,
                        );
                        body.take(msg);
                    }
                    NextMessage::Ended => {
                        body.done = true;
                        tracing::warn!(ID = %body.relayed.id(), "response stream ended without eof (relay client lost or request reaped); aborting the user response");
                        body.frames.push_back(Err(TruncatedResponse(
                            "relay client stopped sending (inactivity timeout)".into(),
                        )));
                    }
                }
            }
        })
    }
}

/// Pump an upgraded (101) connection: user bytes go upstream in blocks for
/// `/server/requeststream`, every response message body comes back down.
async fn run_upgraded(
    broker: Arc<Broker>,
    mut relayed: RelayedRequest,
    on_upgrade: hyper::upgrade::OnUpgrade,
    first: HttpResponse,
    block_size: usize,
    shutdown: CancellationToken,
) {
    let id = relayed.id().to_owned();
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::error!(ID = %id, error = %e, "could not take over the upgraded connection");
            return;
        }
    };
    tracing::info!(ID = %id, "Switched protocols");
    let (mut user_read, mut user_write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    let upstream_broker = Arc::clone(&broker);
    let upstream_id = id.clone();
    // Stopped when the downstream half ends, or with the server.
    let stop_upstream = shutdown.child_token();
    let upstream_stopped = stop_upstream.clone();
    let upstream = tokio::spawn(upstream_stopped.run_until_cancelled_owned(async move {
        loop {
            // A fresh buffer per block: the block is handed over, not copied.
            let mut block = vec![0u8; block_size];
            match user_read.read(&mut block).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    block.truncate(n);
                    if !upstream_broker
                        .put_upstream(&upstream_id, Bytes::from(block))
                        .await
                    {
                        break;
                    }
                }
            }
        }
    }));
    let mut next = Some(first);
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => tokio::select! {
                next = relayed.next_message() => match next {
                    NextMessage::Message(msg) => msg,
                    NextMessage::Ended => break,
                },
                _ = shutdown.cancelled() => break,
            },
        };
        let body = msg.body_bytes();
        if !body.is_empty() {
            if let Err(e) = async {
                user_write.write_all(&body).await?;
                user_write.flush().await
            }
            .await
            {
                tracing::info!(ID = %id, error = %e, "user connection closed");
                break;
            }
        }
        if msg.is_eof() {
            break;
        }
    }
    let _ = user_write.shutdown().await;
    stop_upstream.cancel();
    let _ = upstream.await;
    drop(relayed);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn named(name: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-server-name", HeaderValue::from_str(name).unwrap());
        h
    }

    /// The reference's TestExtractBackendNameAndPath table.
    #[test]
    fn extract_backend_name_and_path() {
        let none = HeaderMap::new();
        let route = |backend: &str, path: &str| {
            Ok(Route {
                backend: backend.into(),
                path: path.into(),
            })
        };
        assert_eq!(
            extract_backend_and_path("/client/my-backend/foo/bar", &none),
            route("my-backend", "/foo/bar")
        );
        assert_eq!(
            extract_backend_and_path("/client/my-backend", &none),
            route("my-backend", "/")
        );
        assert_eq!(
            extract_backend_and_path("/client/my-backend/", &none),
            route("my-backend", "/")
        );
        assert!(extract_backend_and_path("/client/", &none)
            .unwrap_err()
            .starts_with("request path too short"));
        assert_eq!(
            extract_backend_and_path("/my.Service/Method", &named("my-backend")),
            route("my-backend", "/my.Service/Method")
        );
        assert!(extract_backend_and_path("/my.Service/Method", &none)
            .unwrap_err()
            .starts_with("missing required header"));
        // `/client` without a slash needs the header; in /client/ mode the header is ignored.
        assert!(extract_backend_and_path("/client", &none).is_err());
        assert_eq!(
            extract_backend_and_path("/client/a/x", &named("b")),
            route("a", "/x")
        );
        // %2F stays encoded in the forwarded path (the reference decoded it).
        assert_eq!(
            extract_backend_and_path("/client/a/x%2Fy", &none),
            route("a", "/x%2Fy")
        );
    }

    /// The reference's TestNewServerConfig.
    #[test]
    fn config_defaults_and_port_rule() {
        let c = ServerConfig::default();
        assert_eq!(
            (c.block_size, c.inactive_request_timeout),
            (10240, Duration::from_secs(60))
        );
        assert_eq!(port_from_flag(0), Ok(0));
        assert_eq!(port_from_flag(-1), Ok(80));
        assert_eq!(port_from_flag(8080), Ok(8080));
        assert!(port_from_flag(70000).is_err());
    }
}
