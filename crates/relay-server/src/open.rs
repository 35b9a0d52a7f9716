//! `relay crossbar`: the open mode for a lab's own LAN or a laptop, where the whole job is
//! "websocat to a topic". There are **no tokens and no authentication**:
//!
//! - `ws://host/<topic>`: read and write, N:N; the sender never hears itself.
//! - `ws://host/in/<topic>`: the only writer for the readers of `ws://host/out/<topic>`;
//!   what a reader of `/out/` sends is dropped.
//! - `GET /stats`: the live connections page (a browser) or the `GET /status` JSON report
//!   (anything that does not ask for HTML); a websocket upgrade to `/stats` joins the
//!   `stats` topic, which reports as on `relay serve`.
//!
//! It runs on the same [`Hub`] and [`connection::serve`] as `relay serve` (bounded queues,
//! drops for a slow reader only, slow readers closed with 4008), so, unlike the Go
//! crossbar, it never stalls. It refuses a non-loopback listen address unless told
//! `open`, and logs that there is no authentication.

use crate::connection::{self, ConnectionOptions};
use crate::crossbar::parse_path;
use crate::error::{json_line, ApiError};
use crate::hub::{Hub, JoinRequest};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::stats::STATS_TOPIC;
use crate::status::status_reports;
use crate::{limits, stats, timeouts, ServerConfig, StartError};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use relay_auth::{CodeStore, DenyStore, Verifier};
use relay_common::shutdown::{CancellationToken, TaskTracker};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Default of [`CrossbarConfig::listen`] (`CROSSBAR_LISTEN`): loopback only.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The start-up warning, also printed by the binary on stderr.
pub const NO_AUTH_WARNING: &str =
    "relay crossbar has NO AUTHENTICATION: anyone who can reach this address can read and write every topic";

/// Everything `relay crossbar` can be told.
#[derive(Debug, Clone)]
pub struct CrossbarConfig {
    /// Where to listen (`CROSSBAR_LISTEN`, default `127.0.0.1:8080`). Anyone who can reach
    /// it can read and write every topic.
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` address (`--open`, default off): without it a typo or
    /// a copied `0.0.0.0` cannot put an unauthenticated relay on a network by accident.
    pub open: bool,
    /// The data path's settings, as `relay serve` has them ([`ServerConfig::local`]'s by
    /// default): queue bounds, slow-reader timeout, ping, pong and write timeouts, message
    /// size, header-read timeout and `limits.max_connections` (the only cap used). The
    /// secret, URLs, listen addresses and access settings are not used.
    pub relay: ServerConfig,
}

impl CrossbarConfig {
    /// Listen on `listen`, loopback only unless [`CrossbarConfig::open`] is set, with
    /// `relay serve`'s data-path defaults.
    pub fn new(listen: SocketAddr) -> Self {
        let mut relay = ServerConfig::new(Vec::new());
        relay.limits = Limits {
            max_connections: limits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_booking: 0,
            rate_per_booking: None,
            rate_bad_auth_per_ip: None,
        };
        CrossbarConfig {
            listen,
            open: false,
            relay,
        }
    }

    /// Refuse a non-loopback address without `open`, and out-of-range data-path settings.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = self.relay.validate().err().unwrap_or_default();
        if !self.open && !self.listen.ip().is_loopback() {
            errors.push(format!(
                "CROSSBAR_LISTEN is {}, which is not a loopback address; relay crossbar has no \
                 authentication, so it only listens on another address when given --open \
                 (CROSSBAR_OPEN=true)",
                self.listen
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A running open crossbar; [`RunningCrossbar::shutdown`] closes every connection with
/// "going away" and stops the listener.
pub struct RunningCrossbar {
    state: Arc<AppState>,
    addr: SocketAddr,
    handle: axum_server::Handle<SocketAddr>,
    server: JoinHandle<()>,
}

impl RunningCrossbar {
    /// Validate, bind and start serving.
    pub async fn start(config: CrossbarConfig) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let what = "crossbar";
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                what,
                source,
            })?;
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            what,
            source,
        };
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let relay = config.relay;
        let metrics = Arc::new(Metrics::new());
        let queue = relay.queue_limits();
        // No route verifies a token or redeems a code: the verifier and code store are
        // there only because the shared connection code takes the shared state.
        let unused_secret = uuid::Uuid::new_v4().as_bytes().to_vec();
        let state = Arc::new(AppState {
            verifier: Verifier::new(&unused_secret, 0),
            codes: crate::cluster::codes::Codes::Local(CodeStore::new(relay.code_ttl)),
            deny: DenyStore::new(),
            deny_file: None,
            hub: Hub::new(queue, metrics.clone()),
            metrics,
            rates: limits::AccessRates::new(&Limits::off()),
            caps: limits::ConnectionCaps::new(&Limits {
                max_connections_per_booking: 0,
                ..relay.limits.clone()
            }),
            audience: String::new(),
            relay_url: format!("ws://{addr}"),
            config: relay,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cluster: None,
        });
        let header_timeout = state.config.header_read_timeout;
        let handle = axum_server::Handle::new();
        let service = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let mut server = axum_server::from_tcp(listener)
            .map_err(bind_error)?
            .acceptor(timeouts::FirstByteDeadline::new(
                axum_server::accept::NoDelayAcceptor::new(),
                header_timeout,
            ));
        timeouts::configure(server.http_builder(), header_timeout);
        let served = handle.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = server.handle(served).serve(service).await {
                tracing::error!(error = %e, "crossbar stopped with an error");
            }
        });
        state.tasks.spawn(stats::run(state.clone()));
        tracing::warn!(listen = %addr, "{NO_AUTH_WARNING}");
        tracing::info!(listen = %addr, "relay crossbar serving: ws://{addr}/<topic>, /in/<topic> → /out/<topic>, /stats");
        Ok(RunningCrossbar {
            state,
            addr,
            handle,
            server,
        })
    }

    /// Where the crossbar listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections currently registered (user connections plus the stats reporter).
    pub fn connection_count(&self) -> usize {
        self.state.hub.connection_count()
    }

    /// Cancel the token, close every connection with 1001 "going away", wait up to 5 s for
    /// every tracked task, then stop the listener gracefully.
    pub async fn shutdown(self) {
        self.state.close_connections().await;
        self.handle
            .graceful_shutdown(Some(crate::state::LISTENER_GRACE));
        let _ = self.server.await;
        tracing::info!("crossbar stopped");
    }
}

/// The open crossbar's router: `/stats`, `/healthz`, and every other path is a topic.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/stats", get(stats_route))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(entry)
        .with_state(state)
}

const STATS_PAGE: &str = include_str!("../pages/stats.html");

/// `/stats`: the stats topic for a websocket, the page for a browser, JSON otherwise.
async fn stats_route(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Ok(upgrade) = upgrade {
        let route = Route {
            topic: STATS_TOPIC.into(),
            key: STATS_TOPIC.into(),
            can_read: true,
            can_write: true,
        };
        return join(state, upgrade, route, &headers, peer);
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        Html(STATS_PAGE.replace("\"{{OPEN_MODE}}\"", "\"open\"")).into_response()
    } else {
        json_line(&status_reports(&state.hub))
    }
}

/// Where one open connection goes in the hub, and what it may do.
struct Route {
    topic: String,
    key: String,
    can_read: bool,
    can_write: bool,
}

/// `/in/<t>` writes to and `/out/<t>` reads from the hub key `/in/<t>`; any other path
/// `/<t>` reads and writes hub key `/<t>`. (Keys start with `/`, so they never meet the
/// `stats` topic; a plain topic cannot start with `in/` or `out/`.)
fn route(path: &str) -> Option<Route> {
    let (prefix, rest) = parse_path(path);
    if prefix.is_empty() {
        return None;
    }
    let direction = match prefix.as_str() {
        "in" => Some((false, true)),
        "out" => Some((true, false)),
        _ => None,
    };
    match direction {
        Some(_) if rest.is_empty() => None,
        Some((can_read, can_write)) => Some(Route {
            topic: format!("{prefix}/{rest}"),
            key: format!("/in/{rest}"),
            can_read,
            can_write,
        }),
        None => {
            let topic = if rest.is_empty() {
                prefix
            } else {
                format!("{prefix}/{rest}")
            };
            Some(Route {
                key: format!("/{topic}"),
                topic,
                can_read: true,
                can_write: true,
            })
        }
    }
}

async fn entry(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(route) = route(uri.path()) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "no topic: dial ws://<host>/<topic>, /in/<topic> or /out/<topic>",
        )
        .into_response();
    };
    match upgrade {
        Ok(upgrade) => join(state, upgrade, route, &headers, peer),
        Err(e) => ApiError::with_reason(
            StatusCode::BAD_REQUEST,
            "a topic is a websocket: dial it with a websocket client",
            e.to_string(),
        )
        .into_response(),
    }
}

/// Upgrade and serve one connection on the shared hub and connection code.
fn join(
    state: Arc<AppState>,
    upgrade: WebSocketUpgrade,
    route: Route,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Response {
    let slot = match state.caps.admit("") {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_api_error().into_response(),
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let scopes = [(route.can_read, "read"), (route.can_write, "write")]
        .iter()
        .filter(|(granted, _)| *granted)
        .map(|(_, scope)| (*scope).to_owned())
        .collect();
    let request = JoinRequest {
        topic: route.topic,
        key: route.key,
        paired: false,
        booking_id: String::new(),
        scopes,
        can_read: route.can_read,
        can_write: route.can_write,
        expires_at: None,
        user_agent,
        remote_addr: peer.ip().to_string(),
    };
    let span = tracing::info_span!("conn", topic = %request.topic, peer = %request.remote_addr);
    let cfg = &state.config;
    let tasks = state.tasks.clone();
    connection::with_size_limits(upgrade, cfg)
        .on_failed_upgrade(|e| tracing::info!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            let connection = async move {
                let (membership, inbox) = state.join(request);
                connection::serve(
                    socket,
                    state.clone(),
                    membership,
                    inbox,
                    ConnectionOptions::default(),
                )
                .await;
                drop(slot);
            }
            .instrument(span);
            tasks.track_future(connection)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Option<(String, String, bool, bool)> {
        route(path).map(|r| (r.topic, r.key, r.can_read, r.can_write))
    }

    #[test]
    fn in_and_out_share_one_key_and_plain_topics_never_meet_it() {
        assert_eq!(
            keys("/in/x"),
            Some(("in/x".into(), "/in/x".into(), false, true))
        );
        assert_eq!(
            keys("/out/x"),
            Some(("out/x".into(), "/in/x".into(), true, false))
        );
        assert_eq!(keys("/x"), Some(("x".into(), "/x".into(), true, true)));
        assert_eq!(
            keys("/a/b%20c"),
            Some(("a/b c".into(), "/a/b c".into(), true, true))
        );
        assert_eq!(keys("/"), None);
        assert_eq!(keys("/in/"), None);
        assert_eq!(keys("/out"), None);
    }

    #[test]
    fn a_non_loopback_address_needs_open() {
        let mut cfg = CrossbarConfig::new("0.0.0.0:8080".parse().unwrap_or(DEFAULT_LISTEN));
        let errors = cfg.validate().unwrap_err();
        assert!(
            errors[0].starts_with("CROSSBAR_LISTEN is 0.0.0.0:8080"),
            "{errors:?}"
        );
        cfg.open = true;
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(CrossbarConfig::new(DEFAULT_LISTEN).validate(), Ok(()));
    }
}
