//! The bounded queue between one publisher side and one reader: the only place that knows
//! how full a reader is allowed to get and when it counts as too slow.
//!
//! [`bounded`] makes the two halves of one queue:
//!
//! - [`QueueSender::offer`] is what a publisher calls for each reader. It never blocks and
//!   never waits for the reader: a message that does not fit the [`QueueLimits`] is dropped
//!   for this reader alone and counted, and the returned [`Offer`] says what happened so
//!   that the caller can update its metrics and, on [`Offer::TooSlow`], close the reader.
//! - [`QueueReader`] is owned by whoever writes to the reader (a websocket writer task, a
//!   destination link, the stats reporter). Its `recv*` methods hand out messages and do the
//!   accounting themselves (bytes freed, "behind" clock reset); there is nothing to
//!   remember to call afterwards.
//!
//! A queue is *behind* from the first drop until the reader next takes a message. A queue
//! that stays behind for [`QueueLimits::slow_reader_timeout`] is too slow. That is noticed
//! either by the next offer that drops ([`Offer::TooSlow`]) or, when no publisher comes
//! along (the burst is over but the reader is stuck mid-write), by
//! [`QueueReader::stays_behind`].
//!
//! A byte stream cut into messages (a shell tunnel) must not lose any: its publisher uses
//! [`QueueSender::push`], which always queues, and waits with [`QueueSender::room`] before
//! it reads the next message from its own peer, so the queue stays within its limits plus
//! one message and the back-pressure reaches the sender through TCP.
//!
//! The queue is generic over the message type; it only needs the payload length of a
//! message (given to [`bounded`] as a function, so that any crate can queue a foreign type
//! such as axum's websocket `Message`).
//!
//! An idle queue holds no buffer: the slots are a `VecDeque` that grows when messages wait
//! and is given back once a burst has drained, because most readers of a relay are idle
//! or written to directly (tokio's `mpsc` keeps a block of 32 slots and a cache-padded
//! channel per queue, about 2 KiB per connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// However small the messages, a queue never holds more than this many.
pub const MAX_QUEUED_MESSAGES: usize = 16 * 1024;

/// The bounds of one reader's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages the queue holds (past this, only the burst allowance admits more).
    pub messages: usize,
    /// Bytes of payload the queue holds (an empty queue still takes one bigger message).
    pub bytes: usize,
    /// Past `messages`, a message is still queued while the queue stays within this many
    /// bytes: the count bound is for big messages (video), not bursts of small ones.
    /// 0 turns bursts off.
    pub burst_bytes: usize,
    /// A queue that stays behind this long is too slow. `Duration::MAX` means never.
    pub slow_reader_timeout: Duration,
}

impl QueueLimits {
    /// Channel capacity: room for the message bound, or for a burst of small messages
    /// (at most [`MAX_QUEUED_MESSAGES`]).
    pub fn capacity(&self) -> usize {
        let burst = if self.burst_bytes > 0 {
            MAX_QUEUED_MESSAGES
        } else {
            0
        };
        self.messages.max(burst).max(1)
    }

    /// Whether a message of `len` bytes may join a queue holding `queued` messages of
    /// `queued_bytes` bytes. An empty queue takes any message, however big.
    pub fn admits(&self, queued: usize, queued_bytes: usize, len: usize) -> bool {
        if queued_bytes == 0 {
            return true;
        }
        let after = queued_bytes + len;
        after <= self.bytes && (queued < self.messages || after <= self.burst_bytes)
    }
}

/// What [`QueueSender::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The message is queued for the reader.
    Queued,
    /// The queue was full: the message was dropped for this reader and counted.
    Dropped,
    /// Dropped and counted as for [`Offer::Dropped`], and the queue has now been behind
    /// for the slow-reader timeout: the caller should disconnect the reader.
    TooSlow,
    /// The reader is gone; nothing was queued or counted.
    Closed,
}

/// Slots kept after a burst drains; a bigger buffer is given back.
const KEPT_SLOTS: usize = 16;

/// The messages waiting, and which half has gone.
struct Slots<M> {
    messages: VecDeque<M>,
    sender_gone: bool,
    reader_gone: bool,
}

impl<M> Slots<M> {
    /// Once a burst has drained, frees a buffer bigger than [`KEPT_SLOTS`].
    fn give_back_if_drained(&mut self) {
        if self.messages.is_empty() && self.messages.capacity() > KEPT_SLOTS {
            self.messages = VecDeque::new();
        }
    }
}

/// The state both halves see.
struct Shared<M> {
    slots: Mutex<Slots<M>>,
    /// Woken when a message is queued or the sender goes.
    ready: Notify,
    /// Woken when the reader takes messages or goes (for [`QueueSender::room`]).
    room: Notify,
    /// Most messages queued at once ([`QueueLimits::capacity`]).
    capacity: usize,
    limits: QueueLimits,
    payload_len: fn(&M) -> usize,
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    /// Milliseconds after `epoch` of the first drop since the reader last took a message;
    /// 0 = not behind.
    behind_since_ms: AtomicU64,
    epoch: Instant,
}

impl<M> Shared<M> {
    fn slots(&self) -> MutexGuard<'_, Slots<M>> {
        // A panic while holding the lock leaves the slots consistent (push/pop only).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn behind_for(&self) -> Option<Duration> {
        match self.behind_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since)),
            ),
        }
    }

    fn is_too_slow(&self) -> bool {
        self.behind_for()
            .is_some_and(|behind| behind >= self.limits.slow_reader_timeout)
    }

    /// The reader took messages of `bytes` bytes in all: free them and stop being behind.
    fn taken(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.behind_since_ms.store(0, Ordering::Relaxed);
        self.room.notify_one();
    }
}

/// Makes one reader's queue: the publisher's half and the reader's half.
///
/// `payload_len` gives the bytes a message counts for against [`QueueLimits::bytes`].
pub fn bounded<M>(
    limits: QueueLimits,
    payload_len: fn(&M) -> usize,
) -> (QueueSender<M>, QueueReader<M>) {
    let shared = Arc::new(Shared {
        slots: Mutex::new(Slots {
            messages: VecDeque::new(),
            sender_gone: false,
            reader_gone: false,
        }),
        ready: Notify::new(),
        room: Notify::new(),
        capacity: limits.capacity(),
        limits,
        payload_len,
        queued_bytes: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        behind_since_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        QueueReader { shared },
    )
}

/// The publisher's half of a reader's queue.
pub struct QueueSender<M> {
    shared: Arc<Shared<M>>,
}

impl<M: Clone> QueueSender<M> {
    /// Queue a copy of `message` if it fits the limits, else drop it for this reader and
    /// count the drop. Never blocks; the message is only cloned when it is queued.
    pub fn offer(&self, message: &M) -> Offer {
        let shared = &*self.shared;
        let len = (shared.payload_len)(message);
        {
            let mut slots = shared.slots();
            if slots.reader_gone {
                return Offer::Closed;
            }
            let queued = slots.messages.len();
            let before = shared.queued_bytes.load(Ordering::Relaxed);
            if queued < shared.capacity && shared.limits.admits(queued, before, len) {
                shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
                slots.messages.push_back(message.clone());
                drop(slots);
                shared.ready.notify_one();
                return Offer::Queued;
            }
        }
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        let now_ms = u64::try_from(shared.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let first_drop = shared
            .behind_since_ms
            .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if !first_drop && shared.is_too_slow() {
            Offer::TooSlow
        } else {
            Offer::Dropped
        }
    }
}

impl<M: Clone> QueueSender<M> {
    /// Queue a copy of `message` whatever the limits (for a stream that must not lose
    /// any): the caller keeps the queue bounded by waiting for [`QueueSender::room`]
    /// before it has the next message to push. Never blocks.
    pub fn push(&self, message: &M) -> Offer {
        let shared = &*self.shared;
        let mut slots = shared.slots();
        if slots.reader_gone {
            return Offer::Closed;
        }
        shared
            .queued_bytes
            .fetch_add((shared.payload_len)(message), Ordering::Relaxed);
        slots.messages.push_back(message.clone());
        drop(slots);
        shared.ready.notify_one();
        Offer::Queued
    }
}

impl<M> QueueSender<M> {
    /// True when the queue is within its limits (messages and bytes), or its reader is gone.
    pub fn has_room(&self) -> bool {
        let shared = &*self.shared;
        let slots = shared.slots();
        let queued = slots.messages.len();
        let bytes = shared.queued_bytes.load(Ordering::Relaxed);
        slots.reader_gone || (queued < shared.capacity && shared.limits.admits(queued, bytes, 0))
    }

    /// Resolves once [`QueueSender::has_room`]. Cancel safe.
    pub async fn room(&self) {
        while !self.has_room() {
            // A take after the check leaves a permit: this returns at once.
            self.shared.room.notified().await;
        }
    }

    /// Messages dropped for this reader so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<M> Drop for QueueSender<M> {
    fn drop(&mut self) {
        self.shared.slots().sender_gone = true;
        self.shared.ready.notify_one();
    }
}

/// The reader's half of the queue: takes messages off it and accounts for them.
///
/// `recv` and `recv_batch` are cancel safe (a message is never lost when the future is
/// dropped before it completes), so they can be raced in `tokio::select!`.
pub struct QueueReader<M> {
    shared: Arc<Shared<M>>,
}

impl<M> QueueReader<M> {
    /// The next message, waiting for one; `None` once the sender is gone and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<M> {
        loop {
            match self.try_recv() {
                Some(message) => return Some(message),
                None if self.shared.slots().sender_gone => return None,
                // A message queued after the check leaves a permit: this returns at once.
                None => self.shared.ready.notified().await,
            }
        }
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<M> {
        let shared = &*self.shared;
        let mut slots = shared.slots();
        let message = slots.messages.pop_front()?;
        slots.give_back_if_drained();
        drop(slots);
        shared.taken((shared.payload_len)(&message));
        Some(message)
    }

    /// Waits for a message, then appends it and everything else already queued to `batch`,
    /// at most `max` messages in all (at least one). Returns how many were appended; 0
    /// means the sender is gone and the queue is empty.
    pub async fn recv_batch(&mut self, batch: &mut Vec<M>, max: usize) -> usize {
        loop {
            let taken = self.try_recv_batch(batch, max.max(1));
            if taken > 0 {
                return taken;
            }
            if self.shared.slots().sender_gone {
                return 0;
            }
            // A message queued after the check leaves a permit: this returns at once.
            self.shared.ready.notified().await;
        }
    }

    /// Appends to `batch` what is already queued, at most `max` messages, without waiting.
    /// Returns how many were appended.
    pub fn try_recv_batch(&mut self, batch: &mut Vec<M>, max: usize) -> usize {
        let shared = &*self.shared;
        let mut slots = shared.slots();
        let taken = slots.messages.len().min(max);
        if taken == 0 {
            return 0;
        }
        let mut bytes = 0;
        for message in slots.messages.drain(..taken) {
            bytes += (shared.payload_len)(&message);
            batch.push(message);
        }
        slots.give_back_if_drained();
        drop(slots);
        shared.taken(bytes);
        taken
    }

    /// Resolves once the queue has stayed behind for the slow-reader timeout while nothing
    /// was taken. Race it against a write that would block: a publisher may not come along
    /// to notice once the burst is over. (It checks a few times per timeout.)
    pub async fn stays_behind(&self) {
        let limit = self.shared.limits.slow_reader_timeout;
        let poll = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::time::sleep(poll).await;
            if self.shared.is_too_slow() {
                return;
            }
        }
    }

    /// Messages dropped for this reader so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<M> Drop for QueueReader<M> {
    fn drop(&mut self) {
        let mut slots = self.shared.slots();
        slots.reader_gone = true;
        let left = std::mem::take(&mut slots.messages);
        drop(slots);
        // Nobody will take these: free them and their accounting now.
        let bytes = left.iter().map(|m| (self.shared.payload_len)(m)).sum();
        self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.shared.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: usize, bytes: usize, burst_bytes: usize) -> QueueLimits {
        QueueLimits {
            messages,
            bytes,
            burst_bytes,
            slow_reader_timeout: Duration::from_secs(10),
        }
    }

    fn queue(limits: QueueLimits) -> (QueueSender<Vec<u8>>, QueueReader<Vec<u8>>) {
        bounded(limits, Vec::len)
    }

    #[test]
    fn small_messages_may_burst_past_the_message_bound_but_big_ones_may_not() {
        let limits = limits(4, 10_000, 1_000);
        // Under the message bound: only the byte bound applies.
        assert!(limits.admits(3, 9_000, 1_000));
        assert!(!limits.admits(3, 9_000, 1_001));
        // Past it: small messages while the queue stays within the burst allowance.
        assert!(limits.admits(4, 900, 100));
        assert!(limits.admits(100, 500, 64));
        assert!(!limits.admits(4, 900, 101));
        // An empty queue takes any message, however big.
        assert!(limits.admits(0, 0, 1_000_000));
        let no_burst = QueueLimits {
            burst_bytes: 0,
            ..limits
        };
        assert!(!no_burst.admits(4, 4, 1));
        assert_eq!(no_burst.capacity(), 4);
        assert_eq!(limits.capacity(), MAX_QUEUED_MESSAGES);
    }

    /// `push` never drops, and a publisher that waits for `room` before each push keeps
    /// the queue within its limits plus one message, however slow the reader.
    #[tokio::test]
    async fn a_lossless_publisher_waits_for_room_and_loses_nothing() {
        let (sender, mut reader) = queue(limits(4, 1_000_000, 0));
        let publisher = tokio::spawn(async move {
            for i in 0..200u8 {
                sender.room().await;
                assert_eq!(sender.push(&vec![i; 1000]), Offer::Queued);
                assert!(sender.shared.slots().messages.len() <= 5, "limits plus one");
            }
            sender
        });
        let mut got = Vec::new();
        while got.len() < 200 {
            // A slow reader: one message at a time, yielding in between.
            match reader.try_recv() {
                Some(m) => got.push(m[0]),
                None => tokio::task::yield_now().await,
            }
        }
        let sender = publisher.await.unwrap();
        assert_eq!(got, (0..200u8).collect::<Vec<_>>());
        assert_eq!(sender.dropped(), 0);
        drop(reader);
        // A queue whose reader is gone always has room, and takes nothing.
        sender.room().await;
        assert_eq!(sender.push(&vec![0; 10]), Offer::Closed);
    }

    #[tokio::test]
    async fn a_burst_of_small_messages_is_queued_whole() {
        let (sender, mut reader) = queue(limits(8, 16 << 20, 64 * 1024));
        for i in 0..500usize {
            assert_eq!(sender.offer(&vec![7u8; 64 + i % 2]), Offer::Queued);
        }
        let mut got = 0;
        while reader.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(
            got, 500,
            "500 messages of ~64 B fit the 64 KiB burst allowance"
        );
        assert_eq!(sender.dropped(), 0);
    }

    #[tokio::test]
    async fn the_byte_bound_applies_but_one_large_message_always_fits() {
        let (sender, mut reader) = queue(limits(100, 100, 0));
        assert_eq!(sender.offer(&vec![0; 500]), Offer::Queued);
        assert_eq!(sender.offer(&vec![0; 1]), Offer::Dropped);
        assert_eq!(reader.try_recv().map(|m| m.len()), Some(500));
        assert!(reader.try_recv().is_none());
        assert_eq!(reader.dropped(), 1);
        // Taking the big message freed its bytes: the queue admits again.
        assert_eq!(sender.offer(&vec![0; 60]), Offer::Queued);
        assert_eq!(sender.offer(&vec![0; 40]), Offer::Queued);
        assert_eq!(sender.offer(&vec![0; 1]), Offer::Dropped);
    }

    #[tokio::test]
    async fn the_message_bound_applies_without_a_burst_allowance() {
        let (sender, mut reader) = queue(limits(2, 1 << 20, 0));
        assert_eq!(sender.offer(&vec![1]), Offer::Queued);
        assert_eq!(sender.offer(&vec![2]), Offer::Queued);
        assert_eq!(sender.offer(&vec![3]), Offer::Dropped);
        assert_eq!(reader.recv().await, Some(vec![1]));
        assert_eq!(sender.offer(&vec![4]), Offer::Queued);
        assert_eq!(reader.try_recv(), Some(vec![2]));
        assert_eq!(reader.try_recv(), Some(vec![4]));
        assert_eq!(sender.dropped(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_that_stays_behind_past_the_timeout_is_too_slow() {
        let (sender, mut reader) = queue(limits(2, 1 << 20, 0));
        for _ in 0..2 {
            assert_eq!(sender.offer(&vec![0; 10]), Offer::Queued);
        }
        // The first drop starts the clock; later drops within the timeout are plain drops.
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(sender.offer(&vec![0; 10]), Offer::TooSlow);
        assert_eq!(sender.dropped(), 3);
        // Taking a message stops the clock: the next drop starts it again.
        assert!(reader.try_recv().is_some());
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Queued);
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_drop_is_never_too_slow_however_long_ago() {
        let (sender, _reader) = queue(limits(1, 1 << 20, 0));
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Queued);
        tokio::time::advance(Duration::from_secs(60)).await;
        // The first drop only starts the clock, even long after the queue filled up.
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_behind_resolves_only_after_the_timeout_and_not_while_taking() {
        let (sender, mut reader) = queue(limits(1, 1 << 20, 0));
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Queued);
        let started = Instant::now();
        // Not behind: no drop yet, so it does not resolve.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), reader.stays_behind())
                .await
                .is_err()
        );
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
        let behind_at = Instant::now();
        reader.stays_behind().await;
        let waited = behind_at.elapsed();
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert!(waited <= Duration::from_secs(10) + Duration::from_millis(2_500));
        assert!(started.elapsed() >= Duration::from_secs(40));
        // Taking a message clears it.
        assert!(reader.try_recv().is_some());
        assert!(
            tokio::time::timeout(Duration::from_secs(30), reader.stays_behind())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_slow_reader_timeout_a_queue_is_never_too_slow() {
        let never = QueueLimits {
            slow_reader_timeout: Duration::MAX,
            ..limits(1, 1 << 20, 0)
        };
        let (sender, _reader) = queue(never);
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Queued);
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Dropped);
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_the_maximum_and_frees_its_bytes() {
        let (sender, mut reader) = queue(limits(10, 100, 0));
        for i in 0..5u8 {
            assert_eq!(sender.offer(&vec![i; 20]), Offer::Queued);
        }
        assert_eq!(
            sender.offer(&vec![9; 1]),
            Offer::Dropped,
            "100 bytes queued"
        );
        let mut batch = Vec::new();
        assert_eq!(reader.recv_batch(&mut batch, 3).await, 3);
        assert_eq!(batch.iter().map(|m| m[0]).collect::<Vec<_>>(), [0, 1, 2]);
        // The taken bytes are free again.
        assert_eq!(sender.offer(&vec![5; 60]), Offer::Queued);
        batch.clear();
        assert_eq!(reader.try_recv_batch(&mut batch, 100), 3);
        assert_eq!(batch.iter().map(|m| m[0]).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(reader.try_recv_batch(&mut batch, 100), 0);
        assert_eq!(sender.offer(&vec![6; 100]), Offer::Queued);
    }

    #[tokio::test]
    async fn a_gone_reader_is_neither_queued_nor_counted_and_a_gone_sender_ends_the_reader() {
        let (sender, reader) = queue(limits(1, 100, 0));
        drop(reader);
        assert_eq!(sender.offer(&vec![0; 10]), Offer::Closed);
        assert_eq!(sender.dropped(), 0);

        let (sender, mut reader) = queue(limits(4, 100, 0));
        assert_eq!(sender.offer(&vec![1]), Offer::Queued);
        drop(sender);
        let mut batch = Vec::new();
        assert_eq!(reader.recv_batch(&mut batch, 8).await, 1);
        assert_eq!(reader.recv_batch(&mut batch, 8).await, 0);
        assert_eq!(reader.recv().await, None);
    }
}
