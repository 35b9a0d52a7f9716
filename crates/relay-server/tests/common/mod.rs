//! Shared helpers for the relay-server integration tests: a real server on 127.0.0.1:0,
//! token minting, the access POST and websocket clients.
//! Waiting for a condition is `relay_testkit::wait_until`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use relay_auth::{mint, Claims};
use relay_server::{RunningServer, ServerConfig};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &[u8] = b"testsecret";
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now() -> i64 {
    relay_auth::unix_now()
}

/// A server with `ServerConfig::local`, changed by `adjust`. `RELAY_DIRECT_WRITES=false`
/// (or `0`) in the test's environment turns direct writes (the default) off first, so that
/// the same tests run against both write paths.
pub async fn start(adjust: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut cfg = ServerConfig::local(SECRET.to_vec());
    cfg.direct_writes =
        !std::env::var("RELAY_DIRECT_WRITES").is_ok_and(|v| v == "false" || v == "0");
    adjust(&mut cfg);
    RunningServer::start(cfg).await.expect("server starts")
}

/// Session claims for `topic` valid for a minute, audience the server's access URL.
pub fn claims(server: &RunningServer, topic: &str, scopes: &[&str]) -> Claims {
    Claims {
        booking_id: "bid".into(),
        ..Claims::grant("session", topic, scopes, server.access_url(), now(), 60)
    }
}

pub fn token(claims: &Claims) -> String {
    mint(claims, SECRET)
}

pub fn admin_token(server: &RunningServer) -> String {
    token(&Claims {
        topic: String::new(),
        ..claims(server, "", &["relay:admin"])
    })
}

/// POST the access route with `authorization`; returns status and body.
pub async fn post(url: &str, authorization: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.post(url);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

pub async fn get(url: &str, authorization: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(url);
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Trade claims for a websocket uri through the access API.
pub async fn access_uri(server: &RunningServer, claims: &Claims) -> String {
    let url = format!("{}/session/{}", server.access_url(), claims.topic);
    let (status, body) = post(&url, Some(&token(claims))).await;
    assert_eq!(status, 200, "access refused: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["uri"].as_str().expect("uri").to_owned()
}

/// Access POST then websocket dial.
pub async fn join(server: &RunningServer, topic: &str, scopes: &[&str]) -> Ws {
    let uri = access_uri(server, &claims(server, topic, scopes)).await;
    dial(&uri).await
}

pub async fn dial(uri: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .expect("websocket opens");
    ws
}

/// Next data or close frame within `within`; pings and pongs are skipped.
pub async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// A ping and its pong: once the pong is back, the relay has read (and acted on) every
/// frame this connection sent before the ping. Panics if a data frame arrives first.
pub async fn round_trip(ws: &mut Ws) {
    let payload = Bytes::from_static(b"round trip");
    ws.send(Message::Ping(payload.clone())).await.expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) if p == payload => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected the pong of the round trip, got {other:?}"),
        }
    }
}

/// The close code of the next close frame, if one arrives within `within`.
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    match next_frame(ws, within).await {
        Some(Message::Close(Some(frame))) => Some(frame.code.into()),
        _ => None,
    }
}

/// Shell claims for `shell_id` with one shell scope (`host`, `client` or `stats`).
pub fn shell_claims(server: &RunningServer, shell_id: &str, scope: &str) -> Claims {
    Claims {
        booking_id: "bid".into(),
        ..Claims::grant(
            relay_common::connection::ConnectionType::Shell.as_str(),
            shell_id,
            &[scope],
            server.access_url(),
            now(),
            60,
        )
    }
}

/// The next frame as a connection action (within 10 s), failing on anything else.
pub async fn next_action(ws: &mut Ws) -> relay_common::action::ConnectionAction {
    match next_frame(ws, Duration::from_secs(10)).await {
        Some(Message::Text(text)) => relay_common::action::ConnectionAction::parse(&text)
            .unwrap_or_else(|| panic!("not a connection action: {text}")),
        other => panic!("expected a connection action, got {other:?}"),
    }
}
