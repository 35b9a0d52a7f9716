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
        default_value = DEFAULT_BOOKING_ID
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

impl TokenArgs {
    /// The arguments of `relay shell token` (`SHELLTOKEN_*`, all required there): a token
    /// for `role` with the same booking id default as `relay token`, and no other scope.
    pub(crate) fn for_role(
        audience: Option<String>,
        secret: Option<String>,
        lifetime: Option<i64>,
        topic: Option<String>,
        connection_type: ConnectionType,
        role: String,
    ) -> TokenArgs {
        TokenArgs {
            audience,
            secret,
            lifetime,
            topic,
            connection_type,
            booking_id: DEFAULT_BOOKING_ID.to_owned(),
            scope_admin: false,
            scope_write: false,
            scope_read: false,
            scope_other: None,
            role: Some(role),
        }
    }
}

/// `booking_id` of a minted token unless `RELAY_TOKEN_BOOKING_ID` says otherwise.
const DEFAULT_BOOKING_ID: &str = "relay-token-cli";

/// The scopes a role stands for, and whether it is a shell relay role (which always
/// carries the connection type `shell`): `host`, `client` and `stats` for the shell relay,
/// and the reference's `shell token` roles `read`, `write` and `readwrite` (shell spec
/// §1.2). `None` for any other role.
pub(crate) fn role_scopes(role: &str) -> Option<(&'static [&'static str], bool)> {
    use relay_auth::{SCOPE_SHELL_CLIENT, SCOPE_SHELL_HOST, SCOPE_SHELL_STATS};
    match role {
        "host" => Some((&[SCOPE_SHELL_HOST], true)),
        "client" => Some((&[SCOPE_SHELL_CLIENT], true)),
        "stats" => Some((&[SCOPE_SHELL_STATS], true)),
        "read" => Some((&[SCOPE_READ], false)),
        "write" => Some((&[SCOPE_WRITE], false)),
        "readwrite" => Some((&[SCOPE_READ, SCOPE_WRITE], false)),
        _ => None,
    }
}

/// Build the claims, or the list of problems (one line each, naming each variable with
/// `names`, the environment prefix of the subcommand that was run, e.g. `RELAY_TOKEN_`).
fn claims(args: &TokenArgs, now: i64, names: &str) -> Result<Claims, Vec<String>> {
    let mut problems = Vec::new();
    let audience = args.audience.clone().filter(|a| !a.is_empty());
    if audience.is_none() {
        problems.push(format!("{names}AUDIENCE not set"));
    }
    if args.secret.as_deref().unwrap_or("").is_empty() {
        problems.push(format!("{names}SECRET not set"));
    }
    let lifetime = args.lifetime.unwrap_or(0);
    if lifetime == 0 {
        problems.push(format!("{names}LIFETIME not set"));
    }
    let topic = args.topic.clone().unwrap_or_default();
    if topic.is_empty() && !args.scope_admin {
        problems.push(format!("{names}TOPIC not set"));
    }
    let role = match args.role.as_deref() {
        None => None,
        Some(name) => match role_scopes(name) {
            Some(role) => Some(role),
            None => {
                problems.push(format!(
                    "{names}ROLE must be one of host, client, stats, read, write, readwrite, not {name:?}"
                ));
                None
            }
        },
    };
    let mut scopes = Vec::new();
    let flag_scopes = [
        (args.scope_admin, SCOPE_ADMIN),
        (args.scope_write, SCOPE_WRITE),
        (args.scope_read, SCOPE_READ),
    ];
    match role {
        Some((role_scopes, _)) => scopes.extend(role_scopes.iter().map(|s| (*s).to_owned())),
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
        prefix: if role.is_some_and(|(_, shell)| shell) {
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
    mint_and_print(args, "RELAY_TOKEN_")
}

/// The one minting path of `relay token` and `relay shell token`: print the token and a
/// newline, or one line per problem (variables named with the prefix `names`) and exit 1.
pub(crate) fn mint_and_print(args: TokenArgs, names: &str) -> ExitCode {
    let now = relay_common::clock::unix_now();
    match claims(&args, now, names) {
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
