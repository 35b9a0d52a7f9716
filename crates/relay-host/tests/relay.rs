//! Destinations against real peers (the reference's rwc and reconws tests): a real relay
//! server in-process with token access, plain websocket servers for direct rules, rule
//! replacement, stream destinations, B4 through the REST API, and a relay restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::SinkExt;
use relay_client::session::{Message as SessionMessage, Session, SessionConfig};
use relay_host::commands::{add_stream_rule, StreamRule};
use relay_host::{DestinationRule, RunningHost, SessionConnector};
use relay_server::{RunningServer, ServerConfig};
use relay_testkit::wait_until;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The longest wait between two reconnect attempts of a destination.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

async fn start_relay() -> RunningServer {
    RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap()
}

async fn start_session_host() -> RunningHost {
    start_host(local_config(), Arc::new(SessionConnector::default())).await
}

async fn wait_connected(host: &RunningHost, id: &str) {
    let destinations = &host.state().destinations;
    wait_until(&format!("destination {id} to connect"), WAIT, || {
        destinations.is_connected(id) == Some(true)
    })
    .await;
}

/// A destination rule for `topic` on the relay, with a token of the given scopes.
fn token_rule(
    relay_access: &str,
    id: &str,
    stream: &str,
    topic: &str,
    scopes: &[&str],
) -> DestinationRule {
    DestinationRule {
        id: id.into(),
        stream: stream.into(),
        destination: format!("{relay_access}/session/{topic}"),
        token: token(relay_access, topic, scopes),
        file: String::new(),
    }
}

fn user_session(relay: &RunningServer, topic: &str, scopes: &[&str]) -> Session {
    let access = format!("{}/session/{topic}", relay.access_url());
    Session::spawn(SessionConfig::new(access).with_token(token(relay.access_url(), topic, scopes)))
}

async fn next_session_message(session: &mut Session) -> SessionMessage {
    tokio::time::timeout(WAIT, session.recv())
        .await
        .expect("nothing from the relay")
        .expect("session closed")
}

#[tokio::test]
async fn data_round_trip_between_a_local_client_and_a_relay_user() {
    let relay = start_relay().await;
    let host = start_session_host().await;
    let topic = "expt00-data";
    host.state()
        .destinations
        .add(token_rule(
            relay.access_url(),
            "data",
            "data",
            topic,
            &["read", "write"],
        ))
        .unwrap();
    let mut bridge = ws_client(&host, "data").await;
    let mut user = user_session(&relay, topic, &["read", "write"]);
    tokio::time::timeout(WAIT, user.wait_connected())
        .await
        .unwrap()
        .unwrap();
    wait_connected(&host, "data").await;

    user.send(SessionMessage::Text("{\"cmd\":\"start\"}".into()))
        .await
        .unwrap();
    assert_eq!(
        next_data(&mut bridge).await,
        WsMessage::Text("{\"cmd\":\"start\"}".into())
    );
    send_text(&mut bridge, "{\"status\":\"running\"}").await;
    assert_eq!(
        next_session_message(&mut user).await,
        SessionMessage::Text("{\"status\":\"running\"}".into())
    );
    bridge
        .send(WsMessage::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        next_session_message(&mut user).await,
        SessionMessage::Binary(vec![1, 2, 3].into())
    );

    user.close().await;
    host.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn replacing_a_rule_by_id_switches_destination_and_streams_reach_it() {
    let (url_a, mut sink_a) = start_ws_server().await;
    let (url_b, mut sink_b) = start_ws_server().await;
    let host = start_session_host().await;
    let state = host.state().clone();
    add_stream_rule(
        &state,
        StreamRule {
            stream: "stream/large".into(),
            feeds: vec!["video0".into()],
        },
    )
    .unwrap();
    let rule = |destination: &str| DestinationRule {
        id: "00".into(),
        stream: "/stream/large".into(),
        destination: destination.into(),
        ..Default::default()
    };
    state.destinations.add(rule(&url_a)).unwrap();
    wait_connected(&host, "00").await;
    let mut camera = ws_client(&host, "video0").await;
    camera
        .send(WsMessage::Binary(vec![1].into()))
        .await
        .unwrap();
    assert_eq!(
        next_seen_message(&mut sink_a).await,
        WsMessage::Binary(vec![1].into())
    );
    // Changing the stream rule (unmute audio) keeps the relay connection.
    add_stream_rule(
        &state,
        StreamRule {
            stream: "stream/large".into(),
            feeds: vec!["video0".into(), "audio0".into()],
        },
    )
    .unwrap();
    let mut microphone = ws_client(&host, "audio0").await;
    microphone
        .send(WsMessage::Binary(vec![7].into()))
        .await
        .unwrap();
    assert_eq!(
        next_seen(&mut sink_a).await,
        Seen::Message(WsMessage::Binary(vec![7].into()))
    );

    state.destinations.add(rule(&url_b)).unwrap();
    // The old connection is closed, the new one carries the stream.
    assert_eq!(next_seen(&mut sink_a).await, Seen::Closed);
    wait_connected(&host, "00").await;
    camera
        .send(WsMessage::Binary(vec![2].into()))
        .await
        .unwrap();
    assert_eq!(
        next_seen_message(&mut sink_b).await,
        WsMessage::Binary(vec![2].into())
    );
    assert!(sink_a.try_recv().is_err());
    host.shutdown().await;
}

#[tokio::test]
async fn b4_deleting_stream_rules_then_replacing_and_deleting_the_destination_keeps_the_host_alive()
{
    let (url, mut sink) = start_ws_server().await;
    let host = start_session_host().await;
    let base = host.url();
    let http = http_client();
    let post = |path: &str, body: String| http.post(format!("{base}{path}")).body(body).send();
    post(
        "/api/streams",
        r#"{"stream":"stream/s","feeds":["video0","audio0"]}"#.into(),
    )
    .await
    .unwrap();
    let rule = format!(r#"{{"id":"v","stream":"stream/s","destination":"{url}"}}"#);
    post("/api/destinations", rule.clone()).await.unwrap();
    wait_connected(&host, "v").await;
    // The reference crashed here: delete the stream rules, then replace and delete the
    // destination (which unregisters the stream client a second time).
    http.delete(format!("{base}/api/streams/stream/s"))
        .send()
        .await
        .unwrap();
    http.delete(format!("{base}/api/streams/all"))
        .send()
        .await
        .unwrap();
    post("/api/destinations", rule.clone()).await.unwrap();
    http.delete(format!("{base}/api/destinations/v"))
        .send()
        .await
        .unwrap();
    post("/api/destinations", rule).await.unwrap();
    post(
        "/api/streams",
        r#"{"stream":"stream/s","feeds":["video0"]}"#.into(),
    )
    .await
    .unwrap();
    wait_connected(&host, "v").await;
    let mut camera = ws_client(&host, "video0").await;
    camera
        .send(WsMessage::Binary(vec![9].into()))
        .await
        .unwrap();
    assert_eq!(
        next_seen_message(&mut sink).await,
        WsMessage::Binary(vec![9].into())
    );
    let health = http
        .get(format!("{base}/healthcheck"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    host.shutdown().await;
}

#[tokio::test]
async fn the_host_reconnects_by_itself_after_the_relay_restarts() {
    let relay = start_relay().await;
    let (access_addr, relay_addr) = (relay.access_addr(), relay.relay_addr());
    let audience = relay.access_url().to_string();
    let host = start_session_host().await;
    let topic = "expt00-video";
    host.state()
        .destinations
        .add(token_rule(&audience, "video", "video", topic, &["write"]))
        .unwrap();
    wait_connected(&host, "video").await;
    relay.shutdown().await;
    wait_until("the host to notice the relay is gone", WAIT, || {
        host.state().destinations.is_connected("video") == Some(false)
    })
    .await;

    let mut config = ServerConfig::local(SECRET.to_vec());
    config.access_listen = access_addr;
    config.relay_listen = relay_addr;
    let restarted_at = Instant::now();
    let relay = RunningServer::start(config).await.unwrap();
    // The backoff never waits more than 10 s (proved exactly, under paused time, in
    // timing.rs), so the host is back within that plus the usual wait; a tighter
    // wall-clock bound would flake on a loaded machine.
    wait_until(
        "the host to reconnect after the relay came back",
        BACKOFF_CAP + WAIT,
        || host.state().destinations.is_connected("video") == Some(true),
    )
    .await;
    println!(
        "host reconnected {:?} after the relay came back",
        restarted_at.elapsed()
    );

    let mut viewer = user_session(&relay, topic, &["read"]);
    tokio::time::timeout(WAIT, viewer.wait_connected())
        .await
        .unwrap()
        .unwrap();
    let mut camera = ws_client(&host, "video").await;
    // Frames sent before the viewer joined the topic are not delivered, so keep sending
    // until one arrives.
    let received = tokio::time::timeout(WAIT, async {
        loop {
            camera
                .send(WsMessage::Binary(vec![0x47; 188].into()))
                .await
                .unwrap();
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), viewer.recv()).await
            {
                break message;
            }
        }
    })
    .await
    .expect("no video after the restart");
    assert_eq!(received, SessionMessage::Binary(vec![0x47; 188].into()));
    viewer.close().await;
    host.shutdown().await;
    relay.shutdown().await;
}
