//! Waiting for a condition with a deadline: the one way tests (and relay-bench) wait for
//! something to become true, instead of sleeping and hoping. Every variant polls the
//! condition every [`POLL`], checks it once more at the deadline, and on failure names what
//! was awaited and for how long.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(10);

/// A condition that did not hold before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was awaited, as the caller described it.
    pub what: String,
    /// How long it was awaited.
    pub within: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.within, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// Polls the async `condition` until it holds, or fails with [`TimedOut`] once `within`
/// has passed. Uses tokio's clock, so it also works under paused time.
pub async fn try_wait_until_async<F, Fut>(
    what: &str,
    within: Duration,
    mut condition: F,
) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                within,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `condition` until it holds, or fails with [`TimedOut`] once `within` has passed.
pub async fn try_wait_until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    try_wait_until_async(what, within, || std::future::ready(condition())).await
}

/// Waits until `condition` holds; panics with what was awaited after `within`.
pub async fn wait_until(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    if let Err(timed_out) = try_wait_until(what, within, condition).await {
        panic!("{timed_out}");
    }
}

/// Waits until the async `condition` holds; panics with what was awaited after `within`.
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(timed_out) = try_wait_until_async(what, within, condition).await {
        panic!("{timed_out}");
    }
}

/// The blocking [`wait_until`], for synchronous tests: polls on this thread with
/// `std::thread::sleep`, and panics with what was awaited after `within`.
pub fn wait_until_blocking(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "{}",
                TimedOut {
                    what: what.to_owned(),
                    within,
                }
            );
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_condition_that_becomes_true_ends_the_wait() {
        let polls = AtomicU32::new(0);
        wait_until("three polls", Duration::from_secs(1), || {
            polls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_names_what_was_awaited_and_for_how_long() {
        let started = tokio::time::Instant::now();
        let err = try_wait_until("the moon", Duration::from_millis(100), || false)
            .await
            .err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("timed out after 100ms waiting for the moon".to_owned())
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    #[should_panic(expected = "timed out after 20ms waiting for nothing")]
    fn the_blocking_wait_panics_with_the_same_message() {
        wait_until_blocking("nothing", Duration::from_millis(20), || false);
    }
}
