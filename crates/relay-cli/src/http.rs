//! `relay http serve` and `relay http client`: the HTTP relay (crate `http-relay`), with the
//! flag names of Cloud Robotics' `http-relay-server` and `http-relay-client` so their
//! deployment manifests keep working, in either spelling: `--flag=value` or Go's
//! single-dash `-flag=value` / `-flag value` ([`go_style_flags`]).

use crate::logging::{self, LogFormat, LogLevel};
use clap::{Args, Subcommand};
use http_relay::auth::PollerAuth;
use http_relay::broker::BrokerTimeouts;
use http_relay::{ClientConfig, ClientError, ServerConfig};
use relay_common::goduration::{check_settings, parse_setting, Zero};
use relay_common::shutdown::{cancel_on_signal, CancellationToken};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand)]
pub enum HttpCommand {
    /// Run the public relay server that users and relay-clients both call.
    Serve(ServeArgs),
    /// Run a relay-client next to a backend: poll the relay server and replay requests.
    Client(ClientArgs),
}

#[derive(Args)]
pub struct HttpArgs {
    #[command(subcommand)]
    command: HttpCommand,
}

/// Rewrite Go's single-dash long flags for `relay http serve` and `relay http client` into
/// clap's double-dash form, before clap parses `argv`: the Go binaries (Go's `flag`
/// package) accept `-relay_address=…` and `-server_name x`, and existing Kubernetes
/// manifests use them. Only after `http serve` / `http client`, only a `-name` or
/// `-name=value` argument whose `name` is one of that subcommand's long flags becomes
/// `--name…`; everything else (values such as `-4`, unknown names, anything after `--`,
/// other subcommands) is left for clap to judge.
pub fn go_style_flags(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = argv.into_iter().collect();
    let command = match (argv.get(1), argv.get(2)) {
        (Some(http), Some(sub)) if http == "http" && sub == "serve" => {
            ServeArgs::augment_args(clap::Command::new("serve"))
        }
        (Some(http), Some(sub)) if http == "http" && sub == "client" => {
            ClientArgs::augment_args(clap::Command::new("client"))
        }
        _ => return argv,
    };
    let long_flags: Vec<&str> = command
        .get_arguments()
        .filter_map(clap::Arg::get_long)
        .collect();
    for arg in argv.iter_mut().skip(3) {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        let Some(flag) = text.strip_prefix('-').filter(|f| !f.starts_with('-')) else {
            continue;
        };
        let name = flag.split_once('=').map_or(flag, |(name, _)| name);
        if long_flags.contains(&name) {
            *arg = OsString::from(format!("-{text}"));
        }
    }
    argv
}

/// Go slog levels as integers: -4 debug, 0 info, 4 warn, 8 error.
fn log_level(level: i32) -> LogLevel {
    match level {
        i32::MIN..=-5 => LogLevel::Trace,
        -4..=-1 => LogLevel::Debug,
        0..=3 => LogLevel::Info,
        4..=7 => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// TCP port to listen on (all interfaces); 0 picks a free port, -1 means 80.
    #[arg(
        long,
        env = "RELAY_HTTP_PORT",
        default_value_t = 80,
        allow_hyphen_values = true
    )]
    port: i32,
    /// Address to bind (ours; the reference always binds every interface).
    #[arg(long, env = "RELAY_HTTP_BIND", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Read size for bytes from the user on an upgraded (101) connection.
    #[arg(long = "block_size", default_value_t = 10240)]
    block_size: usize,
    /// Reap a request that gets no response message for this long (504 before headers).
    #[arg(long = "inactive_request_timeout", default_value = "60s", value_parser = parse_setting)]
    inactive_request_timeout: Duration,
    /// Forget a backend (and its metric series) idle for this long.
    #[arg(long = "inactive_backend_timeout", default_value = "30m", value_parser = parse_setting)]
    inactive_backend_timeout: Duration,
    /// Log level as a Go slog integer: -4 debug, 0 info, 4 warn, 8 error.
    #[arg(long = "log_level", default_value_t = 0, allow_hyphen_values = true)]
    log_level: i32,
    /// Largest user request body in bytes (larger ones get 413); 0 is unlimited (the
    /// reference's behaviour) and must be set explicitly.
    #[arg(
        long = "max_request_body",
        env = "RELAY_HTTP_MAX_REQUEST_BODY",
        default_value_t = http_relay::server::DEFAULT_MAX_REQUEST_BODY
    )]
    max_request_body: u64,
    /// Close a connection whose request headers take longer than this (slowloris).
    #[arg(long = "header_read_timeout", env = "RELAY_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_setting)]
    header_read_timeout: Duration,
    /// Most connections served at once; more get 503 (0 = no cap).
    #[arg(
        long = "max_connections",
        env = "RELAY_HTTP_MAX_CONNECTIONS",
        default_value_t = http_relay::server::DEFAULT_MAX_CONNECTIONS
    )]
    max_connections: usize,
    /// Allow a non-loopback --bind without --auth_secret (something in front, such as an
    /// ingress, authenticates relay-clients).
    #[arg(long = "insecure", env = "RELAY_HTTP_INSECURE", default_value_t = false, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    insecure: bool,
    /// Bodies longer than this are streamed to relay-clients that can pull them in pieces.
    #[arg(long = "body_stream_threshold", default_value_t = 256 * 1024)]
    body_stream_threshold: usize,
    /// HMAC secret of relay JWTs; when set, relay-clients must present a token with the
    /// scope `http:server:<name>` (or `http:server:*`) for each name they serve.
    #[arg(
        long = "auth_secret",
        env = "RELAY_HTTP_SECRET",
        hide_env_values = true
    )]
    auth_secret: Option<String>,
    /// When set with --auth_secret, tokens' `aud` must contain this value.
    #[arg(long = "auth_audience", env = "RELAY_HTTP_AUDIENCE")]
    auth_audience: Option<String>,
    /// Accepted for compatibility; tracing export is not implemented (a warning is logged).
    #[arg(long = "trace-stackdriver-project-id", default_value = "")]
    trace_stackdriver_project_id: String,
    /// Accepted for compatibility; there is no pprof in Rust (a warning is logged).
    #[arg(long = "pprof_port", default_value_t = 0)]
    pprof_port: u16,
}

#[derive(Args)]
pub struct ClientArgs {
    /// Scheme for backend requests.
    #[arg(long = "backend_scheme", default_value = "https")]
    backend_scheme: String,
    /// host:port of the backend.
    #[arg(long = "backend_address", default_value = "localhost:8080")]
    backend_address: String,
    /// Prefix added in front of every forwarded path.
    #[arg(long = "backend_path", default_value = "")]
    backend_path: String,
    /// Send the user's original Host header to the backend.
    #[arg(long = "preserve_host", default_value_t = true, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    preserve_host: bool,
    /// Scheme towards the relay server.
    #[arg(long = "relay_scheme", default_value = "https")]
    relay_scheme: String,
    /// host:port of the relay server.
    #[arg(long = "relay_address", default_value = "localhost:8081")]
    relay_address: String,
    /// Path prefix before /server/..., e.g. /apis/core.kubernetes-relay.
    #[arg(long = "relay_prefix", default_value = "")]
    relay_prefix: String,
    /// Name to poll for (users reach it as /client/<name>/).
    #[arg(
        long = "server_name",
        env = "RELAY_HTTP_SERVER_NAME",
        default_value = "server_name"
    )]
    server_name: String,
    /// File re-read per request and sent to the backend as `Authorization: Bearer <contents>`.
    #[arg(long = "authentication_token_file")]
    authentication_token_file: Option<PathBuf>,
    /// PEM root CAs for the backend connection.
    #[arg(long = "root_ca_file")]
    root_ca_file: Option<PathBuf>,
    /// Send a response message once its body exceeds this many bytes.
    #[arg(long = "max_chunk_size", default_value_t = 1 << 20)]
    max_chunk_size: usize,
    /// Read size from the backend body.
    #[arg(long = "block_size", default_value_t = 65536)]
    block_size: usize,
    /// Number of concurrent long-poll workers.
    #[arg(long = "num_pending_requests", default_value_t = 1)]
    num_pending_requests: usize,
    /// Idle connection pool size per host, for relay and backend.
    #[arg(long = "max_idle_conns_per_host", default_value_t = 100)]
    max_idle_conns_per_host: usize,
    /// Backend over HTTP/1.1 only (needed for SPDY/websocket upgrades to HTTPS backends).
    #[arg(long = "disable_http2", default_value_t = false, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    disable_http2: bool,
    /// Backend over HTTP/2 only (h2c prior knowledge with http); for gRPC backends.
    #[arg(long = "force_http2", default_value_t = false, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    force_http2: bool,
    /// Do not send a relay token (the reference: skip Google credentials).
    #[arg(long = "disable_auth_for_remote", default_value_t = false, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    disable_auth_for_remote: bool,
    /// File holding the relay JWT (scope http:server:<name>), re-read on every relay call.
    #[arg(long = "relay_token_file", env = "RELAY_HTTP_TOKEN_FILE")]
    relay_token_file: Option<PathBuf>,
    /// The relay JWT itself, when no token file is given.
    #[arg(long = "relay_token", env = "RELAY_HTTP_TOKEN", hide_env_values = true)]
    relay_token: Option<String>,
    /// Longest wait for a backend's response headers; 0 waits for ever (the reference).
    #[arg(long = "backend_timeout", default_value = "60s", value_parser = parse_setting)]
    backend_timeout: Duration,
    /// Most requests handled at once; polling pauses while this many are in flight.
    #[arg(long = "max_concurrent_requests", default_value_t = 1000)]
    max_concurrent_requests: usize,
    /// Log level as a Go slog integer: -4 debug, 0 info, 4 warn, 8 error.
    #[arg(long = "log_level", default_value_t = 0, allow_hyphen_values = true)]
    log_level: i32,
    /// Accepted for compatibility; tracing export is not implemented.
    #[arg(long = "trace-stackdriver-project-id", default_value = "")]
    trace_stackdriver_project_id: String,
    /// Accepted for compatibility; there is no pprof in Rust.
    #[arg(long = "pprof_port", default_value_t = 0)]
    pprof_port: u16,
}

pub fn run(args: HttpArgs) -> ExitCode {
    match args.command {
        HttpCommand::Serve(args) => serve(args),
        HttpCommand::Client(args) => client(args),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("relay http: cannot start the async runtime: {e}");
            None
        }
    }
}

fn warn_unsupported(trace_project: &str, pprof_port: u16) {
    if !trace_project.is_empty() {
        tracing::warn!(
            "--trace-stackdriver-project-id is accepted but Cloud Trace export is not implemented"
        );
    }
    if pprof_port != 0 {
        tracing::warn!(
            "--pprof_port is accepted but there is no pprof endpoint in this implementation"
        );
    }
}

/// The SIGINT/SIGTERM token, or `None` after reporting why the handlers are missing.
fn shutdown_signal(program: &str) -> Option<CancellationToken> {
    match cancel_on_signal() {
        Ok(stop) => Some(stop),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGINT/SIGTERM handlers");
            eprintln!("{program}: cannot install the SIGINT/SIGTERM handlers: {e}");
            None
        }
    }
}

/// Reports out-of-range duration flags (see `goduration::check_settings`) on stderr and
/// in the log; true if there were any.
fn refuse_settings(program: &str, settings: &[(&str, Duration, Zero)]) -> bool {
    let errors = check_settings(settings);
    for e in &errors {
        tracing::error!("{e}");
        eprintln!("{program}: {e}");
    }
    !errors.is_empty()
}

fn serve(args: ServeArgs) -> ExitCode {
    logging::init(log_level(args.log_level), LogFormat::Json, "stderr");
    // Zero would reap every request (or forget every backend) at the next sweep.
    if refuse_settings(
        "relay http serve",
        &[
            (
                "--inactive_request_timeout",
                args.inactive_request_timeout,
                Zero::Refused,
            ),
            (
                "--inactive_backend_timeout",
                args.inactive_backend_timeout,
                Zero::Refused,
            ),
        ],
    ) {
        return ExitCode::FAILURE;
    }
    let port = match http_relay::server::port_from_flag(args.port) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("relay http serve: --port: {e}");
            return ExitCode::from(2);
        }
    };
    let auth_secret = args.auth_secret.filter(|s| !s.is_empty());
    if let Some(why) =
        http_relay::server::exposure_refusal(args.bind, auth_secret.is_some(), args.insecure)
    {
        eprintln!("relay http serve: {why}");
        return ExitCode::from(2);
    }
    if args.header_read_timeout.is_zero() {
        eprintln!("relay http serve: --header_read_timeout (RELAY_HTTP_HEADER_READ_TIMEOUT) must be greater than 0");
        return ExitCode::from(2);
    }
    let config = ServerConfig {
        listen: SocketAddr::new(args.bind, port),
        header_read_timeout: args.header_read_timeout,
        max_connections: args.max_connections,
        block_size: args.block_size.max(1),
        inactive_request_timeout: args.inactive_request_timeout,
        inactive_backend_timeout: args.inactive_backend_timeout,
        timeouts: BrokerTimeouts::default(),
        max_request_body: args.max_request_body,
        body_stream_threshold: args.body_stream_threshold,
        auth: auth_secret
            .map(|secret| PollerAuth::new(secret.as_bytes(), args.auth_audience.clone())),
        ..ServerConfig::default()
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        warn_unsupported(&args.trace_stackdriver_project_id, args.pprof_port);
        let Some(stop) = shutdown_signal("relay http serve") else {
            return ExitCode::FAILURE;
        };
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot listen");
                eprintln!("relay http serve: cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        match http_relay::server::serve(listener, config, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "Server terminated abnormally");
                ExitCode::FAILURE
            }
        }
    })
}

fn client(args: ClientArgs) -> ExitCode {
    logging::init(log_level(args.log_level), LogFormat::Json, "stderr");
    // Zero means no timeout (the reference's behaviour).
    if refuse_settings(
        "relay http client",
        &[("--backend_timeout", args.backend_timeout, Zero::Allowed)],
    ) {
        return ExitCode::FAILURE;
    }
    let (relay_token_file, relay_token) = if args.disable_auth_for_remote {
        (None, None)
    } else {
        (
            args.relay_token_file,
            args.relay_token.filter(|t| !t.is_empty()),
        )
    };
    let config = ClientConfig {
        backend_scheme: args.backend_scheme,
        backend_address: args.backend_address,
        backend_path: args.backend_path,
        preserve_host: args.preserve_host,
        relay_scheme: args.relay_scheme,
        relay_address: args.relay_address,
        relay_prefix: args.relay_prefix,
        server_name: args.server_name,
        authentication_token_file: args.authentication_token_file,
        root_ca_file: args.root_ca_file,
        max_chunk_size: args.max_chunk_size,
        block_size: args.block_size.max(1),
        num_pending_requests: args.num_pending_requests.max(1),
        max_idle_conns_per_host: args.max_idle_conns_per_host,
        disable_http2: args.disable_http2,
        force_http2: args.force_http2,
        relay_token_file,
        relay_token,
        backend_timeout: args.backend_timeout,
        max_concurrent_requests: args.max_concurrent_requests.max(1),
        ..ClientConfig::default()
    };
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        warn_unsupported(&args.trace_stackdriver_project_id, args.pprof_port);
        let Some(stop) = shutdown_signal("relay http client") else {
            return ExitCode::FAILURE;
        };
        tracing::info!(ServerName = %config.server_name, relay = %config.relay_address, backend = %config.backend_address, "relay http client starting");
        match http_relay::client::run(config, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ ClientError::Config(_)) => {
                eprintln!("relay http client: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to authenticate to cloud-api, restarting");
                eprintln!("relay http client: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rewrite(argv: &[&str]) -> Vec<String> {
        go_style_flags(argv.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_single_dash_flags_become_long_flags() {
        assert_eq!(
            rewrite(&[
                "relay",
                "http",
                "client",
                "-relay_address=relay.example:443",
                "-server_name",
                "robot-1",
                "-disable_auth_for_remote",
                "--backend_scheme=http",
                "-log_level",
                "-4",
                "-nope=1",
                "-",
                "--",
                "-relay_prefix=x",
            ]),
            [
                "relay",
                "http",
                "client",
                "--relay_address=relay.example:443",
                "--server_name",
                "robot-1",
                "--disable_auth_for_remote",
                "--backend_scheme=http",
                "--log_level",
                "-4",
                "-nope=1",
                "-",
                "--",
                "-relay_prefix=x",
            ]
        );
        assert_eq!(
            rewrite(&["relay", "http", "serve", "-port=8080", "-log_level=-4"]),
            ["relay", "http", "serve", "--port=8080", "--log_level=-4"]
        );
    }

    #[test]
    fn other_subcommands_and_other_names_are_untouched() {
        for argv in [
            &["relay", "serve", "-port=8080"][..],
            &["relay", "http", "serve", "-server_name=x"][..],
            &["relay", "http", "client", "-port=1"][..],
            &["relay", "http"][..],
            &["relay"][..],
        ] {
            assert_eq!(rewrite(argv), argv);
        }
    }

    /// The duration flags take Go's forms through the one settings parser
    /// (`relay_common::goduration::parse_setting`, whose own tests cover every form).
    #[test]
    fn go_duration_flags_parse() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        #[derive(clap::Parser)]
        struct Client {
            #[command(flatten)]
            client: ClientArgs,
        }
        let serve = |args: &[&str]| {
            <Serve as clap::Parser>::try_parse_from(args.iter().copied()).map(|c| c.serve)
        };
        let s = serve(&[
            "x",
            "--inactive_request_timeout=1m0s",
            "--inactive_backend_timeout=1h30m",
        ])
        .unwrap();
        assert_eq!(s.inactive_request_timeout, Duration::from_secs(60));
        assert_eq!(s.inactive_backend_timeout, Duration::from_secs(5400));
        let s = serve(&["x", "--inactive_backend_timeout=30m"]).unwrap();
        assert_eq!(s.inactive_backend_timeout, Duration::from_secs(1800));
        assert!(serve(&["x", "--inactive_request_timeout=soon"]).is_err());
        let c = <Client as clap::Parser>::try_parse_from(["x", "--backend_timeout=500ms"])
            .unwrap()
            .client;
        assert_eq!(c.backend_timeout, Duration::from_millis(500));
    }

    /// Issue 13: the server's safer defaults and the flags that change them.
    #[test]
    fn serve_safety_flags_and_defaults() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let serve = |args: &[&str]| {
            <Serve as clap::Parser>::try_parse_from(args.iter().copied())
                .unwrap()
                .serve
        };
        let s = serve(&["x"]);
        assert_eq!(s.max_request_body, 10 * 1024 * 1024);
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 10_000);
        assert!(!s.insecure);
        let s = serve(&[
            "x",
            "--insecure",
            "--max_request_body=0",
            "--header_read_timeout=2s",
            "--max_connections=0",
        ]);
        assert!(s.insecure);
        assert_eq!(s.max_request_body, 0);
        assert_eq!(s.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.max_connections, 0);
    }

    #[test]
    fn go_style_boolean_flags_parse() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            client: ClientArgs,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(args.iter().copied()).map(|c| c.client)
        };
        let c = parse(&[
            "x",
            "--preserve_host=false",
            "--disable_http2",
            "--force_http2=false",
        ])
        .unwrap();
        assert!(!c.preserve_host && c.disable_http2 && !c.force_http2);
        let c = parse(&["x", "--server_name=robot-1", "--num_pending_requests=5"]).unwrap();
        assert!(c.preserve_host);
        assert_eq!(
            (c.server_name.as_str(), c.num_pending_requests),
            ("robot-1", 5)
        );
    }

    #[test]
    fn slog_levels_map() {
        assert_eq!(log_level(-4), LogLevel::Debug);
        assert_eq!(log_level(0), LogLevel::Info);
        assert_eq!(log_level(4), LogLevel::Warn);
        assert_eq!(log_level(8), LogLevel::Error);
    }
}
