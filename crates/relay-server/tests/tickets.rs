//! A ticket is not a JWT: the ticket-only fields of the server's code-store tickets
//! (`topicSalt`, `alertHost`) are ignored when a client puts them in a signed token. Only
//! the server decides which connection is a shell client and how its pair is salted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use relay_auth::Claims;
use relay_common::action::ConnectionAction;
use relay_testkit::wait_until;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// `claims` signed with the server's secret, plus the JSON fields in `extra`.
fn token_with(claims: &Claims, extra: serde_json::Value) -> String {
    let mut payload = serde_json::to_value(claims).unwrap();
    for (name, value) in extra.as_object().unwrap() {
        payload[name] = value.clone();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// POST `token` to the access route `path`; the websocket uri it answers with.
async fn uri_for(server: &relay_server::RunningServer, path: &str, token: &str) -> String {
    let (status, body) = post(&format!("{}{path}", server.access_url()), Some(token)).await;
    assert_eq!(status, 200, "access refused: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["uri"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn alert_host_in_a_session_token_does_not_make_a_shell_client() {
    let s = start(|_| {}).await;
    // A shell host named like the session topic, so that a honoured alertHost would have a
    // host to alert (and, without one, the session would be refused as host_offline).
    let mut host =
        dial(&uri_for(&s, "/shell/t", &token(&shell_claims(&s, "t", "host"))).await).await;
    let forged = token_with(
        &claims(&s, "t", &["read", "write"]),
        json!({"alertHost": true, "topicSalt": "chosen"}),
    );
    let mut forged_ws = dial(&uri_for(&s, "/session/t", &forged).await).await;
    let mut peer = join(&s, "t", &["read", "write"]).await;
    // Three, plus the stats reporter.
    wait_until("three connections", WAIT, || s.connection_count() == 4).await;

    // An ordinary session on the plain topic: not held back until a host writes, not salted.
    send_text(&mut forged_ws, "from the forged token").await;
    assert_eq!(
        next_frame(&mut peer, WAIT).await,
        Some(Message::text("from the forged token"))
    );
    send_text(&mut peer, "to the forged token").await;
    assert_eq!(
        next_frame(&mut forged_ws, WAIT).await,
        Some(Message::text("to the forged token"))
    );

    // The host was not alerted: the first action it gets is for a real shell client.
    let client = token(&shell_claims(&s, "t", "client"));
    let _admin = dial(&uri_for(&s, "/shell/t", &client).await).await;
    match next_action(&mut host).await {
        ConnectionAction::Connect { uri, .. } => {
            assert!(uri.contains("/shell/t/"), "{uri}")
        }
        other => panic!("expected a connect action, got {other:?}"),
    }
}

#[tokio::test]
async fn ticket_fields_in_shell_tokens_do_not_pick_the_topic_or_the_alert() {
    let s = start(|_| {}).await;
    // Were the host's salt used, it would listen on a salted topic and the client below
    // would find no host (503 host_offline).
    let host_token = token_with(
        &shell_claims(&s, "h", "host"),
        json!({"topicSalt": "chosen", "alertHost": true}),
    );
    let mut host = dial(&uri_for(&s, "/shell/h", &host_token).await).await;
    // The host, plus the stats reporter.
    wait_until("the host's connection", WAIT, || s.connection_count() == 2).await;

    // A client token asking for its own salt and for no alert still gets the server's
    // salted pair, and the host is told to dial the other end.
    let client_token = token_with(
        &shell_claims(&s, "h", "client"),
        json!({"topicSalt": "chosen", "alertHost": false}),
    );
    let client_uri = uri_for(&s, "/shell/h", &client_token).await;
    let mut admin = dial(&client_uri).await;
    let (host_end_uri, uuid) = match next_action(&mut host).await {
        ConnectionAction::Connect { uri, uuid } => (uri, uuid),
        other => panic!("expected a connect action, got {other:?}"),
    };
    let pair_path = |uri: &str| uri.split('?').next().unwrap_or_default().to_owned();
    assert_eq!(pair_path(&host_end_uri), pair_path(&client_uri));
    let mut host_end = dial(&host_end_uri).await;

    send_text(&mut host_end, "banner").await;
    assert_eq!(
        next_frame(&mut admin, WAIT).await,
        Some(Message::text("banner"))
    );
    send_text(&mut admin, "hello").await;
    assert_eq!(
        next_frame(&mut host_end, WAIT).await,
        Some(Message::text("hello"))
    );
    drop(admin);
    assert_eq!(
        next_action(&mut host).await,
        ConnectionAction::Disconnect { uuid }
    );
}
