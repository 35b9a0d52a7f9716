//! The start of every long-running subcommand: a tokio runtime and the SIGINT/SIGTERM
//! token, with one way of reporting that either could not be had.

use relay_common::shutdown::{cancel_on_signal, CancellationToken};
use std::future::Future;
use std::process::ExitCode;

/// Runs `body` on a new tokio runtime with a token that SIGINT or SIGTERM cancels.
/// `program` names the subcommand in the error printed when the runtime or the signal
/// handlers cannot be set up (exit 1).
pub fn run_until_signal<F, Fut>(program: &str, body: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cancel_on_signal() {
            Ok(stop) => body(stop).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGINT/SIGTERM handlers");
                eprintln!("{program}: cannot install the SIGINT/SIGTERM handlers: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
