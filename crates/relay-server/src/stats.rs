//! The `stats` topic: an internal member that answers `{"cmd":"update"}` and reports
//! periodically, at most once per second.
//!
//! Unlike the reference, traffic on the topic never postpones the periodic report, a junk
//! message after an `update` does not trigger another, and the reporter drains its queue
//! continuously so a writer flooding `stats` only costs that writer dropped messages.

use crate::hub::{JoinRequest, Membership};
use crate::state::AppState;
use crate::status::stats_reports;
use axum::extract::ws::Message;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// The topic the reporter lives on.
pub const STATS_TOPIC: &str = "stats";
/// Reports are produced at most this often, however many updates are asked for.
const MIN_REPORT_GAP: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct Command {
    cmd: String,
}

fn is_update(message: &Message) -> bool {
    let parsed = match message {
        Message::Text(t) => serde_json::from_str::<Command>(t.as_str()).ok(),
        Message::Binary(b) => serde_json::from_slice::<Command>(b).ok(),
        _ => None,
    };
    parsed.is_some_and(|c| c.cmd == "update")
}

/// Run the reporter until the server shuts down (its token is cancelled or its
/// connection is closed).
pub async fn run(state: Arc<AppState>) {
    let (membership, mut inbox) = state.hub.join(JoinRequest {
        topic: STATS_TOPIC.into(),
        key: STATS_TOPIC.into(),
        paired: false,
        booking_id: String::new(),
        scopes: vec!["read".into(), "stats".into(), "write".into()],
        can_read: true,
        can_write: true,
        expires_at: None,
        user_agent: "crossbar".into(),
        remote_addr: "internal".into(),
    });
    let every = state.config.stats_every.max(MIN_REPORT_GAP);
    let mut next_periodic = Instant::now() + every;
    let mut last_report: Option<Instant> = None;
    let mut update_wanted = false;
    loop {
        let wake = match (update_wanted, last_report) {
            (true, Some(last)) => (last + MIN_REPORT_GAP).min(next_periodic),
            (true, None) => Instant::now(),
            (false, _) => next_periodic,
        };
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            message = inbox.queue.recv() => match message {
                Some(m) => {
                    update_wanted |= is_update(&m);
                    continue;
                }
                None => break,
            },
            changed = inbox.close.changed() => {
                if changed.is_err() || inbox.close.borrow().is_some() {
                    break;
                }
                continue;
            }
            () = sleep_until(wake) => {}
        }
        let now = Instant::now();
        let gap_ok = last_report.is_none_or(|last| now >= last + MIN_REPORT_GAP);
        if (update_wanted && gap_ok) || now >= next_periodic {
            publish_report(&state, &membership).await;
            last_report = Some(now);
            update_wanted = false;
            next_periodic = now + every;
        }
    }
}

async fn publish_report(state: &AppState, membership: &Membership) {
    // In a cluster: every node's connections, each with its `node`.
    let json = match &state.cluster {
        None => serde_json::to_string(&stats_reports(&state.hub)),
        Some(cluster) => {
            serde_json::to_string(&crate::status::cluster_connections(state, cluster, true).await)
        }
    }
    .unwrap_or_else(|_| "[]".into());
    let len = json.len();
    let message = Message::Text(json.into());
    membership
        .info
        .tx
        .record(len, membership.info.connected_instant.elapsed());
    membership.topic.publish(membership.info.id, &message);
}
