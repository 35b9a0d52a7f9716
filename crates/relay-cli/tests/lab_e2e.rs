//! End to end for `relay lab --dev`: the real binary on free ports, used as a student
//! would through the booking API — a user name, login, the demo group, a booking from now,
//! the activity — then the activity's streams through the relay: a command on the data
//! stream comes back from the simulated rig with its counter, and the video stream carries
//! MPEG-TS from the rig's ffmpeg. SIGTERM stops the whole lab with exit 0. ffmpeg must be
//! installed; the test fails if it is not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{require, spawn_and_read, wait_until, Killed, INSTALL_HINT, RELAY};

use relay_testkit::wait_until_async;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What `relay lab` prints once each part is bound, before the address.
const ACCESS_LINE: &str = "relay lab: relay access API listening on ";
const RELAY_LINE: &str = "relay lab: relay listening on ";
const BOOK_LINE: &str = "relay lab: booking API listening on ";
const RIG1_LINE: &str = "relay lab: rig demo1 (relay host) listening on ";

/// Generous bounds for a loaded machine; every wait ends as soon as its condition holds.
const SETTLE: Duration = Duration::from_secs(30);

/// The lab's parts, as it printed them.
struct Lab {
    process: Killed,
    access: String,
    relay: String,
    book: String,
    rig1: String,
}

fn start_lab() -> Lab {
    let mut command = Command::new(RELAY);
    command.args(["lab", "--dev", "--port-access", "0", "--port-relay", "0"]);
    command.args(["--port-book", "0"]);
    let (process, lines) = spawn_and_read(
        &mut command,
        &[ACCESS_LINE, RELAY_LINE, BOOK_LINE, RIG1_LINE],
    );
    let lines = lines.expect("relay lab printed where it listens");
    for address in &lines {
        assert!(address.starts_with("127.0.0.1:"), "{address}");
    }
    Lab {
        process,
        access: format!("http://{}", lines[0]),
        relay: format!("http://{}", lines[1]),
        book: format!("http://{}/api/v1", lines[2]),
        rig1: format!("http://{}", lines[3]),
    }
}

/// A request's status and JSON body (`Value::Null` when the body is not JSON).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Whether every destination of the rig at `rig` is connected to the relay.
async fn rig_connected(http: &reqwest::Client, rig: &str) -> bool {
    let (code, status) = send(http.get(format!("{rig}/api/status"))).await;
    code == 200
        && ["data", "video"]
            .iter()
            .all(|id| status[id]["connected"] == Value::Bool(true))
}

/// Opens an activity stream as a UI does: POSTs its token to its URL, dials the `uri`.
async fn open_stream(
    http: &reqwest::Client,
    stream: &Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = stream["url"].as_str().unwrap();
    let token = stream["token"].as_str().unwrap();
    let (status, body) = send(http.post(url).header("Authorization", token)).await;
    assert_eq!(status, 200, "POST {url}: {body}");
    let uri = body["uri"].as_str().unwrap();
    let (socket, _) = tokio_tungstenite::connect_async(uri).await.unwrap();
    socket
}

/// The next text message on `socket`, skipping pings.
async fn next_text(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    loop {
        let message = tokio::time::timeout(SETTLE, socket.next())
            .await
            .expect("a message within the bound")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Whether `bytes` is an MPEG-TS byte stream: from some offset, a sync byte (0x47) every
/// 188 bytes, for every whole packet.
fn is_mpeg_ts(bytes: &[u8]) -> bool {
    const PACKET: usize = 188;
    (0..PACKET).any(|offset| {
        let packets = (bytes.len() - offset) / PACKET;
        packets >= 10 && (0..packets).all(|i| bytes[offset + i * PACKET] == 0x47)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_books_now_and_uses_the_rig_through_the_relay() {
    require("ffmpeg", INSTALL_HINT);
    let mut lab = start_lab();
    let http = reqwest::Client::new();
    let api = &lab.book;

    // A user name, a login token, the demo group.
    let (status, body) = send(http.post(format!("{api}/users/unique"))).await;
    assert_eq!(status, 200, "{body}");
    let user = body["user_name"].as_str().unwrap().to_owned();
    let (status, body) = send(http.post(format!("{api}/login/{user}"))).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, body) = send(
        http.post(format!("{api}/users/{user}/groups/g-demo"))
            .header("Authorization", &token),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    // Book "now" on the first rig for 10 minutes (the policy allows 5 to 30, and a start
    // up to a minute in the past, so a request that takes a moment to arrive still fits).
    let now = relay_common::clock::unix_now_nanos();
    let second = 1_000_000_000;
    let from = relay_book::timefmt::format_time(now);
    let to = relay_book::timefmt::format_time(now + 600 * second);
    let (status, body) = send(
        http.post(format!("{api}/slots/sl-demo-1"))
            .query(&[("user_name", &user), ("from", &from), ("to", &to)])
            .header("Authorization", &token),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, bookings) = send(
        http.get(format!("{api}/users/{user}/bookings"))
            .header("Authorization", &token),
    )
    .await;
    assert_eq!(status, 200, "{bookings}");
    let bookings = bookings.as_array().unwrap();
    assert_eq!(bookings.len(), 1, "{bookings:?}");
    assert_eq!(bookings[0]["slot"], "sl-demo-1");
    let booking = bookings[0]["name"].as_str().unwrap().to_owned();

    // Start it once it has begun: the activity with its streams and the demo UI.
    let activity_url = format!("{api}/users/{user}/bookings/{booking}");
    let started = std::sync::Mutex::new(Value::Null);
    wait_until_async("the booking to start", SETTLE, || {
        let request = http.put(&activity_url).header("Authorization", &token);
        let started = &started;
        async move {
            let (status, body) = send(request).await;
            *started.lock().unwrap() = body;
            status == 200
        }
    })
    .await;
    let activity = started.into_inner().unwrap();
    let uis = activity["uis"].as_array().unwrap();
    assert_eq!(
        uis[0]["url"],
        format!("{}/demo?streams={{{{streams}}}}&exp={{{{exp}}}}", lab.relay),
        "{activity}"
    );
    let stream = |purpose: &str| {
        activity["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["for"] == purpose)
            .unwrap_or_else(|| panic!("no {purpose} stream in {activity}"))
            .clone()
    };
    let (data, video) = (stream("data"), stream("video"));
    assert_eq!(data["url"], format!("{}/session/demo1-data", lab.access));
    assert_eq!(video["url"], format!("{}/session/demo1-video", lab.access));

    // The rig is on the relay before the user speaks: the relay keeps no messages.
    let rig = lab.rig1.clone();
    wait_until_async("rig demo1 to connect to the relay", SETTLE, || {
        rig_connected(&http, &rig)
    })
    .await;

    // A command on the data stream comes back from the rig with its counter.
    let mut data_socket = open_stream(&http, &data).await;
    data_socket
        .send(Message::text(r#"{"set":"speed","to":2}"#))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut data_socket).await,
        r#"{"echo":{"set":"speed","to":2},"count":1}"#
    );
    data_socket.send(Message::text("stop")).await.unwrap();
    assert_eq!(
        next_text(&mut data_socket).await,
        r#"{"echo":"stop","count":2}"#
    );

    // The video stream carries the rig's MPEG-TS.
    let mut video_socket = open_stream(&http, &video).await;
    let mut received = Vec::new();
    while received.len() < 188 * 20 {
        let message = tokio::time::timeout(SETTLE, video_socket.next())
            .await
            .expect("video within the bound")
            .expect("the video socket stays open")
            .unwrap();
        if let Message::Binary(bytes) = message {
            received.extend_from_slice(&bytes);
        }
    }
    assert!(
        is_mpeg_ts(&received),
        "not MPEG-TS: {:02x?}",
        &received[..16]
    );

    // SIGTERM stops the whole lab, with exit 0.
    assert!(Command::new("kill")
        .args(["-TERM", &lab.process.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut exit = None;
    wait_until("relay lab to exit on SIGTERM", SETTLE, || {
        exit = lab.process.0.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    let exit = exit.unwrap();
    assert!(exit.success(), "relay lab exited with {exit}");
}
