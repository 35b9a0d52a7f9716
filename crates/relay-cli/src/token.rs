//! `relay token`: mint an HS256 token from `RELAY_TOKEN_*` (or the same as flags) and
//! print it followed by a newline, exactly as the reference does (spec §4): scopes in the
//! order `relay:admin`, `write`, `read`, then `RELAY_TOKEN_SCOPE_OTHER`; `iat = now − 1`,
//! `nbf = iat`, `exp = iat + lifetime`; one line per missing variable and exit 1.
//! `--role host|client|stats` (`RELAY_TOKEN_ROLE`) mints shell relay tokens.

use crate::boolean::GoBool;
use clap::{ArgAction, Args};
use relay_auth::{mint, Audience, Claims, SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE};
use relay_common::connection::ConnectionType;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(
    after_help = "Example: RELAY_TOKEN_AUDIENCE=http://127.0.0.1:3000 RELAY_TOKEN_SECRET=s \\\n  RELAY_TOKEN_TOPIC=expt00 RELAY_TOKEN_LIFETIME=3600 relay token"
)]
pub struct TokenArgs {
    /// Audience (`aud`): the access API's external base URL.
    #[arg(long, env = "RELAY_TOKEN_AUDIENCE")]
    audience: Option<String>,
    /// HMAC secret shared with the relay.
    #[arg(long, env = "RELAY_TOKEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Lifetime in seconds (non-zero; negative gives an already-expired token).
    #[arg(long, env = "RELAY_TOKEN_LIFETIME", allow_negative_numbers = true)]
    lifetime: Option<i64>,
    /// Topic (session id); required unless --scope-admin.
    #[arg(long, env = "RELAY_TOKEN_TOPIC")]
    topic: Option<String>,
    /// Connection type written to `prefix`: `session` or `shell`.
    #[arg(long, env = "RELAY_TOKEN_CONNECTION_TYPE", default_value = "session")]
    connection_type: ConnectionType,
    /// Booking id written to `booking_id`.
    #[arg(
        long,
        env = "RELAY_TOKEN_BOOKING_ID",
        default_value = "relay-token-cli"
    )]
    booking_id: String,
    /// Add the `relay:admin` scope (for /bids/deny and /bids/allow).
    #[arg(long, env = "RELAY_TOKEN_SCOPE_ADMIN", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    scope_admin: bool,
    /// Add the `write` scope.
    #[arg(long, env = "RELAY_TOKEN_SCOPE_WRITE", default_value_t = true, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    scope_write: bool,
    /// Add the `read` scope.
    #[arg(long, env = "RELAY_TOKEN_SCOPE_READ", default_value_t = true, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    scope_read: bool,
    /// Add one more scope, e.g. `relay:stats`.
    #[arg(long, env = "RELAY_TOKEN_SCOPE_OTHER")]
    scope_other: Option<String>,
    /// Mint a shell relay token instead: scope `host` (the experiment), `client` (an admin)
    /// or `stats`, with connection type `shell`; the read/write/admin scopes are not added.
    #[arg(long, env = "RELAY_TOKEN_ROLE", value_parser = ["host", "client", "stats"])]
    role: Option<String>,
}

/// Build the claims, or the list of problems (one line each).
fn claims(args: &TokenArgs, now: i64) -> Result<Claims, Vec<String>> {
    let mut problems = Vec::new();
    let audience = args.audience.clone().filter(|a| !a.is_empty());
    if audience.is_none() {
        problems.push("RELAY_TOKEN_AUDIENCE not set".to_owned());
    }
    if args.secret.as_deref().unwrap_or("").is_empty() {
        problems.push("RELAY_TOKEN_SECRET not set".to_owned());
    }
    let lifetime = args.lifetime.unwrap_or(0);
    if lifetime == 0 {
        problems.push("RELAY_TOKEN_LIFETIME not set".to_owned());
    }
    let topic = args.topic.clone().unwrap_or_default();
    if topic.is_empty() && !args.scope_admin {
        problems.push("RELAY_TOKEN_TOPIC not set".to_owned());
    }
    let mut scopes = Vec::new();
    let flag_scopes = [
        (args.scope_admin, SCOPE_ADMIN),
        (args.scope_write, SCOPE_WRITE),
        (args.scope_read, SCOPE_READ),
    ];
    match &args.role {
        Some(role) => scopes.push(role.clone()),
        None => scopes.extend(
            flag_scopes
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, s)| (*s).to_owned()),
        ),
    }
    if let Some(other) = args.scope_other.as_deref().filter(|s| !s.is_empty()) {
        scopes.push(other.to_owned());
    }
    if scopes.is_empty() {
        problems.push(
            "no scopes set: set at least one of RELAY_TOKEN_SCOPE_{ADMIN,WRITE,READ,OTHER}"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let iat = now - 1;
    Ok(Claims {
        booking_id: args.booking_id.clone(),
        topic,
        prefix: if args.role.is_some() {
            ConnectionType::Shell
        } else {
            args.connection_type
        }
        .as_str()
        .to_owned(),
        scopes,
        aud: Audience(audience.into_iter().collect()),
        exp: Some(iat.saturating_add(lifetime)),
        nbf: Some(iat),
        iat: Some(iat),
        ..Claims::default()
    })
}

pub fn run(args: TokenArgs) -> ExitCode {
    let now = relay_common::clock::unix_now();
    match claims(&args, now) {
        Ok(c) => {
            println!("{}", mint(&c, args.secret.unwrap_or_default().as_bytes()));
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::FAILURE
        }
    }
}
