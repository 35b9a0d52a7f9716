//! Start-up rules from a TOML file, and reloading it (token rotation) without disturbing
//! the rules that did not change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use relay_host::{HostConfig, RunningHost, SessionConnector};
use relay_testkit::wait_until;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn rules_file_starts_rules_and_reload_restarts_only_changed_ones() {
    let dir = std::env::temp_dir().join(format!("relay-host-rules-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (url_a, mut a) = start_ws_server().await;
    let (url_b, mut b) = start_ws_server().await;
    let (url_c, mut c) = start_ws_server().await;
    let rules = dir.join("rules.toml");
    let file = |b_destination: &str, with_c: bool| {
        let mut text = format!(
            r#"
[[streams]]
stream = "/stream/front"
feeds = ["video0", "audio0"]

[[destinations]]
id = "a"
stream = "stream/front"
destination = "{url_a}"

[[destinations]]
id = "b"
stream = "data"
destination = "{b_destination}"
"#
        );
        if with_c {
            text.push_str(&format!(
                "\n[[destinations]]\nid = \"c\"\nstream = \"data\"\ndestination = \"{url_c}\"\n"
            ));
        }
        text
    };
    write(&rules, &file(&url_b, true));
    let config = HostConfig {
        rules_file: Some(rules.clone()),
        ..local_config()
    };
    let host = start_host(config, Arc::new(SessionConnector::default())).await;
    assert_eq!(next_seen(&mut a).await, Seen::Opened);
    assert_eq!(next_seen(&mut b).await, Seen::Opened);
    assert_eq!(next_seen(&mut c).await, Seen::Opened);
    assert_eq!(
        host.state().hub.stream_rule("stream/front"),
        Some(vec!["video0".into(), "audio0".into()])
    );

    // Change b's destination and drop c: b restarts, c stops, a is untouched.
    let (url_b2, mut b2) = start_ws_server().await;
    write(&rules, &file(&url_b2, false));
    let summary = host.reload_rules().unwrap().unwrap();
    assert_eq!(summary.started, vec!["b".to_string()]);
    assert_eq!(summary.unchanged, vec!["a".to_string()]);
    assert_eq!(summary.removed, vec!["c".to_string()]);
    assert_eq!(next_seen(&mut b).await, Seen::Closed);
    assert_eq!(next_seen(&mut c).await, Seen::Closed);
    assert_eq!(next_seen(&mut b2).await, Seen::Opened);
    // A marker through rule a proves it was not disturbed: a restart would show its
    // close (or a new open) first.
    let mut camera = ws_client(&host, "video0").await;
    send_text(&mut camera, "a marker").await;
    assert_eq!(
        next_seen(&mut a).await,
        Seen::Message(WsMessage::Text("a marker".into())),
        "rule a was disturbed by the reload"
    );

    // A broken file is refused and the running rules stay.
    write(
        &rules,
        "[[destinations]]\nid = \"x\"\nstream = \"data\"\ndestination = \"ftp://nope\"\n",
    );
    let error = host.reload_rules().unwrap_err().to_string();
    assert!(error.contains("ftp://nope"), "{error}");
    write(&rules, "this is not toml =");
    assert!(host.reload_rules().is_err());
    assert_eq!(host.state().destinations.list(false).len(), 2);
    host.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn token_rotation_from_a_token_file_through_a_real_relay() {
    let relay =
        relay_server::RunningServer::start(relay_server::ServerConfig::local(SECRET.to_vec()))
            .await
            .unwrap();
    let dir = std::env::temp_dir().join(format!("relay-host-rotate-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let topic = "expt00-data";
    std::fs::write(
        dir.join("data.jwt"),
        format!("{}\n", token(relay.access_url(), topic, &["read", "write"])),
    )
    .unwrap();
    let rules = dir.join("rules.toml");
    write(
        &rules,
        &format!(
            "[[destinations]]\nid = \"data\"\nstream = \"data\"\ndestination = \"{}/session/{topic}\"\ntoken_file = \"data.jwt\"\n",
            relay.access_url()
        ),
    );
    let config = HostConfig {
        rules_file: Some(rules),
        ..local_config()
    };
    let host: RunningHost = start_host(config, Arc::new(SessionConnector::default())).await;
    let destinations = &host.state().destinations;
    wait_until("the destination to connect", WAIT, || {
        destinations.is_connected("data") == Some(true)
    })
    .await;
    let first = destinations.get("data").unwrap().token;
    assert!(
        !first.ends_with('\n'),
        "the token file's newline is trimmed"
    );

    // Unchanged file: nothing restarts.
    assert_eq!(
        host.reload_rules().unwrap().unwrap().unchanged,
        vec!["data".to_string()]
    );
    // The rotated token differs (scope order) but grants the same.
    std::fs::write(
        dir.join("data.jwt"),
        token(relay.access_url(), topic, &["write", "read"]),
    )
    .unwrap();
    assert_eq!(
        host.reload_rules().unwrap().unwrap().started,
        vec!["data".to_string()]
    );
    let second = destinations.get("data").unwrap().token;
    assert_ne!(first, second);
    wait_until("the rotated destination to connect", WAIT, || {
        destinations.is_connected("data") == Some(true)
    })
    .await;
    host.shutdown().await;
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
