//! `relay crossbar` end to end with websocat: two clients on a topic exchange lines (the
//! sender never hears itself), `/in/` → `/out/` drops what the readers send, another topic
//! stays isolated, and a non-loopback `CROSSBAR_LISTEN` without `--open` exits non-zero
//! with a clear message. websocat must be installed (`scripts/test.sh` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use support::{require, run_to_exit, spawn_and_read, websocat, Killed, INSTALL_HINT, RELAY};

const WAIT: Duration = Duration::from_secs(15);
const LISTENING_LINE: &str = "relay: crossbar listening on ";

fn say(client: &mut Killed, line: &str) {
    let stdin = client.0.stdin.as_mut().unwrap();
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

fn hear(out: &Receiver<String>, what: &str) -> String {
    out.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("{what}: nothing within {WAIT:?} ({e})"))
}

/// Waits until `/stats` lists `n` connections (the stats reporter included), so that no
/// line is sent before its readers have joined.
fn wait_for_connections(addr: &str, n: usize) {
    support::wait_until_blocking("the clients to join", WAIT, || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &format!("http://{addr}/stats")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            == Some(n)
    });
}

#[test]
fn websocat_clients_talk_on_topics_and_readers_of_out_cannot_write() {
    require("websocat", INSTALL_HINT);
    require("curl", INSTALL_HINT);
    let (_crossbar, lines) = spawn_and_read(
        Command::new(RELAY)
            .arg("crossbar")
            .env("CROSSBAR_LISTEN", "127.0.0.1:0")
            .stderr(Stdio::null()),
        &[LISTENING_LINE],
    );
    let addr = lines.expect("relay crossbar starts")[0].clone();
    let url = |path: &str| format!("ws://{addr}/{path}");

    let (mut a, a_out) = websocat(&url("lab"), &[]);
    let (mut b, b_out) = websocat(&url("lab"), &[]);
    let (mut other, other_out) = websocat(&url("elsewhere"), &[]);
    let (mut other2, other2_out) = websocat(&url("elsewhere"), &[]);
    let (mut writer, _writer_out) = websocat(&url("in/cam"), &[]);
    let (mut reader, reader_out) = websocat(&url("out/cam"), &["--exit-on-eof"]);
    let (_reader2, reader2_out) = websocat(&url("out/cam"), &[]);
    wait_for_connections(&addr, 8);

    say(&mut a, "hello from a");
    assert_eq!(hear(&b_out, "b hears a"), "hello from a");
    say(&mut b, "hello from b");
    // Had a heard its own line, it would come first.
    assert_eq!(hear(&a_out, "a hears b"), "hello from b");

    say(&mut writer, "frame");
    assert_eq!(hear(&reader_out, "reader hears the writer"), "frame");
    assert_eq!(hear(&reader2_out, "reader 2 hears the writer"), "frame");
    // A reader of out/cam speaks, then hangs up: once /stats no longer lists it, the relay
    // has read its line (frames are read in order, the close last). The writer's marker
    // is then the first thing the other reader hears, so the line went nowhere.
    say(&mut reader, "reader talking");
    drop(reader.0.stdin.take());
    wait_for_connections(&addr, 7);
    say(&mut writer, "marker");
    assert_eq!(hear(&reader2_out, "reader 2 hears the marker"), "marker");
    drop(reader_out);

    // Another topic stays isolated: its own marker is the first thing it hears.
    say(&mut other, "marker elsewhere");
    assert_eq!(
        hear(&other2_out, "elsewhere hears its marker"),
        "marker elsewhere"
    );
    // And nothing from the readers or from elsewhere reached lab or the writer.
    say(&mut b, "marker lab");
    assert_eq!(hear(&a_out, "a hears the lab marker"), "marker lab");
    let _ = (&mut other2, other_out);
}

#[test]
fn a_non_loopback_listen_address_without_open_exits_non_zero() {
    let (code, stderr) = run_to_exit(
        Command::new(RELAY)
            .arg("crossbar")
            .env("CROSSBAR_LISTEN", "0.0.0.0:0"),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("CROSSBAR_LISTEN is 0.0.0.0:0, which is not a loopback address")
            && stderr.contains("--open"),
        "{stderr}"
    );
}
