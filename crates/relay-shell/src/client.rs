//! The admin side: listen on a local port and give every accepted TCP connection exactly
//! one relay connection of its own (access POST with a `client` token, then dial), piped
//! until either side closes. No reconnect: a dropped tunnel is a closed TCP connection,
//! as the admin's ssh expects (the reference reconnected forever).

use crate::pipe::{pipe, PipeTimeouts};
use relay_client::session::{connect_once, SessionConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// What the shell client needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Access URL of the shell, e.g. `https://relay.example.io/access/shell/pendulum-01`.
    pub access_url: String,
    /// A token with the `client` scope for that shell id.
    pub token: String,
    /// Extra CA file for wss/https besides the system roots.
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// Most tunnelled connections at once; further ones wait.
    pub max_connections: usize,
    /// Ping, idle and write timings of every tunnel's relay connection.
    pub timeouts: PipeTimeouts,
}

/// Accept connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: ClientConfig) {
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let config = config.clone();
        let span = tracing::info_span!("shell-client", %peer);
        tokio::spawn(
            async move {
                tunnel(&config, tcp, peer).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn tunnel(config: &ClientConfig, tcp: TcpStream, peer: SocketAddr) {
    let mut session = config
        .timeouts
        .apply(SessionConfig::new(config.access_url.clone()).with_token(config.token.clone()));
    if let Some(ca) = &config.extra_ca_file {
        session = session.with_extra_ca_file(ca.clone());
    }
    let ws = match connect_once(&session).await {
        Ok(ws) => ws,
        Err(e) => {
            // The admin's ssh sees the connection close; the reason is here.
            tracing::error!(error = %e, "cannot open a relay connection for {peer}");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    tracing::info!("tunnel open");
    let (end, stats) = pipe(ws, tcp, config.timeouts, std::future::pending()).await;
    tracing::info!(
        ?end,
        up = stats.tcp_to_websocket,
        down = stats.websocket_to_tcp,
        "tunnel closed"
    );
}
