//! Start-up rules from a TOML (or JSON) file, reloadable at run time.
//!
//! The reference had no start-up configuration: deployments POSTed rules with curl after
//! the host started. A rules file replaces that script, and reloading it (on SIGHUP) is
//! how tokens are rotated: only rules whose content changed are restarted, so the other
//! streams keep flowing. A token can be given inline or read from `token_file`, which an
//! external token service can rewrite before sending SIGHUP.
//!
//! ```toml
//! [[streams]]
//! stream = "stream/front"
//! feeds = ["video0", "audio0"]
//!
//! [[destinations]]
//! id = "video"
//! stream = "stream/front"
//! destination = "https://relay-access.example.io/session/expt00-video"
//! token_file = "/etc/relay/expt00-video.jwt"
//! ```

use crate::commands::{add_stream_rule, StreamRule, StreamRuleError};
use crate::destinations::{DestinationRule, RuleError};
use crate::state::HostState;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// `[[streams]]`: stream rules, applied before the destinations.
    #[serde(default)]
    pub streams: Vec<StreamRule>,
    /// `[[destinations]]`: destination rules.
    #[serde(default)]
    pub destinations: Vec<FileDestination>,
}

/// A destination rule as written in the file: the REST rule plus `token_file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDestination {
    /// The rule's unique name (required).
    pub id: String,
    /// The local topic to carry, a feed or `stream/...` (required).
    pub stream: String,
    /// The access URL (with a token) or `ws(s)://` URL (without) (required).
    pub destination: String,
    /// An inline JWT; empty (default) for none. `token_file` overrides it.
    #[serde(default)]
    pub token: String,
    /// Read the token from this file (relative paths are relative to the rules file).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A path to record the outgoing bytes to; empty (default) records nothing.
    #[serde(default)]
    pub file: String,
}

/// Why the rules file could not be used. Nothing is applied when any rule is bad.
#[derive(Debug, thiserror::Error)]
pub enum RulesFileError {
    /// The rules file could not be read.
    #[error("cannot read rules file {path}: {source}")]
    Read {
        /// The rules file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not valid TOML (or JSON for a `.json` file) of the expected shape.
    #[error("rules file {path} is not valid {format}: {message}")]
    Parse {
        /// The rules file.
        path: PathBuf,
        /// `TOML` or `JSON`, chosen by the file's extension.
        format: &'static str,
        /// The parser's message, with the position of the problem.
        message: String,
    },
    #[error(
        "rules file {path}: destination {id:?}: cannot read token file {token_file}: {source}"
    )]
    /// A destination's `token_file` could not be read.
    TokenFile {
        /// The rules file.
        path: PathBuf,
        /// The id of the destination that names the token file.
        id: String,
        /// The token file, resolved against the rules file's directory.
        token_file: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A destination rule is invalid.
    #[error("rules file {path}: {source}")]
    Destination {
        /// The rules file.
        path: PathBuf,
        /// What is wrong with the rule.
        source: RuleError,
    },
    /// A stream rule is invalid.
    #[error("rules file {path}: {source}")]
    Stream {
        /// The rules file.
        path: PathBuf,
        /// What is wrong with the rule.
        source: StreamRuleError,
    },
}

/// What one load changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplySummary {
    /// Ids of destination rules that were new or changed and were (re)started.
    pub started: Vec<String>,
    /// Ids of destination rules left running because they did not change.
    pub unchanged: Vec<String>,
    /// Ids of destination rules removed because they are no longer in the file.
    pub removed: Vec<String>,
    /// How many stream rules the file set.
    pub streams: usize,
}

/// Loads a rules file and remembers which rules came from it, so that a reload can
/// remove rules deleted from the file without touching rules added over the API.
pub struct RulesLoader {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    destinations: BTreeSet<String>,
    streams: BTreeSet<String>,
}

impl RulesLoader {
    /// A loader for the file at `path`; nothing is read until [`RulesLoader::apply`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RulesLoader {
            path: path.into(),
            loaded: Mutex::new(Loaded::default()),
        }
    }

    /// The rules file this loader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and applies it: new or changed rules (re)start, unchanged ones keep
    /// their connections, rules that disappeared from the file are removed.
    pub fn apply(&self, state: &HostState) -> Result<ApplySummary, RulesFileError> {
        let (streams, destinations) = self.read()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let mut summary = ApplySummary::default();

        let new_streams: BTreeSet<String> = streams.iter().map(|s| s.stream.clone()).collect();
        for stream in loaded.streams.difference(&new_streams) {
            state.hub.delete_stream_rule(stream);
        }
        for rule in streams {
            add_stream_rule(state, rule).map_err(|source| RulesFileError::Stream {
                path: self.path.clone(),
                source,
            })?;
            summary.streams += 1;
        }
        loaded.streams = new_streams;

        let new_ids: BTreeSet<String> = destinations.iter().map(|d| d.id.clone()).collect();
        for id in loaded.destinations.difference(&new_ids) {
            state.destinations.delete(id);
            summary.removed.push(id.clone());
        }
        for rule in destinations {
            if state.destinations.get(&rule.id).as_ref() == Some(&rule) {
                summary.unchanged.push(rule.id);
                continue;
            }
            let stored =
                state
                    .destinations
                    .add(rule)
                    .map_err(|source| RulesFileError::Destination {
                        path: self.path.clone(),
                        source,
                    })?;
            summary.started.push(stored.id);
        }
        loaded.destinations = new_ids;
        tracing::info!(path = %self.path.display(), ?summary, "rules file applied");
        Ok(summary)
    }

    /// Parses and validates the whole file before anything is applied.
    fn read(&self) -> Result<(Vec<StreamRule>, Vec<DestinationRule>), RulesFileError> {
        let path = &self.path;
        let text = std::fs::read_to_string(path).map_err(|source| RulesFileError::Read {
            path: path.clone(),
            source,
        })?;
        parse_rules(path, &text)
    }
}

/// Parses and validates the text of the rules file at `path` (JSON when its extension is
/// `json`, else TOML), reading any `token_file` relative to it. Nothing is applied.
///
/// [`RulesLoader::apply`] reads the file with it; public for the fuzz targets (`fuzz/`).
pub fn parse_rules(
    path: &Path,
    text: &str,
) -> Result<(Vec<StreamRule>, Vec<DestinationRule>), RulesFileError> {
    let file: RulesFile = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| RulesFileError::Parse {
            path: path.to_path_buf(),
            format: "JSON",
            message: e.to_string(),
        })?
    } else {
        toml::from_str(text).map_err(|e| RulesFileError::Parse {
            path: path.to_path_buf(),
            format: "TOML",
            message: e.to_string(),
        })?
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut destinations = Vec::with_capacity(file.destinations.len());
    for entry in file.destinations {
        let mut token = entry.token.trim().to_string();
        if let Some(token_file) = entry.token_file {
            let token_path = base.join(&token_file);
            token = std::fs::read_to_string(&token_path)
                .map_err(|source| RulesFileError::TokenFile {
                    path: path.to_path_buf(),
                    id: entry.id.clone(),
                    token_file: token_path,
                    source,
                })?
                .trim()
                .to_string();
        }
        let rule = DestinationRule {
            id: entry.id,
            stream: entry.stream,
            destination: entry.destination,
            token,
            file: entry.file,
        }
        .normalised();
        rule.validate()
            .map_err(|source| RulesFileError::Destination {
                path: path.to_path_buf(),
                source,
            })?;
        destinations.push(rule);
    }
    let streams: Vec<StreamRule> = file
        .streams
        .into_iter()
        .map(StreamRule::normalised)
        .collect();
    for stream in &streams {
        stream.validate().map_err(|source| RulesFileError::Stream {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok((streams, destinations))
}
