//! The session, stats subscriber and status client against a real `relay serve` on
//! 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use relay_client::session::{Message, Session, SessionConfig, SessionError};
use relay_client::status::{fetch_status, StatsSubscriber, StatusError};

#[tokio::test]
async fn two_sessions_exchange_typed_messages_through_the_relay() {
    let server = start_relay().await;
    let mut a = Session::spawn(session_config(&server, "expt00"));
    let mut b = Session::spawn(session_config(&server, "expt00"));
    tokio::time::timeout(Duration::from_secs(10), async {
        a.wait_connected().await.unwrap();
        b.wait_connected().await.unwrap();
    })
    .await
    .unwrap();
    wait_for_connections(&server, "expt00", 2).await;
    a.send(text("{\"hello\":1}")).await.unwrap();
    a.send(Message::Binary(vec![0x47, 0x00, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(b.recv().await, Some(text("{\"hello\":1}")));
    assert_eq!(
        b.recv().await,
        Some(Message::Binary(vec![0x47, 0x00, 0xff].into()))
    );
    b.send(text("back")).await.unwrap();
    // The relay never echoes: a's next message is b's reply.
    assert_eq!(a.recv().await, Some(text("back")));
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_for_another_topic_is_refused_and_reported() {
    let server = start_relay().await;
    let config = SessionConfig::new(format!("{}/session/expt00", server.access_url()))
        .with_token(token(&server, "other", &["read", "write"]));
    let session = Session::spawn(config);
    let state = first_error(&session).await;
    match state.last_error {
        Some(SessionError::AccessRefused { status, body, .. }) => {
            assert_eq!(status, 401);
            assert!(body.contains("Token Wrong Topic"), "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    session.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_session_reconnects_after_the_relay_restarts_on_the_same_ports() {
    let server = start_relay().await;
    let addr = |url: &str| {
        url.rsplit("://")
            .next()
            .unwrap()
            .parse::<std::net::SocketAddr>()
            .unwrap()
    };
    let (access, relay) = (addr(server.access_url()), addr(server.relay_url()));
    let session = Session::spawn(session_config(&server, "expt01"));
    session.wait_connected().await.unwrap();
    server.shutdown().await;
    let mut state = session.state();
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| !s.is_connected()),
    )
    .await
    .unwrap()
    .unwrap();
    let config = relay_server::ServerConfig {
        access_listen: access,
        relay_listen: relay,
        ..relay_server::ServerConfig::local(SECRET.to_vec())
    };
    let restarted = relay_server::RunningServer::start(config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), session.wait_connects(2))
        .await
        .unwrap()
        .unwrap();
    session.close().await;
    restarted.shutdown().await;
}

#[tokio::test]
async fn stats_subscriber_and_status_route_list_the_connections() {
    let server = start_relay().await;
    let a = Session::spawn(session_config(&server, "123"));
    a.wait_connected().await.unwrap();
    let stats_session = Session::spawn(session_config(&server, "stats"));
    stats_session.wait_connected().await.unwrap();
    let mut stats = StatsSubscriber::new(stats_session);
    stats.request_update().await.unwrap();
    let reports = tokio::time::timeout(Duration::from_secs(15), stats.next())
        .await
        .unwrap()
        .unwrap();
    let topics: Vec<&str> = reports.iter().map(|r| r.topic.as_str()).collect();
    assert!(topics.contains(&"123"), "{topics:?}");
    assert!(topics.contains(&"stats"), "{topics:?}");

    let entries = status(&server).await;
    let entry = entries
        .iter()
        .find(|e| e.topic == "123")
        .expect("topic 123 in /status");
    assert!(entry.can_read && entry.can_write);
    assert!(entry.connected.is_some());

    // Without the relay:stats scope the route refuses, and the client says so.
    let plain = token(&server, "123", &["read"]);
    match fetch_status(&reqwest::Client::new(), server.access_url(), &plain).await {
        Err(StatusError::Refused { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("relay:stats"), "{body}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    stats.close().await;
    a.close().await;
    server.shutdown().await;
}
