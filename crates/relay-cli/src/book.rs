//! `relay book …`: the booking server and its clients (booking spec §1.1, §1.2, §4.2).
//!
//! - `serve [--dev]`: run the booking server from `BOOK_*` (or flags); `--dev` needs nothing.
//! - `token`: mint a booking-API token from `BOOK_CLIENT_*`.
//! - `manifest check|export|replace`, `bookings export|replace`, `status get|set`: the
//!   admin clients, with `BOOK_CLIENT_TOKEN`, `BOOK_CLIENT_SCHEME`, `BOOK_CLIENT_HOST`,
//!   `BOOK_CLIENT_BASE_PATH` and `BOOK_CLIENT_FORMAT`.

use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use crate::until_signal::run_until_signal;
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use relay_book::manifest::Manifest;
use relay_book::server::{self, Clock, Config};
use relay_book::store::{Location, Store};
use relay_book::timefmt::SECOND;
use relay_book::tokens;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The clap value parser of the duration settings: the one duration parser
/// (`goduration::parse_setting`), with an error that names the variable and the flag.
#[derive(Clone, Copy, Debug, Default)]
struct DurationSetting;

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

/// The default server address of every client command.
const DEFAULT_HOST: &str = "localhost:4000";

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

/// Output format of the client commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Yaml,
    Yml,
    Json,
}

/// Where the server is and how to authenticate (the admin client commands).
#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// Admin token (see `relay book token`), sent raw in Authorization.
    #[arg(long, env = "BOOK_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `http` or `https`.
    #[arg(long, env = "BOOK_CLIENT_SCHEME", default_value = "http")]
    scheme: String,
    /// Server host and port (a full URL is accepted too).
    #[arg(long, env = "BOOK_CLIENT_HOST", default_value = DEFAULT_HOST)]
    host: String,
    /// API base path.
    #[arg(long, env = "BOOK_CLIENT_BASE_PATH", default_value = "/api/v1")]
    base_path: String,
    /// Output format.
    #[arg(
        long,
        env = "BOOK_CLIENT_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "yaml"
    )]
    format: Format,
}

impl ClientArgs {
    fn url(&self, route: &str) -> String {
        let host = self.host.trim_end_matches('/');
        let base = if host.contains("://") {
            host.to_owned()
        } else {
            format!("{}://{host}", self.scheme)
        };
        format!("{base}/{}{route}", self.base_path.trim_matches('/')).replace(":///", "://")
    }
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

pub fn run(args: BookArgs) -> ExitCode {
    match args.command {
        BookCommand::Serve(args) => serve(*args),
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

fn fail(message: impl std::fmt::Display) -> ExitCode {
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
fn read_manifest(file: &PathBuf) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Manifest::parse(&text).map_err(|e| format!("cannot parse {}: {e}", file.display()))
}

/// The category and numbered messages of a failed check.
fn check_report(error: &relay_book::manifest::ManifestError) -> String {
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

fn manifest_replace(file: &PathBuf, client: &ClientArgs) -> ExitCode {
    let manifest = match read_manifest(file) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if let Err(e) = manifest.check() {
        println!("{}", check_report(&e));
        return ExitCode::FAILURE;
    }
    let body = match serde_json::to_string(&manifest) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match request(client, "PUT", "/admin/manifest", Some(body)) {
        Ok(status) => {
            if let Some(cancelled) = status.get("cancelled_bookings") {
                eprintln!("relay book: bookings cancelled because their slot left the manifest: {cancelled}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// ---- bookings ----

fn bookings_replace(file: &PathBuf, client: &ClientArgs) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display())),
    };
    let bookings: serde_json::Value = match serde_yaml::from_str(&text) {
        Ok(serde_json::Value::Array(list)) => serde_json::Value::Array(list),
        Ok(_) => return fail(format!("{} is not a list of bookings", file.display())),
        Err(e) => return fail(format!("cannot parse {}: {e}", file.display())),
    };
    client_call(client, "PUT", "/admin/bookings", Some(bookings.to_string()))
}

// ---- the HTTP client ----

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Make one call and return the JSON reply (`null` for an empty one), or a message.
fn request(
    client: &ClientArgs,
    method: &str,
    route: &str,
    body: Option<String>,
) -> Result<serde_json::Value, String> {
    let token = client
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or("You must set BOOK_CLIENT_TOKEN (or --token); see `relay book token`")?;
    let url = client.url(route);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut call = reqwest::Client::new()
            .request(method.clone(), &url)
            .header("Authorization", token);
        if let Some(body) = body {
            call = call.header("Content-Type", "application/json").body(body);
        }
        let response = call
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status}: {}", text.trim()));
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {url}: reply is not JSON: {e}"))
    })
}

/// Make one call and print the reply in the chosen format.
fn client_call(client: &ClientArgs, method: &str, route: &str, body: Option<String>) -> ExitCode {
    let reply = match request(client, method, route, body) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if reply.is_null() {
        return ExitCode::SUCCESS;
    }
    let text = match client.format {
        Format::Json => serde_json::to_string_pretty(&reply).map_err(|e| e.to_string()),
        Format::Yaml | Format::Yml => serde_yaml::to_string(&reply).map_err(|e| e.to_string()),
    };
    match text {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
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

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn serve(args: ServeArgs) -> ExitCode {
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
        let location = config.store_location();
        if let Location::SqliteDir(dir) = &location {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return fail(format!("BOOK_PERSIST_DIR {}: {e}", dir.display()));
            }
        }
        let store = match Store::open(&location, config.store_options()).await {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot open the store: {e}")),
        };
        if args.dev {
            let demo = server::demo::manifest(&args.relay_access);
            let loaded = match Manifest::parse(&demo) {
                Ok(manifest) => store
                    .replace_manifest(manifest, relay_common::clock::unix_now_nanos())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = loaded {
                return fail(format!("cannot load the demo manifest: {e}"));
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
            print_dev_banner(&audience, &admin_secret, &relay_secret, &args.relay_access);
        }
        stop.cancelled().await;
        server.shutdown().await;
        drop(dev_dir);
        ExitCode::SUCCESS
    })
}

fn print_dev_banner(audience: &str, admin_secret: &str, relay_secret: &str, relay_access: &str) {
    let now = relay_common::clock::unix_now();
    let claims = tokens::client_claims("admin", audience, true, 24 * 3600, None, now);
    let admin = tokens::sign(&claims, admin_secret.as_bytes()).unwrap_or_default();
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
        "  FROM=$(date -u +%Y-%m-%dT%H:%M:%SZ); TO=$(date -u -d '+10 min' +%Y-%m-%dT%H:%M:%SZ)".into(),
        format!("  curl -s -X POST -H \"Authorization: $T\" \"{api}/slots/sl-demo-1?user_name=$U&from=$FROM&to=$TO\""),
        format!("  curl -s -H \"Authorization: $T\" {api}/users/$U/bookings"),
        format!("  curl -s -X PUT -H \"Authorization: $T\" {api}/users/$U/bookings/<name>    # the activity"),
        String::new(),
        format!("The demo streams use the relay at {relay_access}; run one that accepts their tokens:"),
        String::new(),
        format!("  RELAY_SECRET={relay_secret} RELAY_AUDIENCE={relay_access} RELAY_URL=ws://127.0.0.1:3001 relay serve"),
        String::new(),
        format!("Admin clients: BOOK_CLIENT_TOKEN=$ADMIN BOOK_CLIENT_HOST={} relay book status get", audience.trim_start_matches("http://")),
        "Stop with Ctrl-C.".into(),
    ];
    println!("{}", lines.join("\n"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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

    #[test]
    fn client_urls_join_scheme_host_and_base_path() {
        let client = ClientArgs {
            token: None,
            scheme: "http".into(),
            host: DEFAULT_HOST.into(),
            base_path: "/api/v1".into(),
            format: Format::Yaml,
        };
        assert_eq!(
            client.url("/admin/status"),
            "http://localhost:4000/api/v1/admin/status"
        );
        let client = ClientArgs {
            host: "https://book.example.org/".into(),
            base_path: "api/v1/".into(),
            ..client
        };
        assert_eq!(
            client.url("/admin/status"),
            "https://book.example.org/api/v1/admin/status"
        );
        assert_eq!(percent_encode("back at 10:00"), "back%20at%2010%3A00");
    }
}
