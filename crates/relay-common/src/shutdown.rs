//! One way to stop: a [`CancellationToken`] says "stop", a [`TaskTracker`] says "all stopped".
//!
//! Every long-lived piece (a server, a connection, a background loop, a client's run loop)
//! takes a token, usually a [child](CancellationToken::child_token) of its owner's, and
//! returns when it is cancelled. Owners spawn their tasks through a [`TaskTracker`] and, to
//! stop, cancel the token, [close](TaskTracker::close) the tracker and
//! [wait](TaskTracker::wait) on it. Nothing polls and nothing is aborted.
//!
//! [`cancel_on_signal`] is the one place the `relay` binary turns SIGINT and SIGTERM into a
//! cancelled token.

use std::time::Duration;

pub use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFuture};
pub use tokio_util::task::TaskTracker;

/// A token that is cancelled when the process receives SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed before this returns, so a signal that arrives at any later
/// moment stops the program through the token instead of killing it. Must be called from
/// inside a tokio runtime. Fails only if the operating system refuses the handlers.
pub fn cancel_on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let fire = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            let name = tokio::select! {
                () = fire.cancelled() => return,
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "{name} received: shutting down");
            fire.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            () = fire.cancelled() => {}
            result = tokio::signal::ctrl_c() => {
                if result.is_ok() {
                    tracing::info!(signal = "Ctrl-C", "Ctrl-C received: shutting down");
                    fire.cancel();
                }
            }
        }
    });
    Ok(token)
}

/// Closes `tasks` and waits for every task in it to finish, for at most `limit`.
///
/// Returns how many tasks were still running when the limit passed (0 when all finished).
pub async fn wait_for_tasks(tasks: &TaskTracker, limit: Duration) -> usize {
    tasks.close();
    match tokio::time::timeout(limit, tasks.wait()).await {
        Ok(()) => 0,
        Err(_) => tasks.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_returns_once_every_tracked_task_saw_the_cancellation() {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        for _ in 0..3 {
            let stop = stop.child_token();
            tasks.spawn(async move { stop.cancelled().await });
        }
        assert_eq!(tasks.len(), 3);
        stop.cancel();
        assert_eq!(wait_for_tasks(&tasks, Duration::from_secs(5)).await, 0);
        assert!(tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_the_limit_and_counts_the_stragglers() {
        let tasks = TaskTracker::new();
        tasks.spawn(std::future::pending::<()>());
        assert_eq!(wait_for_tasks(&tasks, Duration::from_secs(5)).await, 1);
    }

    #[tokio::test]
    async fn the_signal_token_starts_uncancelled() {
        let token = cancel_on_signal().unwrap();
        assert!(!token.is_cancelled());
        token.cancel();
    }
}
