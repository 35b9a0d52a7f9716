//! `relay crossbar` (the open mode, no tokens) against a real listener on 127.0.0.1:0:
//! N:N topics where the sender never hears itself, `/in/` → `/out/` where the readers'
//! messages are dropped, isolated topics, `/stats` JSON, and the loopback-only rule.
//! Every absence is proved with a marker sent afterwards, never with a sleep.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use relay_server::open::{CrossbarConfig, RunningCrossbar};
use relay_server::StartError;
use relay_testkit::wait_until;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

async fn start() -> RunningCrossbar {
    // reqwest (used for `/stats`) needs a process-wide rustls provider; the crossbar has no
    // TLS and, unlike `RunningServer::start`, does not install one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RunningCrossbar::start(CrossbarConfig::new("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("crossbar starts")
}

async fn open(crossbar: &RunningCrossbar, path: &str) -> Ws {
    dial(&format!("ws://{}/{path}", crossbar.addr())).await
}

/// Users plus the stats reporter.
async fn wait_for_users(crossbar: &RunningCrossbar, users: usize) {
    wait_until("every client joined", WAIT, || {
        crossbar.connection_count() == users + 1
    })
    .await;
}

#[tokio::test]
async fn two_clients_on_a_topic_exchange_messages_and_the_sender_never_hears_itself() {
    let crossbar = start().await;
    let mut a = open(&crossbar, "lab").await;
    let mut b = open(&crossbar, "lab").await;
    let mut c = open(&crossbar, "lab").await;
    wait_for_users(&crossbar, 3).await;
    send_text(&mut a, "from a").await;
    assert_eq!(
        next_frame(&mut b, WAIT).await,
        Some(Message::text("from a"))
    );
    assert_eq!(
        next_frame(&mut c, WAIT).await,
        Some(Message::text("from a"))
    );
    send_text(&mut b, "from b").await;
    // Had `a` heard its own message, it would arrive before b's.
    assert_eq!(
        next_frame(&mut a, WAIT).await,
        Some(Message::text("from b"))
    );
    assert_eq!(
        next_frame(&mut c, WAIT).await,
        Some(Message::text("from b"))
    );
    // Nor does b hear its own: c's marker is the next thing b receives.
    send_text(&mut c, "marker").await;
    assert_eq!(
        next_frame(&mut b, WAIT).await,
        Some(Message::text("marker"))
    );
    crossbar.shutdown().await;
}

#[tokio::test]
async fn in_writes_to_out_and_whatever_the_readers_send_is_dropped() {
    let crossbar = start().await;
    let mut writer = open(&crossbar, "in/video").await;
    let mut reader = open(&crossbar, "out/video").await;
    let mut other_reader = open(&crossbar, "out/video").await;
    wait_for_users(&crossbar, 3).await;
    send_text(&mut writer, "frame 1").await;
    assert_eq!(
        next_frame(&mut reader, WAIT).await,
        Some(Message::text("frame 1"))
    );
    assert_eq!(
        next_frame(&mut other_reader, WAIT).await,
        Some(Message::text("frame 1"))
    );
    // The readers speak; the relay has read (and dropped) it once the round trip is back.
    send_text(&mut reader, "reader talking").await;
    round_trip(&mut reader).await;
    send_text(&mut other_reader, "other reader talking").await;
    round_trip(&mut other_reader).await;
    // Had either reader's message reached anyone, it would arrive before this marker.
    send_text(&mut writer, "marker").await;
    assert_eq!(
        next_frame(&mut other_reader, WAIT).await,
        Some(Message::text("marker"))
    );
    assert_eq!(
        next_frame(&mut reader, WAIT).await,
        Some(Message::text("marker"))
    );
    // The writer is write-only: nothing was ever written to it, and the readers' messages
    // were not counted as sent to the topic (the round trips above prove they were read).
    let (status, body) = get(&format!("http://{}/stats", crossbar.addr()), None).await;
    assert_eq!(status, 200);
    let reports: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reports = reports.as_array().unwrap();
    let writer_report = reports
        .iter()
        .find(|r| r["topic"] == "in/video")
        .expect("the writer is listed");
    assert_eq!(writer_report["messages_out"], 0, "{writer_report}");
    assert_eq!(writer_report["can_read"], false);
    let readers: Vec<_> = reports
        .iter()
        .filter(|r| r["topic"] == "out/video")
        .collect();
    assert_eq!(readers.len(), 2);
    for r in readers {
        assert_eq!(r["messages_in"], 0, "{r}");
        assert_eq!(r["can_write"], false, "{r}");
    }
    crossbar.shutdown().await;
}

#[tokio::test]
async fn another_topic_stays_isolated() {
    let crossbar = start().await;
    let mut a = open(&crossbar, "one").await;
    let mut b = open(&crossbar, "one").await;
    let mut x = open(&crossbar, "two").await;
    let mut y = open(&crossbar, "two").await;
    // A plain topic called like an in/out pair's key must not meet it either.
    let mut out = open(&crossbar, "out/one").await;
    let mut in_one = open(&crossbar, "in/one").await;
    wait_for_users(&crossbar, 6).await;
    send_text(&mut a, "on one").await;
    assert_eq!(
        next_frame(&mut b, WAIT).await,
        Some(Message::text("on one"))
    );
    // Had "on one" crossed to topic two or to out/one, it would arrive before the markers.
    send_text(&mut y, "marker two").await;
    assert_eq!(
        next_frame(&mut x, WAIT).await,
        Some(Message::text("marker two"))
    );
    send_text(&mut in_one, "marker in").await;
    assert_eq!(
        next_frame(&mut out, WAIT).await,
        Some(Message::text("marker in"))
    );
    // And in/one's message did not reach the plain topic one.
    send_text(&mut b, "marker one").await;
    assert_eq!(
        next_frame(&mut a, WAIT).await,
        Some(Message::text("marker one"))
    );
    crossbar.shutdown().await;
}

#[tokio::test]
async fn stats_json_lists_the_connections_without_a_token_and_the_page_is_served() {
    let crossbar = start().await;
    let _a = open(&crossbar, "lab").await;
    let _w = open(&crossbar, "in/cam").await;
    let _r = open(&crossbar, "out/cam").await;
    wait_for_users(&crossbar, 3).await;
    let (status, body) = get(&format!("http://{}/stats", crossbar.addr()), None).await;
    assert_eq!(status, 200, "{body}");
    let reports: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut listed: Vec<(String, bool, bool)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap().to_owned(),
                r["can_read"].as_bool().unwrap(),
                r["can_write"].as_bool().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("in/cam".into(), false, true),
            ("lab".into(), true, true),
            ("out/cam".into(), true, false),
            ("stats".into(), true, true),
        ]
    );
    let page = reqwest::Client::new()
        .get(format!("http://{}/stats", crossbar.addr()))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("const OPEN_MODE = \"open\" === \"open\";"),
        "{page}"
    );
    crossbar.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_without_open() {
    let cfg = CrossbarConfig::new("0.0.0.0:0".parse().unwrap());
    match RunningCrossbar::start(cfg).await {
        Err(StartError::Config(errors)) => {
            assert!(errors[0].contains("not a loopback address"), "{errors:?}");
            assert!(errors[0].contains("--open"), "{errors:?}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an unauthenticated crossbar listened on 0.0.0.0"),
    }
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_going_away() {
    let crossbar = start().await;
    let mut a = open(&crossbar, "lab").await;
    wait_for_users(&crossbar, 1).await;
    let tasks = crossbar.connection_count();
    assert_eq!(tasks, 2);
    crossbar.shutdown().await;
    assert_eq!(close_code(&mut a, WAIT).await, Some(1001));
}

#[tokio::test]
async fn a_websocket_to_stats_gets_the_stats_topic_reports() {
    let crossbar = start().await;
    let _lab = open(&crossbar, "lab").await;
    let mut stats = open(&crossbar, "stats").await;
    wait_for_users(&crossbar, 2).await;
    send_text(&mut stats, r#"{"cmd":"update"}"#).await;
    let Some(Message::Text(report)) = next_frame(&mut stats, WAIT).await else {
        panic!("no stats report");
    };
    let report: serde_json::Value = serde_json::from_str(report.as_str()).unwrap();
    let topics: Vec<&str> = report
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert!(topics.contains(&"lab"), "{report}");
    crossbar.shutdown().await;
}
