//! `/ts/{feed}` and `/ws/{feed}` over real sockets: ffmpeg-framed video keeps its frame
//! boundaries (the reference's TsFrameBoundaries test), bodies end with a reply and are
//! never truncated (B17), local websocket clients talk both ways, and stream clients get
//! their feeds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use relay_testkit::{require, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const FFMPEG_HINT: &str = "apt-get install -y ffmpeg";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-host-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Makes a short MPEG-TS clip: testsrc, mpeg1video at ~1 Mbit/s, `frames` frames at 25 fps.
fn make_sample(dir: &Path, frames: u32) -> PathBuf {
    require("ffmpeg", FFMPEG_HINT);
    let path = dir.join("sample.ts");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args([
            "-frames:v",
            &frames.to_string(),
            "-c:v",
            "mpeg1video",
            "-b:v",
            "1000k",
            "-bf",
            "0",
        ])
        .args(["-f", "mpegts"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make the sample");
    path
}

/// Byte offsets of each video packet in an MPEG-TS file, from ffprobe.
fn video_packet_offsets(path: &Path) -> Vec<u64> {
    require("ffprobe", FFMPEG_HINT);
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pos",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_end_matches(',').parse().unwrap())
        .collect()
}

#[tokio::test]
async fn ts_frame_boundaries_follow_ffmpeg_bursts() {
    let dir = temp_dir("frames");
    let frames = 50;
    let sample = make_sample(&dir, frames);
    let host = start_idle_host().await;
    let mut viewer = ws_client(&host, "video").await;

    let url = format!("{}/ts/video", host.url());
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(&sample)
        .args(["-c", "copy", "-f", "mpegts", &url])
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let mut messages: Vec<Vec<u8>> = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tokio::select! {
                message = next_data(&mut viewer) => match message {
                    WsMessage::Binary(data) => messages.push(data.to_vec()),
                    other => panic!("video arrived as {other:?}"),
                },
                status = ffmpeg.wait() => break status.unwrap(),
            }
        }
    })
    .await
    .expect("ffmpeg did not finish");
    assert!(status.success(), "ffmpeg posting to /ts failed");
    // Collect what was still in flight when ffmpeg exited: whenever the stream pauses, check
    // whether the recording holds every frame yet, and go on reading until it does (for at
    // most WAIT), so a slow machine cannot cut the recording short.
    let recording = dir.join("received.ts");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(Duration::from_millis(300), next_data_result(&mut viewer)).await
        {
            Ok(Ok(WsMessage::Binary(data))) => messages.push(data.to_vec()),
            Ok(_) => break,
            Err(_paused) => {
                std::fs::write(&recording, messages.concat()).unwrap();
                let complete = video_packet_offsets(&recording).len() >= frames as usize;
                if complete || tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }

    std::fs::write(&recording, messages.concat()).unwrap();
    let offsets = video_packet_offsets(&recording);
    assert_eq!(
        offsets.len(),
        frames as usize,
        "the received stream should hold every frame"
    );
    assert!(
        messages
            .iter()
            .all(|m| m.len() % 188 == 0 && m.first() == Some(&0x47)),
        "messages are whole TS packets"
    );
    // One message per video frame, and frame i starts inside message i: ffmpeg's bursts
    // were kept, not merged or cut.
    let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
    let frame_messages: Vec<usize> = offsets
        .iter()
        .map(|&pos| {
            let mut start = 0u64;
            sizes
                .iter()
                .position(|&len| {
                    let inside = pos >= start && pos < start + len as u64;
                    start += len as u64;
                    inside
                })
                .unwrap()
        })
        .collect();
    // Every message begins with a frame (after at most PAT, PMT and a PCR packet), so no
    // frame was cut; each frame after ffmpeg's start-up burst has a message of its own.
    let mut start = 0u64;
    for (index, len) in sizes.iter().enumerate() {
        let first_frame = offsets
            .iter()
            .find(|&&pos| pos >= start && pos < start + *len as u64);
        let first_frame = first_frame
            .unwrap_or_else(|| panic!("message {index} holds no frame start: {sizes:?}"));
        assert!(
            first_frame - start <= 3 * 188,
            "message {index} starts mid-frame: {sizes:?}"
        );
        start += *len as u64;
    }
    let shared = frame_messages.windows(2).filter(|w| w[0] == w[1]).count();
    let startup_burst = frame_messages
        .iter()
        .take_while(|&&m| m == 0)
        .count()
        .saturating_sub(1);
    // A frame boundary is a 1 ms silence; if the test machine stalls the host for longer
    // than a frame interval, two bursts can arrive back to back and merge. Allow that
    // twice, never more.
    let merged_later = shared - startup_burst;
    assert!(
        merged_later <= 2,
        "frames after the start shared a message: {frame_messages:?} {sizes:?}"
    );
    assert!(
        startup_burst <= 5,
        "start-up burst too long: {frame_messages:?}"
    );
    println!("message sizes: {sizes:?}");
    host.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn next_data_result(ws: &mut Ws) -> Result<WsMessage, ()> {
    use futures_util::StreamExt;
    loop {
        match ws.next().await {
            Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return Ok(m),
            Some(Ok(_)) => continue,
            _ => return Err(()),
        }
    }
}

#[tokio::test]
async fn b17_ts_post_gets_a_reply_when_the_body_ends_and_big_bursts_are_not_truncated() {
    let host = start_idle_host().await;
    let mut viewer = ws_client(&host, "big").await;
    // 3 MB in one request: far over the reference's 1 024 000-byte cap.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let reply = tokio::time::timeout(
        WAIT,
        http_client()
            .post(format!("{}/ts/big", host.url()))
            .body(body.clone())
            .send(),
    )
    .await
    .expect("the /ts request never got a reply")
    .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::OK);
    let text = reply.text().await.unwrap();
    assert!(text.contains("3000000 bytes"), "{text}");
    let mut received = Vec::new();
    while received.len() < body.len() {
        match next_data(&mut viewer).await {
            WsMessage::Binary(data) => received.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, body);
    host.shutdown().await;
}

#[tokio::test]
async fn the_last_burst_arrives_when_the_poster_hangs_up_without_reading_the_reply() {
    // ffmpeg sends the final chunk and closes at once; hyper then drops the handler.
    use tokio::io::AsyncWriteExt;
    let host = start_idle_host().await;
    let mut viewer = ws_client(&host, "video").await;
    let mut tcp = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"POST /ts/video HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(b"5\r\nfirst\r\n").await.unwrap();
    assert_eq!(
        next_data(&mut viewer).await,
        WsMessage::Binary(b"first".to_vec().into())
    );
    tcp.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
    drop(tcp);
    assert_eq!(
        next_data(&mut viewer).await,
        WsMessage::Binary(b"last".to_vec().into())
    );
    host.shutdown().await;
}

#[tokio::test]
async fn local_ws_clients_talk_both_ways_without_echo() {
    let host = start_idle_host().await;
    let mut a = ws_client(&host, "data").await;
    let mut b = ws_client(&host, "data").await;
    let mut other = ws_client(&host, "video").await;
    let mut other_sender = ws_client(&host, "video").await;
    send_text(&mut a, "from a").await;
    assert_eq!(next_data(&mut b).await, WsMessage::Text("from a".into()));
    send_text(&mut b, "from b").await;
    assert_eq!(next_data(&mut a).await, WsMessage::Text("from b".into()));
    use futures_util::SinkExt;
    b.send(WsMessage::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut a).await,
        WsMessage::Binary(vec![0u8, 159, 146, 150].into())
    );
    // Markers sent afterwards prove the absence: had b heard its own messages, or had
    // "data" crossed to "video", they would arrive before the marker.
    send_text(&mut a, "marker").await;
    assert_eq!(next_data(&mut b).await, WsMessage::Text("marker".into()));
    send_text(&mut other_sender, "video marker").await;
    assert_eq!(
        next_data(&mut other).await,
        WsMessage::Text("video marker".into())
    );
    // Shutdown closes local clients with 1001 "going away".
    host.shutdown().await;
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(WAIT, a.next()).await.unwrap();
    match closed {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a going-away close, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_clients_get_their_feeds_and_follow_rule_changes() {
    let host = start_idle_host().await;
    let state = host.state().clone();
    relay_host::commands::add_stream_rule(
        &state,
        relay_host::commands::StreamRule {
            stream: "stream/front".into(),
            feeds: vec!["video0".into(), "audio0".into()],
        },
    )
    .unwrap();
    let mut stream = ws_client(&host, "stream/front").await;
    let mut video = ws_client(&host, "video0").await;
    let mut audio = ws_client(&host, "audio0").await;
    let mut video_sender = ws_client(&host, "video0").await;
    wait_until("the stream client is registered", WAIT, || {
        state.hub.subscriber_count("stream/front") == 1
    })
    .await;
    send_text(&mut video, "v").await;
    send_text(&mut audio, "a").await;
    assert_eq!(next_data(&mut stream).await, WsMessage::Text("v".into()));
    assert_eq!(next_data(&mut stream).await, WsMessage::Text("a".into()));
    // Mute audio without dropping the stream client.
    relay_host::commands::add_stream_rule(
        &state,
        relay_host::commands::StreamRule {
            stream: "stream/front".into(),
            feeds: vec!["video0".into()],
        },
    )
    .unwrap();
    send_text(&mut audio, "a2").await;
    send_text(&mut video, "v2").await;
    assert_eq!(next_data(&mut stream).await, WsMessage::Text("v2".into()));
    // Stream clients' own messages go nowhere.
    // Once the host has answered the stream client's ping it has read (and dropped) "s",
    // so a marker sent to video0 afterwards must be the next thing the video client hears.
    send_text(&mut stream, "s").await;
    round_trip(&mut stream).await;
    send_text(&mut video_sender, "video marker").await;
    assert_eq!(
        next_data(&mut video).await,
        WsMessage::Text("video marker".into())
    );
    drop(stream);
    wait_until("the stream client is unregistered", WAIT, || {
        state.hub.subscriber_count("stream/front") == 0
    })
    .await;
    host.shutdown().await;
}
