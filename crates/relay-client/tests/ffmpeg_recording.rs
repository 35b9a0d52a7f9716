//! End to end with ffmpeg: an MPEG-TS test stream sent through a real relay is recorded by
//! the file client in binary mode, byte for byte, and decodes cleanly with ffprobe/ffmpeg.
//! Needs `ffmpeg` and `ffprobe` on PATH (Debian: `apt-get install -y ffmpeg`); the test fails,
//! it does not skip, when they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use relay_client::file::OutputMode;
use relay_client::session::Message;
use relay_testkit::require;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

const FFMPEG_HINT: &str = "apt-get install -y ffmpeg";

#[tokio::test]
async fn an_ffmpeg_stream_recorded_through_the_relay_decodes_cleanly() {
    require("ffmpeg", FFMPEG_HINT);
    require("ffprobe", FFMPEG_HINT);
    let recording = Recording::start("video", OutputMode::Binary).await;

    // Two seconds of 25 fps MPEG-1 video in MPEG-TS, as jsmpeg players receive it.
    let mut ffmpeg = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
        ])
        .args([
            "-c:v",
            "mpeg1video",
            "-b:v",
            "800k",
            "-bf",
            "0",
            "-f",
            "mpegts",
            "pipe:1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg runs");
    let mut stdout = ffmpeg.stdout.take().unwrap();
    let mut sent = Vec::new();
    let mut buffer = vec![0u8; 188 * 64];
    loop {
        let n = stdout.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        sent.extend_from_slice(&buffer[..n]);
        recording
            .send(Message::Binary(buffer[..n].to_vec().into()))
            .await;
    }
    assert!(ffmpeg.wait().await.unwrap().success(), "ffmpeg failed");
    assert!(
        sent.len() > 50_000,
        "ffmpeg produced only {} bytes",
        sent.len()
    );

    recording.wait_for_bytes(sent.len() as u64).await;
    let path = recording.path.clone();
    let recorded = recording.finish().await;
    assert!(
        recorded == sent,
        "recording differs from the stream ({} vs {} bytes)",
        recorded.len(),
        sent.len()
    );

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        probe.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&probe.stderr),
        "",
        "ffprobe reported errors"
    );
    let probed: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let stream = &probed["streams"][0];
    assert_eq!(stream["codec_name"], "mpeg1video", "{probed}");
    assert_eq!(stream["nb_read_frames"], "50", "{probed}");

    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .await
        .unwrap();
    assert!(decode.status.success());
    assert_eq!(
        String::from_utf8_lossy(&decode.stderr),
        "",
        "decoding reported errors"
    );
}
