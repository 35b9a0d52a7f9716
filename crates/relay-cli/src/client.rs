//! `relay client file`: log what a relay topic receives (text lines or raw binary), play a
//! scripted playfile into it, or only check a playfile. Configuration comes from flags or
//! the reference's `RELAY_CLIENT_*` variables; the engine is `relay_client::file`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::boolean::{parse_bool, GoBool};
use clap::{Args, Subcommand};
use relay_client::file::{Controls, FileClientConfig, LogTarget, OutputMode};
use relay_client::playfile::Playfile;
use relay_client::session::SessionConfig;
use relay_common::goduration::{check_setting, Zero};
use relay_common::shutdown::cancel_on_signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::logging::{self, LogFormat, LogLevel};

/// `relay client <interface>`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClientArgs {
    #[command(subcommand)]
    interface: Option<Interface>,
}

#[derive(Subcommand)]
enum Interface {
    /// Log received messages to a file (text or binary), and/or play a playfile.
    File(FileArgs),
}

/// Options of `relay client file`. Environment names are the ones the reference reads; the
/// names its help text documented are accepted too (see `--help` of each option).
#[derive(Args)]
#[command(
    after_help = "Playfile lines: `# comment`, `#+ echoed comment`, `[0.5s] message`, `[2s]` (wait), \
`<'REGEXP',COUNT,TIMEOUT> message` (wait for COUNT matching messages or TIMEOUT, then send), \
`|+> re` / `|-> re` / `|reset>` (log filter), anything else is sent as a text message.\n\
Signals: SIGHUP reopens the log file (for logrotate); SIGINT/SIGTERM drain, flush and exit 0."
)]
pub struct FileArgs {
    /// Access URL of the session, e.g. https://relay-access.example.io/session/expt00-data
    /// (with no token: a ws:// URL dialled directly).
    #[arg(long, env = "RELAY_CLIENT_SESSION")]
    session: Option<String>,
    /// Token (JWT) for the session.
    #[arg(long, env = "RELAY_CLIENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log file; `-` is stdout. Also read from RELAY_CLIENT_FILE (the later log-only client).
    #[arg(long = "log", env = "RELAY_CLIENT_FILE_LOG")]
    log: Option<String>,
    /// Playfile to play after connecting; `-` reads it from stdin.
    #[arg(long = "play", env = "RELAY_CLIENT_FILE_PLAY")]
    play: Option<String>,
    /// Only parse and check the playfile (every error with its line number); no connection.
    /// Also read from RELAY_CLIENT_FILE_CHECK_ONLY.
    #[arg(long, env = "RELAY_CLIENT_CHECK_ONLY", value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    check_only: Option<bool>,
    /// Play even if the playfile has errors (error lines are skipped).
    /// Also read from RELAY_CLIENT_FILE_FORCE.
    #[arg(long, env = "RELAY_CLIENT_FORCE", value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    force: Option<bool>,
    /// Accepted for compatibility (Go duration). Condition timeouts are now exact, so the
    /// reference's polling interval is no longer used. Also read from RELAY_CLIENT_FILE_INTERVAL.
    #[arg(long, env = "RELAY_CLIENT_INTERVAL")]
    interval: Option<String>,
    /// Trace-level text logs (to stderr) and print the configuration.
    /// Also read from RELAY_CLIENT_DEVELOPMENT.
    #[arg(long, env = "RELAY_CLIENT_FILE_DEVELOPMENT", value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    development: Option<bool>,
    /// Output mode: `text` ([<time>] <message> lines, binary frames base64) or `binary`
    /// (raw frame bytes concatenated, e.g. to record MPEG-TS video).
    #[arg(long, env = "RELAY_CLIENT_MODE")]
    mode: Option<String>,
    /// Extra PEM CA certificate file trusted for https/wss, besides the system roots.
    #[arg(long, env = "RELAY_CLIENT_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Run `relay client ...`.
pub fn run(args: ClientArgs) -> ExitCode {
    match args.interface {
        Some(Interface::File(args)) => run_file(args),
        None => {
            // The reference prints this and exits 0.
            eprintln!("relay client: choose an interface, e.g. `relay client file` (see `relay client --help`)");
            ExitCode::SUCCESS
        }
    }
}

/// A boolean from its flag/primary variable, else from the documented alias variable.
fn with_alias(primary: Option<bool>, alias: &str) -> Result<bool, String> {
    if let Some(value) = primary {
        return Ok(value);
    }
    match std::env::var(alias) {
        Ok(text) if !text.is_empty() => {
            parse_bool(&text).ok_or_else(|| format!("{alias}={text} is not a boolean"))
        }
        _ => Ok(false),
    }
}

fn string_alias(primary: Option<String>, alias: &str) -> Option<String> {
    primary.or_else(|| std::env::var(alias).ok())
}

fn read_playfile(path: &str) -> Result<Playfile, String> {
    let bytes = if path == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
            .map_err(|e| format!("reading stdin: {e}"))?;
        buffer
    } else {
        std::fs::read(path).map_err(|e| format!("cannot read play file {path}: {e}"))?
    };
    Ok(Playfile::parse(&String::from_utf8_lossy(&bytes)))
}

/// Print each playfile error with its line number; true when there were any.
fn report_errors(playfile: &Playfile) -> bool {
    let errors = playfile.errors();
    for error in &errors {
        eprintln!("{error}");
    }
    !errors.is_empty()
}

fn run_file(args: FileArgs) -> ExitCode {
    match file_client(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("relay client file: {message}");
            ExitCode::FAILURE
        }
    }
}

fn file_client(args: FileArgs) -> Result<ExitCode, String> {
    let check_only = with_alias(args.check_only, "RELAY_CLIENT_FILE_CHECK_ONLY")?;
    let force = with_alias(args.force, "RELAY_CLIENT_FILE_FORCE")?;
    let development = with_alias(args.development, "RELAY_CLIENT_DEVELOPMENT")?;
    let interval =
        string_alias(args.interval, "RELAY_CLIENT_FILE_INTERVAL").filter(|s| !s.is_empty());
    if let Some(interval) = &interval {
        let name = "RELAY_CLIENT_INTERVAL (--interval)";
        let value = relay_common::goduration::parse_setting(interval)
            .map_err(|e| format!("{name}: {e}"))?;
        check_setting(name, value, Zero::Allowed)?;
    }
    // RELAY_CLIENT_FILE is the later client's name; set but empty means stdout there.
    let log = args.log.or_else(|| std::env::var("RELAY_CLIENT_FILE").ok());
    // Any other value is an error (exit 1), as in the later reference client.
    let mode = match args.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => None,
        Some("text") => Some(OutputMode::Text),
        Some("binary") => Some(OutputMode::Binary),
        Some(other) => {
            return Err(format!(
                "RELAY_CLIENT_MODE must be text or binary, not {other:?}"
            ))
        }
    };
    let session = args.session.filter(|s| !s.is_empty());
    let token = args.token.filter(|s| !s.is_empty());

    if development {
        logging::init(LogLevel::Trace, LogFormat::Text, "stderr");
        eprintln!(
            "relay client file configuration:\n  session: {}\n  token: {}\n  log: {}\n  play: {}\n  check only: {check_only}\n  force: {force}\n  interval: {}\n  mode: {:?}",
            session.as_deref().unwrap_or("(none)"),
            if token.is_some() { "(set)" } else { "(none)" },
            log.as_deref().unwrap_or("(none)"),
            args.play.as_deref().unwrap_or("(none)"),
            interval.as_deref().unwrap_or("1s"),
            mode.unwrap_or_default(),
        );
    } else {
        logging::init(LogLevel::Info, LogFormat::Json, "stderr");
    }

    let playfile = match args.play.as_deref().filter(|p| !p.is_empty()) {
        Some(path) => Some(read_playfile(path)?),
        None => None,
    };

    if check_only {
        let Some(playfile) = playfile else {
            return Err("check-only needs a play file (RELAY_CLIENT_FILE_PLAY or --play)".into());
        };
        let has_errors = report_errors(&playfile);
        if has_errors && !force {
            eprintln!("Error(s) checking play file");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("play file checked: {} lines", playfile.lines.len());
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(playfile) = &playfile {
        if report_errors(playfile) && !force {
            return Err(
                "Error(s) checking play file (set RELAY_CLIENT_FORCE=true to play anyway)".into(),
            );
        }
    }
    // The later log-only client always logs (stdout by default); the original needs a log
    // or a play file.
    let log = match (log, mode) {
        (Some(log), _) => Some(LogTarget::from_arg(&log)),
        (None, Some(_)) => Some(LogTarget::Stdout),
        (None, None) if playfile.is_some() => None,
        (None, None) => {
            return Err("set a log file (RELAY_CLIENT_FILE_LOG or RELAY_CLIENT_FILE; - for stdout) and/or a play file (RELAY_CLIENT_FILE_PLAY)".into())
        }
    };
    let Some(session) = session else {
        return Err("RELAY_CLIENT_SESSION (--session) is required".into());
    };
    let mut session_config = SessionConfig::new(session);
    session_config.token = token;
    session_config.extra_ca_file = args.ca_file;
    let config = FileClientConfig {
        session: session_config,
        log,
        mode: mode.unwrap_or_default(),
        playfile,
    };

    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let mut hangup =
            signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
        let stop = cancel_on_signal().map_err(|e| format!("SIGINT/SIGTERM handlers: {e}"))?;
        let (reopen_tx, reopen) = mpsc::channel(4);
        let signals = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: reopening the log file");
                        let _ = reopen_tx.try_send(());
                    }
                    () = signals.cancelled() => break,
                }
            }
            tracing::info!("stopping: draining received messages");
        });
        relay_client::file::run(config, Controls { reopen, stop })
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
