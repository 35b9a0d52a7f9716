//! `relay host`: configuration (the reference's `VW_*` environment, the `RELAYHOST_*` names
//! its help text documented as aliases, and the same as flags), then run the host until
//! SIGINT/SIGTERM; SIGHUP reloads the rules file (token rotation).

use crate::logging::{self, LogFormat, LogLevel};
use clap::Args;
use relay_common::goduration::{check_setting, check_settings, Zero};
use relay_common::shutdown::cancel_on_signal;
use relay_host::{HostConfig, RunningHost, SessionConnector};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(
    after_help = "Feed video: ffmpeg -f v4l2 -i /dev/video0 -f mpegts -codec:v mpeg1video -b:v 1000k http://127.0.0.1:8888/ts/video0\n\
Bridge a serial device: websocat ws://127.0.0.1:8888/ws/data tcp-listen:127.0.0.1:9999 --text\n\
Send to the relay: put destination rules in a --rules file, or\n  curl -X POST -d '{\"id\":\"1\",\"stream\":\"data\",\"destination\":\"https://relay.example.io/session/expt00-data\",\"token\":\"eyJ...\"}' http://127.0.0.1:8888/api/destinations\n\
Every variable also accepts the RELAYHOST_* name from the reference's help (RELAYHOST_PORT, RELAYHOST_LOGLEVEL, RELAYHOST_API, RELAYHOST_HTTPWAITMS)."
)]
pub struct HostArgs {
    /// Local port for /ts, /ws and the rule APIs.
    #[arg(long, env = "VW_PORT")]
    port: Option<u16>,
    /// Address to listen on. The local API has no authentication, so keep this on
    /// loopback unless the network around the experiment is trusted.
    #[arg(long, env = "VW_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Log level: trace, debug, info, warn (or warning), error, fatal, panic.
    #[arg(long, env = "VW_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "VW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Log destination: stdout, stderr or a file path.
    #[arg(long, env = "VW_LOG_FILE", default_value = "stdout")]
    log_file: String,
    /// A ws:// or wss:// URL: at start-up, connect feed `api` there (rule id `apiRule`, no
    /// token), so the host can be configured remotely with the JSON command API.
    #[arg(long, env = "VW_API")]
    api: Option<String>,
    /// Start-up rules (TOML, or JSON by extension). SIGHUP reloads it.
    #[arg(long, env = "VW_RULES")]
    rules: Option<PathBuf>,
    /// Milliseconds to wait for open requests at shutdown.
    #[arg(long = "http-wait-ms", env = "VW_HTTPWAITMS")]
    http_wait_ms: Option<u64>,
    /// Largest /ts message in bytes; a longer burst is split into pieces, never truncated.
    #[arg(long, env = "VW_MAX_FRAME_BYTES", default_value_t = relay_host::DEFAULT_MAX_FRAME)]
    max_frame_bytes: usize,
    /// Extra browser origins allowed to use the local API (comma-separated, `*` for any).
    /// Localhost origins and non-browser clients are always allowed.
    #[arg(long, env = "VW_ALLOW_ORIGINS", value_delimiter = ',')]
    allow_origin: Vec<String>,
    /// Extra host names the local API answers (comma-separated, with or without :port),
    /// besides localhost, 127.0.0.0/8, [::1] and the --bind address. Other `Host` names get
    /// 403, so a web page whose name rebinds to 127.0.0.1 cannot use the API.
    #[arg(
        long = "allowed-hosts",
        env = "VW_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// The only directory rules may record (`file`) into; relative `file` paths are taken
    /// from it. Unset: recording is off and a rule with a `file` is refused.
    #[arg(long = "record-dir", env = "VW_RECORD_DIR")]
    record_dir: Option<PathBuf>,
    /// Let commands from the relay (over the VW_API destination) add and delete rules.
    /// Off: relay users may only list rules (never with tokens) and health-check.
    #[arg(long = "api-remote-changes", env = "VW_API_REMOTE_CHANGES", default_value_t = false, action = clap::ArgAction::Set, value_parser = crate::boolean::GoBool, num_args = 0..=1, default_missing_value = "true")]
    api_remote_changes: bool,
    /// Milliseconds a client may take to send its request headers before the local server
    /// closes the connection (against slowloris clients). At least 1.
    #[arg(
        long = "header-timeout-ms",
        env = "VW_HEADER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    header_timeout_ms: u64,
    /// Milliseconds one write to a local /ws client may block before that client is
    /// disconnected (a program that stopped reading). At least 1.
    #[arg(
        long = "ws-write-timeout-ms",
        env = "VW_WS_WRITE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    ws_write_timeout_ms: u64,
    /// Milliseconds between pings on each destination's relay link. At least 1.
    #[arg(
        long = "link-ping-ms",
        env = "VW_LINK_PING_MS",
        default_value_t = 20_000
    )]
    link_ping_ms: u64,
    /// Milliseconds after which a destination's relay link from which nothing (not even a
    /// pong) has arrived is dropped and redialled: a link cut without a FIN. At least 1.
    #[arg(
        long = "link-idle-ms",
        env = "VW_LINK_IDLE_MS",
        default_value_t = 60_000
    )]
    link_idle_ms: u64,
    /// Milliseconds between log lines with the drop totals (written only when they grew).
    /// At least 1.
    #[arg(long = "drop-log-ms", env = "VW_DROP_LOG_MS", default_value_t = 30_000)]
    drop_log_ms: u64,
    /// Extra PEM CA file trusted for https/wss destinations (besides the system roots).
    #[arg(long, env = "VW_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// The reference's help documented `RELAYHOST_*` names that it never read; accept them
/// when the `VW_*` name (or flag) is not given.
fn alias(value: Option<String>, name: &str) -> Option<String> {
    value.or_else(|| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

fn parse_alias<T: std::str::FromStr>(value: Option<T>, name: &str) -> Result<Option<T>, String> {
    match value {
        Some(v) => Ok(Some(v)),
        None => match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}={text:?} is not a valid number")),
            _ => Ok(None),
        },
    }
}

/// The reference's levels (`warning`, not `warn`; anything unknown meant info).
fn log_level(text: Option<&str>) -> (LogLevel, Option<String>) {
    let Some(text) = text else {
        return (LogLevel::Info, None);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "trace" => (LogLevel::Trace, None),
        "debug" => (LogLevel::Debug, None),
        "info" => (LogLevel::Info, None),
        "warn" | "warning" => (LogLevel::Warn, None),
        "error" => (LogLevel::Error, None),
        "fatal" => (LogLevel::Fatal, None),
        "panic" => (LogLevel::Panic, None),
        other => (
            LogLevel::Info,
            Some(format!("unknown log level {other:?}; using info")),
        ),
    }
}

pub fn run(args: HostArgs) -> ExitCode {
    let (level, level_note) =
        log_level(alias(args.log_level.clone(), "RELAYHOST_LOGLEVEL").as_deref());
    logging::init(level, args.log_format, &args.log_file);
    if let Some(note) = level_note {
        tracing::warn!("{note}");
    }
    if std::env::var_os("VW_CPUPROFILE").is_some_and(|v| !v.is_empty()) {
        tracing::warn!("VW_CPUPROFILE is not supported and is ignored");
    }
    let port = match parse_alias(args.port, "RELAYHOST_PORT") {
        Ok(port) => port.unwrap_or(8888),
        Err(e) => return fail(&e),
    };
    let wait_ms = match parse_alias(args.http_wait_ms, "RELAYHOST_HTTPWAITMS") {
        Ok(ms) => ms.unwrap_or(5000),
        Err(e) => return fail(&e),
    };
    let shutdown_grace = Duration::from_millis(wait_ms);
    if let Err(e) = check_setting(
        "VW_HTTPWAITMS (--http-wait-ms)",
        shutdown_grace,
        Zero::Allowed,
    ) {
        return fail(&e);
    }
    let header_timeout = Duration::from_millis(args.header_timeout_ms);
    let ws_write_timeout = Duration::from_millis(args.ws_write_timeout_ms);
    let link_ping = Duration::from_millis(args.link_ping_ms);
    let link_idle = Duration::from_millis(args.link_idle_ms);
    let drop_log_every = Duration::from_millis(args.drop_log_ms);
    let problems = check_settings(&[
        (
            "VW_HEADER_TIMEOUT_MS (--header-timeout-ms)",
            header_timeout,
            Zero::Refused,
        ),
        (
            "VW_WS_WRITE_TIMEOUT_MS (--ws-write-timeout-ms)",
            ws_write_timeout,
            Zero::Refused,
        ),
        ("VW_LINK_PING_MS (--link-ping-ms)", link_ping, Zero::Refused),
        ("VW_LINK_IDLE_MS (--link-idle-ms)", link_idle, Zero::Refused),
        (
            "VW_DROP_LOG_MS (--drop-log-ms)",
            drop_log_every,
            Zero::Refused,
        ),
    ]);
    if let Some(first) = problems.first() {
        return fail(first);
    }
    let config = HostConfig {
        listen: SocketAddr::new(args.bind, port),
        api_destination: alias(args.api, "RELAYHOST_API"),
        rules_file: args.rules,
        max_frame: args.max_frame_bytes,
        allowed_origins: args.allow_origin,
        allowed_hosts: args.allowed_hosts,
        record_dir: args.record_dir.filter(|d| !d.as_os_str().is_empty()),
        api_remote_changes: args.api_remote_changes,
        shutdown_grace,
        header_timeout,
        ws_write_timeout,
        drop_log_every,
    };
    let mut connector = SessionConnector::default();
    connector.base.extra_ca_file = args.ca_file;
    connector.base.ping_interval = link_ping;
    connector.base.idle_timeout = link_idle;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(serve(config, connector))
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("relay host: {message}");
    ExitCode::FAILURE
}

async fn serve(config: HostConfig, connector: SessionConnector) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = match cancel_on_signal() {
        Ok(stop) => stop,
        Err(e) => return fail(&format!("cannot install the SIGINT/SIGTERM handlers: {e}")),
    };
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => return fail(&format!("cannot install the SIGHUP handler: {e}")),
    };
    let host = match RunningHost::start(config, Arc::new(connector)).await {
        Ok(host) => host,
        Err(e) => return fail(&e.to_string()),
    };
    println!("relay host listening on {}", host.url());
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = hangup.recv() => match host.reload_rules() {
                Ok(Some(summary)) => tracing::info!(?summary, "rules reloaded on SIGHUP"),
                Ok(None) => tracing::info!("SIGHUP received but there is no rules file to reload"),
                // A bad edit must not take the experiment offline: keep the running rules.
                Err(e) => tracing::error!(error = %e, "rules file not reloaded; the current rules stay"),
            },
        }
    }
    tracing::info!("shutting down");
    host.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_log_levels_map_and_unknown_is_info_with_a_note() {
        assert_eq!(log_level(Some("WARNING")).0, LogLevel::Warn);
        assert_eq!(log_level(Some("warn")).0, LogLevel::Warn);
        assert_eq!(log_level(Some("PANIC")).0, LogLevel::Panic);
        assert_eq!(log_level(None), (LogLevel::Info, None));
        let (level, note) = log_level(Some("loud"));
        assert_eq!(level, LogLevel::Info);
        assert!(note.is_some());
    }
}
