//! End to end with a real `relay serve` and a real `relay book serve` (issue 15, "Done
//! when"): a user joins a group, books a slot that starts now and gets the activity; with
//! the activity's stream token they POST to the relay's access URL and open the websocket;
//! the booking is cancelled, the booking server tells the relay (`POST /bids/deny`), and the
//! relay closes the live websocket with 4003 within 1 s of the cancellation's reply; a new
//! session request with the same token is refused, and the booking server shows its deny
//! call as answered.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod book_support;
mod support;

use book_support::{admin, book_serve, Database, RELAY_SECRET, WAIT};
use futures_util::{SinkExt, StreamExt};
use relay_testkit::book::{manifest, slot_name, topic_stub, Reply, GROUP, STREAM};
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use support::{serve_on_free_ports, Served, WithoutEnv};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the relay answers a session request of a denied booking.
const DENIED_BODY: &str = "{\"code\":\"400\",\"message\":\"bookingID has been deny-listed, probably because the session was cancelled\"}\n";
/// The bound on the close after a cancellation.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// `relay serve` whose audience is its own access URL (the stream URL of the manifest) and
/// whose secret is the booking server's relay secret.
fn relay_serve() -> Served {
    serve_on_free_ports(|command, access, relay| {
        command.without_env(&["RELAY_"]);
        command
            .env("RELAY_AUDIENCE", format!("http://127.0.0.1:{access}"))
            .env("RELAY_URL", format!("ws://127.0.0.1:{relay}"))
            .env("RELAY_SECRET", RELAY_SECRET)
            .env("RELAY_PORT_ACCESS", access.to_string())
            .env("RELAY_PORT_RELAY", relay.to_string())
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_LOG_FILE", "stderr")
            .env("RELAY_LOG_LEVEL", "warn")
            .stdin(Stdio::null());
    })
}

/// POST the stream token to the activity's stream URL, as a booking UI does.
async fn session_request(url: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("Authorization", token)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The next frame that is not a ping or pong, if one arrives within `within`.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(frame))) => return Some(frame),
        }
    }
}

/// A ping and its pong: the websocket is open and the relay is serving it.
async fn round_trip(ws: &mut Ws) {
    let payload = bytes_of("live?");
    ws.send(Message::Ping(payload.clone())).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) if p == payload => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

fn bytes_of(text: &str) -> tokio_tungstenite::tungstenite::Bytes {
    tokio_tungstenite::tungstenite::Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_booking_closes_its_live_relay_session_with_4003_and_its_token_is_refused() {
    let relay = relay_serve();
    let access = format!("http://{}", relay.access);
    let dir = tempfile::tempdir().unwrap();
    let book = book_serve(&Database::Sqlite(dir.path()), &[]);
    let api = &book.api;
    let admin = admin();
    // "Book now": the request reaches the server a moment after `from`.
    let rules = json!({"enforce_allow_start_in_past": true, "allow_start_in_past_within": "1m"});
    api.put_manifest(&admin, &manifest(1, &access, &rules))
        .await
        .unwrap();

    // 1. Join a group, book a slot that starts now, get the activity.
    let user = "student-e2e";
    let token = api.login(user).await.unwrap();
    assert_eq!(
        api.join(user, &token, GROUP).await.unwrap(),
        Reply {
            status: 204,
            body: String::new()
        }
    );
    let now = SystemTime::now();
    let booked = api
        .book(
            user,
            &token,
            &slot_name(0),
            now,
            now + Duration::from_secs(600),
        )
        .await
        .unwrap();
    assert_eq!((booked.status, booked.body.as_str()), (204, ""));
    let mine = api
        .get_json(&format!("/users/{user}/bookings"), &token)
        .await
        .unwrap();
    let rows = relay_testkit::book::booking_rows(&mine);
    assert_eq!(rows.len(), 1, "{mine}");
    let booking = &rows[0].name;
    let path = format!("/users/{user}/bookings/{booking}");
    let activity = api
        .send(reqwest::Method::PUT, &path, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(activity.status, 200, "{activity:?}");
    let activity = activity.json();
    let streams = activity["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{activity}");
    let stream = &streams[0];
    let topic = format!("{}-{STREAM}", topic_stub(0));
    assert_eq!(stream["for"], STREAM, "{stream}");
    assert_eq!(stream["topic"], topic.as_str(), "{stream}");
    let stream_url = format!("{access}/session/{topic}");
    assert_eq!(stream["url"], stream_url.as_str(), "{stream}");
    let stream_token = stream["token"].as_str().unwrap();

    // 2. The stream token buys a websocket from the relay, which is live.
    let (status, body) = session_request(&stream_url, stream_token).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let uri = answer["uri"].as_str().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(uri).await.unwrap();
    round_trip(&mut ws).await;

    // 3. Cancelled: the relay closes the live websocket with 4003 within 1 s of the reply.
    let cancel = api
        .send(reqwest::Method::DELETE, &path, Some(&token), None)
        .await
        .unwrap();
    assert_eq!(
        (cancel.status, cancel.json()),
        (404, json!({"code": "404", "message": "cancelled"})),
        "{cancel:?}"
    );
    match next_frame(&mut ws, CLOSE_WITHIN).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 4003, "{frame:?}")
        }
        other => panic!("no 4003 close within {CLOSE_WITHIN:?} of the cancellation: {other:?}"),
    }

    // 4. The same token gets no new session.
    assert_eq!(
        session_request(&stream_url, stream_token).await,
        (400, DENIED_BODY.to_owned())
    );
    // The booking server recorded its one deny call to this relay as answered.
    let deny_calls =
        || async { api.get_json("/admin/status", &admin).await.unwrap()["deny_calls"].clone() };
    relay_testkit::wait_until_async("the deny call recorded", WAIT, || async {
        deny_calls().await[0]["state"] != "pending"
    })
    .await;
    assert_eq!(
        deny_calls().await,
        json!([{"attempts": 1, "booking": booking, "relay": access, "state": "ok"}])
    );
    let old = api.get_json("/admin/oldbookings", &admin).await.unwrap();
    let old = relay_testkit::book::booking_rows(&old);
    assert!(
        old.iter().any(|b| &b.name == booking && b.cancelled),
        "{old:?}"
    );
    drop(relay);
}
