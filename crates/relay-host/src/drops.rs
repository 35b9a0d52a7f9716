//! What the host drops, counted: a message is dropped only where a queue is full or the
//! relay link is down, and every such place adds to one of these counters.
//!
//! - `queue_full`: a subscriber's hub queue (a local `/ws` client or a destination) was
//!   full ([`crate::hub::Hub::dropped_messages`]).
//! - `link_down`: a destination's relay link was not connected, so a live message was not
//!   sent (the relay gets live data only; nothing is stored for later).
//! - `link_busy`: a destination's relay link was connected but its send queue was full.
//!
//! `GET /api/status` shows each destination's own counts; `GET /api/drops` shows the
//! host's totals; [`log_drops`] writes the totals to the log when they change, at most
//! once per period.

use crate::state::HostState;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often, at most, the host logs its drop totals (only when they changed).
pub const DEFAULT_DROP_LOG_EVERY: Duration = Duration::from_secs(30);

/// Counters of messages a destination's link did not carry (one per rule, and one for the
/// host's totals).
#[derive(Debug, Default)]
pub struct LinkDrops {
    /// Counted here: the link was down.
    link_down: AtomicU64,
    /// Counted here: the link's queue was full.
    link_busy: AtomicU64,
    /// Taken over from the link's own counter (its session's queue was full).
    link_queue: AtomicU64,
    /// Taken over from the rule's hub queue (it was full).
    queue_full: AtomicU64,
}

impl LinkDrops {
    /// Counts a message not sent because the link was down.
    pub fn count_link_down(&self) {
        self.link_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message not sent because the link's queue was full.
    pub fn count_link_busy(&self) {
        self.add_link_busy(1);
    }

    /// Counts `n` messages not sent because the link's queue was full.
    pub fn add_link_busy(&self, n: u64) {
        self.link_busy.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes over the link's own drop count (a running total); returns how much it grew.
    pub fn set_link_queue_full(&self, total: u64) -> u64 {
        total.saturating_sub(self.link_queue.swap(total, Ordering::Relaxed))
    }

    /// Takes over the rule's hub queue drop count (a running total).
    pub fn set_queue_full(&self, total: u64) {
        self.queue_full.store(total, Ordering::Relaxed);
    }

    /// Messages dropped so far because the link was down.
    pub fn link_down(&self) -> u64 {
        self.link_down.load(Ordering::Relaxed)
    }

    /// Messages dropped so far because the link (or its session) had a full queue.
    pub fn link_busy(&self) -> u64 {
        self.link_busy.load(Ordering::Relaxed) + self.link_queue.load(Ordering::Relaxed)
    }

    /// Messages the rule's full hub queue did not take.
    pub fn queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }
}

/// The host's drop totals since it started (`GET /api/drops`, and the periodic log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropTotals {
    /// Messages a full subscriber queue (local client or destination) did not take.
    pub queue_full: u64,
    /// Messages destinations did not send because their relay link was down.
    pub link_down: u64,
    /// Messages destinations did not send because their relay link's queue was full.
    pub link_busy: u64,
}

impl DropTotals {
    /// The totals of `state` now.
    pub fn of(state: &HostState) -> Self {
        let links = state.destinations.drop_totals();
        DropTotals {
            queue_full: state.hub.dropped_messages(),
            link_down: links.link_down(),
            link_busy: links.link_busy(),
        }
    }

    /// All three added up.
    pub fn sum(&self) -> u64 {
        self.queue_full + self.link_down + self.link_busy
    }
}

/// Logs the drop totals (a warning) every `every` in which they grew, until shutdown.
pub async fn log_drops(state: Arc<HostState>, every: Duration) {
    let mut logged = DropTotals::default();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = DropTotals::of(&state);
        if now != logged {
            tracing::warn!(
                queue_full = now.queue_full,
                link_down = now.link_down,
                link_busy = now.link_busy,
                new = now.sum().saturating_sub(logged.sum()),
                "messages dropped since start"
            );
            logged = now;
        }
    }
    let now = DropTotals::of(&state);
    if now.sum() > 0 {
        tracing::info!(
            queue_full = now.queue_full,
            link_down = now.link_down,
            link_busy = now.link_busy,
            "messages dropped in total"
        );
    }
}
