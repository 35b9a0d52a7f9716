//! End to end for the relay cluster (issue 18), with the real parts: `nats-server -js`,
//! three `relay serve --nats … --node-name n1..n3` and haproxy in front of both relay
//! ports (relay_testkit::cluster). Topics cross nodes in order and stay isolated whatever
//! their characters; a one-time code is redeemed once across nodes; a deny on one node
//! closes the booking's sockets on the others and survives a restart of every node;
//! OpenSSH works with the shell host on one node and the client on another. The fault
//! test kills the node carrying `relay host`'s video and checks every viewer gets video
//! again through the balancer, with no other node losing a socket. nats-server, haproxy,
//! OpenSSH and ffmpeg must be installed (`scripts/test.sh` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use support::sshd::Sshd;
use support::{relay_token, require, spawn_and_read, Killed, INSTALL_HINT, RELAY};

use futures_util::{SinkExt, StreamExt};
use relay_client::session::{Message as SessionMessage, Session, SessionConfig};
use relay_testkit::cluster::{Cluster, ClusterConfig, PublicRelay};
use relay_testkit::wait_until;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};

const SECRET: &str = "cluster-e2e-secret";

/// How long a test waits for anything (generous: several clusters start at once).
const WAIT: Duration = Duration::from_secs(20);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts NATS, three nodes and the balancer (blocking, so off the async workers).
fn start(public: PublicRelay) -> Cluster {
    tokio::task::block_in_place(|| {
        Cluster::start(
            ClusterConfig::new(RELAY, SECRET)
                .public_relay(public)
                .env("RELAY_LIMITS", "off"),
        )
    })
}

/// A token from the real `relay token`, for the cluster's audience.
fn mint(audience: &str, topic: &str, env: &[(&str, &str)]) -> String {
    relay_token(SECRET, audience, topic, &[], env)
}

/// A token of booking `booking`.
fn mint_booking(audience: &str, topic: &str, booking: &str) -> String {
    mint(audience, topic, &[("RELAY_TOKEN_BOOKING_ID", booking)])
}

/// A shell token (`relay token --role ROLE`) for the cluster's audience.
fn mint_shell(audience: &str, topic: &str, role: &str) -> String {
    relay_token(SECRET, audience, topic, &["--role", role], &[])
}

/// An admin token (`relay:admin`, for the deny API).
fn mint_admin(audience: &str) -> String {
    mint(audience, "admin", &[("RELAY_TOKEN_SCOPE_ADMIN", "true")])
}

/// A stats token (`relay:stats`, for `/status`).
fn mint_stats(audience: &str) -> String {
    mint(
        audience,
        "stats",
        &[("RELAY_TOKEN_SCOPE_OTHER", "relay:stats")],
    )
}

/// Percent-encodes everything in a URL path segment but unreserved characters.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST {access}/session/{topic}`: the websocket uri handed out, or the refusal's status
/// and body.
async fn request_uri(access: &str, topic: &str, token: &str) -> Result<String, (u16, String)> {
    let response = reqwest::Client::new()
        .post(format!("{access}/session/{}", encode(topic)))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    if status != 200 {
        return Err((status, body));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    Ok(v["uri"].as_str().unwrap().to_owned())
}

/// `uri` (as handed out, `ws://HOST/session/TOPIC?code=…`) pointed at the relay port
/// `relay` instead, with its topic percent-encoded.
fn dial_at(uri: &str, relay: &str, topic: &str) -> String {
    let (_, query) = uri.split_once('?').unwrap();
    let path = uri.split_once('?').unwrap().0;
    let kind = path.trim_end_matches(topic).trim_end_matches('/');
    let kind = kind.rsplit('/').next().unwrap();
    format!("{relay}/{kind}/{}?{query}", encode(topic))
}

/// A websocket on node `node` (access API and relay port of that node) for `topic`.
async fn open(cluster: &Cluster, node: usize, topic: &str, token: &str) -> Ws {
    let uri = request_uri(&cluster.access_url(node), topic, token)
        .await
        .unwrap_or_else(|e| panic!("session on {}: {e:?}", cluster.name(node)));
    let (ws, _) = tokio_tungstenite::connect_async(dial_at(&uri, &cluster.relay_url(node), topic))
        .await
        .unwrap_or_else(|e| panic!("dial {}: {e}", cluster.name(node)));
    ws
}

/// The next text message (pings and other frames skipped), `None` on close or after
/// `WAIT`.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Sends `probe` from `writer` until every reader has heard it (a node subscribes to a
/// topic's subject when it gets its first local reader, which takes a moment to reach
/// NATS). Each reader's messages are checked with `heard`, which also rejects strays.
async fn probe_until_heard(writer: &mut Ws, readers: &mut [&mut Ws], probe: &str) {
    let deadline = Instant::now() + WAIT;
    let mut heard = vec![false; readers.len()];
    while heard.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "{probe:?} did not reach every reader within {WAIT:?}: {heard:?}"
        );
        writer.send(Message::text(probe)).await.unwrap();
        for (reader, done) in readers.iter_mut().zip(heard.iter_mut()) {
            while !*done {
                match timeout(Duration::from_millis(100), reader.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        assert_eq!(text.as_str(), probe, "a reader got a stray message");
                        *done = true;
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(other) => panic!("a reader's socket ended while probing: {other:?}"),
                    Err(_) => break,
                }
            }
        }
    }
}

/// The JSON of `GET {access}{path}` with `token`.
async fn get_json(access: &str, path: &str, token: &str) -> serde_json::Value {
    let body = reqwest::Client::new()
        .get(format!("{access}{path}"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `POST {access}/bids/deny?bid=…&exp=…` (an hour from now); the status code.
async fn deny(access: &str, admin: &str, booking: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "{access}/bids/deny?bid={booking}&exp={}",
            unix_now() + 3600
        ))
        .header("Authorization", admin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_on_one_node_reaches_readers_on_the_others_in_order_and_never_itself() {
    let cluster = start(PublicRelay::EachNode);
    let topic = "expt-order";
    let token = mint(&cluster.audience(), topic, &[]);
    let mut writer = open(&cluster, 0, topic, &token).await;
    let mut local = open(&cluster, 0, topic, &token).await;
    let mut on_b = open(&cluster, 1, topic, &token).await;
    let mut on_c = open(&cluster, 2, topic, &token).await;
    probe_until_heard(
        &mut writer,
        &mut [&mut local, &mut on_b, &mut on_c],
        "probe",
    )
    .await;

    const COUNT: usize = 1000;
    for i in 0..COUNT {
        writer.send(Message::text(format!("m-{i}"))).await.unwrap();
    }
    for (name, reader) in [("n1", &mut local), ("n2", &mut on_b), ("n3", &mut on_c)] {
        let mut got = Vec::with_capacity(COUNT);
        while got.len() < COUNT {
            let text = next_text(reader)
                .await
                .unwrap_or_else(|| panic!("reader on {name} stopped after {} messages", got.len()));
            if text == "probe" {
                continue; // a late copy of a probe sent before every reader was ready
            }
            got.push(text);
        }
        let want: Vec<String> = (0..COUNT).map(|i| format!("m-{i}")).collect();
        assert!(
            got == want,
            "reader on {name}: messages out of order or duplicated"
        );
    }
    // The sender never hears itself, from its own node or back from NATS: a marker sent
    // afterwards by the local reader is the first thing it receives.
    local.send(Message::text("marker")).await.unwrap();
    on_b.send(Message::text("marker-b")).await.unwrap();
    let first = next_text(&mut writer).await;
    assert_eq!(first.as_deref(), Some("marker"), "the writer heard itself");
    assert_eq!(next_text(&mut writer).await.as_deref(), Some("marker-b"));
    println!("{COUNT} messages from n1 reached readers on n1, n2 and n3 in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_with_subject_characters_are_isolated_across_nodes() {
    let cluster = start(PublicRelay::EachNode);
    // NATS subject syntax (`.` separates tokens, `*` and `>` are wildcards, spaces are
    // not allowed) must neither break a topic nor let one topic see another's messages.
    let topics = [
        "a.b", "a*", "a>", "a b", "a.*", "a", "a.b.c", "a_b", "a%2Eb",
    ];
    let mut pairs = Vec::new();
    for topic in topics {
        let token = mint(&cluster.audience(), topic, &[]);
        let writer = open(&cluster, 0, topic, &token).await;
        let reader = open(&cluster, 1, topic, &token).await;
        pairs.push((topic, writer, reader));
    }
    for (topic, writer, reader) in &mut pairs {
        probe_until_heard(writer, &mut [reader], &format!("probe {topic}")).await;
    }
    for (topic, writer, _) in &mut pairs {
        for i in 0..20 {
            writer
                .send(Message::text(format!("{topic}|{i}")))
                .await
                .unwrap();
        }
        writer
            .send(Message::text(format!("{topic}|end")))
            .await
            .unwrap();
    }
    for (topic, _, reader) in &mut pairs {
        let mut count = 0;
        loop {
            let text = next_text(reader)
                .await
                .unwrap_or_else(|| panic!("reader of {topic:?} got no end marker"));
            if text == format!("probe {topic}") {
                continue;
            }
            let (from, what) = text
                .rsplit_once('|')
                .unwrap_or_else(|| panic!("stray {text:?}"));
            assert_eq!(from, *topic, "the reader of {topic:?} got {text:?}");
            if what == "end" {
                break;
            }
            count += 1;
        }
        assert_eq!(count, 20, "messages of {topic:?}");
    }
    println!(
        "{} topics with subject characters stayed apart across nodes",
        topics.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_code_redeemed_on_two_nodes_at_once_admits_exactly_one() {
    // Every node hands out the balancer's URL, so a code is valid on whichever node the
    // websocket reaches; the test dials two nodes directly to make them race.
    let cluster = start(PublicRelay::Balancer);
    let topic = "expt-code";
    let token = mint(&cluster.audience(), topic, &[]);
    for round in 0..8 {
        // Node n1 issues the code; n2 and n3 race to redeem it.
        let uri = request_uri(&cluster.access_url(0), topic, &token)
            .await
            .unwrap();
        let (b, c) = tokio::join!(
            tokio_tungstenite::connect_async(dial_at(&uri, &cluster.relay_url(1), topic)),
            tokio_tungstenite::connect_async(dial_at(&uri, &cluster.relay_url(2), topic)),
        );
        let refused = |r: &Result<_, tungstenite::Error>| match r {
            Err(tungstenite::Error::Http(response)) => response.status().is_client_error(),
            _ => false,
        };
        let admitted = [b.is_ok(), c.is_ok()];
        assert_eq!(
            admitted.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: n2 {:?}, n3 {:?}",
            b.as_ref().err(),
            c.as_ref().err()
        );
        assert!(
            refused(&b) || refused(&c),
            "round {round}: the loser was not refused"
        );
    }
    // A code is not reusable on the node that issued it either.
    let uri = request_uri(&cluster.access_url(0), topic, &token)
        .await
        .unwrap();
    let first = tokio_tungstenite::connect_async(dial_at(&uri, &cluster.relay_url(2), topic)).await;
    assert!(first.is_ok(), "a code issued on n1 is redeemed on n3");
    let again = tokio_tungstenite::connect_async(dial_at(&uri, &cluster.relay_url(0), topic)).await;
    assert!(again.is_err(), "a used code was accepted again on n1");
}

/// Reads `ws` until it closes; the close code and when it came.
async fn closed(mut ws: Ws) -> (Option<u16>, Instant) {
    loop {
        match timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (frame.map(|f| u16::from(f.code)), Instant::now())
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) | Err(_) => return (None, Instant::now()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_on_one_node_closes_the_bookings_sockets_on_every_node() {
    let cluster = start(PublicRelay::EachNode);
    let audience = cluster.audience();
    let denied = mint_booking(&audience, "expt-deny", "bk-deny");
    let kept = mint_booking(&audience, "expt-keep", "bk-keep");
    let on_a = open(&cluster, 0, "expt-deny", &denied).await;
    let on_b = open(&cluster, 1, "expt-deny", &denied).await;
    let mut keep_a = open(&cluster, 0, "expt-keep", &kept).await;
    let mut keep_b = open(&cluster, 1, "expt-keep", &kept).await;
    probe_until_heard(&mut keep_a, &mut [&mut keep_b], "probe").await;

    let watch_a = tokio::spawn(closed(on_a));
    let watch_b = tokio::spawn(closed(on_b));
    let admin = mint_admin(&audience);
    let sent = Instant::now();
    assert_eq!(deny(&cluster.access_url(2), &admin, "bk-deny").await, 204);
    let answered = sent.elapsed();
    let (code_a, at_a) = watch_a.await.unwrap();
    let (code_b, at_b) = watch_b.await.unwrap();
    assert_eq!(code_a, Some(4003), "n1's socket of the denied booking");
    assert_eq!(code_b, Some(4003), "n2's socket of the denied booking");
    println!(
        "deny on n3 (answered after {answered:?}) closed the booking's socket on n1 after {:?} and on n2 after {:?} (target: 100 ms)",
        at_a.duration_since(sent),
        at_b.duration_since(sent)
    );

    // Refused everywhere now, and the other booking is untouched.
    for node in 0..cluster.len() {
        let refused = request_uri(&cluster.access_url(node), "expt-deny", &denied).await;
        assert!(
            refused.is_err(),
            "{} still admits the denied booking",
            cluster.name(node)
        );
    }
    keep_b.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut keep_a).await.as_deref(), Some("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_survives_a_restart_of_every_node() {
    let mut cluster = start(PublicRelay::EachNode);
    let audience = cluster.audience();
    let denied = mint_booking(&audience, "expt-r", "bk-gone");
    let kept = mint_booking(&audience, "expt-r", "bk-fine");
    assert_eq!(
        deny(&cluster.access_url(0), &mint_admin(&audience), "bk-gone").await,
        204
    );
    // No node keeps a state directory: only JetStream remembers the deny.
    tokio::task::block_in_place(|| {
        for node in 0..cluster.len() {
            cluster.kill(node);
        }
        for node in 0..cluster.len() {
            cluster.restart(node);
        }
        cluster.wait_joined();
    });
    for node in 0..cluster.len() {
        let refused = request_uri(&cluster.access_url(node), "expt-r", &denied).await;
        assert!(
            refused.is_err(),
            "{} admits the denied booking after the restart",
            cluster.name(node)
        );
        let admitted = request_uri(&cluster.access_url(node), "expt-r", &kept).await;
        assert!(admitted.is_ok(), "{}: {admitted:?}", cluster.name(node));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_through_a_shell_host_on_one_node_and_a_client_on_another() {
    require("ssh", "run scripts/test.sh, which installs openssh");
    let cluster = start(PublicRelay::EachNode);
    let audience = cluster.audience();
    let dir = std::env::temp_dir().join(format!("relay-cluster-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sshd = tokio::task::block_in_place(|| Sshd::start(&dir));
    let _host = Killed(
        Command::new(RELAY)
            .args(["shell", "host"])
            .env(
                "SHELLHOST_RELAYSESSION",
                format!("{}/shell/expt", cluster.access_url(0)),
            )
            .env("SHELLHOST_TOKEN", mint_shell(&audience, "expt", "host"))
            .env("SHELLHOST_LOCALPORT", sshd.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The cluster-wide /status, asked on n2, shows the host's management connection on n1.
    let stats = mint_stats(&audience);
    let on_n2 = cluster.access_url(1);
    wait_until_async_status(&on_n2, &stats, |entries| {
        entries
            .iter()
            .any(|e| e["topic"] == "shell/expt" && e["node"] == "n1")
    })
    .await;
    let (_client, printed) = tokio::task::block_in_place(|| {
        spawn_and_read(
            Command::new(RELAY)
                .args(["shell", "client"])
                .env("SHELLCLIENT_RELAYSESSION", format!("{on_n2}/shell/expt"))
                .env("SHELLCLIENT_TOKEN", mint_shell(&audience, "expt", "client"))
                .env("SHELLCLIENT_LOCALPORT", "0")
                .stderr(Stdio::null()),
            &["relay shell client listening on "],
        )
    });
    let client_port = printed
        .and_then(|lines| lines.first()?.parse::<std::net::SocketAddr>().ok())
        .expect("relay shell client prints the address it listens on")
        .port();
    let ssh = sshd.client(client_port);
    let outputs = tokio::task::block_in_place(|| {
        let children: Vec<_> = (0..3)
            .map(|i| {
                ssh.command(&format!("echo session-{i}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "ssh session {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("session-{i}")
        );
    }
    // The admin's TCP connections went through n2 and the host's through n1: when they
    // are done, only the host's management connection is left.
    wait_until_async_status(&on_n2, &stats, |entries| {
        entries
            .iter()
            .all(|e| e["topic"] == "shell/expt" || e["topic"] == "stats")
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until the cluster-wide `/status` at `access` satisfies `condition`.
async fn wait_until_async_status(
    access: &str,
    stats: &str,
    condition: impl Fn(&[serde_json::Value]) -> bool,
) {
    let condition = &condition;
    relay_testkit::wait_until_async("the cluster's /status", WAIT, || async move {
        let status = get_json(access, "/status", stats).await;
        status.as_array().is_some_and(|entries| condition(entries))
    })
    .await;
}

/// Arrival times of the binary messages a viewer received.
type Arrivals = Arc<Mutex<Vec<Instant>>>;

/// A viewer through the balancer: a reconnecting session that records when video arrives.
struct Viewer {
    arrivals: Arrivals,
    state: tokio::sync::watch::Receiver<relay_client::session::SessionState>,
    task: tokio::task::JoinHandle<()>,
}

impl Viewer {
    async fn start(url: String, token: String) -> Viewer {
        let mut session = Session::spawn(SessionConfig::new(url).with_token(token));
        timeout(WAIT, session.wait_connected())
            .await
            .unwrap()
            .unwrap();
        let state = session.state();
        let arrivals = Arrivals::default();
        let sink = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = session.recv().await {
                if let SessionMessage::Binary(_) = message {
                    sink.lock().unwrap().push(Instant::now());
                }
            }
        });
        Viewer {
            arrivals,
            state,
            task,
        }
    }

    /// How many times the viewer's session has connected.
    fn connects(&self) -> u64 {
        self.state.borrow().connects
    }

    fn count_since(&self, since: Instant) -> usize {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|at| **at >= since)
            .count()
    }

    /// The first arrival after `kill` that follows a silence of at least `gap` (what
    /// was still in flight when the node died arrives without one).
    fn first_after_gap(&self, kill: Instant, gap: Duration) -> Option<Instant> {
        let arrivals = self.arrivals.lock().unwrap();
        let mut previous = kill;
        for at in arrivals.iter().filter(|at| **at >= kill) {
            if at.duration_since(previous) >= gap {
                return Some(*at);
            }
            previous = *at;
        }
        None
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The connections in a cluster-wide `/status`, counted by (node, topic, can write,
/// connected at): `/status` names no connection uniquely (the client address is the
/// balancer's, the time is in seconds), so a lost socket shows as a smaller count.
fn connections(status: &serde_json::Value) -> BTreeMap<(String, String, bool, String), usize> {
    let mut counts = BTreeMap::new();
    for e in status.as_array().unwrap() {
        let key = (
            e["node"].as_str().unwrap_or_default().to_owned(),
            e["topic"].as_str().unwrap_or_default().to_owned(),
            e["can_write"] == true,
            e["connected_at"].as_str().unwrap_or_default().to_owned(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Connections per node in a [`connections`] count.
fn per_node(counts: &BTreeMap<(String, String, bool, String), usize>) -> BTreeMap<String, usize> {
    let mut nodes = BTreeMap::new();
    for ((node, ..), n) in counts {
        *nodes.entry(node.clone()).or_default() += n;
    }
    nodes
}

/// ffmpeg encoding a test pattern as the experiment's camera would, posting to /ts/video.
fn ffmpeg_camera(port: u16) -> Killed {
    Killed(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
            .args(["testsrc=size=320x240:rate=25", "-c:v", "mpeg1video"])
            .args(["-b:v", "1000k", "-bf", "0", "-f", "mpegts"])
            .arg(format!("http://127.0.0.1:{port}/ts/video"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Whether `relay host`'s video destination reports a live relay link.
async fn host_connected(port: u16) -> bool {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/api/status")).await else {
        return false;
    };
    let status: serde_json::Value = response.json().await.unwrap_or_default();
    status["video"]["connected"] == serde_json::Value::Bool(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_hosts_node_moves_the_host_and_its_viewers_and_no_other_socket() {
    for program in ["ffmpeg", "nats-server", "haproxy"] {
        require(program, INSTALL_HINT);
    }
    let mut cluster = start(PublicRelay::Balancer);
    let audience = cluster.audience();
    let via_balancer = cluster.balancer_access_url();
    let dir = std::env::temp_dir().join(format!("relay-cluster-fault-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("video.jwt"),
        mint(
            &audience,
            "expt00-video",
            &[("RELAY_TOKEN_SCOPE_READ", "false")],
        ),
    )
    .unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[[destinations]]\nid = \"video\"\nstream = \"video\"\n\
             destination = \"{via_balancer}/session/expt00-video\"\ntoken_file = \"video.jwt\"\n"
        ),
    )
    .unwrap();
    let (_host, printed) = tokio::task::block_in_place(|| {
        spawn_and_read(
            Command::new(RELAY)
                .arg("host")
                .current_dir(&dir)
                .env("VW_PORT", "0")
                .env("VW_BIND", "127.0.0.1")
                .env("VW_RULES", &rules)
                .env("VW_LOG_LEVEL", "info")
                .env("VW_LOG_FILE", dir.join("host.log")),
            &["relay host listening on "],
        )
    });
    let host_port = printed
        .and_then(|lines| {
            let url = lines.first()?.strip_prefix("http://")?.to_owned();
            url.parse::<std::net::SocketAddr>().ok()
        })
        .expect("relay host prints the address it listens on")
        .port();
    relay_testkit::wait_until_async("the host's video link to be up", WAIT, || {
        host_connected(host_port)
    })
    .await;

    // Viewers through the balancer, spread round robin over the nodes.
    let viewer_token = mint(
        &audience,
        "expt00-video",
        &[("RELAY_TOKEN_SCOPE_WRITE", "false")],
    );
    let mut viewers = Vec::new();
    for _ in 0..6 {
        viewers.push(
            Viewer::start(
                format!("{via_balancer}/session/expt00-video"),
                viewer_token.clone(),
            )
            .await,
        );
    }
    let _camera = ffmpeg_camera(host_port);
    let streaming = Instant::now();
    wait_until("video at every viewer", WAIT, || {
        viewers.iter().all(|v| v.count_since(streaming) >= 10)
    })
    .await;

    // Which node carries the host's connection (the one writer of the topic)?
    let stats = mint_stats(&audience);
    let before = get_json(&cluster.access_url(0), "/status", &stats).await;
    let host_node = before
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["topic"] == "expt00-video" && e["can_write"] == true)
        .and_then(|e| e["node"].as_str())
        .expect("the host's connection in the cluster's /status")
        .to_owned();
    let victim = cluster.index_of(&host_node).unwrap();
    let survivor = (victim + 1) % cluster.len();
    let before = connections(&before);
    let on_victim = before
        .iter()
        .filter(|((node, topic, writes, _), _)| {
            *node == host_node && topic == "expt00-video" && !writes
        })
        .map(|(_, n)| n)
        .sum::<usize>();
    println!(
        "before the kill: connections per node {:?}; the host and {on_victim} viewer(s) on {host_node}",
        per_node(&before)
    );
    assert!(viewers.iter().all(|v| v.connects() == 1));

    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(victim)); // SIGKILL
    let survivor_access = cluster.access_url(survivor);
    wait_until_async_status(&survivor_access, &stats, |entries| {
        entries.iter().any(|e| {
            e["topic"] == "expt00-video"
                && e["can_write"] == true
                && e["node"] != host_node.as_str()
        })
    })
    .await;
    let host_back = killed.elapsed();
    let resumed = Instant::now();
    wait_until("video at every viewer again", WAIT, || {
        viewers.iter().all(|v| v.count_since(resumed) >= 10)
    })
    .await;
    let firsts: Vec<Duration> = viewers
        .iter()
        .map(|v| {
            v.first_after_gap(killed, Duration::from_millis(200))
                .unwrap_or(resumed)
                .duration_since(killed)
        })
        .collect();
    println!(
        "kill -9 of {host_node}: host reconnected through the balancer after {host_back:?}; first new frame at each viewer after {firsts:?} (slowest {:?})",
        firsts.iter().max().unwrap()
    );

    // No other node lost a socket: every connection the survivors had is still there, and
    // exactly the viewers the killed node carried had to reconnect.
    let after = connections(&get_json(&survivor_access, "/status", &stats).await);
    println!("after: connections per node {:?}", per_node(&after));
    let lost: Vec<_> = before
        .iter()
        .filter(|((node, ..), _)| *node != host_node)
        .filter(|(key, n)| after.get(*key).copied().unwrap_or(0) < **n)
        .collect();
    assert!(lost.is_empty(), "surviving nodes lost sockets: {lost:?}");
    let reconnected = viewers.iter().filter(|v| v.connects() > 1).count();
    assert_eq!(
        reconnected, on_victim,
        "viewers that reconnected vs viewers the killed node carried"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
