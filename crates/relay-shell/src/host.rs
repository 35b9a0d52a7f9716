//! The experiment side: keep a management connection to the relay and, for each `connect`
//! action, dial the pair topic and the local TCP service and pipe them together.
//!
//! Unlike the reference, a `disconnect` action hangs up that connection, either side
//! closing closes the other, and nothing of a connection outlives it.

use crate::pipe::{pipe, PipeTimeouts};
use relay_client::session::{connect_once, Message, Session, SessionConfig};
use relay_common::action::ConnectionAction;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::Instrument;

/// What the shell host needs.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Access URL of the host's management connection, e.g.
    /// `https://relay.example.io/access/shell/pendulum-01`.
    pub access_url: String,
    /// A token with the `host` scope for that shell id.
    pub token: String,
    /// The local service to expose, e.g. `localhost:22`.
    pub target: String,
    /// Extra CA file for wss/https besides the system roots.
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// Ping, idle and write timings of the management connection and of every tunnel.
    pub timeouts: PipeTimeouts,
}

/// Live tunnelled connections, by the uuid of their `connect` action.
#[derive(Default, Clone)]
struct Connections(Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>);

impl Connections {
    fn insert(&self, uuid: &str, hang_up: oneshot::Sender<()>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid.to_owned(), hang_up);
    }
    fn remove(&self, uuid: &str) -> Option<oneshot::Sender<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uuid)
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A running shell host.
pub struct ShellHost {
    config: HostConfig,
    session: Session,
    connections: Connections,
}

impl ShellHost {
    /// Start the management connection and serve `connect` actions until [`ShellHost::run`]
    /// returns (it never does by itself).
    pub fn start(config: HostConfig) -> Self {
        let mut session_config =
            SessionConfig::new(config.access_url.clone()).with_token(config.token.clone());
        session_config = config.timeouts.apply(session_config);
        if let Some(ca) = &config.extra_ca_file {
            session_config = session_config.with_extra_ca_file(ca.clone());
        }
        ShellHost {
            config,
            session: Session::spawn(session_config),
            connections: Connections::default(),
        }
    }

    /// The management connection's state, to wait for "connected" or see a refused token.
    pub fn state(&self) -> tokio::sync::watch::Receiver<relay_client::SessionState> {
        self.session.state()
    }

    /// How many tunnelled connections are open.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Serve actions until the management session is closed.
    pub async fn run(&mut self) {
        while let Some(message) = self.session.recv().await {
            let Message::Text(text) = message else {
                continue;
            };
            match ConnectionAction::parse(&text) {
                Some(ConnectionAction::Connect { uri, uuid }) => {
                    let (hang_up, hung_up) = oneshot::channel();
                    self.connections.insert(&uuid, hang_up);
                    let span = tracing::info_span!("shell", uuid = %uuid);
                    let connections = self.connections.clone();
                    let config = self.config.clone();
                    tokio::spawn(
                        async move {
                            serve_connection(&config, &uri, hung_up).await;
                            connections.remove(&uuid);
                        }
                        .instrument(span),
                    );
                }
                Some(ConnectionAction::Disconnect { uuid }) => {
                    if let Some(hang_up) = self.connections.remove(&uuid) {
                        let _ = hang_up.send(());
                    }
                }
                None => {
                    tracing::warn!(message = %text, "ignoring a management message that is not a connection action")
                }
            }
        }
    }

    /// Stop the management connection (live tunnels end when their peers close).
    pub async fn close(self) {
        self.session.close().await;
    }
}

async fn serve_connection(config: &HostConfig, uri: &str, hung_up: oneshot::Receiver<()>) {
    let mut ws_config = config.timeouts.apply(SessionConfig::new(uri));
    if let Some(ca) = &config.extra_ca_file {
        ws_config = ws_config.with_extra_ca_file(ca.clone());
    }
    let ws = match connect_once(&ws_config).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::warn!(error = %e, "cannot join the relay side of a shell connection");
            return;
        }
    };
    let tcp = match TcpStream::connect(&config.target).await {
        Ok(tcp) => tcp,
        Err(e) => {
            // Dropping the websocket closes it, and the relay closes the admin's side.
            tracing::warn!(target = %config.target, error = %e, "cannot reach the local service");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    tracing::info!(target = %config.target, "shell connection open");
    let (end, stats) = pipe(ws, tcp, config.timeouts, async {
        let _ = hung_up.await;
    })
    .await;
    tracing::info!(
        ?end,
        up = stats.tcp_to_websocket,
        down = stats.websocket_to_tcp,
        "shell connection closed"
    );
}
