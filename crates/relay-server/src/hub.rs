//! Topics, subscribers and fan-out: the part of the data path that must never stall.
//!
//! A connection joins one topic at admission and keeps an `Arc` to it, so publishing takes
//! only that topic's read lock, never a global one. Every subscriber has its own bounded
//! queue ([`relay_common::queue`]); publishing offers the message to each without blocking,
//! and a full queue drops it for that subscriber alone (counted here in the metrics). A
//! subscriber whose queue stays behind past the slow-reader timeout is told to close as too
//! slow. Leaving is a `Drop` (of [`Membership`]), so a connection is unregistered everywhere
//! however its task ends.

use crate::cluster::Cluster;
use crate::direct::{record_written, Direct, DirectWriter};
use crate::metrics::Metrics;
use axum::extract::ws::Message;
pub use relay_common::queue::QueueLimits;
use relay_common::queue::{Offer, QueueReader, QueueSender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Identifies one connection (or internal subscriber) for the life of the process.
pub type ConnId = u64;

/// Why the relay closes a connection; each maps to a websocket close code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or its socket failed: nothing left to tell it.
    PeerGone,
    /// The token's `exp` passed.
    Expired,
    /// The booking was denied (`POST /bids/deny`).
    Denied,
    /// The reader stayed behind past the slow-reader limit.
    TooSlow,
    /// Nothing arrived (not even a pong) within the pong timeout.
    Unresponsive,
    /// The server is shutting down.
    GoingAway,
    /// The peer sent a message over the size limit.
    TooBig,
    /// The other end of a paired (shell) connection left.
    PeerLeft,
}

impl CloseReason {
    /// Close code and reason text sent in the close frame.
    pub fn close_frame(self) -> (u16, &'static str) {
        match self {
            CloseReason::PeerGone => (1000, "closed"),
            CloseReason::Expired => (4001, "token expired"),
            CloseReason::Denied => (4003, "booking denied"),
            CloseReason::TooSlow => (4008, "reader too slow: queue stayed full"),
            CloseReason::Unresponsive => (4009, "no pong within timeout"),
            CloseReason::GoingAway => (1001, "server going away"),
            CloseReason::TooBig => (1009, "message too big"),
            CloseReason::PeerLeft => (1000, "the other end closed"),
        }
    }
}

/// What is known about a connection, for stats, `/status` and deny.
pub struct ConnInfo {
    /// Unique within this hub; never reused while the server runs.
    pub id: ConnId,
    /// The topic as reported (stats, `/status`).
    pub topic: String,
    /// The hub key the connection is routed by (differs from `topic` for shell connections).
    pub key: String,
    /// The booking the token was issued for; empty for internal subscribers and, when
    /// allowed, tokens without one. Denying this booking disconnects the connection.
    pub booking_id: String,
    /// The token's scopes as granted, reported in stats and `/status`.
    pub scopes: Vec<String>,
    /// Receives messages from the topic (the `read` scope).
    pub can_read: bool,
    /// May send messages to the topic (the `write` scope).
    pub can_write: bool,
    /// Wall-clock time of joining, for the reports' `connected` / `connected_at`.
    pub connected_at: SystemTime,
    /// Monotonic time of joining; traffic times and rates are measured from it.
    pub connected_instant: Instant,
    /// Token expiry in unix seconds (`None` for internal subscribers).
    pub expires_at: Option<i64>,
    /// The upgrade request's `User-Agent`; empty when absent.
    pub user_agent: String,
    /// `X-Forwarded-For` when present, otherwise the peer's IP address.
    pub remote_addr: String,
    /// Messages this connection sent (counted only with `write`).
    pub tx: Traffic,
    /// Messages written to this connection (counted only with `read`).
    pub rx: Traffic,
}

/// Message count, bytes and time of the last message, updated lock-free.
#[derive(Default)]
pub struct Traffic {
    /// Messages counted so far.
    pub messages: AtomicU64,
    /// Payload bytes of those messages.
    pub bytes: AtomicU64,
    /// Nanoseconds after `connected_instant` of the last message; 0 = never.
    pub last_nanos: AtomicU64,
}

impl Traffic {
    pub(crate) fn record(&self, bytes: usize, since_connect: Duration) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let nanos = u64::try_from(since_connect.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }
}

/// The publishing side of a subscriber: its queue's sending half and its close signal.
pub struct Subscriber {
    /// What is known about the connection.
    pub info: Arc<ConnInfo>,
    queue: QueueSender<Message>,
    close: watch::Sender<Option<CloseReason>>,
    /// Set when the connection is written directly (`RELAY_DIRECT_WRITES`).
    direct: OnceLock<Arc<DirectWriter>>,
}

/// The receiving half, owned by the connection's writer (or the stats reporter).
pub struct Inbox {
    /// What is queued for this connection; taking from it does the accounting.
    pub queue: QueueReader<Message>,
    /// Set once, with the reason, when the connection is to close.
    pub close: watch::Receiver<Option<CloseReason>>,
    /// The sending side's handle, to ask for a close.
    pub subscriber: Arc<Subscriber>,
}

impl Subscriber {
    /// Offer `message` to this subscriber's queue without blocking; count a drop in the
    /// metrics, and close the subscriber once its queue has stayed behind too long.
    ///
    /// `lossless` (a pair's byte stream): queue past the limits rather than drop; the
    /// publisher waits for [`Topic::full_readers`] before it reads the next message.
    fn offer(&self, message: &Message, metrics: &Metrics, now: std::time::Instant, lossless: bool) {
        let enqueue = || {
            if lossless {
                self.queue.push(message)
            } else {
                self.queue.offer(message)
            }
        };
        let offer = match self.direct.get() {
            None => enqueue(),
            Some(direct) => match direct.offer(message, enqueue, now) {
                Direct::Written(len) => {
                    record_written(&self.info, metrics, len);
                    return;
                }
                Direct::Handed(offer) => offer,
            },
        };
        match offer {
            Offer::Queued | Offer::Closed => {}
            Offer::Dropped => {
                metrics.drops.inc();
            }
            Offer::TooSlow => {
                metrics.drops.inc();
                self.close_as_too_slow(metrics);
            }
        }
    }

    /// From now on, publishers write to this connection through `direct` (once per
    /// connection; a second call is ignored).
    pub fn write_directly(&self, direct: Arc<DirectWriter>) {
        let _ = self.direct.set(direct);
    }

    /// True when publishers write to this connection directly.
    pub fn is_direct(&self) -> bool {
        self.direct.get().is_some()
    }

    /// Messages dropped for this connection because its queue was full.
    pub fn drops(&self) -> u64 {
        self.queue.dropped()
    }

    /// Signal the connection to close; the first reason wins. True if this call set it.
    pub fn close(&self, reason: CloseReason) -> bool {
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        })
    }

    /// Close as too slow (counted once, however many paths notice).
    pub fn close_as_too_slow(&self, metrics: &Metrics) {
        if self.close(CloseReason::TooSlow) {
            metrics.slow_disconnects.inc();
        }
    }
}

/// Resolves once every queue of `full` (from [`Topic::full_readers`]) has room again.
pub async fn wait_for_room(full: Vec<Arc<Subscriber>>) {
    for sub in full {
        sub.queue.room().await;
    }
}

/// The payload size of a data message.
pub fn payload_len(message: &Message) -> usize {
    match message {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// One topic: the subscribers that receive what any other member writes.
pub struct Topic {
    /// The hub key.
    pub name: String,
    /// A pair topic (one shell connection): when one end leaves, the other is closed.
    paired: bool,
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    /// Member count, for waiting until the other end of a pair has joined.
    size: watch::Sender<usize>,
    /// Where drops and slow disconnects are counted.
    metrics: Arc<Metrics>,
    /// The topic's NATS subject, made on the first message a clustered node forwards.
    pub(crate) cluster_subject: OnceLock<async_nats::Subject>,
}

impl Topic {
    /// Deliver `message` from `from` to every other member that may read. Never blocks.
    pub fn publish(&self, from: ConnId, message: &Message) {
        let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        // One clock read per message, for every reader's direct-write spacing.
        let now = std::time::Instant::now();
        for sub in subscribers.iter() {
            if sub.info.id != from && sub.info.can_read {
                sub.offer(message, &self.metrics, now, self.paired);
            }
        }
    }

    /// On a pair (a shell tunnel's byte stream, which must lose nothing): the other members
    /// whose queues are past their limits, so that `from` reads its next message only
    /// after [`wait_for_room`] on them. The wait stops reading from `from`'s socket, and
    /// TCP carries the back-pressure to the sender. Empty (no allocation) on other topics
    /// and on a pair that keeps up: a slow reader elsewhere gets drops, never the writer a
    /// stall.
    pub fn full_readers(&self, from: ConnId) -> Vec<Arc<Subscriber>> {
        if !self.paired {
            return Vec::new();
        }
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|sub| sub.info.id != from && sub.info.can_read && !sub.queue.has_room())
            .cloned()
            .collect()
    }

    /// How many members the topic has.
    pub fn len(&self) -> usize {
        self.subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Resolves once the topic has at least `n` members.
    pub async fn wait_for_members(&self, n: usize) {
        let mut size = self.size.subscribe();
        let _ = size.wait_for(|members| *members >= n).await;
    }

    /// True when nobody is on the topic.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The other end of this pair joined on another node: what waits for two members may
    /// go on.
    pub(crate) fn remote_member_joined(&self) {
        self.size
            .send_modify(|members| *members = (*members).max(2));
    }

    /// Ask every member to close (the other end of a pair left on another node).
    pub(crate) fn close_members(&self, reason: CloseReason) {
        let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        for sub in subscribers.iter() {
            let _ = sub.close(reason);
        }
    }
}

/// Registry of topics and connections.
pub struct Hub {
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    connections: Mutex<HashMap<ConnId, Arc<Subscriber>>>,
    next_id: AtomicU64,
    limits: QueueLimits,
    /// Where joins, leaves, drops and slow-reader disconnects are counted.
    pub metrics: Arc<Metrics>,
    /// Told of every join and leave when the node is part of a cluster.
    cluster: OnceLock<Arc<Cluster>>,
}

/// A connection's place in the hub; dropping it leaves the topic and the registry.
pub struct Membership {
    hub: Arc<Hub>,
    /// The topic joined; used to publish this connection's messages.
    pub topic: Arc<Topic>,
    /// What the hub knows about this connection (also listed in stats and `/status`).
    pub info: Arc<ConnInfo>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.topic, self.info.id);
    }
}

/// Details of a connection that is about to join.
pub struct JoinRequest {
    /// The topic as reported.
    pub topic: String,
    /// The hub key to route by; usually equal to `topic`.
    pub key: String,
    /// Close the other members when this one leaves (shell connection pairs).
    pub paired: bool,
    /// The ticket's booking id; empty for internal subscribers.
    pub booking_id: String,
    /// The ticket's scopes, copied into [`ConnInfo::scopes`] for the reports.
    pub scopes: Vec<String>,
    /// Give the connection an inbox of the topic's messages (the `read` scope).
    pub can_read: bool,
    /// Let the connection publish to the topic (the `write` scope).
    pub can_write: bool,
    /// Token expiry in unix seconds; `None` for internal subscribers that never expire.
    pub expires_at: Option<i64>,
    /// The client's `User-Agent`, or a fixed name for internal subscribers.
    pub user_agent: String,
    /// The client's address as reported (`X-Forwarded-For` or peer IP).
    pub remote_addr: String,
}

impl Hub {
    /// An empty hub whose readers' queues get `limits`, counting into `metrics`.
    pub fn new(limits: QueueLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Hub {
            topics: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            limits,
            metrics,
            cluster: OnceLock::new(),
        })
    }

    /// From now on, tell `cluster` of every join and leave (once; a second call is
    /// ignored).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Join a topic: returns the membership (leave on drop) and the inbox to drain.
    pub fn join(self: &Arc<Self>, req: JoinRequest) -> (Membership, Inbox) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ConnInfo {
            id,
            topic: req.topic,
            key: req.key,
            booking_id: req.booking_id,
            scopes: req.scopes,
            can_read: req.can_read,
            can_write: req.can_write,
            connected_at: SystemTime::now(),
            connected_instant: Instant::now(),
            expires_at: req.expires_at,
            user_agent: req.user_agent,
            remote_addr: req.remote_addr,
            tx: Traffic::default(),
            rx: Traffic::default(),
        });
        let (queue_tx, queue_rx) = relay_common::queue::bounded(self.limits, payload_len);
        let (close_tx, close_rx) = watch::channel(None);
        let subscriber = Arc::new(Subscriber {
            info: info.clone(),
            queue: queue_tx,
            close: close_tx,
            direct: OnceLock::new(),
        });
        let topic = {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            let topic = topics
                .entry(info.key.clone())
                .or_insert_with(|| {
                    Arc::new(Topic {
                        name: info.key.clone(),
                        paired: req.paired,
                        subscribers: RwLock::default(),
                        size: watch::channel(0).0,
                        metrics: self.metrics.clone(),
                        cluster_subject: OnceLock::new(),
                    })
                })
                .clone();
            // Added under the topics lock so a concurrent leave cannot remove the topic
            // between lookup and insertion.
            let mut subscribers = topic.subscribers.write().unwrap_or_else(|p| p.into_inner());
            subscribers.push(subscriber.clone());
            topic.size.send_replace(subscribers.len());
            drop(subscribers);
            if let Some(cluster) = self.cluster.get() {
                // Under the topics lock, so the cluster hears joins and leaves in order.
                cluster.joined(&info.key, info.can_read, topic.paired);
            }
            topic
        };
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, subscriber.clone());
        self.metrics.connections.inc();
        let membership = Membership {
            hub: self.clone(),
            topic,
            info,
        };
        let inbox = Inbox {
            queue: queue_rx,
            close: close_rx,
            subscriber,
        };
        (membership, inbox)
    }

    fn leave(&self, topic: &Arc<Topic>, id: ConnId) {
        {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            let mut subs = topic.subscribers.write().unwrap_or_else(|p| p.into_inner());
            let can_read = subs
                .iter()
                .find(|s| s.info.id == id)
                .map(|s| s.info.can_read);
            subs.retain(|s| s.info.id != id);
            if let (Some(cluster), Some(can_read)) = (self.cluster.get(), can_read) {
                cluster.left(&topic.name, can_read, topic.paired);
            }
            topic.size.send_replace(subs.len());
            if topic.paired {
                for other in subs.iter() {
                    let _ = other.close(CloseReason::PeerLeft);
                }
            }
            if subs.is_empty() {
                // Only remove the map entry if it is still this topic object.
                if topics
                    .get(&topic.name)
                    .is_some_and(|t| Arc::ptr_eq(t, topic))
                {
                    topics.remove(&topic.name);
                }
            }
        }
        if self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
            .is_some()
        {
            self.metrics.connections.dec();
        }
    }

    /// Publish `message` to the topic with hub key `key` from the relay itself (not a
    /// member); returns how many members it was offered to.
    pub fn publish_to(&self, key: &str, message: &Message) -> usize {
        match self.topic(key) {
            Some(topic) => {
                topic.publish(0, message);
                topic.len()
            }
            None => 0,
        }
    }

    /// Members of the topic with hub key `key` (0 when it does not exist).
    pub fn members(&self, key: &str) -> usize {
        self.topic(key).map_or(0, |t| t.len())
    }

    /// The live topic with hub key `key`, if any.
    pub(crate) fn topic(&self, key: &str) -> Option<Arc<Topic>> {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Close every live connection of `booking_id`; returns how many were told.
    pub fn deny(&self, booking_id: &str) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        for sub in connections
            .values()
            .filter(|s| s.info.booking_id == booking_id)
        {
            let _ = sub.close(CloseReason::Denied);
            closed += 1;
        }
        closed
    }

    /// Tell every connection to close (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for sub in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let _ = sub.close(reason);
        }
    }

    /// A snapshot of every connection, sorted by topic then connection time.
    pub fn connections(&self) -> Vec<Arc<Subscriber>> {
        let mut all: Vec<Arc<Subscriber>> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            a.info
                .topic
                .cmp(&b.info.topic)
                .then(a.info.id.cmp(&b.info.id))
        });
        all
    }

    /// Number of registered connections (including internal subscribers).
    pub fn connection_count(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The queue bounds every subscriber gets.
    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// Number of live topics.
    pub fn topic_count(&self) -> usize {
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_burst_of_small_messages_is_queued_whole() {
        let limits = QueueLimits {
            messages: 8,
            bytes: 16 << 20,
            burst_bytes: 64 * 1024,
            slow_reader_timeout: Duration::from_secs(10),
        };
        let hub = Hub::new(limits, Arc::new(Metrics::new()));
        let (writer, _writer_inbox) = hub.join(member("burst", false, true));
        let (_reader, mut inbox) = hub.join(member("burst", true, false));
        for i in 0..500u32 {
            writer
                .topic
                .publish(writer.info.id, &bin(64 + (i % 2) as usize));
        }
        let mut got = 0;
        while inbox.queue.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(
            got, 500,
            "500 messages of ~64 B fit the 64 KiB burst allowance"
        );
        assert_eq!(inbox.subscriber.drops(), 0);
    }

    fn hub(messages: usize, bytes: usize) -> Arc<Hub> {
        let limits = QueueLimits {
            messages,
            bytes,
            burst_bytes: 0,
            slow_reader_timeout: Duration::from_secs(10),
        };
        Hub::new(limits, Arc::new(Metrics::new()))
    }

    fn member(topic: &str, read: bool, write: bool) -> JoinRequest {
        JoinRequest {
            topic: topic.into(),
            key: topic.into(),
            paired: false,
            booking_id: "b".into(),
            scopes: vec![],
            can_read: read,
            can_write: write,
            expires_at: None,
            user_agent: String::new(),
            remote_addr: String::new(),
        }
    }

    fn bin(n: usize) -> Message {
        Message::Binary(Bytes::from(vec![7u8; n]))
    }

    #[tokio::test]
    async fn fan_out_is_exact_topic_and_never_echoes() {
        let hub = hub(8, 1 << 20);
        let (a, mut a_in) = hub.join(member("t", true, true));
        let (_b, mut b_in) = hub.join(member("t", true, true));
        let (_c, mut c_in) = hub.join(member("t/x", true, true));
        a.topic.publish(a.info.id, &Message::Text("hello".into()));
        assert_eq!(b_in.queue.try_recv(), Some(Message::Text("hello".into())));
        assert!(a_in.queue.try_recv().is_none());
        assert!(c_in.queue.try_recv().is_none());
    }

    #[tokio::test]
    async fn no_read_scope_means_nothing_is_queued() {
        let hub = hub(8, 1 << 20);
        let (a, _a_in) = hub.join(member("t", true, true));
        let (_w, mut w_in) = hub.join(member("t", false, true));
        a.topic.publish(a.info.id, &bin(3));
        assert!(w_in.queue.try_recv().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_for_that_reader_only_then_disconnects_it() {
        let hub = hub(2, 1 << 20);
        let (a, _a_in) = hub.join(member("t", true, true));
        let (_slow, slow_in) = hub.join(member("t", true, true));
        let (_fast, mut fast_in) = hub.join(member("t", true, true));
        for _ in 0..5 {
            a.topic.publish(a.info.id, &bin(10));
            assert!(fast_in.queue.try_recv().is_some());
        }
        assert_eq!(slow_in.subscriber.drops(), 3);
        assert_eq!(fast_in.subscriber.drops(), 0);
        assert_eq!(*slow_in.close.borrow(), None);
        tokio::time::advance(Duration::from_secs(11)).await;
        a.topic.publish(a.info.id, &bin(10));
        assert_eq!(*slow_in.close.borrow(), Some(CloseReason::TooSlow));
        assert_eq!(hub.metrics.slow_disconnects.get(), 1);
        assert_eq!(hub.metrics.drops.get(), 4);
    }

    #[tokio::test]
    async fn the_byte_bound_applies_but_one_large_message_always_fits() {
        let hub = hub(100, 100);
        let (a, _) = hub.join(member("t", true, true));
        let (_r, mut r_in) = hub.join(member("t", true, true));
        a.topic.publish(a.info.id, &bin(500));
        a.topic.publish(a.info.id, &bin(1));
        assert!(r_in.queue.try_recv().is_some());
        assert!(r_in.queue.try_recv().is_none());
        assert_eq!(r_in.subscriber.drops(), 1);
    }

    #[tokio::test]
    async fn leaving_removes_the_topic_and_deny_reaches_only_that_booking() {
        let hub = hub(8, 1 << 20);
        let (a, a_in) = hub.join(member("t", true, true));
        let mut other = member("t", true, true);
        other.booking_id = "other".into();
        let (b, b_in) = hub.join(other);
        assert_eq!(hub.deny("b"), 1);
        assert_eq!(*a_in.close.borrow(), Some(CloseReason::Denied));
        assert_eq!(*b_in.close.borrow(), None);
        drop(a);
        drop(b);
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(hub.connection_count(), 0);
        assert_eq!(hub.metrics.connections.get(), 0);
        // The same booking id can join again after a deny (reference bug B2 crashed here).
        // (Paired topics are tested through the shell relay.)
        let (_again, _) = hub.join(member("t", true, true));
        assert_eq!(hub.connection_count(), 1);
    }
}
