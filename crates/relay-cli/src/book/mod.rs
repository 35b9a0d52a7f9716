//! `relay book …`: the booking server and its clients (booking spec §1.1, §1.2, §4.2).
//!
//! - `serve [--dev]` ([`serve`]): run the booking server from `BOOK_*` (or flags); `--dev`
//!   needs nothing.
//! - `token`: mint a booking-API token from `BOOK_CLIENT_*`.
//! - `manifest check`: check a manifest file here.
//! - `manifest export|replace`, `bookings export|replace`, `status get|set` ([`client`]):
//!   the admin clients, with `BOOK_CLIENT_TOKEN`, `BOOK_CLIENT_SCHEME`, `BOOK_CLIENT_HOST`,
//!   `BOOK_CLIENT_BASE_PATH` and `BOOK_CLIENT_FORMAT`.

mod client;
pub(crate) mod serve;

use crate::boolean::GoBool;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use client::{bookings_replace, client_call, manifest_replace, percent_encode, ClientArgs};
use relay_book::manifest::Manifest;
use relay_book::timefmt::SECOND;
use relay_book::tokens;
use serve::{DurationSetting, ServeArgs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BookArgs {
    #[command(subcommand)]
    command: BookCommand,
}

#[derive(Subcommand, Debug)]
enum BookCommand {
    /// Run the booking server (API under /api/v1); `--dev` for a local demo.
    Serve(Box<ServeArgs>),
    /// Mint a booking-API token (user, or admin with BOOK_CLIENT_TOKEN_ADMIN=true) and print it.
    Token(TokenArgs),
    /// Check a manifest locally, or export/replace the server's.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Export or replace the server's current bookings.
    Bookings {
        #[command(subcommand)]
        command: BookingsCommand,
    },
    /// Read the server's status, or lock/unlock it for users.
    Status {
        #[command(subcommand)]
        command: StatusCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ManifestCommand {
    /// Check a YAML or JSON manifest here (no server): prints `ok`, or the problem's
    /// category and numbered messages and exits 1.
    Check {
        /// The manifest file.
        file: PathBuf,
    },
    /// Print the server's manifest (GET /admin/manifest) as YAML or JSON.
    Export(ClientArgs),
    /// Check a YAML or JSON manifest here, then replace the server's (PUT /admin/manifest).
    Replace {
        /// The manifest file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BookingsCommand {
    /// Print the current bookings (GET /admin/bookings).
    Export(ClientArgs),
    /// Replace the current bookings with a YAML or JSON list (PUT /admin/bookings); prints
    /// the status, including any booking the rules dropped.
    Replace {
        /// The bookings file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum StatusCommand {
    /// Print the admin status (GET /admin/status).
    Get(ClientArgs),
    /// Lock or unlock the store for users (PUT /admin/status), with a message shown to them.
    Set {
        /// `lock` or `unlock`.
        #[arg(value_enum)]
        action: LockAction,
        /// The message users see.
        message: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LockAction {
    Lock,
    Unlock,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example: BOOK_CLIENT_SECRET=$ADMIN_SECRET BOOK_CLIENT_TOKEN_ADMIN=true \\\n  BOOK_CLIENT_TOKEN_SUB=alice BOOK_CLIENT_TOKEN_AUD=https://book.example.org \\\n  BOOK_CLIENT_TOKEN_TTL=1h relay book token"
)]
pub struct TokenArgs {
    /// HMAC secret: the server's BOOK_ADMIN_SECRET.
    #[arg(long, env = "BOOK_CLIENT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Subject (`sub`): the user name, or who the admin is.
    #[arg(long, env = "BOOK_CLIENT_TOKEN_SUB")]
    sub: Option<String>,
    /// Audience (`aud`): the server's BOOK_AUDIENCE.
    #[arg(
        long,
        env = "BOOK_CLIENT_TOKEN_AUD",
        default_value = "http://localhost:4000"
    )]
    aud: String,
    /// Lifetime.
    #[arg(long, env = "BOOK_CLIENT_TOKEN_TTL", default_value = "1m", value_parser = DurationSetting)]
    ttl: Duration,
    /// `booking:admin` instead of `booking:user`.
    #[arg(long, env = "BOOK_CLIENT_TOKEN_ADMIN", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    admin: bool,
    /// Not valid before this RFC 3339 time (used only if in the future).
    #[arg(long, env = "BOOK_CLIENT_TOKEN_NBF")]
    nbf: Option<String>,
}

pub fn run(args: BookArgs) -> ExitCode {
    match args.command {
        BookCommand::Serve(args) => serve::serve(*args),
        BookCommand::Token(args) => token(&args),
        BookCommand::Manifest { command } => match command {
            ManifestCommand::Check { file } => manifest_check(&file),
            ManifestCommand::Export(client) => client_call(&client, "GET", "/admin/manifest", None),
            ManifestCommand::Replace { file, client } => manifest_replace(&file, &client),
        },
        BookCommand::Bookings { command } => match command {
            BookingsCommand::Export(client) => client_call(&client, "GET", "/admin/bookings", None),
            BookingsCommand::Replace { file, client } => bookings_replace(&file, &client),
        },
        BookCommand::Status { command } => match command {
            StatusCommand::Get(client) => client_call(&client, "GET", "/admin/status", None),
            StatusCommand::Set {
                action,
                message,
                client,
            } => {
                let lock = action == LockAction::Lock;
                let route = format!("/admin/status?lock={lock}&msg={}", percent_encode(&message));
                client_call(&client, "PUT", &route, None)
            }
        },
    }
}

pub(super) fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("relay book: {message}");
    ExitCode::FAILURE
}

// ---- token ----

fn token(args: &TokenArgs) -> ExitCode {
    let mut missing = Vec::new();
    let secret = args.secret.clone().filter(|s| !s.is_empty());
    let sub = args.sub.clone().filter(|s| !s.is_empty());
    if secret.is_none() {
        missing.push("You must set BOOK_CLIENT_SECRET (or --secret)");
    }
    if sub.is_none() {
        missing.push("You must set BOOK_CLIENT_TOKEN_SUB (or --sub)");
    }
    let (Some(secret), Some(sub)) = (secret, sub) else {
        for m in missing {
            eprintln!("{m}");
        }
        return ExitCode::FAILURE;
    };
    let nbf = match args.nbf.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(text) => match relay_book::timefmt::parse_time(text) {
            Ok(t) => Some(t.div_euclid(SECOND)),
            Err(e) => return fail(format!("BOOK_CLIENT_TOKEN_NBF: {e}")),
        },
    };
    let ttl = i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX / 4);
    let claims = tokens::client_claims(
        &sub,
        &args.aud,
        args.admin,
        ttl,
        nbf,
        relay_common::clock::unix_now(),
    );
    match tokens::sign(&claims, secret.as_bytes()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// ---- manifest ----

/// Read and parse a manifest file, or the message to print.
pub(super) fn read_manifest(file: &PathBuf) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Manifest::parse(&text).map_err(|e| format!("cannot parse {}: {e}", file.display()))
}

/// The category and numbered messages of a failed check.
pub(super) fn check_report(error: &relay_book::manifest::ManifestError) -> String {
    let mut out = error.category.clone();
    for (n, message) in error.messages.iter().enumerate() {
        out.push_str(&format!("\n{}: {message}", n + 1));
    }
    out
}

fn manifest_check(file: &PathBuf) -> ExitCode {
    let manifest = match read_manifest(file) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    match manifest.check() {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", check_report(&e));
            ExitCode::FAILURE
        }
    }
}
