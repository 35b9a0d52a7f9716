//! `relay book token` and `relay book manifest check` as a user runs them: the token's
//! claims from `BOOK_CLIENT_*`, one line per missing variable; a good manifest prints `ok`
//! and exits 0, a bad one prints its category and numbered messages and exits 1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod support;

use std::process::{Command, Output};
use support::{jwt_claims, WithoutEnv};

fn relay_book(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.arg("book").args(args);
    cmd.without_env(&["BOOK_"]);
    cmd.envs(env.iter().copied());
    cmd.output().expect("relay runs")
}

#[test]
fn token_mints_an_admin_token_from_the_environment() {
    let before = relay_common::clock::unix_now();
    let out = relay_book(
        &[
            ("BOOK_CLIENT_SECRET", "somesecret"),
            ("BOOK_CLIENT_TOKEN_SUB", "alice"),
            ("BOOK_CLIENT_TOKEN_AUD", "https://book.example.org"),
            ("BOOK_CLIENT_TOKEN_TTL", "1h"),
            ("BOOK_CLIENT_TOKEN_ADMIN", "true"),
        ],
        &["token"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("ey") && stdout.ends_with('\n'),
        "{stdout:?}"
    );
    let claims = jwt_claims(&stdout);
    assert_eq!(claims["scopes"], serde_json::json!(["booking:admin"]));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["https://book.example.org"])
    );
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before - 1..=before + 1).contains(&iat), "{claims}");
    assert_eq!(claims["nbf"], iat);
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 3601);
    // The server's check accepts it.
    let verified = relay_book::tokens::verify(
        stdout.trim(),
        b"somesecret",
        "https://book.example.org",
        relay_common::clock::unix_now(),
    )
    .unwrap();
    assert!(verified.is_admin());

    // Default: a user token.
    let out = relay_book(
        &[
            ("BOOK_CLIENT_SECRET", "s"),
            ("BOOK_CLIENT_TOKEN_SUB", "bob123"),
        ],
        &["token"],
    );
    assert!(out.status.success());
    let claims = jwt_claims(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(claims["scopes"], serde_json::json!(["booking:user"]));
    assert_eq!(claims["aud"], serde_json::json!(["http://localhost:4000"]));
}

#[test]
fn token_names_each_missing_variable() {
    let out = relay_book(&[], &["token"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "You must set BOOK_CLIENT_SECRET (or --secret)\nYou must set BOOK_CLIENT_TOKEN_SUB (or --sub)\n"
    );
}

const GOOD: &str = r#"
descriptions:
  d-g: {name: "group", type: group, short: "g"}
  d-p: {name: "policy", type: policy, short: "p"}
  d-r: {name: "rig", type: resource, short: "r"}
  d-sl: {name: "slot", type: slot, short: "s"}
  d-ui: {name: "ui", type: ui, short: "u"}
groups:
  g-a: {description: d-g, policies: [p-a]}
policies:
  p-a: {description: d-p, slots: [sl-a], enforce_book_ahead: true, book_ahead: 2h}
resources:
  r-a: {description: d-r, streams: [data], topic_stub: rig00}
slots:
  sl-a: {description: d-sl, policy: p-a, resource: r-a, ui_set: us-a, window: w-a}
streams:
  data: {url: "https://relay.example.org/access", connection_type: session, for: data, scopes: [read, write], topic: auto}
uis:
  ui-a: {description: d-ui, url: "https://ui.example.org/", streams_required: [data]}
ui_sets:
  us-a: {uis: [ui-a]}
windows:
  w-a:
    allowed: [{start: "2024-01-08T00:00:00Z", end: "2024-03-29T00:00:00Z"}]
    denied: []
"#;

#[test]
fn manifest_check_reports_ok_or_the_category_and_numbered_messages() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let out = relay_book(&[], &["manifest", "check", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        GOOD.replace("resource: r-a,", "resource: r-x,")
            .replace("streams_required: [data]", "streams_required: [video]"),
    )
    .unwrap();
    let out = relay_book(&[], &["manifest", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "missing reference(s)\n1: slot sl-a references non-existent resource: r-x\n2: ui ui-a references non-existent stream: video\n"
    );

    let missing = dir.path().join("missing.yaml");
    let out = relay_book(&[], &["manifest", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("relay book: cannot read "),
        "unreadable file"
    );
}

#[test]
fn serve_dev_starts_with_the_demo_manifest_and_prints_its_address() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["book", "serve", "--dev"])
        .env("BOOK_PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("relay runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").unwrap();
    let addr = first
        .strip_prefix("relay book: API listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let banner: Vec<String> = lines
        .by_ref()
        .take_while(|l| !l.as_ref().unwrap().starts_with("Stop with"))
        .map(|l| l.unwrap())
        .collect();
    let admin = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("export ADMIN="))
        .expect("an admin token in the banner")
        .to_owned();
    let get = |path: &str, token: Option<&str>| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
            if let Some(token) = token {
                request = request.header("Authorization", token);
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    assert_eq!(
        get("/healthz", None),
        (200, r#"{"database":"ok"}"#.to_owned())
    );
    let (status, body) = get("/api/v1/admin/status", Some(&admin));
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status["resources"].as_i64(), status["slots"].as_i64()),
        (Some(2), Some(2))
    );
    let (status, body) = get("/api/v1/admin/manifest", Some(&admin));
    assert_eq!(status, 200);
    let manifest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(manifest["streams"]["data"]["url"], "http://127.0.0.1:3000");
    assert!(manifest["groups"]["g-demo"].is_object());
    assert_eq!(
        manifest["uis"]["ui-demo"]["url"],
        "http://127.0.0.1:3001/demo?streams={{streams}}&exp={{exp}}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
