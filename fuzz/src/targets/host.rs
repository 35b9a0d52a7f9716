//! The host's inputs (relay-host): command JSON on feed `api`, the rules file (TOML and
//! JSON) and destination rules with their recording paths.
//!
//! The first byte picks the input's meaning: `0`/`1` command lines from a local client /
//! from the relay (one JSON command per line), `2` a TOML rules file, `3` a JSON rules
//! file, `4` one destination rule as JSON.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use relay_host::commands::{add_stream_rule, handle, Origin};
use relay_host::destinations::{resolve_recording, DestinationRule};
use relay_host::hub::Reach;
use relay_host::link::ChannelConnector;
use relay_host::rules_file::parse_rules;
use relay_host::HostState;
use serde_json::Value;

use super::runtime;

/// The token of the rule every input starts with; no reply to the relay may show it.
const SECRET_TOKEN: &str = "fuzz-secret-token";

/// Runs the input against a fresh host whose only rule carries [`SECRET_TOKEN`].
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(rt) = runtime() else {
        return;
    };
    // Destinations spawn their link tasks; they die with the runtime after this input.
    rt.block_on(async {
        let state = host();
        match mode % 5 {
            0 => commands(&state, rest, Origin::Local),
            1 => commands(&state, rest, Origin::Remote),
            2 => rules(&state, rest, "rules.toml"),
            3 => rules(&state, rest, "rules.json"),
            _ => destination(&state, rest),
        }
        state.shutdown.cancel();
    });
}

fn host() -> HostState {
    let mut state = HostState::new(Arc::new(ChannelConnector::new(false)), None, 1024);
    state
        .destinations
        .set_record_dir(record_dir().map(Path::to_path_buf));
    let rule = DestinationRule {
        id: "pre".into(),
        stream: "video0".into(),
        destination: "https://relay.test/session/x".into(),
        token: SECRET_TOKEN.into(),
        file: String::new(),
    };
    if let Err(e) = state.destinations.add(rule) {
        panic!("the starting rule is refused: {e}");
    }
    state
}

/// A canonical, existing record directory, shared by every run (nothing is ever written in
/// it: the destinations' tasks never run).
fn record_dir() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("relay-fuzz-record");
        std::fs::create_dir_all(dir.join("sub")).ok()?;
        dir.canonicalize().ok()
    })
    .as_deref()
}

/// Every reply is a JSON object; only a local caller may see tokens.
fn commands(state: &HostState, data: &[u8], origin: Origin) {
    for line in data.split(|&b| b == b'\n') {
        let reply = handle(state, line, origin);
        assert!(matches!(reply.body, Value::Object(_)), "{:?}", reply.body);
        if origin == Origin::Remote {
            assert_eq!(reply.reach, Reach::Everyone);
            let text = reply.body.to_string();
            assert!(
                !text.contains(SECRET_TOKEN),
                "a remote reply shows a token: {text}"
            );
        }
    }
}

/// A parsed rules file holds only valid rules, and each applies.
fn rules(state: &HostState, data: &[u8], name: &str) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Token files are looked up next to this (absent) file.
    let path = Path::new("/nonexistent-relay-fuzz").join(name);
    let Ok((streams, destinations)) = parse_rules(&path, text) else {
        return;
    };
    for rule in streams {
        if let Err(e) = add_stream_rule(state, rule.clone()) {
            panic!("a parsed stream rule {rule:?} is refused: {e}");
        }
    }
    for rule in destinations {
        assert!(rule.validate().is_ok(), "{rule:?}");
        // Only a recording path can still refuse it.
        if let Err(e) = state.destinations.add(rule.clone()) {
            assert!(!rule.file.is_empty(), "{rule:?} refused: {e}");
        }
    }
}

/// A recording path is either refused or inside the record directory.
fn destination(state: &HostState, data: &[u8]) {
    let Ok(rule) = serde_json::from_slice::<DestinationRule>(data) else {
        return;
    };
    let dir = record_dir();
    if let (Some(dir), Ok(path)) = (dir, resolve_recording(dir, &rule.file)) {
        assert!(path.starts_with(dir), "{:?} escapes to {path:?}", rule.file);
    }
    let valid = rule.clone().normalised().validate().is_ok();
    if let Ok(stored) = state.destinations.add(rule) {
        assert!(valid);
        assert_eq!(state.destinations.get(&stored.id).as_ref(), Some(&stored));
    }
}
