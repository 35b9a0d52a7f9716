//! Property test of the fan-out (issue 17, "Correctness"): interleaved publishes from
//! several writers on one topic reach a mix of fast readers (which take everything after
//! every publish) and blocked readers (which stop taking for a while, then take some or
//! all), through the hub's own types (`Hub::join`, `Topic::publish`, each reader's
//! `Inbox`). For every reader:
//!
//! - it gets every message it was not counted as dropping: received + dropped = what the
//!   other members published (a writer never hears itself);
//! - in publish order, with no duplicates (each message carries a global sequence number);
//! - a fast reader never drops (its queue is empty at every publish);
//! - the drop counters (`QueueReader::dropped`, `Subscriber::drops`) equal the gaps.
//!
//! Queue limits are drawn too (message bound, byte bound, burst allowance on or off), so
//! every admission rule of `QueueLimits::admits` is exercised. Cases are bounded so the
//! test takes a few seconds in a debug build.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use axum::extract::ws::Message;
use bytes::Bytes;
use proptest::prelude::*;
use relay_common::queue::QueueLimits;
use relay_server::hub::{Hub, Inbox, JoinRequest, Membership};
use relay_server::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// One member of the topic.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Receives the topic's messages (`read` scope).
    reads: bool,
    /// A blocked reader only takes messages at [`Op::Take`]; a fast one after every
    /// publish.
    blocked: bool,
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Member `from % writers` publishes a message of `len` bytes (at least 8: the
    /// sequence number), as text or binary.
    Publish { from: usize, len: usize, text: bool },
    /// Member `who % members` takes at most `max` queued messages.
    Take { who: usize, max: usize },
}

fn member() -> impl Strategy<Value = Member> {
    (any::<bool>(), any::<bool>()).prop_map(|(reads, blocked)| Member { reads, blocked })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8, 8usize..3_000, any::<bool>())
            .prop_map(|(from, len, text)| Op::Publish { from, len, text }),
        1 => (0usize..8, 1usize..40).prop_map(|(who, max)| Op::Take { who, max }),
    ]
}

fn limits() -> impl Strategy<Value = QueueLimits> {
    (
        1usize..12,
        8usize..20_000,
        prop_oneof![Just(0usize), 1usize..30_000],
    )
        .prop_map(|(messages, bytes, burst_bytes)| QueueLimits {
            messages,
            bytes,
            burst_bytes,
            slow_reader_timeout: Duration::MAX,
        })
}

/// A message of `len` bytes that starts with sequence number `seq` (as 8 ASCII hex digits
/// in text, little-endian in binary).
fn message(seq: u64, len: usize, text: bool) -> Message {
    if text {
        let mut s = format!("{seq:08x}");
        s.extend(std::iter::repeat_n('t', len - 8));
        Message::Text(s.into())
    } else {
        let mut b = seq.to_le_bytes().to_vec();
        b.resize(len, 0xb5);
        Message::Binary(Bytes::from(b))
    }
}

/// The sequence number a message carries, checking its padding is intact.
fn sequence(message: &Message) -> u64 {
    match message {
        Message::Text(t) => {
            assert!(t.as_str()[8..].bytes().all(|c| c == b't'), "text padding");
            u64::from_str_radix(&t.as_str()[..8], 16).unwrap()
        }
        Message::Binary(b) => {
            assert!(b[8..].iter().all(|&c| c == 0xb5), "binary padding");
            u64::from_le_bytes(b[..8].try_into().unwrap())
        }
        other => panic!("a data message, not {other:?}"),
    }
}

struct Joined {
    member: Member,
    membership: Membership,
    inbox: Inbox,
    /// Sequence numbers received, in order.
    got: Vec<u64>,
}

impl Joined {
    fn take(&mut self, max: usize) {
        let mut batch = Vec::new();
        self.inbox.queue.try_recv_batch(&mut batch, max);
        self.got.extend(batch.iter().map(sequence));
    }
}

fn join(hub: &Arc<Hub>, member: Member, writes: bool) -> Joined {
    let (membership, inbox) = hub.join(JoinRequest {
        topic: "fanout".into(),
        key: "fanout".into(),
        paired: false,
        booking_id: String::new(),
        scopes: Vec::new(),
        can_read: member.reads,
        can_write: writes,
        expires_at: None,
        user_agent: "fanout_property".into(),
        remote_addr: "127.0.0.1".into(),
    });
    Joined {
        member,
        membership,
        inbox,
        got: Vec::new(),
    }
}

fn run(limits: QueueLimits, writers: usize, members: Vec<Member>, ops: Vec<Op>) {
    let hub = Hub::new(limits, Arc::new(Metrics::new()));
    let mut joined: Vec<Joined> = members
        .iter()
        .enumerate()
        .map(|(i, m)| join(&hub, *m, i < writers))
        .collect();
    // Who published each sequence number.
    let mut publishers: Vec<usize> = Vec::new();

    for op in ops {
        match op {
            Op::Publish { from, len, text } => {
                let from = from % writers;
                let seq = publishers.len() as u64;
                publishers.push(from);
                let sender = &joined[from].membership;
                sender
                    .topic
                    .publish(sender.info.id, &message(seq, len, text));
                for j in joined.iter_mut().filter(|j| !j.member.blocked) {
                    j.take(usize::MAX);
                }
            }
            Op::Take { who, max } => {
                let who = who % joined.len();
                joined[who].take(max);
            }
        }
    }
    for j in &mut joined {
        j.take(usize::MAX);
    }

    for (i, j) in joined.iter().enumerate() {
        let dropped = j.inbox.queue.dropped();
        assert_eq!(
            dropped,
            j.inbox.subscriber.drops(),
            "member {i}: two counters"
        );
        if !j.member.reads {
            assert!(j.got.is_empty() && dropped == 0, "member {i} may not read");
            continue;
        }
        // In order, no duplicates, never its own messages.
        assert!(
            j.got.windows(2).all(|w| w[0] < w[1]),
            "member {i} got {:?}",
            j.got
        );
        for &seq in &j.got {
            assert_ne!(
                publishers[seq as usize], i,
                "member {i} heard itself ({seq})"
            );
        }
        // Every message meant for it is received or counted as dropped.
        let meant = publishers.iter().filter(|&&p| p != i).count() as u64;
        assert_eq!(
            j.got.len() as u64 + dropped,
            meant,
            "member {i} ({:?}): received {} + dropped {dropped} != published by others {meant}",
            j.member,
            j.got.len()
        );
        if !j.member.blocked {
            assert_eq!(dropped, 0, "fast member {i} dropped");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_reader_gets_what_it_did_not_drop_in_order_once(
        limits in limits(),
        writers in 1usize..4,
        members in prop::collection::vec(member(), 2..7),
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let writers = writers.min(members.len());
        run(limits, writers, members, ops);
    }
}
