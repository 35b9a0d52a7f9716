//! The `relay` binary. Each subcommand lives in its own module, parses its configuration
//! (flags, with the reference's environment variable names) and calls into a library crate;
//! no relay logic lives here.
//!
//! - [`serve`]: `relay serve`, the cloud relay (access API + crossbar).
//! - [`crossbar`]: `relay crossbar`, the open relay without tokens (a LAN or a laptop).
//! - [`token`]: `relay token`, mint HS256 tokens from `RELAY_TOKEN_*`.
//! - [`http`]: `relay http serve` / `relay http client`, the HTTP relay.
//! - [`host`]: `relay host`, the experiment side (ingest, feeds, destinations, rule APIs).
//! - [`client`]: `relay client file`, log/play/check against a relay topic.
//! - [`monitor`]: `relay monitor`, the latency canary that restarts a hung relay.
//! - [`book`]: `relay book …`, the booking server and its admin clients.
//! - [`lab`]: `relay lab --dev`, the relay, the booking server and two simulated rigs in one
//!   process.
//! - [`logging`]: the tracing set-up shared by every long-running subcommand.
//! - [`boolean`]: the one boolean value parser (Go's `strconv.ParseBool` set).
//! - [`until_signal`]: the runtime and SIGINT/SIGTERM token every long-running subcommand starts with.

mod book;
mod boolean;
mod client;
mod crossbar;
mod host;
mod http;
mod lab;
mod logging;
mod monitor;
mod serve;
mod shell;
mod token;
mod until_signal;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Relay live video and data between experiments behind NAT and browsers, through a cloud
/// relay secured with JWTs.
#[derive(Parser)]
#[command(name = "relay", version, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cloud relay: access API (JWT → one-time code) and websocket crossbar.
    Serve(Box<serve::ServeArgs>),
    /// Open relay without tokens for a lab's LAN or a laptop: websocat to ws://host/<topic>.
    Crossbar(crossbar::CrossbarArgs),
    /// Mint a token from RELAY_TOKEN_* variables (or flags) and print it.
    Token(token::TokenArgs),
    /// SSH (any TCP) to an experiment behind NAT: `relay shell host` / `relay shell client`,
    /// and the reference's `relay shell relay` / `relay shell token`.
    Shell(shell::ShellArgs),
    /// HTTP relay (Cloud Robotics compatible): `relay http serve` / `relay http client`.
    Http(http::HttpArgs),
    /// Run next to an experiment: ingest local video/data and carry it to the relay.
    Host(host::HostArgs),
    /// Test and maintenance clients; `relay client file` logs, records and plays.
    Client(client::ClientArgs),
    /// Latency canary: probe a relay topic and restart the relay when it hangs.
    Monitor(monitor::MonitorArgs),
    /// Booking server for remote labs (practable book v2 API): `relay book serve`, `token`,
    /// `manifest`, `bookings`, `status`.
    Book(book::BookArgs),
    /// A whole lab on 127.0.0.1 to try it out: the relay, the booking server and two
    /// simulated rigs; prints the student page's link (`relay lab --dev`).
    Lab(lab::LabArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(http::go_style_flags(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => return refuse(&e),
    };
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Crossbar(args) => crossbar::run(args),
        Command::Token(args) => token::run(args),
        Command::Shell(args) => shell::run(args),
        Command::Http(args) => http::run(args),
        Command::Host(args) => host::run(args),
        Command::Client(args) => client::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Book(args) => book::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Version => {
            println!("relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// A bad setting value (a boolean outside Go's set, a bad duration, a level that does not
/// exist) exits 1 with the message, as the reference does; `relay http` keeps Go's `flag`
/// package's 2. Help, version and usage errors keep clap's behaviour.
fn refuse(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let go_flags = std::env::args_os().nth(1).is_some_and(|a| a == "http");
    match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue if !go_flags => {
            let _ = e.print();
            ExitCode::FAILURE
        }
        _ => e.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn help_opens_with_what_the_program_is_for() {
        let help = Cli::command().render_help().to_string();
        let first = help.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("Relay live video and data between experiments behind NAT"),
            "first line of `relay --help`: {first:?}"
        );
    }

    #[test]
    fn every_subcommand_parses_its_help() {
        Cli::command().debug_assert();
    }
}
