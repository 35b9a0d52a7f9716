//! Starting and stopping a server: bind errors name the failing listener, and shutdown
//! closes every websocket with 1001 and leaves no task running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use relay_server::{RunningServer, ServerConfig, StartError};
use relay_testkit::wait_until;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_taken_relay_port_is_reported_with_the_relay_address() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = occupied.local_addr().unwrap();
    let mut config = ServerConfig::local(SECRET.to_vec());
    config.access_listen = "127.0.0.1:0".parse().unwrap();
    config.relay_listen = taken;

    let error = match RunningServer::start(config).await {
        Ok(_) => panic!("the relay port {taken} is taken, yet the server started"),
        Err(error) => error,
    };

    match &error {
        StartError::Bind { addr, what, .. } => {
            assert_eq!(*addr, taken, "{error}");
            assert_eq!(*what, "relay", "{error}");
        }
        other => panic!("expected a bind error, got {other}"),
    }
    let message = error.to_string();
    assert!(message.contains(&taken.to_string()), "{message}");
    assert!(message.contains("relay"), "{message}");
}

#[tokio::test]
async fn a_taken_access_port_is_reported_with_the_access_address() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = occupied.local_addr().unwrap();
    let mut config = ServerConfig::local(SECRET.to_vec());
    config.access_listen = taken;
    config.relay_listen = "127.0.0.1:0".parse().unwrap();

    match RunningServer::start(config).await {
        Err(StartError::Bind { addr, what, .. }) => {
            assert_eq!(addr, taken);
            assert_eq!(what, "access API");
        }
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(_) => panic!("the access port {taken} is taken, yet the server started"),
    }
}

#[tokio::test]
async fn shutdown_closes_every_websocket_with_going_away_and_leaves_no_task() {
    let s = start(|_| {}).await;
    let mut sockets = vec![
        join(&s, "t", &["read", "write"]).await,
        join(&s, "t", &["read"]).await,
        join(&s, "u", &["read", "write"]).await,
    ];
    // Three users plus the stats reporter.
    wait_until("every member registered", WAIT, || {
        s.connection_count() == 4
    })
    .await;
    let tasks = s.tasks();
    assert!(
        tasks.len() >= 4,
        "connections and background loops are tracked: {}",
        tasks.len()
    );

    let shutdown = tokio::spawn(s.shutdown());
    for ws in &mut sockets {
        assert_eq!(close_code(ws, WAIT).await, Some(1001));
    }
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();

    assert!(tasks.is_closed());
    assert!(
        tasks.is_empty(),
        "tasks left after shutdown: {}",
        tasks.len()
    );
}
