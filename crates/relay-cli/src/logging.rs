//! Logging set-up shared by the long-running subcommands: level, json or text, and a
//! destination (`stdout`, `stderr`, or a file appended to, falling back to stderr).

use std::fs::OpenOptions;
use std::path::Path;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Log level; the reference's `fatal` and `panic` map to `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    Panic,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Fatal | LogLevel::Panic => "error",
        }
    }
}

/// Start logging. `file` is `stdout`/`stderr` (any case) or a path; a file that cannot be
/// opened falls back to stderr with a warning, as the reference does. `RUST_LOG`, when set,
/// overrides the level with per-module directives.
pub fn init(level: LogLevel, format: LogFormat, file: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.directive()));
    let mut fallback_note = None;
    let writer = match file.to_ascii_lowercase().as_str() {
        "stdout" | "-" => BoxMakeWriter::new(std::io::stdout),
        "stderr" | "" => BoxMakeWriter::new(std::io::stderr),
        _ => match open_append(Path::new(file)) {
            Ok(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
            Err(e) => {
                fallback_note = Some(format!(
                    "cannot open log file {file} ({e}); logging to stderr"
                ));
                BoxMakeWriter::new(std::io::stderr)
            }
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        eprintln!("logging was already initialised");
    }
    if let Some(note) = fallback_note {
        tracing::warn!("{note}");
        eprintln!("{note}");
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}
