//! Issue 14 item 1: an existing deployment's environment file works unchanged. The files
//! are written as the reference's documentation writes them (`KEY=VALUE` lines, as a
//! systemd `EnvironmentFile=` reads them) and exported to the real binary: Go's
//! `strconv.ParseBool` spellings (`TRUE`, `1`, `F`, `False`) are honoured, a value outside
//! that set exits 1 naming its variable, and a `RELAY_BUFFER_SIZE` that is not a number
//! falls back (to 256) instead of stopping the relay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use std::path::Path;
use std::process::Command;
use support::{run_to_exit, serve, WithoutEnv, RELAY};

const SECRET: &str = "env-file-secret";
const PUBLIC_ACCESS: &str = "http://relay.test/access";

/// A deployment's env file, in the reference's spelling.
const RELAY_ENV: &str = "\
# /etc/practable/relay.env
RELAY_AUDIENCE=http://relay.test/access
RELAY_URL=ws://relay.test/relay
RELAY_SECRET=env-file-secret
RELAY_PORT_ACCESS=0
RELAY_PORT_RELAY=0
RELAY_BIND=127.0.0.1
RELAY_ALLOW_NO_BOOKING_ID=TRUE
RELAY_BUFFER_SIZE=lots
RELAY_CORS=False
RELAY_LOG_LEVEL=warn
RELAY_LOG_FILE=stderr
";

/// Writes `text` to `path` and reads it back as systemd's `EnvironmentFile=` does:
/// `KEY=VALUE` lines, blank lines and `#` comments skipped.
fn env_file(path: &Path, text: &str) -> Vec<(String, String)> {
    std::fs::write(path, text).unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// `relay <subcommand>` with no inherited relay variables and `env` exported.
fn relay(subcommand: &str, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(RELAY);
    cmd.arg(subcommand);
    cmd.without_env(&["RELAY_", "SHELL"]);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    env.push((key.to_owned(), value.to_owned()));
    env
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_deployment_env_file_with_go_booleans_starts_and_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&dir.path().join("relay.env"), RELAY_ENV);
    let served = serve(&mut relay("serve", &env)).expect("relay serve starts");
    let access = format!("http://{}", served.access);

    // RELAY_ALLOW_NO_BOOKING_ID=TRUE: a token with an empty booking id gets a code.
    let now = relay_common::clock::unix_now();
    let claims = relay_auth::Claims {
        booking_id: String::new(),
        ..relay_auth::Claims::grant("session", "expt", &["read"], PUBLIC_ACCESS, now, 60)
    };
    let token = relay_auth::mint(&claims, SECRET.as_bytes());
    let answer = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: {token}"),
        &format!("{access}/session/expt"),
    ]);
    assert!(answer.contains("code="), "{answer}");

    // RELAY_CORS=False: no CORS headers, OPTIONS gets the reference's 405.
    let preflight = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://lab.example.org",
        "-H",
        "Access-Control-Request-Method: POST",
        &format!("{access}/session/expt"),
    ]);
    assert!(preflight.starts_with("HTTP/1.1 405"), "{preflight}");
    assert!(
        !preflight.to_ascii_lowercase().contains("access-control-"),
        "{preflight}"
    );
}

#[test]
fn a_boolean_outside_go_s_set_exits_1_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&dir.path().join("relay.env"), RELAY_ENV);
    let env = with(&env, "RELAY_ALLOW_NO_BOOKING_ID", "yes");
    let (code, stderr) = run_to_exit(&mut relay("serve", &env));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("RELAY_ALLOW_NO_BOOKING_ID"), "{stderr}");

    let shell = [("SHELLCLIENT_DEVELOPMENT".to_owned(), "maybe".to_owned())];
    let mut cmd = relay("shell", &shell);
    cmd.args(["client", "--relay-session", "http://x", "--token", "t"]);
    let (code, stderr) = run_to_exit(&mut cmd);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SHELLCLIENT_DEVELOPMENT"), "{stderr}");
}

const TOKEN_ENV: &str = "\
RELAY_TOKEN_AUDIENCE=https://relay.example.io/access
RELAY_TOKEN_SECRET=somesecret
RELAY_TOKEN_LIFETIME=3600
RELAY_TOKEN_TOPIC=expt00
RELAY_TOKEN_SCOPE_READ=1
RELAY_TOKEN_SCOPE_WRITE=F
";

#[test]
fn relay_token_reads_go_booleans_from_its_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&dir.path().join("token.env"), TOKEN_ENV);
    let out = relay("token", &env).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let payload = token.trim_end().split('.').nth(1).unwrap();
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(payload["scopes"], serde_json::json!(["read"]));

    let out = relay("token", &with(&env, "RELAY_TOKEN_SCOPE_ADMIN", "on"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("RELAY_TOKEN_SCOPE_ADMIN"), "{stderr}");
}
