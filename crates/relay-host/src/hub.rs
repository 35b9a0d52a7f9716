//! The local message hub: topics (feeds), `stream/` aggregates over feeds, and one bounded
//! queue per subscriber.
//!
//! This merges the reference's `internal/hub` and `internal/agg`. Instead of creating a
//! "sub-client" per feed for every stream client (whose double stop caused the B4 crash),
//! the hub keeps a feed → streams index and, when a feed message is published, also
//! delivers it to the subscribers of every stream whose rule lists that feed. Changing a
//! stream rule only edits the index, so subscribers (and the relay connections behind
//! them) stay connected.
//!
//! Publishing never blocks: each subscriber has a queue bounded in messages and in bytes
//! ([`relay_common::queue`], the relay server's queue type), and a full queue drops the
//! message for that subscriber only (counted), so one stalled client can neither block the
//! others nor eat the memory of a small board. Subscriptions unregister themselves when
//! dropped, so there is nothing to close twice.

use bytes::Bytes;
use relay_common::queue::{self, Offer, QueueLimits, QueueReader, QueueSender};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Topic names starting with this prefix are receive-only aggregates of feeds.
pub const STREAM_PREFIX: &str = "stream/";

/// Whether a message is text or binary; kept end to end so a browser sees what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UTF-8 text message (websocket text frame).
    Text,
    /// Arbitrary bytes (websocket binary frame, `/ts` ingest).
    Binary,
}

/// Where a message entered the host: the trust boundary of the command API on feed `api`.
///
/// Local programs (`/ws`, `/ts`, the REST API) are trusted with the whole host; relay users
/// whose messages arrive through a destination are not: their commands can never name
/// files or see tokens, and change rules only with `VW_API_REMOTE_CHANGES`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// From a program on the host's own port (or made by the host itself).
    #[default]
    Local,
    /// From the relay, through a destination's link.
    Remote,
}

/// Who may receive a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reach {
    /// Every subscriber of the topic, including destinations (so the relay hears it).
    #[default]
    Everyone,
    /// Local subscribers only; destinations drop it (a command reply that shows tokens).
    HostOnly,
}

/// One message on a topic. The payload is shared (not copied) by every receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Whether the payload goes out as a text or a binary frame.
    pub kind: Kind,
    /// The payload bytes (valid UTF-8 for text messages).
    pub data: Bytes,
    /// Where the message came from; [`Origin::Local`] unless marked with [`Message::from_relay`].
    pub origin: Origin,
    /// Who may receive it; [`Reach::Everyone`] unless marked with [`Message::host_only`].
    pub reach: Reach,
}

impl Message {
    /// A text message; `data` should be UTF-8.
    pub fn text(data: impl Into<Bytes>) -> Self {
        Message {
            kind: Kind::Text,
            data: data.into(),
            origin: Origin::Local,
            reach: Reach::Everyone,
        }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message {
            kind: Kind::Binary,
            data: data.into(),
            origin: Origin::Local,
            reach: Reach::Everyone,
        }
    }

    /// The message marked as received from the relay ([`Origin::Remote`]).
    pub fn from_relay(mut self) -> Self {
        self.origin = Origin::Remote;
        self
    }

    /// The message marked for local subscribers only ([`Reach::HostOnly`]).
    pub fn host_only(mut self) -> Self {
        self.reach = Reach::HostOnly;
        self
    }
}

/// Identifies a subscriber so that it never receives its own messages. Unlike the
/// reference's 3-hex-character names these never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

/// Bytes one subscriber may have waiting, whatever the message count.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// The bounds of a subscriber's queue of `capacity` messages: no burst allowance past the
/// message count, and no slow-reader disconnects (a full queue only drops).
fn queue_limits(capacity: usize) -> QueueLimits {
    QueueLimits {
        messages: capacity.max(1),
        bytes: MAX_QUEUED_BYTES,
        burst_bytes: 0,
        slow_reader_timeout: Duration::MAX,
    }
}

/// The bytes a message counts for in a subscriber's queue.
fn payload_len(message: &Message) -> usize {
    message.data.len()
}

struct Subscriber {
    id: ClientId,
    queue: QueueSender<Message>,
}

#[derive(Default)]
struct State {
    /// Topic (feed or stream name) → its subscribers.
    subscribers: HashMap<String, Vec<Subscriber>>,
    /// Stream name → feeds, as given by the rule (order kept for display).
    stream_rules: BTreeMap<String, Vec<String>>,
    /// Feed → streams that include it; derived from `stream_rules`.
    streams_of_feed: HashMap<String, Vec<String>>,
}

impl State {
    fn reindex(&mut self) {
        self.streams_of_feed.clear();
        for (stream, feeds) in &self.stream_rules {
            for feed in feeds {
                let streams = self.streams_of_feed.entry(feed.clone()).or_default();
                if !streams.contains(stream) {
                    streams.push(stream.clone());
                }
            }
        }
    }
}

/// The hub shared by ingest, local websocket clients, destinations and the command API.
#[derive(Default)]
pub struct Hub {
    state: RwLock<State>,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

impl Hub {
    /// An empty hub with no topics, shared behind an `Arc`.
    pub fn new() -> Arc<Self> {
        Arc::new(Hub::default())
    }

    /// A fresh sender identity for producers that do not receive (such as `/ts` ingest).
    pub fn new_client_id(&self) -> ClientId {
        ClientId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a receiver on `topic` (a feed, or `stream/...`) with a queue of
    /// `capacity` messages. Dropping the subscription unregisters it.
    pub fn subscribe(self: &Arc<Self>, topic: &str, capacity: usize) -> Subscription {
        let id = self.new_client_id();
        let (queue, receiver) = queue::bounded(queue_limits(capacity), payload_len);
        self.write()
            .subscribers
            .entry(topic.to_string())
            .or_default()
            .push(Subscriber { id, queue });
        Subscription {
            hub: Arc::clone(self),
            id,
            topic: topic.to_string(),
            queue: receiver,
        }
    }

    /// Delivers `message` to every subscriber of `topic` and of the streams that include
    /// it, except `from`. Messages published on a `stream/` topic go nowhere: streams are
    /// receive-only (as in the reference). Returns how many queues accepted it.
    pub fn publish(&self, topic: &str, from: Option<ClientId>, message: Message) -> usize {
        if topic.starts_with(STREAM_PREFIX) {
            return 0;
        }
        let state = self.read();
        let mut delivered = 0;
        let streams = state
            .streams_of_feed
            .get(topic)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let topics = std::iter::once(topic).chain(streams.iter().map(String::as_str));
        for target in topics {
            for subscriber in state
                .subscribers
                .get(target)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if Some(subscriber.id) == from {
                    continue;
                }
                match subscriber.queue.offer(&message) {
                    Offer::Queued => delivered += 1,
                    // The subscriber is going away; its Drop removes it.
                    Offer::Closed => {}
                    Offer::Dropped | Offer::TooSlow => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            topic = target,
                            "subscriber queue full; message dropped for it"
                        );
                    }
                }
            }
        }
        delivered
    }

    /// Adds or replaces the rule for `stream`. Existing subscribers of the stream switch to
    /// the new feeds at once without being disconnected.
    pub fn set_stream_rule(&self, stream: &str, feeds: Vec<String>) {
        let mut state = self.write();
        state.stream_rules.insert(stream.to_string(), feeds);
        state.reindex();
    }

    /// Removes the rule for `stream`; its subscribers stay registered and receive again
    /// as soon as a rule is added back. Returns whether a rule existed.
    pub fn delete_stream_rule(&self, stream: &str) -> bool {
        let mut state = self.write();
        let existed = state.stream_rules.remove(stream).is_some();
        state.reindex();
        existed
    }

    /// Removes every stream rule.
    pub fn delete_all_stream_rules(&self) {
        let mut state = self.write();
        state.stream_rules.clear();
        state.reindex();
    }

    /// The feeds of one stream, if it has a rule.
    pub fn stream_rule(&self, stream: &str) -> Option<Vec<String>> {
        self.read().stream_rules.get(stream).cloned()
    }

    /// All stream rules, sorted by stream name.
    pub fn stream_rules(&self) -> BTreeMap<String, Vec<String>> {
        self.read().stream_rules.clone()
    }

    /// How many subscribers `topic` has (streams count their own subscribers only).
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.read().subscribers.get(topic).map_or(0, Vec::len)
    }

    /// Messages dropped so far because a subscriber's queue was full.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn unsubscribe(&self, topic: &str, id: ClientId) {
        let mut state = self.write();
        if let Some(list) = state.subscribers.get_mut(topic) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                state.subscribers.remove(topic);
            }
        }
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters (every update is a single insert/remove), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registered receiver. Dropping it unregisters it from the hub.
pub struct Subscription {
    hub: Arc<Hub>,
    id: ClientId,
    topic: String,
    queue: QueueReader<Message>,
}

impl Subscription {
    /// This subscriber's identity, to publish without hearing its own messages.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The topic this subscriber receives from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message for this subscriber.
    pub async fn recv(&mut self) -> Option<Message> {
        self.queue.recv().await
    }

    /// A message already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.queue.try_recv()
    }

    /// Messages dropped for this subscriber so far because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Publishes on this subscription's own topic, excluding itself.
    pub fn publish(&self, message: Message) -> usize {
        self.hub.publish(&self.topic, Some(self.id), message)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.topic, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn sender_gets_no_echo_same_topic_receives_other_topic_does_not() {
        let hub = Hub::new();
        let mut a = hub.subscribe("data", 4);
        let mut b = hub.subscribe("data", 4);
        let mut other = hub.subscribe("video", 4);
        assert_eq!(a.publish(Message::text("hello")), 1);
        assert_eq!(b.recv().await, Some(Message::text("hello")));
        assert!(a.try_recv().is_none());
        assert!(other.try_recv().is_none());
    }

    #[tokio::test]
    async fn register_and_unregister() {
        let hub = Hub::new();
        let a = hub.subscribe("data", 1);
        let b = hub.subscribe("data", 1);
        assert_eq!(hub.subscriber_count("data"), 2);
        drop(a);
        assert_eq!(hub.subscriber_count("data"), 1);
        drop(b);
        assert_eq!(hub.subscriber_count("data"), 0);
        assert_eq!(hub.publish("data", None, Message::text("x")), 0);
    }

    #[tokio::test]
    async fn large_and_many_messages_keep_order_and_content() {
        let hub = Hub::new();
        let mut rx = hub.subscribe("video", 1000);
        let big = Bytes::from(vec![7u8; 4 * 1024 * 1024]);
        hub.publish("video", None, Message::binary(big.clone()));
        for i in 0..999u32 {
            hub.publish("video", None, Message::binary(i.to_be_bytes().to_vec()));
        }
        assert_eq!(rx.recv().await.map(|m| m.data), Some(big));
        for i in 0..999u32 {
            assert_eq!(
                rx.recv().await.map(|m| m.data.to_vec()),
                Some(i.to_be_bytes().to_vec())
            );
        }
    }

    #[tokio::test]
    async fn full_queue_drops_for_that_subscriber_only() {
        let hub = Hub::new();
        let mut slow = hub.subscribe("data", 1);
        let mut fast = hub.subscribe("data", 10);
        for i in 0..3u8 {
            hub.publish("data", None, Message::binary(vec![i]));
        }
        assert_eq!(hub.dropped_messages(), 2);
        assert_eq!(slow.try_recv().map(|m| m.data.to_vec()), Some(vec![0]));
        assert!(slow.try_recv().is_none());
        for i in 0..3u8 {
            assert_eq!(fast.try_recv().map(|m| m.data.to_vec()), Some(vec![i]));
        }
    }

    #[tokio::test]
    async fn queued_bytes_are_bounded_but_one_big_message_always_fits() {
        let hub = Hub::new();
        let mut slow = hub.subscribe("video", 1000);
        let big = Bytes::from(vec![0u8; MAX_QUEUED_BYTES / 2 + 1]);
        assert_eq!(hub.publish("video", None, Message::binary(big.clone())), 1);
        assert_eq!(hub.publish("video", None, Message::binary(big.clone())), 0);
        assert_eq!(slow.try_recv().map(|m| m.data.len()), Some(big.len()));
        assert_eq!(hub.publish("video", None, Message::binary(big.clone())), 1);
        // Larger than the limit on its own: accepted when nothing else is waiting.
        let mut other = hub.subscribe("huge", 4);
        assert_eq!(
            hub.publish(
                "huge",
                None,
                Message::binary(vec![0u8; MAX_QUEUED_BYTES + 1])
            ),
            1
        );
        assert!(other.try_recv().is_some());
        assert_eq!(hub.dropped_messages(), 1);
    }

    #[tokio::test]
    async fn stream_gets_feed_messages_not_unrelated_and_no_echo() {
        let hub = Hub::new();
        hub.set_stream_rule("stream/large", feeds(&["video0", "audio0"]));
        let mut stream = hub.subscribe("stream/large", 10);
        let video = hub.subscribe("video0", 10);
        hub.publish("video0", None, Message::binary("v"));
        hub.publish("audio0", None, Message::binary("a"));
        hub.publish("data", None, Message::binary("d"));
        assert_eq!(stream.recv().await, Some(Message::binary("v")));
        assert_eq!(stream.recv().await, Some(Message::binary("a")));
        assert!(stream.try_recv().is_none());
        // A stream client's own messages go nowhere.
        assert_eq!(stream.publish(Message::binary("s")), 0);
        drop(video);
    }

    #[tokio::test]
    async fn stream_registered_before_rule_connects_when_rule_arrives_and_rule_change_switches_feeds(
    ) {
        let hub = Hub::new();
        let mut stream = hub.subscribe("stream/s", 10);
        hub.publish("video0", None, Message::binary("early"));
        assert!(stream.try_recv().is_none());
        hub.set_stream_rule("stream/s", feeds(&["video0"]));
        hub.publish("video0", None, Message::binary("v"));
        assert_eq!(stream.try_recv(), Some(Message::binary("v")));
        hub.set_stream_rule("stream/s", feeds(&["nothing"]));
        hub.publish("video0", None, Message::binary("v2"));
        hub.publish("nothing", None, Message::binary("n"));
        assert_eq!(stream.try_recv(), Some(Message::binary("n")));
        assert!(stream.try_recv().is_none());
    }

    #[tokio::test]
    async fn b4_delete_rules_then_unregister_stream_client_does_not_crash() {
        let hub = Hub::new();
        hub.set_stream_rule("stream/a", feeds(&["f1", "f2"]));
        hub.set_stream_rule("stream/b", feeds(&["f1"]));
        let a = hub.subscribe("stream/a", 2);
        let b = hub.subscribe("stream/b", 2);
        assert!(hub.delete_stream_rule("stream/a"));
        hub.delete_all_stream_rules();
        drop(a);
        drop(b);
        assert!(hub.stream_rules().is_empty());
        assert_eq!(hub.subscriber_count("stream/a"), 0);
        // The hub still works afterwards.
        hub.set_stream_rule("stream/a", feeds(&["f1"]));
        let mut again = hub.subscribe("stream/a", 2);
        hub.publish("f1", None, Message::text("ok"));
        assert_eq!(again.try_recv(), Some(Message::text("ok")));
    }

    #[tokio::test]
    async fn deleted_rule_keeps_stream_clients_for_re_adding() {
        let hub = Hub::new();
        hub.set_stream_rule("stream/s", feeds(&["f"]));
        let mut s = hub.subscribe("stream/s", 4);
        hub.delete_stream_rule("stream/s");
        hub.publish("f", None, Message::text("lost"));
        assert!(s.try_recv().is_none());
        hub.set_stream_rule("stream/s", feeds(&["f"]));
        hub.publish("f", None, Message::text("back"));
        assert_eq!(s.try_recv(), Some(Message::text("back")));
    }
}
