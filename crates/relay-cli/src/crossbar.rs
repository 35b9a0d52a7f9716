//! `relay crossbar`: the open mode for a lab's own LAN or a laptop. No tokens: websocat to
//! `ws://host/<topic>` (N:N), `/in/<topic>` → `/out/<topic>`, `/stats`. Listens on
//! `CROSSBAR_LISTEN` (default `127.0.0.1:8080`); a non-loopback address needs `--open`.

use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use crate::until_signal::run_until_signal;
use clap::{ArgAction, Args};
use relay_server::open::{CrossbarConfig, RunningCrossbar, NO_AUTH_WARNING};
use std::net::SocketAddr;
use std::process::ExitCode;

/// What `relay crossbar` prints on stdout once it listens, before the address.
const LISTENING_LINE: &str = "relay: crossbar listening on";

#[derive(Args, Debug)]
#[command(
    after_help = "No authentication: anyone who can reach the address reads and writes every topic.\n\
Example: relay crossbar & websocat ws://127.0.0.1:8080/lab   (and the same in another terminal)"
)]
pub struct CrossbarArgs {
    /// Address to listen on. Only loopback addresses unless --open is given.
    #[arg(long, env = "CROSSBAR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Allow a non-loopback CROSSBAR_LISTEN (a LAN): there is no authentication.
    #[arg(long, env = "CROSSBAR_OPEN", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    open: bool,
    /// Log level.
    #[arg(
        long,
        env = "CROSSBAR_LOG_LEVEL",
        value_enum,
        ignore_case = true,
        default_value = "info"
    )]
    log_level: LogLevel,
    /// Log format.
    #[arg(
        long,
        env = "CROSSBAR_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log destination: stdout, stderr or a file path (falls back to stderr if unwritable).
    #[arg(long, env = "CROSSBAR_LOG_FILE", default_value = "stderr")]
    log_file: String,
}

pub fn run(args: CrossbarArgs) -> ExitCode {
    logging::init(args.log_level, args.log_format, &args.log_file);
    let mut cfg = CrossbarConfig::new(args.listen);
    cfg.open = args.open;
    if let Err(errors) = cfg.validate() {
        for e in errors {
            tracing::error!("{e}");
            eprintln!("relay crossbar: {e}");
        }
        return ExitCode::FAILURE;
    }
    run_until_signal("relay crossbar", |stop| async move {
        let crossbar = match RunningCrossbar::start(cfg).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("relay crossbar: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("relay crossbar: warning: {NO_AUTH_WARNING}");
        let addr = crossbar.addr();
        println!("{LISTENING_LINE} {addr}");
        println!("relay: topics ws://{addr}/<topic>, writer ws://{addr}/in/<topic> → readers ws://{addr}/out/<topic>, live connections http://{addr}/stats");
        stop.cancelled().await;
        tracing::info!("shutting down: closing connections with 1001 going away");
        crossbar.shutdown().await;
        ExitCode::SUCCESS
    })
}
