//! The HTTP API (spec §5) under `/api/v1`, its tokens (§4), the relay deny worker (§4.7),
//! the background jobs (pruner, grace checker), `/metrics` and `/healthz`.
//!
//! - [`config`]: every setting of `relay book serve`, validated once.
//! - [`clock`]: the injected "now".
//! - [`routes`]: the router; [`user`], [`admin`], [`activity`]: the handlers;
//!   [`auth`]: token, scope, lock and subject checks; [`query`]: query parameters;
//!   [`error`]: error bodies; [`wire`]: response bodies.
//! - [`deny`]: the relay deny worker; [`jobs`]: grace checks and pruning.
//! - [`metrics`]: Prometheus; [`unique`]: xid-like user names; [`demo`]: the `--dev`
//!   manifest.
//!
//! [`start`] binds, spawns the HTTP server and the background tasks in one
//! [`TaskTracker`] under one [`CancellationToken`]; [`RunningBookServer::shutdown`] cancels
//! and waits, as `relay serve` does.

pub mod activity;
pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod demo;
pub mod deny;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod query;
pub mod routes;
pub mod unique;
pub mod user;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use governor::DefaultKeyedRateLimiter;
use relay_common::shutdown::{wait_for_tasks, CancellationToken, TaskTracker};
use tokio::sync::Notify;

pub use clock::{Clock, ManualClock};
pub use config::Config;

use crate::manifest::Manifest;
use crate::store::{Store, StoreError};
use metrics::BookMetrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is missing or out of range; one message per setting.
    #[error("{}", .0.join("; "))]
    Config(Vec<String>),
    /// The listener could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The HTTP client for relay deny calls could not be built.
    #[error("cannot build the HTTP client for relay deny calls: {0}")]
    Client(reqwest::Error),
}

/// What every handler and background task shares.
pub struct AppState {
    /// The settings.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// "Now".
    pub clock: Clock,
    /// Prometheus metrics.
    pub metrics: BookMetrics,
    /// `/login` requests per client address.
    pub login_rate: Option<DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Wakes the deny worker right after a cancellation queued deny calls.
    pub deny_wake: Notify,
    /// The HTTP client of deny calls.
    pub http: reqwest::Client,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Every task of this server.
    pub tasks: TaskTracker,
}

/// A running booking server.
pub struct RunningBookServer {
    state: Arc<AppState>,
    addr: SocketAddr,
}

/// How long shutdown waits for requests and background tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Validate `config`, bind, and start serving the API and the background jobs (grace
/// checks at once and every `check_every`, pruning every `tidy_every`, the deny worker).
pub async fn start(
    config: Config,
    store: Store,
    clock: Clock,
) -> Result<RunningBookServer, StartError> {
    let addr = checked_addr(&config)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    serve_on(listener, addr, config, store, clock)
}

/// [`start`] on a listener the caller bound (`config.bind` and `config.port` are not
/// used): for `--dev`, whose audience must name the bound port before the server starts.
pub async fn start_on(
    listener: tokio::net::TcpListener,
    config: Config,
    store: Store,
    clock: Clock,
) -> Result<RunningBookServer, StartError> {
    let addr = checked_addr(&config)?;
    serve_on(listener, addr, config, store, clock)
}

/// The configured address, once `config` is valid.
fn checked_addr(config: &Config) -> Result<SocketAddr, StartError> {
    config.validate().map_err(StartError::Config)?;
    Ok(SocketAddr::new(config.bind, config.port))
}

/// What [`start`] and [`start_on`] share once the configuration is checked: `addr` is the
/// configured address, named in the error if the listener has none.
fn serve_on(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    config: Config,
    store: Store,
    clock: Clock,
) -> Result<RunningBookServer, StartError> {
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .build()
        .map_err(StartError::Client)?;
    let state = Arc::new(AppState {
        login_rate: config
            .login_rate
            .map(|rate| DefaultKeyedRateLimiter::keyed(rate.quota())),
        config,
        store,
        clock,
        metrics: BookMetrics::new(),
        deny_wake: Notify::new(),
        http,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    let app = routes::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "booking API stopped with an error");
        }
    });
    state.tasks.spawn(jobs::grace_checks(state.clone()));
    state.tasks.spawn(jobs::pruning(state.clone()));
    state.tasks.spawn(jobs::tidy_login_rates(state.clone()));
    state.tasks.spawn(deny::worker(state.clone()));
    tracing::info!(
        addr = %bound,
        audience = %state.config.audience,
        backend = state.store.backend(),
        check_every = ?state.config.check_every,
        tidy_every = ?state.config.tidy_every,
        "booking server serving"
    );
    Ok(RunningBookServer { state, addr: bound })
}

impl AppState {
    /// `read` applied to the loaded manifest, or to an empty one before the first replace.
    pub async fn read_manifest<R>(
        &self,
        read: impl FnOnce(&Manifest) -> R,
    ) -> Result<R, StoreError> {
        match self.store.manifest().await {
            Ok(loaded) => Ok(read(&loaded.manifest)),
            Err(StoreError::NoManifest) => Ok(read(&Manifest::default())),
            Err(other) => Err(other),
        }
    }
}

impl RunningBookServer {
    /// Where the API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`; the API is under `<url>/api/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (tests read metrics through it).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stop accepting, let requests in flight and the background jobs finish (at most
    /// 5 s), and return.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let left = wait_for_tasks(&self.state.tasks, SHUTDOWN_GRACE).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "booking server stopped with tasks still running"
            );
        } else {
            tracing::info!("booking server stopped");
        }
    }
}
