//! The rule APIs over real sockets: the REST routes (the reference's vw handler tests, B5)
//! and the websocket JSON command API on feed `api` (B6).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn call(method: &str, url: String, body: Option<&str>) -> (StatusCode, String) {
    let client = http_client();
    let mut request = client.request(Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn destination_rules_add_show_delete_with_exact_bodies() {
    let host = start_idle_host().await;
    let base = host.url();
    let rule = r#"{"id":"00","stream":"/stream/large","destination":"wss://relay.example.io/in/video","token":"","file":""}"#;
    let (status, body) = call("POST", format!("{base}/api/destinations"), Some(rule)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"id":"00","stream":"stream/large","destination":"wss://relay.example.io/in/video","token":"","file":""}"#
    );
    // The reference's non-standard UPDATE method works too.
    let rule = r#"{"id":"01","stream":"data","destination":"https://relay.example.io/session/x","token":"secret.jwt"}"#;
    let (status, _) = call("UPDATE", format!("{base}/api/destinations"), Some(rule)).await;
    assert_eq!(status, StatusCode::OK);

    let (_, one) = call("GET", format!("{base}/api/destinations/00"), None).await;
    assert_eq!(
        one,
        r#"{"id":"00","stream":"stream/large","destination":"wss://relay.example.io/in/video","token":"","file":""}"#
    );
    // Tokens are hidden unless asked for.
    let (_, all) = call("GET", format!("{base}/api/destinations/all"), None).await;
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["01"]["token"], "<redacted>");
    assert_eq!(
        all.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["00", "01"]
    );
    let (_, all) = call(
        "GET",
        format!("{base}/api/destinations/all?tokens=true"),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&all).unwrap()["01"]["token"],
        "secret.jwt"
    );
    // Unknown id: the zero rule, as the reference.
    let (status, unknown) = call("GET", format!("{base}/api/destinations/nope"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        unknown,
        r#"{"id":"","stream":"","destination":"","token":"","file":""}"#
    );

    // Link state per rule (not in the reference); these links never connect.
    let (_, status) = call("GET", format!("{base}/api/status"), None).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["00"],
        json!({"stream":"stream/large","destination":"wss://relay.example.io/in/video","connected":false,
            "dropped_queue_full":0,"dropped_link_down":0,"dropped_link_busy":0})
    );

    let (_, deleted) = call("DELETE", format!("{base}/api/destinations/00"), None).await;
    assert_eq!(deleted, r#""00""#);
    assert!(host.state().destinations.get("00").is_none());
    host.shutdown().await;
}

#[tokio::test]
async fn b5_delete_all_really_deletes_all_destinations_and_streams() {
    let host = start_idle_host().await;
    let base = host.url();
    for id in ["a", "b", "all"] {
        let rule =
            json!({"id": id, "stream": "data", "destination": "ws://127.0.0.1:9/x"}).to_string();
        assert_eq!(
            call("POST", format!("{base}/api/destinations"), Some(&rule))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, body) = call("DELETE", format!("{base}/api/destinations/all"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#""deleteAll""#));
    assert_eq!(
        call("GET", format!("{base}/api/destinations/all"), None)
            .await
            .1,
        "{}"
    );

    for stream in ["stream/a", "stream/b"] {
        let rule = json!({"stream": stream, "feeds": ["video0"]}).to_string();
        assert_eq!(
            call("PUT", format!("{base}/api/streams"), Some(&rule))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, body) = call("DELETE", format!("{base}/api/streams/all"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#""deleteAll""#));
    assert_eq!(
        call("GET", format!("{base}/api/streams/all"), None).await.1,
        "{}"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn stream_rules_add_show_delete_and_404() {
    let host = start_idle_host().await;
    let base = host.url();
    let (status, body) = call(
        "POST",
        format!("{base}/api/streams"),
        Some(r#"{"stream":"/stream/large","feeds":["audio","video0"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"stream":"stream/large","feeds":["audio","video0"]}"#
    );
    assert_eq!(
        call("GET", format!("{base}/api/streams/stream/large"), None)
            .await
            .1,
        r#"["audio","video0"]"#
    );
    assert_eq!(
        call("GET", format!("{base}/api/streams/all"), None).await.1,
        r#"{"stream/large":["audio","video0"]}"#
    );
    let (status, body) = call("GET", format!("{base}/api/streams/stream/none"), None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "Stream not found\n")
    );
    assert_eq!(
        call("DELETE", format!("{base}/api/streams/stream/large"), None)
            .await
            .1,
        r#""stream/large""#
    );
    assert_eq!(
        call("GET", format!("{base}/api/streams/stream/large"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    host.shutdown().await;
}

#[tokio::test]
async fn healthcheck_bad_input_and_foreign_origins() {
    let host = start_idle_host().await;
    let base = host.url();
    assert_eq!(
        call("GET", format!("{base}/healthcheck"), None).await,
        (StatusCode::OK, "\"ok\"\n".into())
    );
    assert_eq!(
        call("GET", format!("{base}/api"), None).await.0,
        StatusCode::OK
    );
    let (status, body) = call(
        "POST",
        format!("{base}/api/destinations"),
        Some("{not json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not valid JSON"), "{body}");
    let (status, body) = call(
        "POST",
        format!("{base}/api/destinations"),
        Some(r#"{"id":"deleteAll","stream":"x","destination":"ws://a"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("reserved"), "{body}");
    let (status, _) = call(
        "POST",
        format!("{base}/api/destinations"),
        Some(r#"{"id":"t","stream":"x","destination":"ws://a","token":"jwt"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A web page elsewhere cannot drive the local API.
    for (origin, expected) in [
        ("https://evil.example", StatusCode::FORBIDDEN),
        ("http://localhost:8888", StatusCode::OK),
    ] {
        let request = http_client()
            .get(format!("{base}/api/destinations/all"))
            .header("Origin", origin);
        assert_eq!(request.send().await.unwrap().status(), expected, "{origin}");
    }
    // Still serving after all that.
    assert_eq!(
        call("GET", format!("{base}/healthcheck"), None).await.0,
        StatusCode::OK
    );
    host.shutdown().await;
}

/// Sends a command on `/ws/api` and returns the JSON reply.
async fn command(ws: &mut Ws, text: &str) -> Value {
    send_text(ws, text).await;
    match next_data(ws).await {
        WsMessage::Text(reply) => serde_json::from_str(reply.as_str())
            .unwrap_or_else(|e| panic!("reply is not valid JSON ({e}): {reply}")),
        other => panic!("reply is not text: {other:?}"),
    }
}

#[tokio::test]
async fn ws_command_api_covers_every_verb() {
    let mut config = local_config();
    config.api_destination = Some("ws://127.0.0.1:9/api".into());
    let host = start_host(
        config,
        std::sync::Arc::new(relay_host::link::ChannelConnector::default()),
    )
    .await;
    let mut api = ws_client(&host, "api").await;
    let mut listener = ws_client(&host, "api").await;

    assert_eq!(
        command(&mut api, r#"{"verb":"healthcheck"}"#).await,
        json!({"healthcheck":"ok"})
    );
    // Api clients hear each other's commands and every reply, as in the reference.
    assert_eq!(
        next_data(&mut listener).await,
        WsMessage::Text(r#"{"verb":"healthcheck"}"#.into())
    );
    assert_eq!(
        next_data(&mut listener).await,
        WsMessage::Text(r#"{"healthcheck":"ok"}"#.into())
    );
    drop(listener);

    let rule = r#"{"VERB":"add","What":"destination","rule":{"id":"00","stream":"/stream/large","destination":"wss://relay.example.io/x"}}"#;
    assert_eq!(
        command(&mut api, rule).await,
        json!({"id":"00","stream":"stream/large","destination":"wss://relay.example.io/x","token":"","file":""})
    );
    let list = command(
        &mut api,
        r#"{"verb":"list","what":"destination","which":"all"}"#,
    )
    .await;
    assert_eq!(
        list.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["00", "apiRule"]
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"list","what":"destination","which":"00"}"#
        )
        .await["stream"],
        "stream/large"
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"delete","what":"destination","which":"apiRule"}"#
        )
        .await,
        json!({"error":"Cannot delete apiRule"})
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"delete","what":"destination","which":"00"}"#
        )
        .await,
        json!({"deleted":"00"})
    );
    command(&mut api, rule).await;
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"delete","what":"destination","which":"all"}"#
        )
        .await,
        json!({"deleted":"deleteAll"})
    );
    // Delete-all restores the VW_API rule.
    let list = command(
        &mut api,
        r#"{"verb":"list","what":"destination","which":"all"}"#,
    )
    .await;
    assert_eq!(
        list.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["apiRule"]
    );

    let stream =
        r#"{"verb":"add","what":"stream","rule":{"stream":"/stream/s","feeds":["a","b"]}}"#;
    assert_eq!(
        command(&mut api, stream).await,
        json!({"stream":"stream/s","feeds":["a","b"]})
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"list","what":"stream","which":"stream/s"}"#
        )
        .await,
        json!({"feeds":["a","b"]})
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"list","what":"stream","which":"stream/x"}"#
        )
        .await,
        json!({"feeds":null})
    );
    assert_eq!(
        command(&mut api, r#"{"verb":"list","what":"stream","which":"all"}"#).await,
        json!({"stream/s":["a","b"]})
    );
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"delete","what":"stream","which":"stream/s"}"#
        )
        .await,
        json!({"deleted":"stream/s"})
    );
    command(&mut api, stream).await;
    assert_eq!(
        command(
            &mut api,
            r#"{"verb":"delete","what":"stream","which":"all"}"#
        )
        .await,
        json!({"deleted":"deleteAll"})
    );
    assert_eq!(
        command(&mut api, r#"{"verb":"list","what":"stream","which":"all"}"#).await,
        json!({})
    );
    assert!(
        command(&mut api, r#"{"verb":"list","what":"stream","which":""}"#).await["error"]
            .is_string()
    );
    host.shutdown().await;
}

#[tokio::test]
async fn b6_bad_commands_get_json_errors_and_the_host_keeps_running() {
    let host = start_idle_host().await;
    let mut api = ws_client(&host, "api").await;
    for bad in [
        r#"{"verb":"add","what":"destination"}"#,
        r#"{"verb":"add","what":"stream"}"#,
        r#"{"verb":"add","what":"destination","rule":"not an object"}"#,
        r#"{"verb":"add","what":"destination","rule":{"id":"x\"y","stream":"s","destination":"no \"scheme\""}}"#,
        r#"{"verb":"delete","what":"destination"}"#,
        r#"{"verb":"dance"}"#,
        r#"[1,2,3]"#,
        "not json at all",
    ] {
        let reply = command(&mut api, bad).await;
        assert!(reply["error"].is_string(), "{bad} → {reply}");
    }
    assert_eq!(
        command(&mut api, "nonsense").await,
        json!({"error":"Unrecognised Command"})
    );
    assert_eq!(
        command(&mut api, r#"{"verb":"healthcheck"}"#).await,
        json!({"healthcheck":"ok"})
    );
    // One reply per command and nothing more: a marker command's reply comes next.
    assert_eq!(
        command(&mut api, r#"{"verb":"healthcheck"}"#).await,
        json!({"healthcheck":"ok"})
    );
    host.shutdown().await;
}
