//! The relay cluster (`relay serve --nats`): several nodes behind one load balancer share
//! topics, one-time codes, the deny list and the status report through NATS.
//!
//! - Topics: a writer's messages are fanned out locally first, exactly as on one node; then
//!   [`Cluster::forward`] hands them, without waiting, to this node's one publisher task,
//!   which publishes them on the topic's subject ([`subject::topic_subject`]) with the
//!   origin node, connection and kind in headers. A node subscribes to a topic's subject
//!   only while it has local readers of that topic, and hands what arrives to the local
//!   readers. The connection is made with `no_echo`, so a node never hears its own
//!   messages back and the sender never hears itself. One publisher task and one
//!   subscription per subject keep each writer's order.
//! - Shell pairs: the pair's two ends may be on two nodes; a pair end joining or leaving is
//!   announced on the pair's subject (`Relay-Control: joined|left`), and a shell host's
//!   node answers presence requests on [`subject::host_subject`].
//! - Codes ([`codes`]) and denies ([`denies`]) live in JetStream key-value buckets.
//! - Status: every node answers requests on [`subject::STATUS_SUBJECT`] with its own
//!   connections, and says hello on [`subject::HELLO_SUBJECT`] every second, so a node
//!   merging a report knows how many answers to wait for.
//!
//! Nothing on the data path waits for NATS: the publisher's queue is bounded (what does
//! not fit is dropped and counted), and the NATS client's own buffers sit behind it.

pub mod codes;
pub mod denies;
pub mod subject;

use crate::hub::{CloseReason, ConnId, Hub, Topic};
use crate::metrics::ClusterMetrics;
use async_nats::{Client, HeaderMap, Subject};
use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::StreamExt;
use relay_common::shutdown::{CancellationToken, TaskTracker};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Header naming the node a message was published by.
pub const HEADER_NODE: &str = "Relay-Node";
/// Header naming the connection (on that node) that wrote the message.
pub const HEADER_CONN: &str = "Relay-Conn";
/// Header with the websocket message kind: `t` (text) or `b` (binary).
pub const HEADER_KIND: &str = "Relay-Kind";
/// Header of a pair announcement instead of a message: `joined` or `left`.
pub const HEADER_CONTROL: &str = "Relay-Control";

/// How often the node pings NATS. async-nats drops the connection (and reconnects) after
/// two unanswered pings, so a node on a silently dead path notices within about three
/// intervals, and counts what it cannot forward from then on; async-nats's own default of
/// 60 s left it writing into a dead socket for two to three minutes (docs/RELIABILITY.md).
pub const NATS_PING_INTERVAL: Duration = Duration::from_secs(10);

/// Messages waiting for the publisher task, at most; past that they are dropped
/// (`relay_cluster_dropped_total{reason="outbound_full"}`).
pub const OUTBOUND_CAPACITY: usize = 8192;
/// How long a KV or request round trip may take before the node gives up on it.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer not heard from for this long is no longer waited for.
const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a merged status waits for the peers' answers, at most.
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// How to reach NATS, and this node's name (`relay serve --nats …`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URL(s), comma-separated (`--nats`, `RELAY_NATS_URL`).
    pub url: String,
    /// NATS credentials file (`--nats-creds`, `RELAY_NATS_CREDS`).
    pub creds: Option<PathBuf>,
    /// CA certificate(s) to verify the NATS server with (`--nats-tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for NATS (`--nats-tls-cert`, with `--nats-tls-key`).
    pub tls_cert: Option<PathBuf>,
    /// Client key for NATS (`--nats-tls-key`).
    pub tls_key: Option<PathBuf>,
    /// This node's name in status reports and message headers (`--node-name`); unique in
    /// the cluster.
    pub node_name: String,
}

impl ClusterConfig {
    /// A cluster at `url` with no credentials or TLS files and the default node name.
    pub fn new(url: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            node_name: default_node_name(),
        }
    }
}

/// The host name plus a short random suffix, so two nodes on one host differ.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..6])
}

/// Why the node could not join the cluster at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}: {source}")]
    Creds {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// NATS did not answer.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The configured URL.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// JetStream (`nats-server -js`) is off, or a bucket could not be made.
    #[error("cannot set up the JetStream bucket {bucket} (is JetStream on, `nats-server -js`?): {reason}")]
    Bucket {
        /// The bucket's name.
        bucket: &'static str,
        /// The client's error.
        reason: String,
    },
}

/// What the publisher task is asked to do, in order.
enum Item {
    /// Publish one message on `subject`.
    Data {
        subject: Subject,
        from: ConnId,
        text: bool,
        payload: Bytes,
    },
    /// A local member joined `key`.
    Join {
        key: String,
        can_read: bool,
        paired: bool,
    },
    /// A local member left `key`.
    Leave {
        key: String,
        can_read: bool,
        paired: bool,
    },
}

/// One node's membership of the cluster; shared by the hub, the handlers and the tasks.
pub struct Cluster {
    node: String,
    client: Client,
    codes_kv: async_nats::jetstream::kv::Store,
    denies_kv: async_nats::jetstream::kv::Store,
    items: mpsc::UnboundedSender<Item>,
    /// Data items sent and not yet taken by the publisher (the bound of the queue).
    waiting: AtomicUsize,
    connected: AtomicBool,
    metrics: ClusterMetrics,
    peers: Mutex<HashMap<String, Instant>>,
    /// Hub keys whose subject NATS has confirmed this node listens on.
    listening: Mutex<HashSet<String>>,
}

/// The receiving end of the publisher queue, until [`Cluster::run`] takes it.
pub struct ClusterTasks {
    items: mpsc::UnboundedReceiver<Item>,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
}

impl Cluster {
    /// Connect to NATS and make (or open) the KV buckets; codes live for `code_ttl`.
    pub async fn connect(
        config: &ClusterConfig,
        code_ttl: Duration,
        metrics: ClusterMetrics,
    ) -> Result<(Arc<Cluster>, ClusterTasks), ClusterError> {
        let mut options = match &config.creds {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ClusterError::Creds {
                    path: path.clone(),
                    source,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let options = options
            .name(format!("relay {}", config.node_name))
            .no_echo()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(NATS_TIMEOUT))
            .ping_interval(NATS_PING_INTERVAL)
            // Reconnect for ever; the node keeps serving local topics meanwhile.
            .max_reconnects(None)
            .event_callback(move |event| {
                let _ = events_tx.send(event);
                async {}
            });
        let client =
            options
                .connect(config.url.as_str())
                .await
                .map_err(|e| ClusterError::Connect {
                    url: config.url.clone(),
                    reason: e.to_string(),
                })?;
        let js = async_nats::jetstream::new(client.clone());
        let codes_kv = bucket(
            &js,
            subject::CODES_BUCKET,
            code_ttl.max(Duration::from_secs(1)),
            async_nats::jetstream::stream::StorageType::File,
        )
        .await?;
        let denies_kv = bucket(
            &js,
            subject::DENIES_BUCKET,
            Duration::ZERO,
            async_nats::jetstream::stream::StorageType::File,
        )
        .await?;
        let (items_tx, items) = mpsc::unbounded_channel();
        metrics.connected.set(1);
        let cluster = Arc::new(Cluster {
            node: config.node_name.clone(),
            client,
            codes_kv,
            denies_kv,
            items: items_tx,
            waiting: AtomicUsize::new(0),
            connected: AtomicBool::new(true),
            metrics,
            peers: Mutex::new(HashMap::new()),
            listening: Mutex::new(HashSet::new()),
        });
        tracing::info!(node = %cluster.node, url = %config.url, "joined the relay cluster");
        Ok((cluster, ClusterTasks { items, events }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// True while the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// This node's cluster metrics.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    /// The NATS client (for the tests and the status merge).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// True once NATS has confirmed that this node listens on the hub key `key`'s subject
    /// (it has local readers of that topic): from then on, what another node publishes
    /// there reaches them.
    pub fn is_listening(&self, key: &str) -> bool {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn set_listening(&self, key: &str, on: bool) {
        let mut listening = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            listening.insert(key.to_owned());
        } else {
            listening.remove(key);
        }
    }

    /// Hand a local writer's message to the other nodes. Never waits: with the queue full
    /// the message is dropped for the other nodes only, and counted.
    pub fn forward(&self, topic: &Topic, from: ConnId, message: &Message) {
        let (text, payload) = match message {
            Message::Text(t) => (true, Bytes::from(t.clone())),
            Message::Binary(b) => (false, b.clone()),
            _ => return,
        };
        let subject = topic
            .cluster_subject
            .get_or_init(|| Subject::from(subject::topic_subject(&topic.name)))
            .clone();
        self.send_data(subject, from, text, payload);
    }

    /// [`Cluster::forward`] for a message from the relay itself to the hub key `key`
    /// (a shell host's connect and disconnect actions).
    pub fn forward_to_key(&self, key: &str, message: &Message) {
        let (text, payload) = match message {
            Message::Text(t) => (true, Bytes::from(t.clone())),
            Message::Binary(b) => (false, b.clone()),
            _ => return,
        };
        self.send_data(Subject::from(subject::topic_subject(key)), 0, text, payload);
    }

    fn send_data(&self, subject: Subject, from: ConnId, text: bool, payload: Bytes) {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= OUTBOUND_CAPACITY {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.metrics.drop_one("outbound_full");
            return;
        }
        let item = Item::Data {
            subject,
            from,
            text,
            payload,
        };
        if self.items.send(item).is_err() {
            // The publisher has stopped (shutdown).
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A local member joined the hub key `key` (called by the hub).
    pub(crate) fn joined(&self, key: &str, can_read: bool, paired: bool) {
        let _ = self.items.send(Item::Join {
            key: key.to_owned(),
            can_read,
            paired,
        });
    }

    /// A local member left the hub key `key` (called by the hub).
    pub(crate) fn left(&self, key: &str, can_read: bool, paired: bool) {
        let _ = self.items.send(Item::Leave {
            key: key.to_owned(),
            can_read,
            paired,
        });
    }

    /// True when a node holds the management connection of shell host `id`. Unreachable
    /// NATS counts as "no".
    pub async fn host_online(&self, id: &str) -> bool {
        let asked = tokio::time::timeout(
            NATS_TIMEOUT,
            self.client.request(subject::host_subject(id), Bytes::new()),
        )
        .await;
        matches!(asked, Ok(Ok(_)))
    }

    /// Other nodes heard from within the last few seconds.
    pub fn live_peers(&self) -> usize {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|_, seen| now.duration_since(*seen) < PEER_TIMEOUT);
        peers.len()
    }

    /// Ask every other node for its report of `what` (`status` or `stats`); waits for as
    /// many answers as there are live peers, at most [`STATUS_WAIT`]. Each answer is
    /// `{"node":…,"connections":[…],…}`.
    pub async fn gather(&self, what: &'static str) -> Vec<serde_json::Value> {
        let expected = self.live_peers();
        if expected == 0 || !self.is_connected() {
            return Vec::new();
        }
        let inbox = self.client.new_inbox();
        let Ok(mut answers) = self.client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        if self
            .client
            .publish_with_reply(
                subject::STATUS_SUBJECT,
                inbox,
                Bytes::from_static(what.as_bytes()),
            )
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + STATUS_WAIT;
        while got.len() < expected {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(answer)) => {
                    if let Ok(value) = serde_json::from_slice(&answer.payload) {
                        got.push(value);
                    }
                }
                _ => break,
            }
        }
        got
    }

    /// Run the cluster's tasks in `tasks` until `shutdown`: the publisher (subscriptions
    /// too), the connection events, hello, the status responder and the deny watcher.
    pub fn run(
        self: &Arc<Self>,
        background: ClusterTasks,
        state: Arc<crate::state::AppState>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let ClusterTasks { items, events } = background;
        tasks.spawn(publisher(
            self.clone(),
            state.hub.clone(),
            items,
            shutdown.clone(),
        ));
        tasks.spawn(watch_events(self.clone(), events, shutdown.clone()));
        tasks.spawn(hello(self.clone(), shutdown.clone()));
        tasks.spawn(answer_status(self.clone(), state.clone(), shutdown.clone()));
        tasks.spawn(denies::watch(self.clone(), state, shutdown));
    }
}

/// Open the KV bucket `name`, making it first if needed. The bucket's stream is made by
/// hand with the settings `create_key_value` uses: that call first reads the account
/// info, whose shape it expects from nats-server 2.10 on, and Debian ships 2.9.
async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &'static str,
    max_age: Duration,
    storage: async_nats::jetstream::stream::StorageType,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    use async_nats::jetstream::stream;
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(format!("relay {name} (issue 18)")),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    let created = js.create_stream(config).await;
    // Another node may have made it meanwhile: open it either way.
    js.get_key_value(name)
        .await
        .map_err(|open| ClusterError::Bucket {
            bucket: name,
            reason: match created {
                Err(create) => create.to_string(),
                Ok(_) => open.to_string(),
            },
        })
}

/// One subscription: the task forwarding its messages to local members, and the local
/// readers that keep it.
struct Listening {
    readers: usize,
    members: usize,
    task: Option<JoinHandle<()>>,
    presence: Option<JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        // Aborting drops the subscriber, which unsubscribes.
        for task in [self.task.take(), self.presence.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// The one task that talks to NATS for the data path, in the order things happened:
/// subscribe when a topic gets its first local reader, publish, unsubscribe when the last
/// one leaves.
async fn publisher(
    cluster: Arc<Cluster>,
    hub: Arc<Hub>,
    mut items: mpsc::UnboundedReceiver<Item>,
    shutdown: CancellationToken,
) {
    let mut listening: HashMap<String, Listening> = HashMap::new();
    let node = cluster.node.clone();
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => break,
            item = items.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        match item {
            Item::Data {
                subject,
                from,
                text,
                payload,
            } => {
                cluster.waiting.fetch_sub(1, Ordering::Relaxed);
                if !cluster.is_connected() {
                    cluster.metrics.drop_one("disconnected");
                    continue;
                }
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_NODE, node.as_str());
                headers.insert(HEADER_CONN, from.to_string().as_str());
                headers.insert(HEADER_KIND, if text { "t" } else { "b" });
                match cluster
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                {
                    Ok(()) => {
                        cluster.metrics.messages_out.inc();
                    }
                    Err(_) => cluster.metrics.drop_one("publish_error"),
                }
            }
            Item::Join {
                key,
                can_read,
                paired,
            } => {
                let entry = listening.entry(key.clone()).or_insert(Listening {
                    readers: 0,
                    members: 0,
                    task: None,
                    presence: None,
                });
                entry.members += 1;
                if can_read {
                    entry.readers += 1;
                }
                if entry.task.is_none() && entry.readers > 0 {
                    match cluster.client.subscribe(subject::topic_subject(&key)).await {
                        Ok(sub) => {
                            entry.task = Some(tokio::spawn(deliver(
                                cluster.clone(),
                                hub.clone(),
                                key.clone(),
                                sub,
                            )));
                            cluster.metrics.subscriptions.inc();
                            // A round trip, so the server has the subscription before
                            // anything this node publishes next (a shell pair's `joined`).
                            if tokio::time::timeout(NATS_TIMEOUT, cluster.client.flush())
                                .await
                                .is_ok_and(|r| r.is_ok())
                            {
                                cluster.set_listening(&key, true);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, topic = %key, "cannot subscribe to the topic's subject; remote writers will not reach it")
                        }
                    }
                }
                if let (None, Some(id), false) =
                    (&entry.presence, key.strip_prefix("shell:"), paired)
                {
                    if let Ok(sub) = cluster.client.subscribe(subject::host_subject(id)).await {
                        entry.presence = Some(tokio::spawn(answer_presence(cluster.clone(), sub)));
                    }
                }
                if paired {
                    control(&cluster, &key, "joined").await;
                }
            }
            Item::Leave {
                key,
                can_read,
                paired,
            } => {
                if paired {
                    control(&cluster, &key, "left").await;
                }
                if let Some(entry) = listening.get_mut(&key) {
                    entry.members = entry.members.saturating_sub(1);
                    if can_read {
                        entry.readers = entry.readers.saturating_sub(1);
                    }
                    if entry.readers == 0 {
                        if let Some(task) = entry.task.take() {
                            task.abort();
                            cluster.metrics.subscriptions.dec();
                            cluster.set_listening(&key, false);
                        }
                    }
                    if entry.members == 0 {
                        listening.remove(&key);
                    }
                }
            }
        }
    }
    cluster.metrics.subscriptions.set(0);
    drop(listening);
}

/// Announce a pair end joining or leaving on the pair's subject.
async fn control(cluster: &Cluster, key: &str, what: &'static str) {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_NODE, cluster.node.as_str());
    headers.insert(HEADER_CONTROL, what);
    let _ = cluster
        .client
        .publish_with_headers(subject::topic_subject(key), headers, Bytes::new())
        .await;
}

/// Hand what arrives on one topic's subject to the local members of that topic.
async fn deliver(
    cluster: Arc<Cluster>,
    hub: Arc<Hub>,
    key: String,
    mut sub: async_nats::Subscriber,
) {
    let mut topic: Option<Arc<Topic>> = None;
    while let Some(msg) = sub.next().await {
        // A topic object that emptied was removed from the hub; a new member made a new one.
        if topic.as_ref().is_none_or(|t| t.is_empty()) {
            topic = hub.topic(&key);
        }
        let Some(topic) = topic.as_ref() else {
            continue;
        };
        // Read without copying: this runs once per message from another node.
        let headers = msg.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        if let Some(control) = header(HEADER_CONTROL) {
            match control {
                "joined" => topic.remote_member_joined(),
                "left" => topic.close_members(CloseReason::PeerLeft),
                _ => {}
            }
            continue;
        }
        let text = header(HEADER_KIND) == Some("t");
        let message = if text {
            match Utf8Bytes::try_from(msg.payload) {
                Ok(text) => Message::Text(text),
                Err(_) => continue,
            }
        } else {
            Message::Binary(msg.payload)
        };
        cluster.metrics.messages_in.inc();
        // Id 0 is never a connection's, so every local reader gets it.
        topic.publish(0, &message);
        // A pair's byte stream is queued whatever its limits: hold this subscription back
        // until the local end has room (async-nats bounds what waits behind it).
        crate::hub::wait_for_room(topic.full_readers(0)).await;
    }
}

/// Answer "is shell host … here?" while its management connection is on this node.
async fn answer_presence(cluster: Arc<Cluster>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            let _ = cluster
                .client
                .publish(reply, Bytes::from(cluster.node.clone()))
                .await;
        }
    }
}

/// Follow the connection's state: the gauge, one loud log line per change, slow-consumer
/// drops.
async fn watch_events(
    cluster: Arc<Cluster>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        match event {
            async_nats::Event::Connected => {
                if !cluster.connected.swap(true, Ordering::Relaxed) {
                    cluster.metrics.connected.set(1);
                    tracing::warn!(node = %cluster.node, "NATS reachable again: the cluster is whole");
                }
            }
            async_nats::Event::Disconnected | async_nats::Event::Closed => {
                if cluster.connected.swap(false, Ordering::Relaxed) {
                    cluster.metrics.connected.set(0);
                    tracing::warn!(
                        node = %cluster.node,
                        reason = %event,
                        "NATS unreachable: serving only topics whose writer and readers are on this node, refusing codes, reconnecting"
                    );
                }
            }
            async_nats::Event::SlowConsumer(sid) => {
                cluster.metrics.drop_one("slow_consumer");
                tracing::warn!(subscription = sid, "NATS says this node is a slow consumer: messages from other nodes were dropped");
            }
            other => tracing::warn!(event = %other, "NATS client event"),
        }
    }
}

/// Say hello every second, and count the peers that do.
async fn hello(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let Ok(mut hellos) = cluster.client.subscribe(subject::HELLO_SUBJECT).await else {
        tracing::warn!("cannot subscribe to the cluster's hello subject");
        return;
    };
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {
                let _ = cluster
                    .client
                    .publish(subject::HELLO_SUBJECT, Bytes::from(cluster.node.clone()))
                    .await;
                cluster.metrics.peers.set(cluster.live_peers() as i64);
            }
            msg = hellos.next() => {
                let Some(msg) = msg else { return };
                let name = String::from_utf8_lossy(&msg.payload).into_owned();
                if name != cluster.node {
                    cluster
                        .peers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name, Instant::now());
                }
            }
        }
    }
}

/// Answer the other nodes' status requests with this node's connections.
async fn answer_status(
    cluster: Arc<Cluster>,
    state: Arc<crate::state::AppState>,
    shutdown: CancellationToken,
) {
    let Ok(mut requests) = cluster.client.subscribe(subject::STATUS_SUBJECT).await else {
        tracing::warn!("cannot subscribe to the cluster's status subject");
        return;
    };
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => return,
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let Some(reply) = msg.reply else { continue };
        let report = crate::status::node_report(&state, &msg.payload[..] == b"stats");
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let _ = cluster.client.publish(reply, body.into()).await;
    }
}
