//! What the host drops is counted and shown (`/api/status` per destination, `/api/drops`
//! totals), and a local `/ws` client that stops reading is disconnected after the write
//! timeout instead of holding its task for ever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::SinkExt;
use relay_host::link::ChannelConnector;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn get_json(url: String) -> Value {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|body| serde_json::from_str(&body).unwrap())
        .unwrap()
}

#[tokio::test]
async fn messages_for_a_link_that_is_down_are_counted_per_destination_and_in_the_totals() {
    // Links from this connector never connect.
    let host = start_host(local_config(), Arc::new(ChannelConnector::new(false))).await;
    let base = host.url();
    let rule = r#"{"id":"d","stream":"data","destination":"ws://relay.example.io/x"}"#;
    let added = http_client()
        .post(format!("{base}/api/destinations"))
        .body(rule)
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());
    let mut local = ws_client(&host, "data").await;
    for i in 0..5 {
        send_text(&mut local, &format!("m{i}")).await;
    }
    wait_until_json(&format!("{base}/api/status"), |status| {
        status["d"]["dropped_link_down"] == 5
    })
    .await;
    let status = get_json(format!("{base}/api/status")).await;
    assert_eq!(status["d"]["connected"], false);
    assert_eq!(status["d"]["dropped_queue_full"], 0);
    assert_eq!(status["d"]["dropped_link_busy"], 0);
    let totals = get_json(format!("{base}/api/drops")).await;
    assert_eq!(
        totals,
        serde_json::json!({"queue_full": 0, "link_down": 5, "link_busy": 0})
    );
    host.shutdown().await;
}

/// Polls `url` until its JSON satisfies `condition`.
async fn wait_until_json(url: &str, condition: impl Fn(&Value) -> bool) {
    relay_testkit::wait_until_async(&format!("{url} to show the drops"), WAIT, || async {
        condition(&get_json(url.to_owned()).await)
    })
    .await;
}

#[tokio::test]
async fn a_local_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let mut config = local_config();
    config.ws_write_timeout = Duration::from_millis(300);
    let host = start_host(config, Arc::new(ChannelConnector::default())).await;
    // Connected, then never read again: its socket buffers fill and the host's writes block.
    let _stalled = ws_client(&host, "video").await;
    let mut publisher = ws_client(&host, "video").await;
    let hub = host.state().hub.clone();
    assert_eq!(hub.subscriber_count("video"), 2);
    let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let mut sent = 0;
    // Publish until the stalled client is gone (its queue holds at most 32 MiB, so the
    // host's write to it must block first); the bound is far above what buffers hold.
    while hub.subscriber_count("video") == 2 {
        assert!(sent < 2_000, "the stalled client was never disconnected");
        publisher
            .send(WsMessage::Binary(chunk.clone()))
            .await
            .unwrap();
        sent += 1;
        round_trip(&mut publisher).await;
    }
    assert_eq!(hub.subscriber_count("video"), 1);
    host.shutdown().await;
}
