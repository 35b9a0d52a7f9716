//! End to end with the real `relay` binary: `relay client file` logs a topic of an
//! in-process relay, SIGHUP after a move reopens the log (both files keep their lines),
//! SIGINT exits 0 with everything written; check mode reports every playfile error with its
//! line number. Needs the `kill` command (procps); the test fails if it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use support::{wait_until, Killed};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use relay_auth::Claims;
use relay_client::session::{Message, Session, SessionConfig};
use relay_server::{RunningServer, ServerConfig};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const SECRET: &[u8] = b"client-file-e2e-secret";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "relay-client-file-e2e-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn token(server: &RunningServer, topic: &str) -> String {
    let grant = Claims::grant(
        "session",
        topic,
        &["read", "write"],
        server.access_url(),
        relay_auth::unix_now(),
        600,
    );
    relay_auth::mint(
        &Claims {
            booking_id: "e2e".into(),
            ..grant
        },
        SECRET,
    )
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("the kill command is required for this test (procps)");
    assert!(status.success(), "kill -{name} failed");
}

/// The message part of each `[<time>] <message>` line.
fn messages(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            line.split_once("] ")
                .map(|(_, m)| m.to_string())
                .unwrap_or_else(|| panic!("bad line {line:?}"))
        })
        .collect()
}

/// How long the test waits for anything.
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn sighup_reopens_the_log_and_sigint_exits_cleanly() {
    let server = RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap();
    let dir = temp_dir("hup");
    let log = dir.join("client.log");
    let rotated = dir.join("client.log.1");
    let session_url = format!("{}/session/e2e", server.access_url());
    let client = Killed(
        Command::new(RELAY)
            .args(["client", "file"])
            .env("RELAY_CLIENT_SESSION", &session_url)
            .env("RELAY_CLIENT_TOKEN", token(&server, "e2e"))
            .env("RELAY_CLIENT_FILE_LOG", &log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("client.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let sender = Session::spawn(SessionConfig::new(&session_url).with_token(token(&server, "e2e")));
    sender.wait_connected().await.unwrap();
    // Probe until the client (connecting in its own process) logs something.
    let logged = relay_testkit::wait::try_wait_until_async("the client to log", WAIT, || async {
        if !messages(&log).is_empty() {
            return true;
        }
        sender.send(Message::Text("probe".into())).await.unwrap();
        false
    })
    .await;
    if let Err(timed_out) = logged {
        let stderr = std::fs::read_to_string(dir.join("client.err")).unwrap_or_default();
        panic!("{timed_out}; its stderr: {stderr}");
    }
    for n in 1..=3 {
        sender
            .send(Message::Text(format!("before {n}")))
            .await
            .unwrap();
    }
    wait_until("the lines before the move", WAIT, || {
        messages(&log).contains(&"before 3".to_string())
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    signal(&client.0, "HUP");
    wait_until("the log to be reopened", WAIT, || log.exists()).await;
    for n in 1..=3 {
        sender
            .send(Message::Text(format!("after {n}")))
            .await
            .unwrap();
    }
    wait_until("the lines after the move", WAIT, || {
        messages(&log).len() >= 3
    })
    .await;
    signal(&client.0, "INT");
    let mut client = client;
    let mut status = None;
    wait_until("the client to exit", WAIT, || {
        status = client.0.try_wait().unwrap();
        status.is_some()
    })
    .await;
    assert!(status.unwrap().success(), "exit status {status:?}");

    let before: Vec<String> = messages(&rotated)
        .into_iter()
        .filter(|m| m != "probe")
        .collect();
    assert_eq!(before, ["before 1", "before 2", "before 3"]);
    assert_eq!(messages(&log), ["after 1", "after 2", "after 3"]);
    sender.close().await;
    server.shutdown().await;
}

#[test]
fn check_mode_lists_every_error_with_its_line_number() {
    let dir = temp_dir("check");
    let playfile = dir.join("bad.play");
    std::fs::write(&playfile, "hello\n[10]\n#+ fine\n|X>\n<'x',,1s> m\n").unwrap();
    let out = Command::new(RELAY)
        .args(["client", "file"])
        .env("RELAY_CLIENT_FILE_PLAY", &playfile)
        .env("RELAY_CLIENT_FILE_CHECK_ONLY", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported: Vec<&str> = stderr.lines().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(reported.len(), 3, "{stderr}");
    assert!(
        reported[0].starts_with("line 2: unknown delay time format: [10]"),
        "{stderr}"
    );
    assert!(
        reported[1].starts_with("line 4: malformed filter command"),
        "{stderr}"
    );
    assert!(
        reported[2].starts_with("line 5: malformed condition command"),
        "{stderr}"
    );
    assert!(stderr.contains("Error(s) checking play file"), "{stderr}");

    let forced = Command::new(RELAY)
        .args(["client", "file", "--check-only", "--force", "--play"])
        .arg(&playfile)
        .output()
        .unwrap();
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );

    // `-` reads the playfile from stdin (the reference gave up with "not implemented yet").
    let mut from_stdin = Command::new(RELAY)
        .args(["client", "file", "--check-only", "--play", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut from_stdin.stdin.take().unwrap(), b"ok\n[0.1]\n").unwrap();
    let out = from_stdin.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2: unknown delay time format: [0.1]")
    );
}

#[test]
fn plain_client_explains_that_an_interface_is_needed() {
    let out = Command::new(RELAY).arg("client").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay client file"));
}

/// The (unused) interval is still validated like every duration: past one year it is
/// refused with exit 1, naming the variable and the flag.
#[test]
fn a_huge_interval_is_refused() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
    command.args(["client", "file", "--interval", "1000000h"]);
    let (code, stderr) = support::run_to_exit(&mut command);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("RELAY_CLIENT_INTERVAL (--interval)"),
        "{stderr}"
    );
    assert!(stderr.contains("at most 1 year"), "{stderr}");
}
