//! What every handler of a host shares: the hub, the destinations and the start-up rules.

use crate::commands::API_RULE_ID;
use crate::destinations::{DestinationRule, Destinations};
use crate::hub::Hub;
use crate::link::SharedConnector;
use relay_common::shutdown::{CancellationToken, TaskTracker};
use std::sync::Arc;

/// Shared state of one running host.
pub struct HostState {
    /// The topics every feed, stream and subscriber meets on.
    pub hub: Arc<Hub>,
    /// The destination rules and their running relay links.
    pub destinations: Destinations,
    /// The `VW_API` rule, re-added after "delete all" so remote configuration survives.
    pub api_rule: Option<DestinationRule>,
    /// Largest message `/ts` ingest publishes; longer bursts are split.
    pub max_frame: usize,
    /// `VW_API_REMOTE_CHANGES`: whether commands from the relay (over a destination on feed
    /// `api`) may add and delete rules. Off by default: a relay user may only list rules
    /// (never with tokens) and health-check.
    pub api_remote_changes: bool,
    /// Deadline for one write to a local `/ws` client.
    pub ws_write_timeout: std::time::Duration,
    /// Cancelled at shutdown: the listener stops accepting, local websocket clients are
    /// closed with "going away" and the command API stops.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: open `/ts` ingests stop reading.
    pub stop_now: CancellationToken,
    /// The listener, local websocket clients, ingests and the command API; shutdown waits
    /// on it.
    pub tasks: TaskTracker,
}

impl HostState {
    /// Fresh state; a non-empty `api_destination` (from `VW_API`) becomes the `apiRule` rule
    /// carrying feed `api`; `max_frame` is the largest `/ts` message in bytes.
    pub fn new(
        connector: SharedConnector,
        api_destination: Option<String>,
        max_frame: usize,
    ) -> Self {
        let hub = Hub::new();
        let api_rule = api_destination
            .filter(|d| !d.is_empty())
            .map(|destination| DestinationRule {
                id: API_RULE_ID.to_string(),
                stream: crate::commands::API_FEED.to_string(),
                destination,
                ..Default::default()
            });
        HostState {
            destinations: Destinations::new(hub.clone(), connector),
            hub,
            api_rule,
            max_frame,
            api_remote_changes: false,
            ws_write_timeout: crate::server::DEFAULT_WS_WRITE_TIMEOUT,
            shutdown: CancellationToken::new(),
            stop_now: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Starts the `VW_API` rule if there is one.
    pub fn start_api_rule(&self) {
        if let Some(rule) = &self.api_rule {
            if let Err(e) = self.destinations.add(rule.clone()) {
                tracing::error!(error = %e, "the VW_API rule is not usable");
            }
        }
    }

    /// Deletes every destination, then restores the `VW_API` rule.
    pub fn delete_all_destinations(&self) {
        self.destinations.delete_all();
        self.start_api_rule();
    }
}
