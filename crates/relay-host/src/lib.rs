//! `relay host`: the experiment side of the relay.
//!
//! A host runs next to an experiment. Local programs feed it (ffmpeg POSTs MPEG-TS to
//! `/ts/{feed}`, a serial bridge talks over `/ws/{feed}`), and destination rules carry
//! each feed or `stream/` aggregate to the cloud relay over reconnecting websockets, with
//! whatever the relay sends coming back to the same local topic. Rules are managed over a
//! local REST API, a JSON command API on feed `api`, and a rules file.
//!
//! Modules:
//! - [`hub`]: topics, `stream/` aggregation and per-subscriber bounded queues.
//! - [`ingest`]: the 1 ms-gap framing of `/ts` bodies into one message per burst.
//! - [`link`]: the [`link::Connector`] trait and its `relay_client::Session` implementation.
//! - [`destinations`]: destination rules, their relay links and raw recording.
//! - [`drops`]: what the host dropped (full queues, links down), for `/api` and the log.
//! - [`commands`]: the websocket JSON command API and stream rules.
//! - [`rules_file`]: start-up rules from a TOML/JSON file, reloadable for token rotation.
//! - [`listener`]: the accept loop, with a header-read timeout.
//! - [`server`]: the local HTTP routes (`/ts`, `/ws`, `/api/...`, `/healthcheck`).
//! - [`state`]: what the handlers share.
//!
//! [`RunningHost::start`] puts these together.

#![warn(missing_docs)]

pub mod commands;
pub mod destinations;
pub mod drops;
pub mod hub;
pub mod ingest;
pub mod link;
pub mod listener;
pub mod rules_file;
pub mod server;
pub mod state;

use relay_common::shutdown::wait_for_tasks;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use destinations::DestinationRule;
pub use link::{Connector, SessionConnector, SharedConnector};
pub use rules_file::{ApplySummary, RulesFileError, RulesLoader};
pub use state::HostState;

/// How long shutdown waits for tasks it has told to stop at once.
const STOP_NOW_GRACE: Duration = Duration::from_secs(1);

/// Largest `/ts` message by default; bigger bursts are split (never truncated).
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the local HTTP/websocket server listens (127.0.0.1:8888 by default).
    pub listen: SocketAddr,
    /// `VW_API`: a websocket URL for a start-up destination on feed `api`.
    pub api_destination: Option<String>,
    /// Start-up rules file.
    pub rules_file: Option<PathBuf>,
    /// Largest `/ts` message.
    pub max_frame: usize,
    /// Browser origins allowed besides localhost ones.
    pub allowed_origins: Vec<String>,
    /// `VW_ALLOWED_HOSTS`: `Host` names the local API answers besides loopback ones and
    /// the listen address. Protects against DNS rebinding (a foreign page whose name
    /// resolves to 127.0.0.1). Default: none.
    pub allowed_hosts: Vec<String>,
    /// `VW_RECORD_DIR`: the only directory rules may record (`file`) into. Protects the
    /// experiment's files from being overwritten through a rule. Default: none, which
    /// refuses every rule with a `file`.
    pub record_dir: Option<PathBuf>,
    /// `VW_API_REMOTE_CHANGES`: let commands from the relay (over a destination on feed
    /// `api`) add and delete rules. Protects the host's rules from relay users. Default:
    /// false (remote `list` and `healthcheck` only).
    pub api_remote_changes: bool,
    /// How long shutdown waits for open requests.
    pub shutdown_grace: Duration,
    /// `VW_HEADER_TIMEOUT_MS`: how long a client may take to send its request headers
    /// before the connection is closed. Protects against slowloris clients holding
    /// connections open. Default: 10 s.
    pub header_timeout: Duration,
    /// Deadline for one write (a batch, a ping or a close) to a local `/ws` client; a
    /// client that does not read for this long is disconnected. Protects the host's
    /// memory and task from a stalled local program. Default: 10 s (as the relay's
    /// `RELAY_WRITE_TIMEOUT`).
    pub ws_write_timeout: Duration,
    /// How often, at most, the drop totals are logged (only when they grew). Default: 30 s.
    pub drop_log_every: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8888)),
            api_destination: None,
            rules_file: None,
            max_frame: DEFAULT_MAX_FRAME,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            record_dir: None,
            api_remote_changes: false,
            shutdown_grace: Duration::from_secs(5),
            header_timeout: listener::DEFAULT_HEADER_TIMEOUT,
            ws_write_timeout: server::DEFAULT_WS_WRITE_TIMEOUT,
            drop_log_every: drops::DEFAULT_DROP_LOG_EVERY,
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The local listener could not be bound (e.g. the port is in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// `VW_RECORD_DIR` is not an existing directory.
    #[error("{0}")]
    RecordDir(String),
    /// The rules file could not be read, parsed or applied.
    #[error(transparent)]
    Rules(#[from] RulesFileError),
}

/// A started host. Dropping it does not stop it; call [`RunningHost::shutdown`].
pub struct RunningHost {
    addr: SocketAddr,
    state: Arc<HostState>,
    rules: Option<RulesLoader>,
    shutdown_grace: Duration,
}

impl RunningHost {
    /// Binds, loads the rules file and the `VW_API` rule, and starts serving.
    pub async fn start(config: HostConfig, connector: SharedConnector) -> Result<Self, HostError> {
        let mut state = HostState::new(connector, config.api_destination.clone(), config.max_frame);
        let record_dir = config
            .record_dir
            .as_deref()
            .map(destinations::canonical_record_dir)
            .transpose()
            .map_err(HostError::RecordDir)?;
        state.destinations.set_record_dir(record_dir);
        state.api_remote_changes = config.api_remote_changes;
        state.ws_write_timeout = config.ws_write_timeout;
        let state = Arc::new(state);
        let rules = config.rules_file.as_ref().map(RulesLoader::new);
        if let Some(rules) = &rules {
            rules.apply(&state)?;
        }
        state.start_api_rule();
        server::spawn_command_api(&state);
        state
            .tasks
            .spawn(drops::log_drops(state.clone(), config.drop_log_every));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| HostError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HostError::Bind {
            addr: config.listen,
            source,
        })?;
        let app = server::router(
            state.clone(),
            server::OriginPolicy {
                allowed: config.allowed_origins.clone(),
            },
            server::HostPolicy {
                allowed: config.allowed_hosts.clone(),
                listen: Some(addr.ip()),
            },
        );
        state.tasks.spawn(listener::serve(
            listener,
            app,
            config.header_timeout,
            state.shutdown.clone(),
        ));
        tracing::info!(%addr, "relay host listening");
        Ok(RunningHost {
            addr,
            state,
            rules,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The address actually bound (useful when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base of the local routes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The hub, destinations and shutdown tokens the handlers share.
    pub fn state(&self) -> &Arc<HostState> {
        &self.state
    }

    /// Re-reads the rules file (for SIGHUP). Without a rules file this does nothing.
    pub fn reload_rules(&self) -> Result<Option<ApplySummary>, RulesFileError> {
        self.rules
            .as_ref()
            .map(|r| r.apply(&self.state))
            .transpose()
    }

    /// Closes local websocket clients with 1001 "going away", stops accepting, waits up to
    /// the grace period for open requests (then cuts open ingests), and closes every
    /// destination.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.shutdown.cancel();
        if wait_for_tasks(&state.tasks, self.shutdown_grace).await > 0 {
            tracing::warn!("open requests did not finish within the grace period; stopping anyway");
            state.stop_now.cancel();
            let left = wait_for_tasks(&state.tasks, STOP_NOW_GRACE).await;
            if left > 0 {
                tracing::warn!(tasks = left, "local tasks still running after shutdown");
            }
        }
        let left = state.destinations.stop_all(STOP_NOW_GRACE).await;
        if left > 0 {
            tracing::warn!(
                destinations = left,
                "destinations still running after shutdown"
            );
        }
    }
}
