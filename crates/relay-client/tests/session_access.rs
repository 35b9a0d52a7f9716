//! The session's access handshake against a real HTTP server on 127.0.0.1: POST with the
//! raw token, `{"uri":...}`, dial; a refused token is reported in the state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;
use relay_client::session::{Message, Session, SessionConfig, SessionError};

mod common;

const GOOD_TOKEN: &str = "good.token.value";

/// An access route that hands out a uri for the echo websocket, and the echo websocket.
async fn start_fake_relay() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/session/{topic}",
            post(move |headers: HeaderMap| async move {
                let token = headers.get("authorization").and_then(|v| v.to_str().ok());
                if token != Some(GOOD_TOKEN) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        "\"Token Wrong Topic\"\n".to_string(),
                    );
                }
                (
                    StatusCode::OK,
                    format!("{{\"uri\":\"ws://{address}/ws/echo?code=abc\"}}\n"),
                )
            }),
        )
        .route(
            "/ws/echo",
            any(|upgrade: WebSocketUpgrade, headers: HeaderMap| async move {
                let agent = headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                upgrade
                    .on_upgrade(move |mut socket| async move {
                        let _ = socket
                            .send(AxumMessage::Text(format!("agent={agent}").into()))
                            .await;
                        while let Some(Ok(message)) = socket.recv().await {
                            if matches!(message, AxumMessage::Text(_) | AxumMessage::Binary(_))
                                && socket.send(message).await.is_err()
                            {
                                break;
                            }
                        }
                    })
                    .into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn token_session_posts_access_then_dials_the_uri() {
    let base = start_fake_relay().await;
    let config = SessionConfig::new(format!("{base}/session/expt00"))
        .with_token(GOOD_TOKEN)
        .with_user_agent("relay-client-test");
    let mut session = Session::spawn(config);
    tokio::time::timeout(Duration::from_secs(10), session.wait_connected())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.recv().await,
        Some(Message::Text("agent=relay-client-test".into()))
    );
    session
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    session.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(
        session.recv().await,
        Some(Message::Binary(vec![1, 2, 3].into()))
    );
    assert_eq!(session.recv().await, Some(Message::Text("hi".into())));
    session.close().await;
}

#[tokio::test]
async fn a_refused_token_is_reported_in_the_state() {
    let base = start_fake_relay().await;
    let session =
        Session::spawn(SessionConfig::new(format!("{base}/session/expt00")).with_token("bad"));
    let state = common::first_error(&session).await;
    match state.last_error {
        Some(SessionError::AccessRefused { status, body, .. }) => {
            assert_eq!(status, 401);
            assert_eq!(body, "\"Token Wrong Topic\"");
        }
        other => panic!("expected AccessRefused, got {other:?}"),
    }
    assert_eq!(state.connects, 0);
    session.close().await;
}

#[tokio::test]
async fn without_a_token_the_url_is_dialled_directly() {
    let base = start_fake_relay().await;
    let ws_url = format!("{}/ws/echo", base.replace("http://", "ws://"));
    let mut session = Session::spawn(SessionConfig::new(ws_url));
    tokio::time::timeout(Duration::from_secs(10), session.wait_connected())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(session.recv().await, Some(Message::Text(t)) if t.starts_with("agent=relay-client/"))
    );
    session.close().await;
}

#[tokio::test]
async fn an_unreadable_extra_ca_file_is_a_clear_error() {
    let session = Session::spawn(
        SessionConfig::new("https://127.0.0.1:9/session/x")
            .with_token(GOOD_TOKEN)
            .with_extra_ca_file("/nonexistent/ca.pem"),
    );
    let state = common::first_error(&session).await;
    match state.last_error {
        Some(SessionError::Tls(reason)) => {
            assert!(reason.contains("/nonexistent/ca.pem"), "{reason}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    session.close().await;
}
