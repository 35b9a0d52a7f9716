//! Issue 13 items 2 and 3: commands that arrive from the relay over an `api` destination
//! cannot name files, see tokens or (without the opt-in) change rules; recordings stay in
//! the operator's record directory; and the local API refuses foreign `Host` names (DNS
//! rebinding).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use relay_host::hub::Message;
use relay_host::link::{ChannelConnector, FarEnd};
use relay_host::{HostConfig, RunningHost};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-host-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A host whose `VW_API` rule is carried by an in-memory link; returns the relay's end of
/// that link (the remote side of the command API).
async fn host_with_remote_api(config: HostConfig) -> (RunningHost, Arc<ChannelConnector>, FarEnd) {
    let connector = Arc::new(ChannelConnector::new(true));
    let config = HostConfig {
        api_destination: Some("ws://127.0.0.1:9/api".into()),
        ..config
    };
    let host = start_host(config, connector.clone()).await;
    let mut ends = connector.take_ends();
    assert_eq!(ends.len(), 1, "only the apiRule link is open");
    (host, connector, ends.remove(0))
}

/// Sends `command` as a relay user would and returns the host's reply.
async fn remote_command(end: &mut FarEnd, command: Value) -> Value {
    end.reply
        .send(Message::text(command.to_string()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(WAIT, end.sent.recv())
        .await
        .expect("no reply within the wait")
        .expect("link closed");
    serde_json::from_slice(&reply.data).unwrap()
}

fn add_rule(rule: Value) -> Value {
    json!({"verb":"add","what":"destination","rule": rule})
}

#[tokio::test]
async fn remote_add_with_a_file_is_refused_and_creates_no_file() {
    let dir = temp_dir("remote-file");
    let target = dir.join("overwritten");
    // Even with remote changes allowed and a record directory set.
    let config = HostConfig {
        api_remote_changes: true,
        record_dir: Some(dir.clone()),
        ..local_config()
    };
    let (host, _connector, mut end) = host_with_remote_api(config).await;
    let reply = remote_command(
        &mut end,
        add_rule(
            json!({"id":"x","stream":"data","destination":"ws://127.0.0.1:9/x","file": target}),
        ),
    )
    .await;
    assert!(
        reply["error"].as_str().is_some_and(|e| e.contains("file")),
        "{reply}"
    );
    assert!(host.state().destinations.get("x").is_none());
    // Give a (wrongly) started recorder every chance to create its file: a round trip
    // through the command API runs after any task the add spawned had its turn.
    remote_command(&mut end, json!({"verb":"healthcheck"})).await;
    assert!(!target.exists(), "a remote command created {target:?}");
    host.shutdown().await;
}

#[tokio::test]
async fn remote_list_never_shows_tokens() {
    let (host, _connector, mut end) = host_with_remote_api(local_config()).await;
    add_secret_destination(&host);
    let all = remote_command(
        &mut end,
        json!({"verb":"list","what":"destination","which":"all","tokens":true}),
    )
    .await;
    assert_eq!(all["secret"]["token"], "<redacted>", "{all}");
    let one = remote_command(
        &mut end,
        json!({"verb":"list","what":"destination","which":"secret","tokens":true}),
    )
    .await;
    assert_eq!(one["token"], "<redacted>", "{one}");
    assert_eq!(one["stream"], "data");
    host.shutdown().await;
}

#[tokio::test]
async fn local_list_with_tokens_is_not_sent_to_the_relay() {
    let (host, _connector, mut end) = host_with_remote_api(local_config()).await;
    add_secret_destination(&host);
    let mut api = ws_client(&host, "api").await;
    send_text(
        &mut api,
        r#"{"verb":"list","what":"destination","which":"all","tokens":true}"#,
    )
    .await;
    let reply = next_data(&mut api).await;
    assert!(reply.to_text().unwrap().contains("secret.jwt"));
    // The relay hears the command (as in the reference) and then a healthcheck reply, but
    // never the reply with the token.
    send_text(&mut api, r#"{"verb":"healthcheck"}"#).await;
    next_data(&mut api).await;
    loop {
        let heard = tokio::time::timeout(WAIT, end.sent.recv())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&heard.data).to_string();
        assert!(!text.contains("secret.jwt"), "the relay heard {text}");
        if text.contains(r#""healthcheck":"ok""#) {
            break;
        }
    }
    host.shutdown().await;
}

#[tokio::test]
async fn remote_add_and_delete_are_refused_by_default() {
    let (host, _connector, mut end) = host_with_remote_api(local_config()).await;
    host.state()
        .destinations
        .add(relay_host::DestinationRule {
            id: "keep".into(),
            stream: "data".into(),
            destination: "ws://127.0.0.1:9/keep".into(),
            ..Default::default()
        })
        .unwrap();
    let added = remote_command(
        &mut end,
        add_rule(json!({"id":"new","stream":"data","destination":"ws://127.0.0.1:9/x"})),
    )
    .await;
    assert!(
        added["error"]
            .as_str()
            .is_some_and(|e| e.contains("VW_API_REMOTE_CHANGES")),
        "{added}"
    );
    assert!(host.state().destinations.get("new").is_none());
    for which in ["keep", "all"] {
        let deleted = remote_command(
            &mut end,
            json!({"verb":"delete","what":"destination","which":which}),
        )
        .await;
        assert!(deleted["error"].is_string(), "{deleted}");
    }
    assert!(host.state().destinations.get("keep").is_some());
    let stream = remote_command(
        &mut end,
        json!({"verb":"add","what":"stream","rule":{"stream":"stream/s","feeds":["a"]}}),
    )
    .await;
    assert!(stream["error"].is_string(), "{stream}");
    // Listing still works.
    let list = remote_command(
        &mut end,
        json!({"verb":"list","what":"destination","which":"all"}),
    )
    .await;
    assert_eq!(list["keep"]["stream"], "data");
    host.shutdown().await;
}

#[tokio::test]
async fn local_rule_recording_outside_the_record_dir_is_refused() {
    let outside = temp_dir("outside").join("recording.ts");
    let host = start_idle_host().await;
    let rule = json!({"id":"r","stream":"data","destination":"ws://127.0.0.1:9/x","file": outside});
    let response = http_client()
        .post(format!("{}/api/destinations", host.url()))
        .body(rule.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let body = response.text().await.unwrap();
    assert!(body.contains("VW_RECORD_DIR"), "{body}");
    assert!(host.state().destinations.get("r").is_none());
    assert!(!outside.exists());
    host.shutdown().await;
}

/// A raw HTTP/1.1 GET with the given `Host` header; returns the status code.
async fn get_with_host(host: &RunningHost, path: &str, host_header: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, response)
}

#[tokio::test]
async fn dns_rebinding_foreign_host_names_are_refused() {
    let host = start_idle_host().await;
    let port = host.local_addr().port();
    let (status, body) =
        get_with_host(&host, "/api/destinations/all?tokens=true", "evil.example").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (status, _) = get_with_host(
        &host,
        "/api/destinations/all",
        &format!("evil.example:{port}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get_with_host(&host, "/api/status", "localhost.evil.example").await;
    assert_eq!(status, 403);
    for good in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        "127.1.2.3".to_string(),
        "localhost".to_string(),
        format!("LOCALHOST:{port}"),
        format!("[::1]:{port}"),
        "[::1]".to_string(),
    ] {
        let (status, body) = get_with_host(&host, "/api/destinations/all", &good).await;
        assert_eq!(status, 200, "Host: {good}: {body}");
    }
    host.shutdown().await;
}

#[tokio::test]
async fn remote_add_and_delete_work_with_the_opt_in() {
    let config = HostConfig {
        api_remote_changes: true,
        ..local_config()
    };
    let (host, _connector, mut end) = host_with_remote_api(config).await;
    let added = remote_command(
        &mut end,
        add_rule(json!({"id":"new","stream":"data","destination":"https://relay.example.io/session/x","token":"remote.jwt"})),
    )
    .await;
    assert_eq!(added["id"], "new", "{added}");
    // Not even the echo of a rule the relay user just sent shows its token.
    assert_eq!(added["token"], "<redacted>");
    assert!(host.state().destinations.get("new").is_some());
    let deleted = remote_command(
        &mut end,
        json!({"verb":"delete","what":"destination","which":"new"}),
    )
    .await;
    assert_eq!(deleted, json!({"deleted":"new"}));
    assert!(host.state().destinations.get("new").is_none());
    let stream = remote_command(
        &mut end,
        json!({"verb":"add","what":"stream","rule":{"stream":"stream/s","feeds":["a"]}}),
    )
    .await;
    assert_eq!(stream["stream"], "stream/s", "{stream}");
    host.shutdown().await;
}

async fn post_rule(host: &RunningHost, id: &str, file: &str) -> (reqwest::StatusCode, String) {
    let rule = json!({"id":id,"stream":"data","destination":"ws://127.0.0.1:9/x","file": file});
    let response = http_client()
        .post(format!("{}/api/destinations", host.url()))
        .body(rule.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn local_rule_recording_inside_the_record_dir_works_and_escapes_are_refused() {
    let dir = temp_dir("record");
    let outside = temp_dir("outside");
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("target"), dir.join("link.ts")).unwrap();
    let connector = Arc::new(ChannelConnector::new(true));
    let config = HostConfig {
        record_dir: Some(dir.clone()),
        ..local_config()
    };
    let host = start_host(config, connector.clone()).await;

    for (id, file) in [
        (
            "abs-out",
            outside.join("x.ts").to_string_lossy().to_string(),
        ),
        ("dotdot", "../x.ts".to_string()),
        ("dotdot-abs", format!("{}/sub/../../x.ts", dir.display())),
        ("symlink-dir", "escape/x.ts".to_string()),
        ("symlink-file", "link.ts".to_string()),
        ("no-dir", "missing/x.ts".to_string()),
        ("dir-itself", "sub".to_string()),
    ] {
        let (status, body) = post_rule(&host, id, &file).await;
        assert_eq!(
            status,
            reqwest::StatusCode::BAD_REQUEST,
            "{id} {file}: {body}"
        );
        assert!(host.state().destinations.get(id).is_none(), "{id}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was created outside"
    );

    let (status, body) = post_rule(&host, "rel", "sub/rel.ts").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let absolute = dir.join("abs.ts");
    let (status, body) = post_rule(&host, "abs", &absolute.to_string_lossy()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    // What is published on `data` is recorded in both files.
    let mut feed = ws_client(&host, "data").await;
    send_text(&mut feed, "recorded").await;
    for path in [dir.join("sub/rel.ts"), absolute] {
        relay_testkit::wait_until("the recording to be written", WAIT, || {
            std::fs::read(&path).is_ok_and(|b| b == b"recorded")
        })
        .await;
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_record_dir_that_is_not_a_directory_stops_start_up() {
    let config = HostConfig {
        record_dir: Some(temp_dir("bad-record").join("missing")),
        ..local_config()
    };
    let Err(e) = RunningHost::start(config, Arc::new(ChannelConnector::default())).await else {
        panic!("the host started");
    };
    assert!(e.to_string().contains("VW_RECORD_DIR"), "{e}");
}

#[tokio::test]
async fn configured_host_names_are_allowed() {
    let config = HostConfig {
        allowed_hosts: vec!["lab-pc.example".into()],
        ..local_config()
    };
    let host = start_host(config, Arc::new(ChannelConnector::default())).await;
    let port = host.local_addr().port();
    let (status, body) = get_with_host(
        &host,
        "/api/destinations/all",
        &format!("lab-pc.example:{port}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get_with_host(&host, "/api/destinations/all", "other.example").await;
    assert_eq!(status, 403);
    host.shutdown().await;
}

/// A destination `secret` whose token (`secret.jwt`) no relay user may ever see.
fn add_secret_destination(host: &relay_host::RunningHost) {
    host.state()
        .destinations
        .add(relay_host::DestinationRule {
            id: "secret".into(),
            stream: "data".into(),
            destination: "https://relay.example.io/session/x".into(),
            token: "secret.jwt".into(),
            file: String::new(),
        })
        .unwrap();
}
