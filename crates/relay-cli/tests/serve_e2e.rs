//! End to end with the programs a user has: `relay token` mints, curl POSTs to the access
//! API, two websocat clients exchange a message in each direction through `relay serve`,
//! and SIGTERM stops the relay with exit 0 (the reference kept running: bug B13).
//! curl and websocat must be installed (`scripts/test.sh` installs them); the test fails
//! if they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, require, websocat, Killed};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const SECRET: &str = "e2e-secret";

fn mint(access: &str, topic: &str, extra: &[(&str, &str)]) -> String {
    let out = Command::new(RELAY)
        .arg("token")
        .env("RELAY_TOKEN_AUDIENCE", access)
        .env("RELAY_TOKEN_SECRET", SECRET)
        .env("RELAY_TOKEN_LIFETIME", "300")
        .env("RELAY_TOKEN_TOPIC", topic)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn access_uri(access: &str, token: &str, topic: &str) -> String {
    let body = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: {token}"),
        &format!("{access}/session/{topic}"),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["uri"].as_str().unwrap().to_owned()
}

#[test]
fn curl_and_websocat_talk_through_the_real_relay_and_sigterm_exits_cleanly() {
    require("curl");
    require("websocat");
    let (pa, pr) = (free_port(), free_port());
    let access = format!("http://127.0.0.1:{pa}");
    let server = Command::new(RELAY)
        .arg("serve")
        .env("RELAY_AUDIENCE", &access)
        .env("RELAY_URL", format!("ws://127.0.0.1:{pr}"))
        .env("RELAY_SECRET", SECRET)
        .env("RELAY_PORT_ACCESS", pa.to_string())
        .env("RELAY_PORT_RELAY", pr.to_string())
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_LOG_FILE", "stderr")
        .env("RELAY_LOG_LEVEL", "info")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Killed(server);
    wait_until("access API up", || {
        Command::new("curl")
            .args(["-sf", &format!("{access}/healthz")])
            .output()
            .is_ok_and(|o| o.status.success())
    });

    let token = mint(&access, "expt00-data", &[]);
    let (mut a, a_out) = websocat(
        &access_uri(&access, &token, "expt00-data"),
        &["--exit-on-eof"],
    );
    let (mut b, b_out) = websocat(
        &access_uri(&access, &token, "expt00-data"),
        &["--exit-on-eof"],
    );
    let stats = mint(
        &access,
        "stats",
        &[("RELAY_TOKEN_SCOPE_OTHER", "relay:stats")],
    );
    wait_until("both clients connected", || {
        let status = curl(&[
            "-H",
            &format!("Authorization: {stats}"),
            &format!("{access}/status"),
        ]);
        status.matches("\"expt00-data\"").count() == 2
    });

    let a_in = a.0.stdin.as_mut().unwrap();
    writeln!(a_in, "hello from a").unwrap();
    a_in.flush().unwrap();
    assert_eq!(
        b_out.recv_timeout(Duration::from_secs(5)).unwrap(),
        "hello from a"
    );
    let b_in = b.0.stdin.as_mut().unwrap();
    writeln!(b_in, "{{\"cmd\":\"from b\"}}").unwrap();
    b_in.flush().unwrap();
    assert_eq!(
        a_out.recv_timeout(Duration::from_secs(5)).unwrap(),
        "{\"cmd\":\"from b\"}"
    );
    // The sender never hears itself.
    assert!(a_out.recv_timeout(Duration::from_millis(200)).is_err());

    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "relay serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    // The clients' connections were closed by the relay.
    wait_until("websocat clients exit", || {
        a.0.try_wait().is_ok_and(|s| s.is_some()) && b.0.try_wait().is_ok_and(|s| s.is_some())
    });
}

#[test]
fn missing_configuration_is_reported_per_variable() {
    let mut cmd = Command::new(RELAY);
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("RELAY_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.env("RELAY_LOG_FILE", "stderr").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["RELAY_AUDIENCE", "RELAY_SECRET", "RELAY_URL"] {
        assert!(stderr.contains(&format!("You must set {name}")), "{stderr}");
    }
}
