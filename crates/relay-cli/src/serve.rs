//! `relay serve`: configuration (the reference's `RELAY_*` environment, the same as flags,
//! plus TLS, origins and the data-path limits), `--dev` for a zero-configuration local run,
//! and signal handling (SIGINT/SIGTERM close every socket with "going away", exit 0).

use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use crate::until_signal::run_until_signal;
use clap::{ArgAction, Args};
use relay_auth::{mint, Audience, Claims, SCOPE_READ, SCOPE_STATS, SCOPE_WRITE};
use relay_common::connection::ConnectionType;
use relay_common::goduration::parse_setting;
use relay_server::config::{Limits, Rate};
use relay_server::{RunningServer, ServerConfig, TlsFiles};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(after_help = "Quick start on a laptop: relay serve --dev\n\
Production: set RELAY_AUDIENCE, RELAY_URL and RELAY_SECRET (or the flags) behind a TLS proxy,\n\
or give --tls-cert/--tls-key to terminate TLS here.")]
pub struct ServeArgs {
    /// Development mode: no configuration needed. Binds 127.0.0.1, generates a secret and
    /// prints the URLs, a ready-to-use token and a curl line.
    #[arg(long)]
    dev: bool,
    /// External base URL of the access API; user tokens' `aud` must contain it exactly.
    #[arg(long, env = "RELAY_AUDIENCE")]
    audience: Option<String>,
    /// HMAC secret used to verify tokens.
    #[arg(long, env = "RELAY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// External base URL of the websocket relay, used to build the returned `uri`.
    #[arg(long = "url", env = "RELAY_URL")]
    relay_url: Option<String>,
    /// Access API port (0: any free port; the bound address is printed on stdout as
    /// "relay: access API listening on ADDR").
    #[arg(long, env = "RELAY_PORT_ACCESS", default_value_t = 3000)]
    port_access: u16,
    /// Websocket relay port (0: any free port; printed as "relay: relay listening on ADDR").
    #[arg(long, env = "RELAY_PORT_RELAY", default_value_t = 3001)]
    port_relay: u16,
    /// Address to listen on (both ports). Default: every interface (127.0.0.1 with --dev).
    #[arg(long, env = "RELAY_BIND")]
    bind: Option<IpAddr>,
    /// Accept session tokens with an empty booking_id.
    #[arg(long, env = "RELAY_ALLOW_NO_BOOKING_ID", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    allow_no_booking_id: bool,
    /// Per-connection queue length in messages (1..=512; other values, and text that is
    /// not a number, become 256 with a warning, as in the reference).
    #[arg(
        long,
        env = "RELAY_BUFFER_SIZE",
        default_value = "128",
        allow_negative_numbers = true
    )]
    buffer_size: String,
    /// Per-connection queue limit in bytes.
    #[arg(long, env = "RELAY_BUFFER_BYTES", default_value_t = 16 * 1024 * 1024)]
    buffer_bytes: usize,
    /// Past the message limit, small messages still queue while the queue holds at most
    /// this many bytes, so short bursts of small messages are not dropped (0: off).
    #[arg(long, env = "RELAY_BUFFER_BURST_BYTES", default_value_t = relay_server::config::DEFAULT_QUEUE_BURST_BYTES)]
    buffer_burst_bytes: usize,
    /// A reader whose queue stays full this long is disconnected (close code 4008).
    #[arg(long, env = "RELAY_SLOW_READER_TIMEOUT", default_value = "10s", value_parser = parse_setting)]
    slow_reader_timeout: Duration,
    /// Period of reports on the `stats` topic (at least 1s).
    #[arg(long, env = "RELAY_STATS_EVERY", default_value = "5s", value_parser = parse_setting)]
    stats_every: Duration,
    /// Period of pruning expired deny/allow entries and codes.
    #[arg(long, env = "RELAY_TIDY_EVERY", default_value = "5m", value_parser = parse_setting)]
    tidy_every: Duration,
    /// Server ping period (more than 0; every duration is at most 1 year).
    #[arg(long, env = "RELAY_PING_INTERVAL", default_value = "54s", value_parser = parse_setting)]
    ping_interval: Duration,
    /// Close a connection that sends nothing (not even a pong) for this long (more than 0).
    #[arg(long, env = "RELAY_PONG_TIMEOUT", default_value = "60s", value_parser = parse_setting)]
    pong_timeout: Duration,
    /// Deadline for writing to one connection (more than 0).
    #[arg(long, env = "RELAY_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_setting)]
    write_timeout: Duration,
    /// Largest accepted message in bytes (larger: close 1009; more than 0).
    #[arg(long, env = "RELAY_MAX_MESSAGE_BYTES", default_value_t = 10 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Merge queued binary messages into one frame (the reference's behaviour; only for
    /// byte streams such as MPEG-TS video).
    #[arg(long, env = "RELAY_COALESCE_BINARY", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    coalesce_binary: bool,
    /// Write frames from the publishing task straight to a plain (non-TLS) reader's
    /// socket when nothing is queued for it (one vectored write, no copy, no task
    /// wake-up); a reader that would block gets the frame queued. `false` queues every
    /// frame for the reader's own task, as before.
    #[arg(long, env = "RELAY_DIRECT_WRITES", default_value_t = true, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    direct_writes: bool,
    /// Seconds of clock skew tolerated on token exp/nbf/iat.
    #[arg(long, env = "RELAY_TOKEN_LEEWAY", default_value_t = 0)]
    token_leeway: u64,
    /// Comma-separated browser origins allowed (CORS and websocket Origin); empty: any.
    #[arg(long, env = "RELAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Send CORS headers on the access API. Turn off (`RELAY_CORS=false`) behind a proxy
    /// that adds its own, or browsers see two `Access-Control-Allow-Origin` headers.
    #[arg(long, env = "RELAY_CORS", default_value_t = true, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    cors: bool,
    /// Require the relay:stats scope to join the `stats` topic.
    #[arg(long, env = "RELAY_STATS_REQUIRE_SCOPE", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    stats_require_scope: bool,
    /// Most unused one-time codes one booking may have waiting (at least 1); more session
    /// requests get 429 until codes are used or expire (30 s).
    #[arg(long, env = "RELAY_MAX_CODES_PER_BOOKING", default_value_t = relay_auth::codes::DEFAULT_MAX_CODES_PER_BOOKING)]
    max_codes_per_booking: usize,
    /// Most unused one-time codes waiting in total (at least 1); more get 503.
    #[arg(long, env = "RELAY_MAX_CODES", default_value_t = relay_auth::codes::DEFAULT_MAX_CODES)]
    max_codes: usize,
    /// Directory for the relay's state (the deny list, reloaded at start-up so a cancelled
    /// booking stays refused after a restart). Default: none, denies are kept in memory
    /// only (--dev: a fresh temporary directory).
    #[arg(long, env = "RELAY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Close a connection whose TLS handshake and request head (or, kept alive, whose next
    /// request head) take longer than this: slow or silent clients (slowloris). Both ports.
    #[arg(long, env = "RELAY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_setting)]
    header_read_timeout: Duration,
    /// `off` lifts every connection cap and rate limit below (benchmarks); `on` keeps them.
    #[arg(long, env = "RELAY_LIMITS", default_value = "on")]
    limits: String,
    /// Most open websockets on the relay port; past it upgrades get 503 (0: no cap).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = relay_server::limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most open websockets of one booking; past it upgrades get 503 (0: no cap).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS_PER_BOOKING", default_value_t = relay_server::limits::DEFAULT_MAX_CONNECTIONS_PER_BOOKING)]
    max_connections_per_booking: usize,
    /// Rate of POST /session and /shell with a valid token, per booking, as
    /// "<n>/<s|m|h>[ burst <n>]"; past it 429 with Retry-After ("off" or 0: none).
    #[arg(long, env = "RELAY_RATE_PER_BOOKING", default_value = relay_server::limits::DEFAULT_RATE_PER_BOOKING)]
    rate_per_booking: String,
    /// Rate of POST /session and /shell that fail authentication, per client address
    /// (IPv6: per /64); past it 429 with Retry-After ("off" or 0: none).
    #[arg(long, env = "RELAY_RATE_BAD_AUTH_PER_IP", default_value = relay_server::limits::DEFAULT_RATE_BAD_AUTH_PER_IP)]
    rate_bad_auth_per_ip: String,
    /// Comma-separated reverse proxies (IPs or CIDRs) whose Forwarded / X-Forwarded-For
    /// name the client address; empty: the TCP peer is the client (loopback included).
    #[arg(long, env = "RELAY_TRUSTED_PROXIES", default_value = "")]
    trusted_proxies: String,
    /// PEM certificate chain: serve TLS on both ports.
    #[arg(long, env = "RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join a relay cluster through this NATS server (`nats://host:4222`, several
    /// comma-separated), with JetStream on. Unset: a single node.
    #[arg(long = "nats", env = "RELAY_NATS_URL")]
    nats_url: Option<String>,
    /// NATS credentials file (user JWT and nkey seed).
    #[arg(long, env = "RELAY_NATS_CREDS", requires = "nats_url")]
    nats_creds: Option<PathBuf>,
    /// PEM CA certificate(s) the NATS server's certificate must chain to (turns TLS on).
    #[arg(long, env = "RELAY_NATS_TLS_CA", requires = "nats_url")]
    nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS (with --nats-tls-key).
    #[arg(long, env = "RELAY_NATS_TLS_CERT", requires_all = ["nats_url", "nats_tls_key"])]
    nats_tls_cert: Option<PathBuf>,
    /// PEM private key for --nats-tls-cert.
    #[arg(long, env = "RELAY_NATS_TLS_KEY", requires_all = ["nats_url", "nats_tls_cert"])]
    nats_tls_key: Option<PathBuf>,
    /// This node's name in the cluster's status and message headers; unique per node.
    /// Default: the host name and a short random suffix.
    #[arg(long, env = "RELAY_NODE_NAME", requires = "nats_url")]
    node_name: Option<String>,
    /// Log level.
    #[arg(
        long,
        env = "RELAY_LOG_LEVEL",
        value_enum,
        ignore_case = true,
        default_value = "warn"
    )]
    log_level: LogLevel,
    /// Log format.
    #[arg(
        long,
        env = "RELAY_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "json"
    )]
    log_format: LogFormat,
    /// How the secret setting is named in messages (`relay shell relay` names its own).
    #[arg(skip = "RELAY_SECRET (--secret)")]
    secret_name: &'static str,
    /// Log destination: stdout, stderr or a file path (falls back to stderr if unwritable).
    #[arg(
        long,
        env = "RELAY_LOG_FILE",
        default_value = "/var/log/relay/relay.log"
    )]
    log_file: String,
}

/// What `relay shell relay` sets from its own `SHELLRELAY_*` variables (shell spec §1.2);
/// every other setting is `relay serve`'s, with its defaults and `RELAY_*` variables.
pub(crate) struct Front {
    /// `aud` that access tokens must carry (`SHELLRELAY_ACCESSFQDN`).
    pub audience: String,
    /// HMAC secret (`SHELLRELAY_SECRET`).
    pub secret: String,
    /// Public base URL of the relay port (`SHELLRELAY_RELAYFQDN`).
    pub relay_url: String,
    /// Access API port (`SHELLRELAY_ACCESSPORT`).
    pub port_access: u16,
    /// Websocket relay port (`SHELLRELAY_RELAYPORT`).
    pub port_relay: u16,
    /// Text logs at info on stdout; otherwise JSON at warn on stderr (`SHELLRELAY_DEVELOPMENT`).
    pub development: bool,
}

impl ServeArgs {
    /// `relay serve`'s arguments with `front` in place of its own audience, secret, URL,
    /// ports and logging, so that another subcommand serves through the same
    /// configuration and [`run`].
    pub(crate) fn with_front(front: Front) -> Result<ServeArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let mut args = <Serve as clap::Parser>::try_parse_from(["relay"])?.serve;
        args.dev = false;
        args.audience = Some(front.audience);
        args.secret = Some(front.secret);
        args.secret_name = "SHELLRELAY_SECRET (--secret)";
        args.relay_url = Some(front.relay_url);
        args.port_access = front.port_access;
        args.port_relay = front.port_relay;
        (args.log_level, args.log_format, args.log_file) = if front.development {
            (LogLevel::Info, LogFormat::Text, "stdout".to_owned())
        } else {
            (LogLevel::Warn, LogFormat::Json, "stderr".to_owned())
        };
        Ok(args)
    }
}

/// Turn the arguments into a server configuration, or the list of missing and
/// out-of-range settings (checked once here, with the variables' names).
fn config(args: &ServeArgs, dev_secret: Option<&str>) -> Result<ServerConfig, Vec<String>> {
    let mut missing = Vec::new();
    let secret = dev_secret
        .map(str::to_owned)
        .or_else(|| args.secret.clone())
        .filter(|s| !s.is_empty());
    if !args.dev {
        for (value, name) in [
            (args.audience.as_ref(), "RELAY_AUDIENCE"),
            (secret.as_ref(), "RELAY_SECRET"),
            (args.relay_url.as_ref(), "RELAY_URL"),
        ] {
            if value.is_none_or(|v| v.is_empty()) {
                missing.push(format!(
                    "You must set {name} (or --{})",
                    name.trim_start_matches("RELAY_").to_ascii_lowercase()
                ));
            }
        }
    }
    for (value, name) in [
        (args.max_codes_per_booking, "RELAY_MAX_CODES_PER_BOOKING"),
        (args.max_codes, "RELAY_MAX_CODES"),
    ] {
        if value == 0 {
            missing.push(format!(
                "{name} (--{}) must be at least 1",
                name.trim_start_matches("RELAY_")
                    .to_ascii_lowercase()
                    .replace('_', "-")
            ));
        }
    }
    let limits = limits_config(args, &mut missing);
    let trusted_proxies = relay_server::client_addr::parse_trusted_proxies(&args.trusted_proxies)
        .unwrap_or_else(|e| {
            missing.push(format!("RELAY_TRUSTED_PROXIES: {e}"));
            Vec::new()
        });
    if args.header_read_timeout.is_zero() || args.header_read_timeout > MAX_HEADER_READ_TIMEOUT {
        missing.push(format!(
            "RELAY_HEADER_READ_TIMEOUT must be more than 0 and at most {}s",
            MAX_HEADER_READ_TIMEOUT.as_secs()
        ));
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let default_ip = if args.dev {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let ip = args.bind.unwrap_or(default_ip);
    let queue_messages = buffer_size(&args.buffer_size);
    let mut cfg = ServerConfig::new(secret.unwrap_or_default().into_bytes());
    cfg.audience = args.audience.clone();
    cfg.relay_url = args.relay_url.clone();
    cfg.access_listen = SocketAddr::new(ip, args.port_access);
    cfg.relay_listen = SocketAddr::new(ip, args.port_relay);
    cfg.allow_no_booking_id = args.allow_no_booking_id || args.dev;
    cfg.queue_messages = queue_messages;
    cfg.queue_bytes = args.buffer_bytes;
    cfg.queue_burst_bytes = args.buffer_burst_bytes;
    cfg.slow_reader_timeout = args.slow_reader_timeout;
    cfg.stats_every = args.stats_every;
    cfg.tidy_every = args.tidy_every;
    cfg.ping_interval = args.ping_interval;
    cfg.pong_timeout = args.pong_timeout;
    cfg.write_timeout = args.write_timeout;
    cfg.max_message_bytes = args.max_message_bytes;
    cfg.coalesce_binary = args.coalesce_binary;
    cfg.direct_writes = args.direct_writes;
    cfg.leeway_secs = args.token_leeway;
    cfg.allowed_origins = args
        .allowed_origins
        .iter()
        .filter(|o| !o.is_empty())
        .cloned()
        .collect();
    cfg.cors = args.cors;
    cfg.stats_require_scope = args.stats_require_scope;
    cfg.max_codes_per_booking = args.max_codes_per_booking;
    cfg.max_codes = args.max_codes;
    cfg.state_dir = args.state_dir.clone();
    cfg.header_read_timeout = args.header_read_timeout;
    cfg.limits = limits;
    cfg.trusted_proxies = trusted_proxies;
    cfg.cluster = args
        .nats_url
        .as_ref()
        .filter(|url| !url.is_empty())
        .map(|url| {
            let mut cluster = relay_server::ClusterConfig::new(url.clone());
            cluster.creds = args.nats_creds.clone();
            cluster.tls_ca = args.nats_tls_ca.clone();
            cluster.tls_cert = args.nats_tls_cert.clone();
            cluster.tls_key = args.nats_tls_key.clone();
            if let Some(name) = args.node_name.as_ref().filter(|n| !n.is_empty()) {
                cluster.node_name = name.clone();
            }
            cluster
        });
    cfg.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The queue length from `RELAY_BUFFER_SIZE`. Like the reference (viper reads text that
/// is not a number as 0), anything outside 1..=512 becomes 256, with a warning.
fn buffer_size(text: &str) -> usize {
    let Ok(requested) = text.trim().parse::<i64>() else {
        let using = relay_server::config::FALLBACK_QUEUE_MESSAGES;
        tracing::warn!(requested = text, using, "RELAY_BUFFER_SIZE is not a number");
        return using;
    };
    let (queue_messages, replaced) = ServerConfig::checked_queue_messages(requested);
    if replaced {
        tracing::warn!(
            requested,
            using = queue_messages,
            "RELAY_BUFFER_SIZE out of range 1..=512"
        );
    }
    queue_messages
}

/// Largest accepted `RELAY_HEADER_READ_TIMEOUT`.
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// The caps and rates, or [`Limits::off`] with `RELAY_LIMITS=off`; a malformed setting
/// is reported in `errors` with its variable's name.
fn limits_config(args: &ServeArgs, errors: &mut Vec<String>) -> Limits {
    let mut rate = |text: &str, name: &str| {
        Rate::parse_setting(text).unwrap_or_else(|e| {
            errors.push(format!("{name}: {e}"));
            None
        })
    };
    let limits = Limits {
        max_connections: args.max_connections,
        max_connections_per_booking: args.max_connections_per_booking,
        rate_per_booking: rate(&args.rate_per_booking, "RELAY_RATE_PER_BOOKING"),
        rate_bad_auth_per_ip: rate(&args.rate_bad_auth_per_ip, "RELAY_RATE_BAD_AUTH_PER_IP"),
    };
    match args.limits.trim().to_ascii_lowercase().as_str() {
        "on" => limits,
        "off" => Limits::off(),
        other => {
            errors.push(format!("RELAY_LIMITS must be on or off, not {other:?}"));
            limits
        }
    }
}

pub fn run(args: ServeArgs) -> ExitCode {
    if args.dev {
        logging::init(LogLevel::Info, LogFormat::Text, "stderr");
    } else {
        logging::init(args.log_level, args.log_format, &args.log_file);
    }
    let dev_secret = args.dev.then(random_secret);
    let mut cfg = match config(&args, dev_secret.as_deref()) {
        Ok(cfg) => cfg,
        Err(missing) => {
            for m in missing {
                tracing::error!("{m}");
                eprintln!("{m}");
            }
            return ExitCode::FAILURE;
        }
    };
    if !args.dev {
        if let Some(warning) = cfg.short_secret_warning() {
            let warning = warning.replacen("RELAY_SECRET (--secret)", args.secret_name, 1);
            tracing::warn!("{warning}");
            eprintln!("relay serve: warning: {warning}");
        }
    }
    // --dev keeps its deny list in a fresh temporary directory, removed at exit.
    let _dev_state = match (args.dev, &cfg.state_dir) {
        (true, None) => match use_temporary_state_dir(&mut cfg) {
            Ok(dir) => Some(dir),
            Err(e) => {
                eprintln!("relay serve: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    if cfg.state_dir.is_none() {
        tracing::warn!(
            "RELAY_STATE_DIR is not set: denied bookings are kept in memory only and will not survive a restart"
        );
    }
    run_until_signal("relay serve", |stop| async move {
        let secret = cfg.secret.clone();
        let server = match RunningServer::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("relay serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One parseable line per listener, so that whoever started the relay with port 0
        // (tests, scripts) learns the bound addresses.
        println!("relay: access API listening on {}", server.access_addr());
        println!("relay: relay listening on {}", server.relay_addr());
        if args.dev {
            print_dev_banner(&server, &secret);
        }
        stop.cancelled().await;
        tracing::info!("shutting down: closing connections with 1001 going away");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// A fresh random secret (48 hex digits) for the `--dev` modes.
pub(crate) fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Points `cfg` at a fresh temporary state directory (the `--dev` deny list), removed
/// when the returned handle is dropped.
pub(crate) fn use_temporary_state_dir(cfg: &mut ServerConfig) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("relay-dev-state-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary state directory: {e}"))?;
    cfg.state_dir = Some(dir.path().to_owned());
    Ok(dir)
}

fn dev_token(server: &RunningServer, secret: &[u8], topic: &str, scopes: &[&str]) -> String {
    let now = relay_common::clock::unix_now();
    let claims = Claims {
        booking_id: "dev".into(),
        topic: topic.into(),
        prefix: ConnectionType::Session.as_str().into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        aud: Audience::single(server.access_url()),
        iat: Some(now - 1),
        nbf: Some(now - 1),
        exp: Some(now + 24 * 3600),
        ..Claims::default()
    };
    mint(&claims, secret)
}

fn print_dev_banner(server: &RunningServer, secret: &[u8]) {
    let access = server.access_url();
    let token = dev_token(server, secret, "demo", &[SCOPE_READ, SCOPE_WRITE]);
    let stats = dev_token(server, secret, "stats", &[SCOPE_READ, SCOPE_STATS]);
    let video = dev_token(server, secret, "video", &[SCOPE_READ, SCOPE_WRITE]);
    let data = dev_token(server, secret, "data", &[SCOPE_READ, SCOPE_WRITE]);
    let secret_text = String::from_utf8_lossy(secret);
    let relay = server.relay_url();
    let relay_http = relay.replacen("ws", "http", 1);
    let uri_of = format!(
        "curl -s -X POST -H \"Authorization: $TOKEN\" {access}/session/demo | sed -E 's/.*\"uri\":\"([^\"]*)\".*/\\1/'"
    );
    let lines = [
        String::new(),
        "relay is running in development mode (127.0.0.1 only, random secret, empty booking ids allowed)".into(),
        String::new(),
        format!("  access API  {access}"),
        format!("  relay       {relay}"),
        format!("  stats page  {relay_http}/stats#token={stats}"),
        format!("  demo page   {relay_http}/demo#video=video&videoToken={video}&data=data&dataToken={data}"),
        format!("  secret      {secret_text}"),
        String::new(),
        "A read+write token for topic \"demo\", valid 24 h:".into(),
        String::new(),
        format!("  export TOKEN={token}"),
        String::new(),
        "Get a one-time websocket URL (each code works once, for 30 s):".into(),
        String::new(),
        format!("  curl -s -X POST -H \"Authorization: $TOKEN\" {access}/session/demo"),
        String::new(),
        "Join the topic from two terminals and type in either (needs websocat):".into(),
        String::new(),
        format!("  websocat \"$({uri_of})\""),
        String::new(),
        "The demo page shows topic \"video\" (MPEG-TS, e.g. ffmpeg through `relay host`) and".into(),
        "sends commands on topic \"data\"; see README \"See it in a browser\".".into(),
        String::new(),
        format!("Mint more tokens: RELAY_TOKEN_SECRET={secret_text} RELAY_TOKEN_AUDIENCE={access} \\"),
        "  RELAY_TOKEN_TOPIC=demo RELAY_TOKEN_LIFETIME=3600 relay token".into(),
        "Stop with Ctrl-C.".into(),
    ];
    println!("{}", lines.join("\n"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config_of(extra: &[&str]) -> Result<ServerConfig, Vec<String>> {
        let args = ["x", "--dev"].iter().chain(extra).copied();
        let args = <Serve as clap::Parser>::try_parse_from(args).unwrap().serve;
        config(&args, Some("secret"))
    }

    #[test]
    fn limits_have_documented_defaults_and_one_switch_lifts_them() {
        let cfg = config_of(&[]).unwrap();
        assert_eq!(cfg.limits, Limits::defaults());
        assert_eq!(cfg.header_read_timeout, Duration::from_secs(10));
        assert!(cfg.trusted_proxies.is_empty());
        assert_eq!(
            config_of(&["--limits", "off"]).unwrap().limits,
            Limits::off()
        );
        let cfg = config_of(&[
            "--rate-per-booking",
            "off",
            "--rate-bad-auth-per-ip",
            "1/m burst 3",
            "--trusted-proxies",
            "10.0.0.1,192.168.0.0/16",
            "--max-connections",
            "5",
        ])
        .unwrap();
        assert_eq!(cfg.limits.rate_per_booking, None);
        assert_eq!(
            cfg.limits.rate_bad_auth_per_ip.map(|r| r.to_string()),
            Some("1/m burst 3".into())
        );
        assert_eq!(cfg.trusted_proxies.len(), 2);
        assert_eq!(cfg.limits.max_connections, 5);
    }

    #[test]
    fn booleans_take_go_spellings_and_a_bad_one_names_its_variable() {
        for (text, want) in [("TRUE", true), ("1", true), ("t", true), ("False", false)] {
            let cfg = config_of(&["--stats-require-scope", text]).unwrap();
            assert_eq!(cfg.stats_require_scope, want, "{text}");
        }
        let Err(err) = <Serve as clap::Parser>::try_parse_from(["x", "--coalesce-binary", "yes"])
        else {
            panic!("--coalesce-binary yes was accepted");
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("RELAY_COALESCE_BINARY"), "{err}");
    }

    #[test]
    fn a_buffer_size_that_is_not_a_number_falls_back_to_256() {
        assert_eq!(
            config_of(&["--buffer-size", "lots"])
                .unwrap()
                .queue_messages,
            256
        );
        assert_eq!(
            config_of(&["--buffer-size", "0"]).unwrap().queue_messages,
            256
        );
        assert_eq!(
            config_of(&["--buffer-size", "64"]).unwrap().queue_messages,
            64
        );
        assert_eq!(config_of(&[]).unwrap().queue_messages, 128);
    }

    #[test]
    fn malformed_limits_are_refused_with_the_variable_name() {
        for (flag, value, name) in [
            ("--rate-per-booking", "10/d", "RELAY_RATE_PER_BOOKING"),
            (
                "--rate-bad-auth-per-ip",
                "lots",
                "RELAY_RATE_BAD_AUTH_PER_IP",
            ),
            ("--trusted-proxies", "10.0.0.0/40", "RELAY_TRUSTED_PROXIES"),
            ("--limits", "maybe", "RELAY_LIMITS"),
            ("--header-read-timeout", "0", "RELAY_HEADER_READ_TIMEOUT"),
            (
                "--header-read-timeout",
                "1000h",
                "RELAY_HEADER_READ_TIMEOUT",
            ),
        ] {
            let errors = config_of(&[flag, value]).unwrap_err();
            assert!(
                errors.iter().any(|e| e.contains(name)),
                "{flag} {value}: {errors:?}"
            );
        }
    }
}
