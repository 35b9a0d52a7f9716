//! Coverage-guided fuzz targets for every parser that reads untrusted input (issue 19).
//!
//! Each target is one function from bytes to nothing that must never panic, and most also
//! assert a property of what they parsed (a round trip, a bound, a refusal that must
//! happen). The same function is called by the AFL++ binary (`src/bin/afl.rs`, built with
//! `cargo afl build --features afl`) and by the corpus replay test (`tests/replay.rs`),
//! which runs every committed corpus and regression input under ordinary `cargo test`.
//! `fuzz/README.md` has the commands.

pub mod targets;

/// One fuzz target: its name (the corpus directory and the AFL binary's argument), what it
/// covers, and the function that runs one input.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name used on the command line and as the corpus directory name.
    pub name: &'static str,
    /// What the target exercises, in a few words (shown in docs/RELIABILITY.md).
    pub covers: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
}

/// Every target, in the order of the list.
pub const TARGETS: &[Target] = &[
    Target {
        name: "auth_token",
        covers: "relay-auth: token verification (header, signature, claims JSON, times) and claims checks",
        run: targets::auth::run,
    },
    Target {
        name: "ws_admission",
        covers: "relay-server: websocket path parsing, code query and every admission check",
        run: targets::admission::run,
    },
    Target {
        name: "host_commands",
        covers: "relay-host: command JSON, rules file (TOML and JSON) and destination rule with recording paths",
        run: targets::host::run,
    },
    Target {
        name: "ts_ingest",
        covers: "relay-host: MPEG-TS ingest framing of a chunked body into frames",
        run: targets::ingest::run,
    },
    Target {
        name: "http_relay",
        covers: "http-relay: protobuf decode, header conversion and backend-name extraction",
        run: targets::http_relay::run,
    },
    Target {
        name: "connection_action",
        covers: "relay-common: ConnectionAction JSON",
        run: targets::action::run,
    },
    Target {
        name: "playfile",
        covers: "relay-client: playfile lines (delays, conditions with regexps, filters)",
        run: targets::playfile::run,
    },
    Target {
        name: "book_manifest",
        covers: "relay-book: manifest YAML and JSON, its check and filters, export round trip",
        run: targets::manifest::run,
    },
    Target {
        name: "book_query",
        covers: "relay-book: API time and duration parsing and the server's query parameters",
        run: targets::book_query::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
