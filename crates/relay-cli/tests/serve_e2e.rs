//! End to end with the programs a user has: `relay token` mints, curl POSTs to the access
//! API, two websocat clients exchange a message in each direction through `relay serve`,
//! and SIGTERM stops the relay with exit 0 (the reference kept running: bug B13).
//! curl and websocat must be installed (`scripts/test.sh` installs them); the test fails
//! if they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{
    relay_token, require, serve, wait_until_blocking, websocat, WithoutEnv, INSTALL_HINT, RELAY,
};

const SECRET: &str = "e2e-secret";
/// The relay's public URLs. It listens on port 0, so they cannot name its real addresses:
/// tokens carry this audience, and the test dials the address the relay printed.
const PUBLIC_ACCESS: &str = "http://relay.test";
const PUBLIC_RELAY: &str = "ws://relay.test";
/// How long the test waits for anything.
const WAIT: Duration = Duration::from_secs(15);

fn mint(access: &str, topic: &str, extra: &[(&str, &str)]) -> String {
    relay_token(SECRET, access, topic, &[], extra)
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

/// The websocket uri the access API at `access` hands out, pointed at the relay's real
/// address `relay` instead of its public URL.
fn access_uri(access: &str, relay: &str, token: &str, topic: &str) -> String {
    let body = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: {token}"),
        &format!("{access}/session/{topic}"),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let uri = v["uri"].as_str().unwrap();
    let path = uri
        .strip_prefix(PUBLIC_RELAY)
        .unwrap_or_else(|| panic!("{uri} is not under {PUBLIC_RELAY}"));
    format!("{relay}{path}")
}

#[test]
fn curl_and_websocat_talk_through_the_real_relay_and_sigterm_exits_cleanly() {
    require("curl", INSTALL_HINT);
    require("websocat", INSTALL_HINT);
    let mut served = serve(
        Command::new(RELAY)
            .arg("serve")
            .env("RELAY_AUDIENCE", PUBLIC_ACCESS)
            .env("RELAY_URL", PUBLIC_RELAY)
            .env("RELAY_SECRET", SECRET)
            .env("RELAY_PORT_ACCESS", "0")
            .env("RELAY_PORT_RELAY", "0")
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_LOG_FILE", "stderr")
            .env("RELAY_LOG_LEVEL", "info")
            .stderr(Stdio::null()),
    )
    .expect("relay serve starts on port 0");
    let access = format!("http://{}", served.access);
    let relay = format!("ws://{}", served.relay);
    let server = &mut served.process;

    let token = mint(PUBLIC_ACCESS, "expt00-data", &[]);
    let (mut a, a_out) = websocat(
        &access_uri(&access, &relay, &token, "expt00-data"),
        &["--exit-on-eof"],
    );
    let (mut b, b_out) = websocat(
        &access_uri(&access, &relay, &token, "expt00-data"),
        &["--exit-on-eof"],
    );
    let stats = mint(
        PUBLIC_ACCESS,
        "stats",
        &[("RELAY_TOKEN_SCOPE_OTHER", "relay:stats")],
    );
    wait_until_blocking("both clients connected", WAIT, || {
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
    // The sender never hears itself: a marker sent afterwards is the next thing it hears.
    writeln!(b_in, "marker").unwrap();
    b_in.flush().unwrap();
    assert_eq!(
        a_out.recv_timeout(Duration::from_secs(5)).unwrap(),
        "marker"
    );

    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    wait_until_blocking("relay serve to exit after SIGTERM", WAIT, || {
        status = server.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // The clients' connections were closed by the relay.
    wait_until_blocking("websocat clients exit", WAIT, || {
        a.0.try_wait().is_ok_and(|s| s.is_some()) && b.0.try_wait().is_ok_and(|s| s.is_some())
    });
}

#[test]
fn missing_configuration_is_reported_per_variable() {
    let mut cmd = Command::new(RELAY);
    cmd.arg("serve");
    cmd.without_env(&["RELAY_"]);
    let out = cmd.env("RELAY_LOG_FILE", "stderr").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["RELAY_AUDIENCE", "RELAY_SECRET", "RELAY_URL"] {
        assert!(stderr.contains(&format!("You must set {name}")), "{stderr}");
    }
}

/// `relay serve` with a complete production configuration plus `extra`, on free ports,
/// stdout discarded and stderr piped.
fn serve_command(extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(RELAY);
    cmd.arg("serve");
    cmd.without_env(&["RELAY_"]);
    cmd.env("RELAY_AUDIENCE", PUBLIC_ACCESS)
        .env("RELAY_URL", PUBLIC_RELAY)
        .env("RELAY_SECRET", SECRET)
        .env("RELAY_PORT_ACCESS", "0")
        .env("RELAY_PORT_RELAY", "0")
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_LOG_FILE", "stderr")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `relay serve` with `extra` settings, which must make it refuse to start: its exit
/// code and stderr.
fn refused_start(extra: &[(&str, &str)]) -> (Option<i32>, String) {
    support::run_to_exit(&mut serve_command(extra))
}

/// A zero ping period used to panic in every connection task (tokio's `interval` refuses
/// a zero period); now the relay refuses to start and names the variable.
#[test]
fn a_zero_ping_interval_is_refused_at_start_up() {
    let (code, stderr) = refused_start(&[("RELAY_PING_INTERVAL", "0")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("RELAY_PING_INTERVAL"), "{stderr}");
    assert!(stderr.contains("--ping-interval"), "{stderr}");
}

/// A duration so long that `now + it` overflows used to panic later, at the first use;
/// now every duration setting is capped at one year at start-up.
#[test]
fn a_huge_duration_is_refused_at_start_up() {
    for name in [
        "RELAY_PONG_TIMEOUT",
        "RELAY_STATS_EVERY",
        "RELAY_PING_INTERVAL",
    ] {
        let (code, stderr) = refused_start(&[(name, "1000000h")]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(stderr.contains("at most 1 year"), "{name}: {stderr}");
    }
}

/// A production secret shorter than 32 bytes still works (compatibility) but is reported
/// on stderr at start-up.
#[test]
fn a_short_secret_is_warned_about() {
    use std::io::{BufRead, BufReader};
    let mut child = support::Killed(serve_command(&[]).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    let warned = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains("RELAY_SECRET") && line.contains("32 bytes") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    assert!(warned, "no short-secret warning; stderr: {seen:#?}");
    assert!(child.0.try_wait().unwrap().is_none(), "it must still start");
}

/// Issue 13, items 5 and 7: a zero code cap and an unreadable state file stop the start-up
/// with exit 1 and a message naming the setting or the file (never a panic).
#[test]
fn bad_code_caps_and_a_corrupt_state_file_are_start_up_errors() {
    let (code, stderr) = refused_start(&[("RELAY_MAX_CODES_PER_BOOKING", "0")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("RELAY_MAX_CODES_PER_BOOKING (--max-codes-per-booking) must be at least 1"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deny-list.json");
    std::fs::write(&file, b"{ broken").unwrap();
    let state_dir = dir.path().display().to_string();
    let (code, stderr) = refused_start(&[("RELAY_STATE_DIR", &state_dir)]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
