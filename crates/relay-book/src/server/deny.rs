//! The relay deny worker (spec §4.7, fixed): when a started booking is cancelled, every
//! relay that carries its streams is told `POST {relay_url}/bids/deny?bid=&exp=` with a
//! `relay:admin` token, so the live session ends.
//!
//! The store queues one call per distinct relay URL in the cancellation's transaction, so
//! a call survives a restart. This worker makes the calls outside any lock, each in its own
//! task (so one hung relay delays no other call): woken at once by a cancellation, and
//! every `deny_poll_every` for retries. A 2xx answer is success;
//! anything else is recorded and retried with exponential backoff (`deny_backoff_min`
//! doubling up to `deny_backoff_max`) until the booking's end, then the call is marked
//! `failed`. It is never reported as success when it failed (the reference's "hotfix"
//! did, §7 item 14). Plain `http://` relays work, and any path in the URL is kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::header;

use super::AppState;
use crate::store::DenyCall;
use crate::timefmt::{Nanos, SECOND};
use crate::tokens;

/// Calls in flight at once. Each runs in its own task, so a relay that hangs until
/// `BOOK_REQUEST_TIMEOUT` holds up only its own calls.
const MAX_IN_FLIGHT: usize = 64;

/// Run until shutdown.
pub async fn worker(state: Arc<AppState>) {
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    loop {
        let room = MAX_IN_FLIGHT.saturating_sub(lock(&in_flight).len());
        if room > 0 {
            // In-flight calls are still due in the store until their attempt is recorded,
            // so ask for enough to find `room` new ones behind them.
            let limit = i64::try_from(room + lock(&in_flight).len()).unwrap_or(i64::MAX);
            match state.store.due_deny_calls(state.clock.now(), limit).await {
                Ok(due) => {
                    for call in due
                        .into_iter()
                        .filter(|call| lock(&in_flight).insert(call.id))
                    {
                        let (state, in_flight) = (state.clone(), in_flight.clone());
                        state.clone().tasks.spawn(async move {
                            let id = call.id;
                            tokio::select! {
                                () = state.shutdown.cancelled() => {}
                                () = attempt(&state, call) => {}
                            }
                            lock(&in_flight).remove(&id);
                            // A finished call makes room, and there may be more waiting.
                            state.deny_wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read due relay deny calls"),
            }
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = state.deny_wake.notified() => {}
            () = tokio::time::sleep(state.config.deny_poll_every) => {}
        }
    }
}

fn lock(set: &Mutex<HashSet<i64>>) -> std::sync::MutexGuard<'_, HashSet<i64>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The URL of a deny call: the relay's access URL (path kept) plus `/bids/deny`.
pub fn deny_url(relay_url: &str) -> String {
    format!("{}/bids/deny", relay_url.trim_end_matches('/'))
}

/// Make one call and record its outcome.
async fn attempt(state: &AppState, call: DenyCall) {
    let outcome = send(state, &call).await;
    let now = state.clock.now();
    let recorded = match &outcome {
        Ok(()) => {
            state.metrics.deny_call("ok");
            tracing::info!(booking = %call.booking, relay = %call.relay_url, attempt = call.attempts + 1, "relay deny call succeeded");
            state.store.record_deny_attempt(call.id, None, None).await
        }
        Err(error) => {
            let retry_at = next_attempt(
                now,
                call.attempts,
                call.exp.saturating_mul(SECOND),
                state.config.deny_backoff_min,
                state.config.deny_backoff_max,
            );
            if retry_at.is_some() {
                state.metrics.deny_call("error");
                tracing::warn!(booking = %call.booking, relay = %call.relay_url, attempt = call.attempts + 1, %error, "relay deny call failed; will retry");
            } else {
                state.metrics.deny_call("failed");
                tracing::error!(booking = %call.booking, relay = %call.relay_url, attempt = call.attempts + 1, %error, "relay deny call failed; giving up at the booking's end");
            }
            state
                .store
                .record_deny_attempt(call.id, Some(error), retry_at)
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::error!(booking = %call.booking, relay = %call.relay_url, error = %e, "cannot record a relay deny call attempt");
    }
}

/// POST the deny call; `Err` with a readable reason unless the relay answered 2xx.
async fn send(state: &AppState, call: &DenyCall) -> Result<(), String> {
    let claims = tokens::deny_claims(&call.relay_url, state.clock.now_secs());
    let token =
        tokens::sign(&claims, state.config.relay_secret.as_bytes()).map_err(|e| e.to_string())?;
    let response = state
        .http
        .post(deny_url(&call.relay_url))
        .query(&[
            ("bid", call.booking.as_str()),
            ("exp", &call.exp.to_string()),
        ])
        .header(header::AUTHORIZATION, token)
        .send()
        .await
        .map_err(|e| format!("cannot reach the relay: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!("relay answered {status}: {}", text.trim()))
}

/// When to try again after failed attempt number `attempts + 1`: `min · 2^attempts`,
/// at most `max`; `None` once that is at or past the booking's end (give up).
pub fn next_attempt(
    now: Nanos,
    attempts: i64,
    booking_end: Nanos,
    min: Duration,
    max: Duration,
) -> Option<Nanos> {
    let doublings = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let delay = min.saturating_mul(2u32.saturating_pow(doublings)).min(max);
    let delay = i64::try_from(delay.as_nanos()).unwrap_or(i64::MAX);
    let at = now.saturating_add(delay);
    (at < booking_end).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_stops_at_the_booking_end() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let end = 1_000 * SECOND;
        assert_eq!(next_attempt(0, 0, end, min, max), Some(SECOND));
        assert_eq!(next_attempt(0, 1, end, min, max), Some(2 * SECOND));
        assert_eq!(next_attempt(0, 5, end, min, max), Some(32 * SECOND));
        assert_eq!(next_attempt(0, 6, end, min, max), Some(60 * SECOND));
        assert_eq!(next_attempt(0, 40, end, min, max), Some(60 * SECOND));
        assert_eq!(next_attempt(990 * SECOND, 6, end, min, max), None);
    }

    #[test]
    fn the_path_of_the_relay_url_is_kept() {
        assert_eq!(
            deny_url("http://127.0.0.1:3000/access/"),
            "http://127.0.0.1:3000/access/bids/deny"
        );
        assert_eq!(
            deny_url("https://relay.example.org"),
            "https://relay.example.org/bids/deny"
        );
    }
}
