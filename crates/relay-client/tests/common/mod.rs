//! Shared helpers for the integration tests: a real relay server on 127.0.0.1, tokens, and
//! waiting for conditions with a deadline (`relay_testkit`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use relay_auth::Claims;
use relay_client::session::{Message, Session, SessionConfig};
use relay_client::status::{fetch_status, Report};
use relay_server::{RunningServer, ServerConfig};
use relay_testkit::{wait_until, wait_until_async};

pub const SECRET: &[u8] = b"testsecret";

pub async fn start_relay() -> RunningServer {
    RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap()
}

pub fn token(server: &RunningServer, topic: &str, scopes: &[&str]) -> String {
    let grant = Claims::grant(
        "session",
        topic,
        scopes,
        server.access_url(),
        relay_auth::unix_now(),
        600,
    );
    relay_auth::mint(
        &Claims {
            booking_id: "relay-client-test".into(),
            ..grant
        },
        SECRET,
    )
}

pub fn session_config(server: &RunningServer, topic: &str) -> SessionConfig {
    SessionConfig::new(format!("{}/session/{topic}", server.access_url())).with_token(token(
        server,
        topic,
        &["read", "write"],
    ))
}

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

/// The relay's `GET /status`, through the status client.
pub async fn status(server: &RunningServer) -> Vec<Report> {
    let token = token(server, "", &["relay:stats"]);
    fetch_status(&reqwest::Client::new(), server.access_url(), &token)
        .await
        .unwrap()
}

/// Wait until `count` connections are on `topic`.
pub async fn wait_for_connections(server: &RunningServer, topic: &str, count: usize) {
    wait_until_async(&format!("{count} connections on {topic}"), WAIT, || async {
        status(server)
            .await
            .iter()
            .filter(|e| e.topic == topic)
            .count()
            >= count
    })
    .await;
}

/// A peer that sends back every message it receives, except those starting with `quiet:`
/// (so a playfile can wait for an echo without causing a new one).
pub async fn spawn_echo_peer(server: &RunningServer, topic: &str) -> tokio::task::JoinHandle<()> {
    let mut peer = Session::spawn(session_config(server, topic));
    peer.wait_connected().await.unwrap();
    tokio::spawn(async move {
        while let Some(message) = peer.recv().await {
            if message.as_bytes().starts_with(b"quiet:") {
                continue;
            }
            if peer.send(message).await.is_err() {
                break;
            }
        }
    })
}

pub fn text(s: &str) -> Message {
    Message::Text(s.into())
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running file client, with its controls.
pub struct RunningClient {
    pub task: tokio::task::JoinHandle<Result<(), relay_client::file::FileClientError>>,
    pub reopen: tokio::sync::mpsc::Sender<()>,
    pub stop: relay_common::shutdown::CancellationToken,
}

pub fn start_client(config: relay_client::file::FileClientConfig) -> RunningClient {
    let (reopen, reopen_rx) = tokio::sync::mpsc::channel(4);
    let stop = relay_common::shutdown::CancellationToken::new();
    let controls = relay_client::file::Controls {
        reopen: reopen_rx,
        stop: stop.clone(),
    };
    RunningClient {
        task: tokio::spawn(relay_client::file::run(config, controls)),
        reopen,
        stop,
    }
}

/// A relay, a file client logging topic `name` to `path`, and a sender on the same topic,
/// all connected.
pub struct Recording {
    pub server: RunningServer,
    pub path: std::path::PathBuf,
    pub client: RunningClient,
    pub sender: Session,
}

impl Recording {
    pub async fn start(name: &str, mode: relay_client::file::OutputMode) -> Recording {
        let server = start_relay().await;
        let path = temp_dir(name).join(format!("{name}.log"));
        let client = start_client(relay_client::file::FileClientConfig {
            session: session_config(&server, name),
            log: Some(relay_client::file::LogTarget::File(path.clone())),
            mode,
            playfile: None,
        });
        let sender = Session::spawn(session_config(&server, name));
        wait_for_connections(&server, name, 2).await;
        Recording {
            server,
            path,
            client,
            sender,
        }
    }

    pub async fn send(&self, message: Message) {
        self.sender.send(message).await.unwrap();
    }

    /// Wait until the file holds at least `bytes` bytes.
    pub async fn wait_for_bytes(&self, bytes: u64) {
        wait_until(
            &format!("{bytes} bytes in {}", self.path.display()),
            WAIT,
            || std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) >= bytes,
        )
        .await;
    }

    /// Stop the client (drain, flush), close everything, and return the file's bytes.
    pub async fn finish(self) -> Vec<u8> {
        self.client.stop.cancel();
        self.client.task.await.unwrap().unwrap();
        self.sender.close().await;
        self.server.shutdown().await;
        std::fs::read(&self.path).unwrap()
    }
}

/// Wait until the session reports an error, and return its state.
pub async fn first_error(session: &Session) -> relay_client::session::SessionState {
    let mut state = session.state();
    let found = tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| s.last_error.is_some()),
    )
    .await
    .expect("an error within 10 s")
    .expect("session state");
    found.clone()
}
