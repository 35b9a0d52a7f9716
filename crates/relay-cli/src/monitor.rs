//! `relay monitor`: the latency canary of the reference's v0.9 (`RELAY_MONITOR_*`, the same
//! defaults, the same binary timestamp frames). It mints its own token, sends a probe on
//! `RELAY_MONITOR_TOPIC` every interval through one connection and reads it back through a
//! second, and after `RELAY_MONITOR_TRIGGER_AFTER_MISSES` consecutive misses runs its
//! action: `RELAY_MONITOR_COMMAND` through `sh -c`, or else kills the relay whose pid is in
//! `RELAY_MONITOR_PIDFILE` with SIGKILL so that the service manager restarts it (the
//! reference used `pgrep -f "relay serve"`, which can match the wrong process). Each
//! measurement is logged and, with `RELAY_MONITOR_METRICS_LISTEN`, served as Prometheus
//! gauges on `/metrics`.

use crate::logging::{self, LogFormat, LogLevel};
use crate::until_signal::run_until_signal;
use clap::Args;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use relay_auth::{mint, Audience, Claims, SCOPE_READ, SCOPE_WRITE};
use relay_client::monitor::{self, Measurement, MonitorConfig, MonitorSettings, Sample};
use relay_common::connection::ConnectionType;
use relay_common::goduration::{check_setting, parse_setting, Zero};
use relay_common::shutdown::CancellationToken;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// What `relay monitor` prints on stdout once its metrics listener is bound.
pub const METRICS_LINE: &str = "relay monitor: metrics listening on ";

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  RELAY_MONITOR_AUDIENCE=https://relay.example.io/access RELAY_MONITOR_SECRET=s \\\n  RELAY_MONITOR_PIDFILE=/run/relay.pid relay monitor"
)]
pub struct MonitorArgs {
    /// The relay's access base URL (its RELAY_AUDIENCE); the monitor's tokens carry it.
    #[arg(long, env = "RELAY_MONITOR_AUDIENCE")]
    audience: Option<String>,
    /// The relay's HMAC secret, to mint the monitor's own token.
    #[arg(long, env = "RELAY_MONITOR_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A latency above this is a miss, and so is each THRESHOLD without an answer.
    #[arg(long, env = "RELAY_MONITOR_THRESHOLD", default_value = "200ms")]
    threshold: String,
    /// Time between probes.
    #[arg(long, env = "RELAY_MONITOR_INTERVAL", default_value = "1s")]
    interval: String,
    /// Reconnect both connections with a fresh token this often (the token's lifetime).
    #[arg(long, env = "RELAY_MONITOR_RECONNECT_EVERY", default_value = "24h")]
    reconnect_every: String,
    /// Consecutive misses that run the action.
    #[arg(long, env = "RELAY_MONITOR_TRIGGER_AFTER_MISSES", default_value = "3")]
    trigger_after_misses: String,
    /// After the action, measure nothing for this long (lets the relay restart).
    #[arg(long, env = "RELAY_MONITOR_NO_RETRIGGER_WITHIN", default_value = "60s")]
    no_retrigger_within: String,
    /// Topic of the probes.
    #[arg(long, env = "RELAY_MONITOR_TOPIC", default_value = monitor::DEFAULT_TOPIC)]
    topic: String,
    /// Action: a command run with `sh -c` (e.g. `systemctl kill -s KILL relay`). Empty: kill
    /// the pid in RELAY_MONITOR_PIDFILE.
    #[arg(long, env = "RELAY_MONITOR_COMMAND", default_value = "")]
    command: String,
    /// File holding the relay's pid (e.g. systemd's PIDFile=); read at each trigger, and the
    /// process gets SIGKILL. One of this and RELAY_MONITOR_COMMAND is required.
    #[arg(long, env = "RELAY_MONITOR_PIDFILE")]
    pidfile: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9102). Default: off.
    #[arg(long, env = "RELAY_MONITOR_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log level.
    #[arg(
        long,
        env = "RELAY_MONITOR_LOG_LEVEL",
        value_enum,
        ignore_case = true,
        default_value = "warn"
    )]
    log_level: LogLevel,
    /// Log format.
    #[arg(
        long,
        env = "RELAY_MONITOR_LOG_FORMAT",
        value_enum,
        ignore_case = true,
        default_value = "json"
    )]
    log_format: LogFormat,
    /// Log destination: stdout, a file path, or empty for stderr.
    #[arg(long, env = "RELAY_MONITOR_LOG_FILE", default_value = "")]
    log_file: String,
}

/// What the monitor does when the relay is hung.
#[derive(Debug, Clone)]
enum Action {
    /// `sh -c <command>`.
    Command(String),
    /// SIGKILL the pid in this file.
    KillPidFile(PathBuf),
}

/// The checked configuration.
#[derive(Debug)]
struct Config {
    audience: String,
    secret: String,
    topic: String,
    settings: MonitorSettings,
    reconnect_every: Duration,
    action: Action,
}

fn duration(name: &str, text: &str, problems: &mut Vec<String>) -> Duration {
    match parse_setting(text).and_then(|d| check_setting(name, d, Zero::Refused)) {
        Ok(d) => d,
        Err(e) => {
            problems.push(if e.starts_with(name) {
                e
            } else {
                format!("{name}: {e}")
            });
            Duration::ZERO
        }
    }
}

fn config(args: &MonitorArgs) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let audience = args.audience.clone().unwrap_or_default();
    if audience.is_empty() {
        problems.push("RELAY_MONITOR_AUDIENCE not set".to_owned());
    }
    let secret = args.secret.clone().unwrap_or_default();
    if secret.is_empty() {
        problems.push("RELAY_MONITOR_SECRET not set".to_owned());
    }
    if args.topic.is_empty() {
        problems.push("RELAY_MONITOR_TOPIC must not be empty".to_owned());
    }
    let threshold = duration("RELAY_MONITOR_THRESHOLD", &args.threshold, &mut problems);
    let interval = duration("RELAY_MONITOR_INTERVAL", &args.interval, &mut problems);
    let reconnect_every = duration(
        "RELAY_MONITOR_RECONNECT_EVERY",
        &args.reconnect_every,
        &mut problems,
    );
    let no_retrigger_within = duration(
        "RELAY_MONITOR_NO_RETRIGGER_WITHIN",
        &args.no_retrigger_within,
        &mut problems,
    );
    let trigger_after_misses = match args.trigger_after_misses.trim().parse::<u32>() {
        Ok(n) if n >= 1 => n,
        _ => {
            problems.push(format!(
                "RELAY_MONITOR_TRIGGER_AFTER_MISSES must be a whole number of at least 1, not {:?}",
                args.trigger_after_misses
            ));
            1
        }
    };
    let action = match (args.command.trim(), &args.pidfile) {
        ("", Some(path)) if !path.as_os_str().is_empty() => Action::KillPidFile(path.clone()),
        ("", _) => {
            problems.push(
                "set RELAY_MONITOR_PIDFILE (the relay's pid file) or RELAY_MONITOR_COMMAND: \
                 the monitor does not search for the relay with pgrep"
                    .to_owned(),
            );
            Action::Command(String::new())
        }
        (command, _) => Action::Command(command.to_owned()),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        audience: audience.trim_end_matches('/').to_owned(),
        secret,
        topic: args.topic.clone(),
        settings: MonitorSettings {
            interval,
            threshold,
            trigger_after_misses,
            no_retrigger_within,
        },
        reconnect_every,
        action,
    })
}

/// The monitor's own token, as the reference mints it: booking id `relay-monitor`, read and
/// write on the topic, `nbf = now − 1 s`, `exp = now + RECONNECT_EVERY`.
fn token(config: &Config) -> String {
    let now = relay_common::clock::unix_now();
    let lifetime = i64::try_from(config.reconnect_every.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims {
        booking_id: "relay-monitor".to_owned(),
        topic: config.topic.clone(),
        prefix: ConnectionType::Session.as_str().to_owned(),
        scopes: vec![SCOPE_READ.to_owned(), SCOPE_WRITE.to_owned()],
        aud: Audience::single(&config.audience),
        exp: Some(now.saturating_add(lifetime)),
        nbf: Some(now - 1),
        iat: Some(now - 1),
        ..Claims::default()
    };
    mint(&claims, config.secret.as_bytes())
}

/// The monitor's Prometheus metrics.
struct Metrics {
    registry: Registry,
    latency: Gauge<f64, AtomicU64>,
    consecutive: Gauge,
    misses: Counter,
    triggers: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("relay_monitor");
        let latency = Gauge::<f64, AtomicU64>::default();
        let consecutive = Gauge::default();
        let misses = Counter::default();
        let triggers = Counter::default();
        registry.register(
            "latency_seconds",
            "Latency of the last probe that came back through the relay",
            latency.clone(),
        );
        registry.register(
            "consecutive_misses",
            "Misses (late or missing probes) since the last good one",
            consecutive.clone(),
        );
        registry.register(
            "misses",
            "Probes that were late or did not come back",
            misses.clone(),
        );
        registry.register("triggers", "Times the action was run", triggers.clone());
        Metrics {
            registry,
            latency,
            consecutive,
            misses,
            triggers,
        }
    }

    fn record(&self, sample: &Sample) {
        if let Measurement::Latency(latency) = sample.measurement {
            self.latency.set(latency.as_secs_f64());
        }
        if sample.miss {
            self.misses.inc();
        }
        self.consecutive.set(i64::from(sample.misses));
        if sample.triggered {
            self.triggers.inc();
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn log_sample(sample: &Sample, threshold: Duration) {
    let threshold_ms = threshold.as_secs_f64() * 1000.0;
    match sample.measurement {
        Measurement::Latency(latency) if !sample.miss => tracing::info!(
            latency_ms = latency.as_secs_f64() * 1000.0,
            threshold_ms,
            "relay monitor: latency"
        ),
        Measurement::Latency(latency) => tracing::warn!(
            latency_ms = latency.as_secs_f64() * 1000.0,
            threshold_ms,
            misses = sample.misses,
            "relay monitor: latency above threshold"
        ),
        Measurement::Missing => tracing::warn!(
            threshold_ms,
            misses = sample.misses,
            "relay monitor: probe missing"
        ),
    }
}

/// Runs the action once, logging what happened. A command gets at most `limit` to finish.
async fn act(action: &Action, limit: Duration) {
    match action {
        Action::Command(command) => {
            tracing::error!(command = %command, "relay monitor: relay hung, running the command");
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(limit, child).await {
                Ok(Ok(status)) if status.success() => {
                    tracing::warn!("relay monitor: the command succeeded")
                }
                Ok(Ok(status)) => tracing::error!(%status, "relay monitor: the command failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "relay monitor: cannot run sh"),
                Err(_) => tracing::error!(?limit, "relay monitor: the command did not finish"),
            }
        }
        Action::KillPidFile(path) => {
            let text = match tokio::fs::read_to_string(path).await {
                Ok(text) => text,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "relay monitor: relay hung, but its pid file cannot be read");
                    return;
                }
            };
            let pid = match text.trim().parse::<u32>() {
                Ok(pid) if pid > 1 => pid,
                _ => {
                    tracing::error!(file = %path.display(), content = %text.trim(), "relay monitor: relay hung, but its pid file holds no pid");
                    return;
                }
            };
            tracing::error!(pid, file = %path.display(), "relay monitor: relay hung, killing it (SIGKILL) for the service manager to restart");
            let status = tokio::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(limit, status).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::error!(pid, %status, "relay monitor: kill failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "relay monitor: cannot run kill"),
                Err(_) => tracing::error!("relay monitor: kill did not finish"),
            }
        }
    }
}

async fn serve_metrics(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    println!("{METRICS_LINE}{bound}");
    tracing::info!(%bound, "relay monitor: metrics on /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "relay monitor: metrics listener failed");
        }
    }))
}

pub fn run(args: MonitorArgs) -> ExitCode {
    logging::init(args.log_level, args.log_format, &args.log_file);
    let config = match config(&args) {
        Ok(config) => config,
        Err(problems) => {
            for p in problems {
                tracing::error!("{p}");
                eprintln!("relay monitor: {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    run_until_signal("relay monitor", |stop| async move {
        let metrics = Arc::new(Metrics::new());
        let server = match args.metrics_listen {
            Some(listen) => match serve_metrics(listen, metrics.clone(), stop.clone()).await {
                Ok(task) => Some(task),
                Err(e) => {
                    eprintln!(
                        "relay monitor: RELAY_MONITOR_METRICS_LISTEN={listen}: cannot listen: {e}"
                    );
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let access_url = format!("{}/session/{}", config.audience, config.topic);
        tracing::warn!(url = %access_url, threshold = ?config.settings.threshold,
            interval = ?config.settings.interval, "relay monitor starting");
        let threshold = config.settings.threshold;
        let limit = config
            .settings
            .no_retrigger_within
            .max(Duration::from_secs(10));
        let action = config.action.clone();
        monitor::run(
            MonitorConfig {
                access_url,
                settings: config.settings.clone(),
                reconnect_every: config.reconnect_every,
            },
            || token(&config),
            |sample| {
                metrics.record(sample);
                log_sample(sample, threshold);
            },
            || {
                let action = action.clone();
                async move { act(&action, limit).await }
            },
            stop.clone(),
        )
        .await;
        stop.cancel();
        if let Some(server) = server {
            let _ = server.await;
        }
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MonitorArgs,
    }

    fn parse(flags: &[&str]) -> MonitorArgs {
        let mut argv = vec!["monitor", "--audience", "http://r", "--secret", "s"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_reference_defaults() {
        let c = config(&parse(&["--pidfile", "/run/relay.pid"])).unwrap();
        assert_eq!(c.settings, MonitorSettings::default());
        assert_eq!(c.reconnect_every, Duration::from_secs(24 * 3600));
        assert_eq!(c.topic, "canary-st-data");
    }

    #[test]
    fn without_a_pid_file_or_command_it_refuses_to_start() {
        let problems = config(&parse(&[])).unwrap_err();
        assert!(
            problems[0].contains("RELAY_MONITOR_PIDFILE"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let problems = config(&parse(&[
            "--command",
            "true",
            "--threshold",
            "soon",
            "--trigger-after-misses",
            "0",
        ]))
        .unwrap_err();
        assert!(
            problems[0].starts_with("RELAY_MONITOR_THRESHOLD"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("RELAY_MONITOR_TRIGGER_AFTER_MISSES"));
    }

    #[test]
    fn the_token_is_the_references() {
        let c = config(&parse(&["--command", "true"])).unwrap();
        let token = token(&c);
        let payload = token.split('.').nth(1).unwrap();
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["booking_id"], "relay-monitor");
        assert_eq!(v["topic"], "canary-st-data");
        assert_eq!(v["prefix"], "session");
        assert_eq!(
            v["exp"].as_i64().unwrap() - v["nbf"].as_i64().unwrap(),
            24 * 3600 + 1
        );
    }
}
