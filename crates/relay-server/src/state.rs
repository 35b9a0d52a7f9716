//! What every handler and connection of one server shares.

use crate::cluster::codes::Codes;
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::deny_file::{DenyFile, StateFileError};
use crate::hub::Hub;
use crate::hub::{CloseReason, Inbox, JoinRequest, Membership};
use crate::limits::{AccessRates, ConnectionCaps};
use crate::metrics::Metrics;
use relay_auth::{DenyStore, Verifier};
use relay_common::shutdown::{wait_for_tasks, CancellationToken, TaskTracker};
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for connections to finish their closing handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the listeners then get to finish in-flight HTTP requests.
pub(crate) const LISTENER_GRACE: Duration = Duration::from_secs(1);

/// Shared state of one running server.
pub struct AppState {
    /// The settings the server was started with; never changed while it runs.
    pub config: ServerConfig,
    /// The resolved access base URL (user tokens' audience).
    pub audience: String,
    /// The resolved websocket base URL (audience of code-store tokens).
    pub relay_url: String,
    /// Checks token signatures and times with the configured secret and leeway.
    pub verifier: Verifier,
    /// One-time codes waiting between `POST /session/{topic}` and the websocket upgrade.
    pub codes: Codes,
    /// Booking deny/allow lists (`/bids/*`); denied bookings are refused and disconnected.
    pub deny: DenyStore,
    /// Where the deny list is saved (`RELAY_STATE_DIR`); `None`: in memory only.
    pub deny_file: Option<Arc<DenyFile>>,
    /// Topics and connected subscribers, shared with every connection task.
    pub hub: Arc<Hub>,
    /// Prometheus counters served on `/metrics` (the same instance the hub counts into).
    pub metrics: Arc<Metrics>,
    /// Rate limits of the access routes (per booking, and failed logins per address).
    pub rates: AccessRates,
    /// Caps on open websockets (all, and per booking).
    pub caps: Arc<ConnectionCaps>,
    /// Cancelled once when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every connection and background task; shutdown waits on it.
    pub tasks: TaskTracker,
    /// This node's place in the cluster (`relay serve --nats`); `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
}

impl AppState {
    /// Join an upgraded connection to the hub, then close it at once if, meanwhile, its
    /// booking was denied or the server began shutting down: admission checked both before
    /// the upgrade, and `Hub::deny` / shutdown's `close_all` only reach connections already
    /// in the hub.
    pub(crate) fn join(&self, request: JoinRequest) -> (Membership, Inbox) {
        let (membership, inbox) = self.hub.join(request);
        // The deny list is written before `Hub::deny` runs, so a deny that missed this
        // connection in the hub is seen here; a later one finds it in the hub.
        if self.deny.is_denied(&membership.info.booking_id) {
            let _ = inbox.subscriber.close(CloseReason::Denied);
        }
        if self.shutdown.is_cancelled() {
            // Close everyone again (a no-op for the others) so this one also leaves with
            // "going away".
            self.hub.close_all(CloseReason::GoingAway);
        }
        tracing::info!(
            can_read = membership.info.can_read,
            can_write = membership.info.can_write,
            "connected"
        );
        (membership, inbox)
    }

    /// Publish `message` from the relay itself to the hub key `key` on every node (a shell
    /// host's actions); returns how many local members it was offered to.
    pub(crate) fn publish_from_relay(
        &self,
        key: &str,
        message: &axum::extract::ws::Message,
    ) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.forward_to_key(key, message);
        }
        self.hub.publish_to(key, message)
    }

    /// This node's name in the cluster; `None` on a single node.
    pub fn node_name(&self) -> Option<&str> {
        self.cluster.as_deref().map(Cluster::node)
    }

    /// Wall-clock unix seconds, for token and booking expiries.
    pub fn now_unix(&self) -> i64 {
        relay_common::clock::unix_now()
    }

    /// Save the deny list to the state file, if there is one (off the async workers: it
    /// writes and fsyncs).
    pub async fn save_deny_list(self: &Arc<Self>) -> Result<(), StateFileError> {
        let Some(file) = self.deny_file.clone() else {
            return Ok(());
        };
        let state = self.clone();
        let path = file.path().to_owned();
        tokio::task::spawn_blocking(move || file.save(&state.deny))
            .await
            .unwrap_or_else(|e| {
                Err(StateFileError {
                    path,
                    reason: format!("the writer stopped: {e}"),
                })
            })
    }

    /// Monotonic now from tokio's clock (pausable in tests), for code lifetimes.
    pub fn now_instant(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl AppState {
    /// The first half of every server's shutdown: cancel the token (background loops stop),
    /// close every connection with 1001 "going away", and wait up to 5 s for every tracked
    /// task. The caller then stops its listeners with [`LISTENER_GRACE`].
    pub(crate) async fn close_connections(&self) {
        self.shutdown.cancel();
        self.hub.close_all(CloseReason::GoingAway);
        let left = wait_for_tasks(&self.tasks, CLOSE_GRACE).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "connections still open after the grace period; stopping the listeners anyway"
            );
        }
    }
}
