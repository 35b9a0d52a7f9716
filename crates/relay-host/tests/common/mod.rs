//! Helpers shared by the host's integration tests: starting a host on 127.0.0.1:0, local
//! websocket clients, token minting. Waiting for a condition is `relay_testkit::wait_until`,
//! the check for external programs `relay_testkit::require`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use relay_host::link::ChannelConnector;
use relay_host::{HostConfig, RunningHost, SharedConnector};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn local_config() -> HostConfig {
    HostConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HostConfig::default()
    }
}

pub async fn start_host(config: HostConfig, connector: SharedConnector) -> RunningHost {
    RunningHost::start(config, connector).await.unwrap()
}

pub async fn start_idle_host() -> RunningHost {
    start_host(local_config(), Arc::new(ChannelConnector::default())).await
}

/// A local websocket client on `/ws/{feed}`.
pub async fn ws_client(host: &RunningHost, feed: &str) -> Ws {
    let url = format!("ws://{}/ws/{feed}", host.local_addr());
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

/// The next data message (text or binary) within [`WAIT`].
pub async fn next_data(ws: &mut Ws) -> WsMessage {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return m,
                Some(Ok(_)) => continue,
                other => panic!("websocket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("no message within the wait")
}

/// Sends a text message.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(WsMessage::Text(text.into())).await.unwrap();
}

/// A ping and its pong: once the pong is back, the host has read (and acted on) every
/// frame this client sent before the ping. Panics if a data frame arrives first.
pub async fn round_trip(ws: &mut Ws) {
    let payload = bytes::Bytes::from_static(b"round trip");
    ws.send(WsMessage::Ping(payload.clone())).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Pong(p))) if p == payload => return,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected the pong of the round trip, got {other:?}"),
            }
        }
    })
    .await
    .expect("no pong within the wait")
}

/// An HTTP client (reqwest is built without a default TLS provider here).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub const SECRET: &[u8] = b"testsecret";

/// A session token for `topic` at `audience` with the given scopes, valid for an hour.
pub fn token(audience: &str, topic: &str, scopes: &[&str]) -> String {
    let claims = relay_auth::Claims::grant(
        "session",
        topic,
        scopes,
        audience,
        relay_auth::unix_now(),
        3600,
    );
    relay_auth::mint(&claims, SECRET)
}

/// What a test websocket server saw, in order.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Opened,
    Message(WsMessage),
    Closed,
}

/// A plain websocket server on 127.0.0.1 (a stand-in relay for direct `ws://` rules) that
/// reports every connection, data message and disconnection.
pub async fn start_ws_server() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/in", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let _ = tx.send(Seen::Opened);
                while let Some(Ok(message)) = ws.next().await {
                    if matches!(message, WsMessage::Text(_) | WsMessage::Binary(_)) {
                        let _ = tx.send(Seen::Message(message));
                    }
                }
                let _ = tx.send(Seen::Closed);
            });
        }
    });
    (url, rx)
}

/// The next thing a test websocket server saw, within [`WAIT`].
pub async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the websocket server saw nothing")
        .unwrap()
}

/// The next data message a test websocket server received, skipping connection events.
pub async fn next_seen_message(rx: &mut mpsc::UnboundedReceiver<Seen>) -> WsMessage {
    loop {
        if let Seen::Message(message) = next_seen(rx).await {
            return message;
        }
    }
}
