//! `relay book serve`: the booking server's settings (`BOOK_*`, the same as flags) mapped
//! onto [`relay_book::server::Config`], the store opened, the server started until
//! SIGINT/SIGTERM; `--dev` for a zero-configuration local run with a demo manifest.

use super::fail;
use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use crate::serve::random_secret;
use crate::until_signal::run_until_signal;
use clap::{ArgAction, Args};
use relay_book::manifest::Manifest;
use relay_book::server::{self, Clock, Config};
use relay_book::store::{Location, Store};
use relay_book::tokens;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The clap value parser of the duration settings: the one duration parser
/// (`goduration::parse_setting`), with an error that names the variable and the flag.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DurationSetting;

impl clap::builder::TypedValueParser for DurationSetting {
    type Value = Duration;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Duration, clap::Error> {
        let text = value.to_string_lossy();
        relay_common::goduration::parse_setting(&text).map_err(|e| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "{}: {e}\n",
                    arg.map_or_else(
                        || "a duration setting".to_owned(),
                        crate::boolean::setting_name
                    )
                ),
            )
        })
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Quick start: relay book serve --dev\n\
Production: set BOOK_AUDIENCE, BOOK_ADMIN_SECRET and BOOK_RELAY_SECRET; the database is SQLite in\n\
BOOK_PERSIST_DIR, or PostgreSQL with BOOK_DATABASE_URL=postgres://…")]
pub struct ServeArgs {
    /// Development mode: SQLite in a temporary directory, generated secrets, 127.0.0.1, a
    /// demo manifest (two rigs, group g-demo); prints an admin token and curl lines.
    #[arg(long)]
    dev: bool,
    /// With --dev: the relay access URL the demo streams use (a `relay serve` whose
    /// RELAY_AUDIENCE is this URL and RELAY_SECRET the printed relay secret).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    relay_access: String,
    /// With --dev: the page of the demo UI (the relay's demo page), opened as
    /// `<page>?streams={{streams}}&exp={{exp}}`.
    #[arg(long, default_value = "http://127.0.0.1:3001/demo")]
    ui_page: String,
    /// This server's external URL: incoming tokens must carry it in `aud`.
    #[arg(long, env = "BOOK_AUDIENCE")]
    audience: Option<String>,
    /// HMAC secret of booking-API tokens (login and admin).
    #[arg(long, env = "BOOK_ADMIN_SECRET", hide_env_values = true)]
    admin_secret: Option<String>,
    /// HMAC secret shared with the relays (stream tokens, deny calls).
    #[arg(long, env = "BOOK_RELAY_SECRET", hide_env_values = true)]
    relay_secret: Option<String>,
    /// Address to listen on (default every interface; 127.0.0.1 with --dev).
    #[arg(long, env = "BOOK_BIND")]
    bind: Option<IpAddr>,
    /// Port (0: any free port). The bound address is printed on stdout as
    /// "relay book: API listening on ADDR".
    #[arg(long, env = "BOOK_PORT", default_value_t = 4000)]
    port: u16,
    /// PostgreSQL (`postgres://…`); when unset, SQLite in BOOK_PERSIST_DIR.
    #[arg(long, env = "BOOK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory of the SQLite database (`book.sqlite`).
    #[arg(long, env = "BOOK_PERSIST_DIR", default_value = "/var/lib/book/")]
    persist_dir: PathBuf,
    /// Lifetime of login tokens.
    #[arg(long, env = "BOOK_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = DurationSetting)]
    access_token_ttl: Duration,
    /// Period of the grace check (no-shows are cancelled).
    #[arg(long, env = "BOOK_CHECK_EVERY", default_value = "1m", value_parser = DurationSetting)]
    check_every: Duration,
    /// Period of moving ended bookings to old bookings.
    #[arg(long, env = "BOOK_TIDY_EVERY", default_value = "1h", value_parser = DurationSetting)]
    tidy_every: Duration,
    /// Timeout of one relay deny call.
    #[arg(long, env = "BOOK_REQUEST_TIMEOUT", default_value = "1m", value_parser = DurationSetting)]
    request_timeout: Duration,
    /// A started booking cannot be cancelled.
    #[arg(long, env = "BOOK_DISABLE_CANCEL_AFTER_USE", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    disable_cancel_after_use: bool,
    /// Shortest user name /login accepts.
    #[arg(long, env = "BOOK_MIN_USERNAME_LENGTH", default_value_t = 6)]
    min_username_length: usize,
    /// /login requests per client address, "<n>/<s|m|h>[ burst <n>]" ("off": none).
    #[arg(long, env = "BOOK_LOGIN_RATE_PER_IP", default_value = server::config::DEFAULT_LOGIN_RATE)]
    login_rate_per_ip: String,
    /// Comma-separated reverse proxies (IPs or CIDRs) trusted to name the client address.
    #[arg(long, env = "BOOK_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// Largest request body in bytes.
    #[arg(long, env = "BOOK_MAX_BODY_BYTES", default_value_t = server::config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Log level.
    #[arg(
        long,
        env = "BOOK_LOG_LEVEL",
        value_enum,
        ignore_case = true,
        default_value = "warn"
    )]
    log_level: LogLevel,
    /// Log format.
    #[arg(
        long,
        env = "BOOK_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "json"
    )]
    log_format: LogFormat,
    /// Log destination: stdout, stderr or a file (falls back to stderr if unwritable).
    #[arg(long, env = "BOOK_LOG_FILE", default_value = "/var/log/book/book.log")]
    log_file: String,
}

// ---- serve ----

/// The server configuration from the arguments, or every problem (each naming its
/// variable). `dev` supplies the generated secrets and the audience.
fn config(args: &ServeArgs, dev: Option<(&str, &str, &str)>) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let (audience, admin_secret, relay_secret) = match dev {
        Some((audience, admin, relay)) => (audience.to_owned(), admin.to_owned(), relay.to_owned()),
        None => (
            text(&args.audience),
            text(&args.admin_secret),
            text(&args.relay_secret),
        ),
    };
    let mut config = Config::new(&audience, &admin_secret, &relay_secret);
    config.bind = args.bind.unwrap_or(if dev.is_some() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    config.port = args.port;
    config.access_token_ttl = args.access_token_ttl;
    config.check_every = args.check_every;
    config.tidy_every = args.tidy_every;
    config.request_timeout = args.request_timeout;
    config.disable_cancel_after_use = args.disable_cancel_after_use;
    config.min_username_length = args.min_username_length;
    config.database_url = args.database_url.clone().filter(|u| !u.is_empty());
    config.persist_dir = args.persist_dir.clone();
    config.max_body_bytes = args.max_body_bytes;
    config.login_rate = relay_server::limits::Rate::parse_setting(&args.login_rate_per_ip)
        .unwrap_or_else(|e| {
            problems.push(format!("BOOK_LOGIN_RATE_PER_IP: {e}"));
            None
        });
    config.trusted_proxies = relay_server::client_addr::parse_trusted_proxies(
        &args.trusted_proxies,
    )
    .unwrap_or_else(|e| {
        problems.push(format!("BOOK_TRUSTED_PROXIES: {e}"));
        Vec::new()
    });
    if let Err(more) = config.validate() {
        problems.extend(more);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Log and print each problem with the settings; exit 1.
fn refuse_settings(problems: Vec<String>) -> ExitCode {
    for p in problems {
        tracing::error!("{p}");
        eprintln!("{p}");
    }
    ExitCode::FAILURE
}

/// The store `config` names, creating the SQLite directory first.
pub(crate) async fn open_store(config: &Config) -> Result<Store, String> {
    let location = config.store_location();
    if let Location::SqliteDir(dir) = &location {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("BOOK_PERSIST_DIR {}: {e}", dir.display()))?;
    }
    Store::open(&location, config.store_options())
        .await
        .map_err(|e| format!("cannot open the store: {e}"))
}

/// Replaces the store's manifest with the demo manifest ([`server::demo::manifest`]) for
/// the relay at `relay_access` and the UI page `ui_page`; returns what was loaded.
pub(crate) async fn load_demo_manifest(
    store: &Store,
    relay_access: &str,
    ui_page: &str,
) -> Result<Manifest, String> {
    let demo = server::demo::manifest(relay_access, ui_page);
    let manifest =
        Manifest::parse(&demo).map_err(|e| format!("cannot load the demo manifest: {e}"))?;
    store
        .replace_manifest(manifest.clone(), relay_common::clock::unix_now_nanos())
        .await
        .map_err(|e| format!("cannot load the demo manifest: {e}"))?;
    Ok(manifest)
}

/// An admin token for the booking server at `audience`, valid 24 h.
pub(crate) fn dev_admin_token(audience: &str, admin_secret: &str) -> String {
    let now = relay_common::clock::unix_now();
    let claims = tokens::client_claims("admin", audience, true, 24 * 3600, None, now);
    tokens::sign(&claims, admin_secret.as_bytes()).unwrap_or_default()
}

pub(super) fn serve(args: ServeArgs) -> ExitCode {
    if args.dev {
        logging::init(LogLevel::Info, LogFormat::Text, "stderr");
    } else {
        logging::init(args.log_level, args.log_format, &args.log_file);
    }
    if std::env::var("BOOK_PROFILE").is_ok_and(|v| !v.is_empty()) {
        tracing::warn!("BOOK_PROFILE is ignored: relay book has no profiler");
    }
    run_until_signal("relay book serve", |stop| async move {
        // --dev: everything in a temporary directory, removed at exit.
        let dev_dir = if args.dev {
            match tempfile::Builder::new().prefix("relay-book-dev-").tempdir() {
                Ok(dir) => Some(dir),
                Err(e) => return fail(format!("cannot create a temporary directory: {e}")),
            }
        } else {
            None
        };
        let ip = args.bind.unwrap_or(if args.dev {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        // Settings are checked before anything is bound or opened (with --dev, whose
        // audience names the bound port, they are made after binding).
        if !args.dev {
            if let Err(problems) = config(&args, None) {
                return refuse_settings(problems);
            }
        }
        // Bind first: with --dev the audience names the bound port.
        let wanted = SocketAddr::new(ip, args.port);
        let listener = match tokio::net::TcpListener::bind(wanted).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {wanted}: {e}")),
        };
        let bound = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return fail(format!("cannot listen on {wanted}: {e}")),
        };
        let secrets = args
            .dev
            .then(|| (format!("http://{bound}"), random_secret(), random_secret()));
        let dev = secrets
            .as_ref()
            .map(|(a, s, r)| (a.as_str(), s.as_str(), r.as_str()));
        let mut config = match config(&args, dev) {
            Ok(c) => c,
            Err(problems) => return refuse_settings(problems),
        };
        if let Some(dir) = &dev_dir {
            config.persist_dir = dir.path().to_owned();
            config.database_url = None;
        }
        let store = match open_store(&config).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        if args.dev {
            if let Err(e) = load_demo_manifest(&store, &args.relay_access, &args.ui_page).await {
                return fail(e);
            }
        }
        let admin_secret = config.admin_secret.clone();
        let relay_secret = config.relay_secret.clone();
        let audience = config.audience.clone();
        let server = match server::start_on(listener, config, store, Clock::wall()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                return fail(e);
            }
        };
        println!("relay book: API listening on {}", server.addr());
        if args.dev {
            print_dev_banner(&audience, &admin_secret, &relay_secret, &args);
        }
        stop.cancelled().await;
        server.shutdown().await;
        drop(dev_dir);
        ExitCode::SUCCESS
    })
}

fn print_dev_banner(audience: &str, admin_secret: &str, relay_secret: &str, args: &ServeArgs) {
    let relay_access = &args.relay_access;
    let admin = dev_admin_token(audience, admin_secret);
    let api = format!("{audience}/api/v1");
    let lines = [
        String::new(),
        "relay book is running in development mode (127.0.0.1, SQLite in a temporary directory, demo manifest)".into(),
        String::new(),
        format!("  API          {api}"),
        format!("  OpenAPI      {api}/swagger.json"),
        format!("  admin secret {admin_secret}"),
        format!("  relay secret {relay_secret}"),
        String::new(),
        "An admin token, valid 24 h:".into(),
        String::new(),
        format!("  export ADMIN={admin}"),
        format!("  curl -s -H \"Authorization: $ADMIN\" {api}/admin/status"),
        String::new(),
        "A student's session (the group g-demo is the course link):".into(),
        String::new(),
        format!("  U=$(curl -s -X POST {api}/users/unique | sed -E 's/.*\"user_name\":\"([^\"]*)\".*/\\1/')"),
        format!("  T=$(curl -s -X POST {api}/login/$U | sed -E 's/.*\"token\":\"([^\"]*)\".*/\\1/')"),
        format!("  curl -s -X POST -H \"Authorization: $T\" {api}/users/$U/groups/g-demo"),
        format!("  curl -s -H \"Authorization: $T\" {api}/groups/g-demo"),
        format!("  curl -s -H \"Authorization: $T\" {api}/slots/sl-demo-1"),
        "  # book now for 10 minutes (the demo policy accepts a start up to 1 min in the past)".into(),
        "  FROM=$(date -u +%Y-%m-%dT%H:%M:%SZ); TO=$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)".into(),
        format!("  curl -s -X POST -H \"Authorization: $T\" \"{api}/slots/sl-demo-1?user_name=$U&from=$FROM&to=$TO\""),
        format!("  curl -s -H \"Authorization: $T\" {api}/users/$U/bookings"),
        format!("  curl -s -X PUT -H \"Authorization: $T\" {api}/users/$U/bookings/<name>    # the activity"),
        String::new(),
        format!("The demo streams use the relay at {relay_access}; run one that accepts their tokens:"),
        String::new(),
        format!("  RELAY_SECRET={relay_secret} RELAY_AUDIENCE={relay_access} RELAY_URL=ws://127.0.0.1:3001 relay serve"),
        String::new(),
        format!("The demo UI is {}?streams=…&exp=… (the relay's demo page; --ui-page to change it).", args.ui_page),
        "For all of this in one command, with two simulated rigs: relay lab --dev".into(),
        String::new(),
        format!("Admin clients: BOOK_CLIENT_TOKEN=$ADMIN BOOK_CLIENT_HOST={} relay book status get", audience.trim_start_matches("http://")),
        "Stop with Ctrl-C.".into(),
    ];
    println!("{}", lines.join("\n"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{BookArgs, BookCommand};
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Book {
        #[command(flatten)]
        book: BookArgs,
    }

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let args = ["x", "serve"].iter().chain(extra).copied();
        match <Book as clap::Parser>::try_parse_from(args)
            .unwrap()
            .book
            .command
        {
            BookCommand::Serve(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn missing_secrets_are_named_and_dev_needs_none() {
        let problems =
            config(&serve_args(&["--audience", "https://b.example.org"]), None).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "You must set BOOK_ADMIN_SECRET",
                "You must set BOOK_RELAY_SECRET"
            ]
        );
        let config = config(
            &serve_args(&["--dev"]),
            Some(("http://127.0.0.1:4000", "a", "r")),
        )
        .unwrap();
        assert_eq!(config.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(config.port, 4000);
    }

    #[test]
    fn a_bad_duration_names_its_variable() {
        let err = <Book as clap::Parser>::try_parse_from(["x", "serve", "--check-every", "soon"])
            .unwrap_err();
        assert!(err.to_string().contains("BOOK_CHECK_EVERY"), "{err}");
    }
}
