//! Background jobs: the grace check (spec §3.7; at start-up, so no-shows whose grace
//! passed while the server was down are cancelled at once, then every `check_every`),
//! pruning ended bookings (§3.9, every `tidy_every`), and forgetting full login-rate
//! buckets.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::AppState;

/// Cancel no-shows at once and then every `check_every`, until shutdown.
pub async fn grace_checks(state: Arc<AppState>) {
    let mut every = tokio::time::interval(state.config.check_every);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match state.store.cancel_no_shows(state.clock.now()).await {
            Ok(cancelled) if cancelled.is_empty() => {}
            Ok(cancelled) => {
                let names: Vec<&str> = cancelled.iter().map(|b| b.name.as_str()).collect();
                state
                    .metrics
                    .cancelled("auto-grace-check", cancelled.len() as u64);
                tracing::info!(bookings = ?names, "grace check cancelled bookings that were not started");
            }
            Err(e) => tracing::warn!(error = %e, "grace check failed"),
        }
        state.metrics.grace_checks.inc();
    }
}

/// Prune every `tidy_every` (first after one period), until shutdown.
pub async fn pruning(state: Arc<AppState>) {
    let mut every = tokio::time::interval(state.config.tidy_every);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match state.store.prune(state.clock.now()).await {
            Ok(0) => tracing::debug!("pruning: nothing ended"),
            Ok(moved) => tracing::info!(moved, "pruning moved ended bookings to old bookings"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }
}

/// Forget login-rate buckets that are full again, every minute, until shutdown.
pub async fn tidy_login_rates(state: Arc<AppState>) {
    let Some(limiter) = &state.login_rate else {
        return;
    };
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}
