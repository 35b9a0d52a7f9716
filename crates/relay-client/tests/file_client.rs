//! `relay client file` engine against a real relay: play mode with an echoing peer, text and
//! binary logging, and log reopening (logrotate's move-then-HUP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use relay_client::file::{FileClientConfig, LogTarget, OutputMode};
use relay_client::playfile::Playfile;
use relay_client::session::Message;
use relay_testkit::{wait_until, wait_until_async};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The content of each `[<time>] <content>` line, checking the timestamp's shape.
fn contents(log: &str) -> Vec<String> {
    let line_shape =
        regex::Regex::new(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\] (.*)$").unwrap();
    log.lines()
        .map(|line| {
            let captures = line_shape
                .captures(line)
                .unwrap_or_else(|| panic!("malformed log line {line:?}"));
            captures[2].to_string()
        })
        .collect()
}

async fn wait_for_lines(path: &Path, count: usize) {
    wait_until_async(
        &format!("{count} lines in {}", path.display()),
        WAIT,
        || async { read(path).lines().count() >= count },
    )
    .await;
}

#[tokio::test]
async fn play_mode_sends_filters_and_echoes_in_order() {
    let server = start_relay().await;
    let _echo = spawn_echo_peer(&server, "play").await;
    let dir = temp_dir("play");
    let log = dir.join("play.log");
    // Every change of filter or echo comment follows a condition that waited for the last
    // echo, via a `quiet:` message the peer does not echo, so the log order is exact.
    let script = r#"#+ start
{"some":"msg"}
<'some',1,5s> quiet:1
#+ set filter
|+> [a-h]
|accept> [R-Z]
|->[0-9]
|deny>  [#!&%]
ah0#
AA
ZZ
abc
abc!
ah
<'^ah$',1,5s> quiet:2
|reset>
#+ reset

ah0#
AA
<'^AA$',1,5s> quiet:3
|-> [0-9]
#+ deny only
a1
b
<'^b$',1,5s> quiet:4
#+ end
"#;
    let playfile = Playfile::parse(script);
    assert_eq!(playfile.errors(), vec![]);
    let client = start_client(FileClientConfig {
        session: session_config(&server, "play"),
        log: Some(LogTarget::File(log.clone())),
        mode: OutputMode::Text,
        playfile: Some(playfile),
    });
    // With a playfile the client stops by itself after the last line.
    tokio::time::timeout(Duration::from_secs(20), client.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        contents(&read(&log)),
        [
            "start",
            r#"{"some":"msg"}"#,
            "set filter",
            "ZZ",
            "abc",
            "ah",
            "reset",
            "ah0#",
            "AA",
            "deny only",
            "b",
            "end"
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn log_mode_writes_timestamped_lines_with_binary_as_base64() {
    let recording = Recording::start("logged", OutputMode::Text).await;
    recording.send(text("one")).await;
    recording
        .send(Message::Binary(vec![0, 1, 2, 255].into()))
        .await;
    recording.send(text("multi word {\"json\":true}")).await;
    wait_for_lines(&recording.path, 3).await;
    let log = recording.finish().await;
    assert_eq!(
        contents(&String::from_utf8(log).unwrap()),
        ["one", "AAEC/w==", "multi word {\"json\":true}"]
    );
}

#[tokio::test]
async fn binary_mode_writes_raw_frames_concatenated() {
    let recording = Recording::start("video", OutputMode::Binary).await;
    let mut expected = Vec::new();
    for n in 0..20u8 {
        let frame: Vec<u8> = (0..188).map(|i| i as u8 ^ n).collect();
        expected.extend_from_slice(&frame);
        recording.send(Message::Binary(frame.into())).await;
    }
    recording.send(text("test message")).await;
    expected.extend_from_slice(b"test message");
    recording.wait_for_bytes(expected.len() as u64).await;
    assert_eq!(recording.finish().await, expected);
}

#[tokio::test]
async fn reopen_after_a_move_keeps_every_line_in_one_of_the_files() {
    let recording = Recording::start("rotate", OutputMode::Text).await;
    let log = recording.path.clone();
    let rotated = log.with_extension("log.1");
    for n in 1..=3 {
        recording.send(text(&format!("before {n}"))).await;
    }
    wait_for_lines(&log, 3).await;
    std::fs::rename(&log, &rotated).unwrap();
    recording.client.reopen.send(()).await.unwrap();
    wait_until("the log to be reopened", WAIT, || log.exists()).await;
    for n in 1..=3 {
        recording.send(text(&format!("after {n}"))).await;
    }
    wait_for_lines(&log, 3).await;
    let after = recording.finish().await;
    assert_eq!(
        contents(&read(&rotated)),
        ["before 1", "before 2", "before 3"]
    );
    assert_eq!(
        contents(&String::from_utf8(after).unwrap()),
        ["after 1", "after 2", "after 3"]
    );
}

#[tokio::test]
async fn a_burst_is_logged_completely_and_in_order_then_stops_cleanly() {
    let recording = Recording::start("drain", OutputMode::Text).await;
    for n in 0..500 {
        recording.send(text(&format!("message {n}"))).await;
    }
    wait_for_lines(&recording.path, 500).await;
    let log = recording.finish().await;
    let expected: Vec<String> = (0..500).map(|n| format!("message {n}")).collect();
    assert_eq!(contents(&String::from_utf8(log).unwrap()), expected);
}
