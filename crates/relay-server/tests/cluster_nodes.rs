//! Two relay nodes in one process joined through a real `nats-server -js` (issue 18):
//! topics cross nodes in order without echo, special-character topics stay apart, a code
//! is redeemed exactly once across nodes, a deny on one node closes sockets on the other
//! and survives a restart of every node, a shell pair spans two nodes, and with NATS
//! stopped local topics keep working while codes are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use futures_util::SinkExt;
use relay_auth::Claims;
use relay_common::action::ConnectionAction;
use relay_server::{ClusterConfig, RunningServer};
use relay_testkit::{wait_until, wait_until_async};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
/// The relay URL both nodes advertise (a load balancer's, in a deployment); tests dial the
/// node they mean by rewriting it.
const SHARED_RELAY_URL: &str = "ws://relay.cluster.test";

/// A `nats-server -js` on a free port with its own store directory; killed on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _keep: tempfile::TempDir,
}

fn nats_binary() -> String {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    relay_testkit::require("nats-server", "run scripts/test.sh, which installs it");
    "nats-server".into()
}

impl Nats {
    async fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let keep = tempfile::tempdir().unwrap();
        let mut nats = Nats {
            child: None,
            port,
            dir: keep.path().to_owned(),
            _keep: keep,
        };
        nats.run().await;
        nats
    }

    /// Start (again) on the same port and store.
    async fn run(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let port = self.port;
        wait_until("nats-server accepts connections", WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn node(nats: &Nats, name: &str) -> RunningServer {
    let url = nats.url();
    let name = name.to_owned();
    start(move |c| {
        c.relay_url = Some(SHARED_RELAY_URL.into());
        let mut cluster = ClusterConfig::new(url);
        cluster.node_name = name;
        c.cluster = Some(cluster);
    })
    .await
}

/// `uri` (issued by any node) pointed at `node`'s relay port, with the characters a URI
/// may not hold percent-encoded (the relay decodes the path).
fn on(node: &RunningServer, uri: &str) -> String {
    uri.replace(SHARED_RELAY_URL, &format!("ws://{}", node.relay_addr()))
        .replace(' ', "%20")
        .replace('>', "%3E")
}

fn booking(server: &RunningServer, topic: &str, scopes: &[&str], bid: &str) -> Claims {
    Claims {
        booking_id: bid.into(),
        ..claims(server, topic, scopes)
    }
}

/// Join `topic` on `node` (access request and websocket on that node).
async fn join_on(node: &RunningServer, topic: &str, scopes: &[&str]) -> Ws {
    let uri = access_uri(node, &claims(node, topic, scopes)).await;
    dial(&on(node, &uri)).await
}

/// Wait until `node` listens for other nodes' messages on `topic`.
async fn listening(node: &RunningServer, topic: &str) {
    let cluster = node.cluster().expect("clustered").clone();
    let topic = topic.to_owned();
    wait_until("the node listens on the topic's subject", WAIT, || {
        cluster.is_listening(&topic)
    })
    .await;
}

async fn next_data(ws: &mut Ws) -> Message {
    let m = next_frame(ws, WAIT).await.expect("a message arrives");
    assert!(
        matches!(m, Message::Text(_) | Message::Binary(_)),
        "expected data, got {m:?}"
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_on_one_node_reaches_readers_on_both_in_order_and_never_hears_itself() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    let mut reader_b = join_on(&b, "video", &["read"]).await;
    let mut reader_a = join_on(&a, "video", &["read"]).await;
    let mut writer = join_on(&a, "video", &["read", "write"]).await;
    listening(&b, "video").await;

    const N: usize = 400;
    for i in 0..N {
        let m = if i % 2 == 0 {
            Message::text(format!("t{i}"))
        } else {
            Message::binary(format!("b{i}").into_bytes())
        };
        writer.send(m).await.unwrap();
    }
    for reader in [&mut reader_b, &mut reader_a] {
        for i in 0..N {
            let expected = if i % 2 == 0 {
                Message::text(format!("t{i}"))
            } else {
                Message::binary(format!("b{i}").into_bytes())
            };
            assert_eq!(next_data(reader).await, expected, "message {i}");
        }
    }
    // Nothing came back to the writer: the pong arrives before any data frame.
    round_trip(&mut writer).await;
    let cluster_b = b.cluster().unwrap();
    assert!(cluster_b.metrics().messages_in.get() >= N as u64);
    assert_eq!(a.cluster().unwrap().metrics().dropped("outbound_full"), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_with_special_characters_stay_apart_across_nodes() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    // Percent-encoded in the path; the relay decodes them into these topic names.
    let topics = ["a.b", "a.*", "a.>", "a b", "a", "a_b"];
    let mut readers = Vec::new();
    for t in topics {
        readers.push(join_on(&b, t, &["read"]).await);
    }
    for t in topics {
        listening(&b, t).await;
    }
    for t in topics {
        let mut writer = join_on(&a, t, &["write"]).await;
        send_text(&mut writer, &format!("for {t}")).await;
        round_trip(&mut writer).await;
    }
    for (t, reader) in topics.iter().zip(readers.iter_mut()) {
        assert_eq!(next_data(reader).await, Message::text(format!("for {t}")));
        // Nothing else: a pong comes back before any further data.
        round_trip(reader).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_redeemed_at_once_on_two_nodes_is_accepted_exactly_once() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    for round in 0..20 {
        let uri = access_uri(&a, &claims(&a, "race", &["read", "write"])).await;
        let (on_a, on_b) = (on(&a, &uri), on(&b, &uri));
        let (x, y) = tokio::join!(
            tokio_tungstenite::connect_async(on_a),
            tokio_tungstenite::connect_async(on_b)
        );
        let opened = [x.is_ok(), y.is_ok()];
        assert_eq!(
            opened.iter().filter(|o| **o).count(),
            1,
            "round {round}: exactly one node accepts the code ({opened:?})"
        );
    }
    // A code issued on B works on A.
    let uri = access_uri(&b, &claims(&b, "race", &["read"])).await;
    let _ws = dial(&on(&a, &uri)).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deny_on_one_node_closes_sockets_on_the_other_and_survives_restarting_every_node() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    let doomed = booking(&b, "t", &["read", "write"], "doomed");
    let uri = access_uri(&b, &doomed).await;
    let mut ws = dial(&on(&b, &uri)).await;
    round_trip(&mut ws).await;

    let url = format!(
        "{}/bids/deny?bid=doomed&exp={}",
        a.access_url(),
        now() + 600
    );
    let asked = Instant::now();
    let (status, body) = post(&url, Some(&admin_token(&a))).await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(close_code(&mut ws, WAIT).await, Some(4003));
    eprintln!(
        "deny on node a closed the socket on node b {:?} after the request",
        asked.elapsed()
    );
    let session = format!("{}/session/t", b.access_url());
    let (status, _) = post(
        &session,
        Some(&token(&booking(&b, "t", &["read"], "doomed"))),
    )
    .await;
    assert_eq!(status, 400, "node b refuses the denied booking");

    a.shutdown().await;
    b.shutdown().await;
    let c = node(&nats, "c").await;
    let url = format!("{}/bids/deny", c.access_url());
    wait_until_async_deny(&c, &url).await;
    let session = format!("{}/session/t", c.access_url());
    let (status, _) = post(
        &session,
        Some(&token(&booking(&c, "t", &["read"], "doomed"))),
    )
    .await;
    assert_eq!(status, 400, "a node started later refuses it too");
    c.shutdown().await;
}

async fn wait_until_async_deny(node: &RunningServer, url: &str) {
    let admin = admin_token(node);
    wait_until_async("the new node loads the deny list", WAIT, || async {
        let (status, body) = get(url, Some(&admin)).await;
        status == 200 && body.contains("doomed")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_nats_local_topics_keep_working_and_codes_are_refused_until_it_returns() {
    let mut nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let mut reader = join_on(&a, "local", &["read"]).await;
    let mut writer = join_on(&a, "local", &["write"]).await;
    let cluster = a.cluster().unwrap().clone();

    nats.stop();
    wait_until("node a notices NATS is gone", WAIT, || {
        !cluster.is_connected()
    })
    .await;
    for i in 0..20 {
        send_text(&mut writer, &format!("m{i}")).await;
    }
    for i in 0..20 {
        assert_eq!(next_data(&mut reader).await, Message::text(format!("m{i}")));
    }
    let session = format!("{}/session/local", a.access_url());
    let (status, body) = post(&session, Some(&token(&claims(&a, "local", &["read"])))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("code store"), "{body}");
    let (_, metrics) = get(&format!("{}/metrics", a.access_url()), None).await;
    assert!(metrics.contains("relay_cluster_connected 0"), "{metrics}");

    nats.run().await;
    wait_until("node a reconnects", Duration::from_secs(30), || {
        cluster.is_connected()
    })
    .await;
    let _again = join_on(&a, "local", &["read"]).await;
    a.shutdown().await;
}

/// The websocket uri `server`'s access route `path` answers `claims` with.
async fn shell_uri(server: &RunningServer, path: &str, claims: &Claims) -> String {
    let (status, body) = post(
        &format!("{}{path}", server.access_url()),
        Some(&token(claims)),
    )
    .await;
    assert_eq!(status, 200, "access refused: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["uri"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shell_pair_spans_two_nodes_with_its_gate_and_actions() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    // The shell host's management connection is on node a.
    let host_uri = shell_uri(&a, "/shell/lab", &shell_claims(&a, "lab", "host")).await;
    let mut host = dial(&on(&a, &host_uri)).await;
    listening(&a, "shell:lab").await;

    // The admin's connection is on node b, which finds the host on node a.
    let admin_uri = shell_uri(&b, "/shell/lab", &shell_claims(&b, "lab", "client")).await;
    let mut admin = dial(&on(&b, &admin_uri)).await;
    // Sent before the host's end exists: held back until it has joined, then delivered.
    send_text(&mut admin, "early").await;
    let (uri, uuid) = match next_action(&mut host).await {
        ConnectionAction::Connect { uri, uuid } => (uri, uuid),
        other => panic!("expected connect, got {other:?}"),
    };
    // The host dials its end of the pair; through a load balancer it may land on any node.
    let mut host_end = dial(&on(&a, &uri)).await;
    assert_eq!(next_data(&mut host_end).await, Message::text("early"));
    send_text(&mut host_end, "SSH-2.0-banner").await;
    assert_eq!(next_data(&mut admin).await, Message::text("SSH-2.0-banner"));
    send_text(&mut admin, "client hello").await;
    assert_eq!(
        next_data(&mut host_end).await,
        Message::text("client hello")
    );

    // The admin leaves: the host's end is closed on node a, and the host told.
    admin.close(None).await.unwrap();
    assert_eq!(close_code(&mut host_end, WAIT).await, Some(1000));
    match next_action(&mut host).await {
        ConnectionAction::Disconnect { uuid: gone } => assert_eq!(gone, uuid),
        other => panic!("expected disconnect, got {other:?}"),
    }

    // With the host gone from every node, a new admin is refused on node b.
    host.close(None).await.unwrap();
    let cluster_a = a.cluster().unwrap().clone();
    wait_until("node a stops listening for the host", WAIT, || {
        !cluster_a.is_listening("shell:lab")
    })
    .await;
    let admin_uri = shell_uri(&b, "/shell/lab", &shell_claims(&b, "lab", "client")).await;
    let refused = tokio_tungstenite::connect_async(on(&b, &admin_uri)).await;
    assert!(
        refused.is_err(),
        "a shell client without its host is refused"
    );
    a.shutdown().await;
    b.shutdown().await;
}

fn stats_token(node: &RunningServer) -> String {
    token(&Claims {
        topic: String::new(),
        ..claims(node, "", &["relay:stats"])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_on_one_node_lists_every_nodes_connections_with_their_node() {
    let nats = Nats::start().await;
    let a = node(&nats, "a").await;
    let b = node(&nats, "b").await;
    let _reader = join_on(&b, "seen-from-a", &["read"]).await;
    let url = format!("{}/status", a.access_url());
    let auth = stats_token(&a);
    wait_until_async(
        "node a's /status lists node b's connection",
        WAIT,
        || async {
            let (status, body) = get(&url, Some(&auth)).await;
            let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
            status == 200
                && list
                    .iter()
                    .any(|c| c["topic"] == "seen-from-a" && c["node"] == "b")
                && list
                    .iter()
                    .any(|c| c["topic"] == "stats" && c["node"] == "a")
        },
    )
    .await;
    let (status, body) = get(&format!("{}/status/cluster", a.access_url()), Some(&auth)).await;
    assert_eq!(status, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes["node"], "a");
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{body}");
    assert_eq!(nodes["nodes"][0]["nats_connected"], true);
    assert_eq!(nodes["nodes"][1]["dropped"]["outbound_full"], 0);
    a.shutdown().await;
    b.shutdown().await;
}
