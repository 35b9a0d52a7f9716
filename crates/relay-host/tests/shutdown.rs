//! Stopping a host: an ingest that never ends (ffmpeg streaming live video) is cut when the
//! grace period is over, so shutdown returns, and local websocket clients leave with 1001.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::StreamExt;
use relay_host::link::ChannelConnector;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn shutdown_cuts_a_never_ending_ingest_after_the_grace_period() {
    let config = relay_host::HostConfig {
        shutdown_grace: Duration::from_millis(200),
        ..local_config()
    };
    let host = start_host(config, Arc::new(ChannelConnector::default())).await;
    let mut viewer = ws_client(&host, "cam").await;

    // A chunked POST whose body never ends, like ffmpeg feeding live video.
    let mut feeder = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    feeder
        .write_all(
            b"POST /ts/cam HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        )
        .await
        .unwrap();
    // The first burst reaching the viewer shows the ingest is running.
    assert_eq!(
        next_data(&mut viewer).await,
        WsMessage::Binary(b"abcd".to_vec().into())
    );

    tokio::time::timeout(WAIT, host.shutdown())
        .await
        .expect("shutdown returns although the ingest never ends");

    match tokio::time::timeout(WAIT, viewer.next()).await.unwrap() {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a going-away close, got {other:?}"),
    }
    // The feeder is told why (or at least disconnected), never left hanging.
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, feeder.read_to_end(&mut reply))
        .await
        .expect("the ingest connection is closed")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 503"),
        "unexpected reply: {reply}"
    );
}
