//! `relay serve`: the cloud side of the relay.
//!
//! Browsers and experiments trade a JWT for a one-time websocket URL on the **access**
//! port, then join a topic on the **relay** port, where every message from a writer is
//! copied to every other reader of the same topic.
//!
//! - [`config`]: everything the server can be told, with the reference's defaults.
//! - [`access`]: the access API (`/session/{topic}`, `/bids/*`, `/status`, `/metrics`).
//! - [`admission`]: why a request is refused ([`admission::Refusal`]) and the one ticket
//!   check the access API and the relay port share.
//! - [`crossbar`]: websocket admission on the relay port, `/stats` page.
//! - [`connection`]: one admitted websocket (reader, writer, ping, expiry, close).
//! - [`cluster`]: `relay serve --nats`: topics, codes, denies and status shared by several
//!   nodes through NATS.
//! - [`deny_file`]: the deny list saved under `RELAY_STATE_DIR`, so it survives a restart.
//! - [`direct`]: `RELAY_DIRECT_WRITES` (on by default): publishers write frames straight
//!   to a plain connection's socket when nothing is queued for it.
//! - [`hub`]: topics, bounded subscriber queues and non-blocking fan-out.
//! - [`open`]: `relay crossbar`, the open mode without tokens (a LAN or a laptop).
//! - [`stats`]: the `stats` topic reporter; [`status`]: the report formats.
//! - [`limits`]: connection caps and access rate limits; [`client_addr`]: who a request
//!   is from; [`timeouts`]: the header-read timeout of both ports.
//! - [`metrics`], [`error`], [`state`]: Prometheus metrics, JSON errors, shared state.
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay_server::StartError> {
//! let server = relay_server::RunningServer::start(
//!     relay_server::ServerConfig::local(b"secret".to_vec()),
//! ).await?;
//! println!("POST {}/session/<topic>, then dial the returned uri", server.access_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod access;
pub mod admission;
pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod crossbar;
pub mod deny_file;
pub mod direct;
pub mod error;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod open;
pub mod state;
pub mod stats;
pub mod status;
pub mod timeouts;

pub use cluster::ClusterConfig;
pub use config::{ServerConfig, TlsFiles};

use cluster::codes::{ClusterCodes, Codes};
use hub::Hub;
use metrics::Metrics;
use relay_auth::{CodeLimits, CodeStore, DenyStore, Verifier};
use relay_common::shutdown::{CancellationToken, TaskTracker};
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// One of the two listeners could not be set up.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address that listener was configured with.
        addr: SocketAddr,
        /// Which listener: `"access API"` or `"relay"`.
        what: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("cannot load TLS certificate/key: {0}")]
    Tls(std::io::Error),
    /// A setting is out of range (see [`ServerConfig::validate`]); one message per setting.
    #[error("{}", .0.join("; "))]
    Config(Vec<String>),
    /// The saved deny list (`RELAY_STATE_DIR`) could not be read, parsed or written.
    #[error("cannot use the deny list state file {0}")]
    State(deny_file::StateFileError),
    /// `--nats` is set but the node could not join the cluster.
    #[error("cannot join the cluster: {0}")]
    Cluster(cluster::ClusterError),
}

/// A running server; [`RunningServer::shutdown`] closes every connection with "going
/// away" and stops both listeners.
///
/// Every connection and background loop runs in the server's [`TaskTracker`] and stops on
/// its [`CancellationToken`]; shutdown cancels, then waits for the tracker to empty.
pub struct RunningServer {
    state: Arc<AppState>,
    access_addr: SocketAddr,
    relay_addr: SocketAddr,
    handles: [axum_server::Handle<SocketAddr>; 2],
    servers: Vec<JoinHandle<()>>,
}

impl RunningServer {
    /// Bind both ports and start serving.
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        // Both ports may use TLS; rustls needs a process-wide provider. Installing twice
        // (several servers in one test process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.validate().map_err(StartError::Config)?;
        let access_listener = bind(config.access_listen, "access API")?;
        let relay_listener = bind(config.relay_listen, "relay")?;
        let access_addr = local_addr(&access_listener, config.access_listen, "access API")?;
        let relay_addr = local_addr(&relay_listener, config.relay_listen, "relay")?;
        let tls = match &config.tls {
            Some(files) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .map_err(StartError::Tls)?,
            ),
            None => None,
        };
        let (http, ws) = if tls.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        };
        let audience = config
            .audience
            .clone()
            .unwrap_or_else(|| format!("{http}://{access_addr}"));
        let relay_url = config
            .relay_url
            .clone()
            .unwrap_or_else(|| format!("{ws}://{relay_addr}"));
        let metrics = Arc::new(match &config.cluster {
            Some(_) => Metrics::clustered(),
            None => Metrics::new(),
        });
        let limits = config.queue_limits();
        let deny = DenyStore::new();
        let deny_file = match &config.state_dir {
            Some(dir) => {
                let (file, entries) =
                    deny_file::DenyFile::open(dir, relay_common::clock::unix_now())
                        .map_err(StartError::State)?;
                for (bid, exp) in &entries {
                    deny.deny(bid, *exp);
                }
                // Rewritten at once: drops the expired entries and proves the directory is
                // writable before the first deny needs it.
                file.save(&deny).map_err(StartError::State)?;
                tracing::info!(file = %file.path().display(), denied = entries.len(), "deny list loaded");
                Some(Arc::new(file))
            }
            None => None,
        };
        let code_limits = CodeLimits {
            per_booking: config.max_codes_per_booking,
            total: config.max_codes,
        };
        let ledger = CodeStore::with_limits(config.code_ttl, code_limits);
        let (cluster, codes, cluster_tasks) = match &config.cluster {
            Some(cluster_config) => {
                let cluster_metrics = metrics.cluster.clone().unwrap_or_default();
                let (cluster, tasks) =
                    cluster::Cluster::connect(cluster_config, config.code_ttl, cluster_metrics)
                        .await
                        .map_err(StartError::Cluster)?;
                let codes = Codes::Cluster(ClusterCodes::new(cluster.clone(), ledger));
                (Some(cluster), codes, Some(tasks))
            }
            None => (None, Codes::Local(ledger), None),
        };
        let hub = Hub::new(limits, metrics.clone());
        if let Some(cluster) = &cluster {
            hub.set_cluster(cluster.clone());
        }
        let state = Arc::new(AppState {
            verifier: Verifier::new(&config.secret, config.leeway_secs),
            codes,
            deny,
            deny_file,
            hub,
            metrics,
            rates: limits::AccessRates::new(&config.limits),
            caps: limits::ConnectionCaps::new(&config.limits),
            audience: trim_slash(audience),
            relay_url: trim_slash(relay_url),
            config,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            cluster,
        });
        if let (Some(cluster), Some(background)) = (&state.cluster, cluster_tasks) {
            cluster.run(
                background,
                state.clone(),
                &state.tasks,
                state.shutdown.child_token(),
            );
        }

        let handles = [axum_server::Handle::new(), axum_server::Handle::new()];
        let apps = [
            (
                access_listener,
                access_addr,
                "access API",
                access::router(state.clone()),
                handles[0].clone(),
            ),
            (
                relay_listener,
                relay_addr,
                "relay",
                crossbar::router(state.clone()),
                handles[1].clone(),
            ),
        ];
        let mut servers = Vec::new();
        let header_timeout = state.config.header_read_timeout;
        for (listener, addr, what, app, handle) in apps {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            let task = match &tls {
                Some(tls) => {
                    // Nagle's algorithm would hold small messages back for up to 40 ms.
                    let mut server = axum_server::from_tcp_rustls(listener, tls.clone())
                        .map_err(|source| StartError::Bind { addr, what, source })?
                        .map(|tls| {
                            let tls = tls.acceptor(axum_server::accept::NoDelayAcceptor::new());
                            timeouts::FirstByteDeadline::new(tls, header_timeout)
                        });
                    timeouts::configure(server.http_builder(), header_timeout);
                    tokio::spawn(async move {
                        if let Err(e) = server.handle(handle).serve(service).await {
                            tracing::error!(error = %e, "server stopped with an error");
                        }
                    })
                }
                None if state.config.direct_writes && what == "relay" => {
                    // Direct writes: each socket is shared with its connection's direct writer.
                    let mut server =
                        axum_server::from_tcp(listener)
                            .map_err(|source| StartError::Bind { addr, what, source })?
                            .acceptor(timeouts::FirstByteDeadline::new(
                                direct::DirectAcceptor::new(
                                    axum_server::accept::NoDelayAcceptor::new(),
                                ),
                                header_timeout,
                            ));
                    timeouts::configure(server.http_builder(), header_timeout);
                    tokio::spawn(async move {
                        if let Err(e) = server.handle(handle).serve(service).await {
                            tracing::error!(error = %e, "server stopped with an error");
                        }
                    })
                }
                None => {
                    let mut server = axum_server::from_tcp(listener)
                        .map_err(|source| StartError::Bind { addr, what, source })?
                        .acceptor(timeouts::FirstByteDeadline::new(
                            axum_server::accept::NoDelayAcceptor::new(),
                            header_timeout,
                        ));
                    timeouts::configure(server.http_builder(), header_timeout);
                    tokio::spawn(async move {
                        if let Err(e) = server.handle(handle).serve(service).await {
                            tracing::error!(error = %e, "server stopped with an error");
                        }
                    })
                }
            };
            servers.push(task);
        }
        state.tasks.spawn(stats::run(state.clone()));
        state.tasks.spawn(tidy(state.clone()));
        state.tasks.spawn(tidy_rates(state.clone()));
        tracing::info!(access = %access_addr, relay = %relay_addr, audience = %state.audience, relay_url = %state.relay_url, "relay serving");
        tracing::info!(header_read_timeout = ?header_timeout, limits = ?state.config.limits, trusted_proxies = ?state.config.trusted_proxies, "limits");
        Ok(RunningServer {
            state,
            access_addr,
            relay_addr,
            handles,
            servers,
        })
    }

    /// The access API's base URL (the audience user tokens must carry).
    pub fn access_url(&self) -> &str {
        &self.state.audience
    }

    /// The relay's websocket base URL.
    pub fn relay_url(&self) -> &str {
        &self.state.relay_url
    }

    /// Where the access API listens.
    pub fn access_addr(&self) -> SocketAddr {
        self.access_addr
    }

    /// Where the websocket relay listens.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// Connections currently registered (user connections plus the stats reporter).
    pub fn connection_count(&self) -> usize {
        self.state.hub.connection_count()
    }

    /// This node's place in the cluster (`ServerConfig::cluster`); `None` on a single node.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.state.cluster.as_ref()
    }

    /// Connections whose frames are written directly (`RELAY_DIRECT_WRITES`).
    pub fn direct_connection_count(&self) -> usize {
        let connections = self.state.hub.connections();
        connections.iter().filter(|c| c.is_direct()).count()
    }

    /// The tracker holding every connection and background task of this server. After
    /// [`RunningServer::shutdown`] returns it is closed and, unless a connection outlived
    /// the grace period, empty.
    pub fn tasks(&self) -> TaskTracker {
        self.state.tasks.clone()
    }

    /// Cancel the server's token (the stats reporter and the tidy loop stop), close every
    /// connection with 1001 "going away", wait up to 5 s for every tracked task to finish,
    /// then stop both listeners gracefully.
    pub async fn shutdown(self) {
        self.state.close_connections().await;
        for handle in &self.handles {
            handle.graceful_shutdown(Some(state::LISTENER_GRACE));
        }
        for task in self.servers {
            let _ = task.await;
        }
        tracing::info!("relay stopped");
    }
}

fn trim_slash(url: String) -> String {
    url.trim_end_matches('/').to_owned()
}

fn bind(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind {
        addr,
        what,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, what, source })?;
    Ok(listener)
}

fn local_addr(
    listener: &std::net::TcpListener,
    addr: SocketAddr,
    what: &'static str,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, what, source })
}

/// Forget full rate-limit buckets every 10 s, until shutdown.
async fn tidy_rates(state: Arc<AppState>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        state.rates.prune();
    }
}

/// Forget expired deny/allow entries and codes every `tidy_every`, until shutdown.
async fn tidy(state: Arc<AppState>) {
    let mut every = tokio::time::interval(state.config.tidy_every.max(Duration::from_secs(1)));
    every.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let bids = state.deny.prune(state.now_unix());
        if bids > 0 {
            if let Err(e) = state.save_deny_list().await {
                tracing::error!(error = %e, "cannot save the pruned deny list");
            }
        }
        let codes = state.codes.prune(state.now_instant());
        tracing::debug!(bids, codes, "tidied");
    }
}
