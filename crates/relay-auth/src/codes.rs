//! One-time codes: the access API stores a [`Ticket`] under a random code, and the
//! websocket upgrade exchanges the code for it exactly once.
//!
//! Unlike the reference, the TTL is enforced at exchange (not only by a periodic sweep),
//! every operation takes the lock, and a denied booking's unused codes are deleted.

use crate::Ticket;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The reference's code lifetime.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(30);
/// Default cap on one booking's outstanding codes (`RELAY_MAX_CODES_PER_BOOKING`). A
/// browser needs one per connection it is opening (a few); the cap stops one valid token
/// from filling the store.
pub const DEFAULT_MAX_CODES_PER_BOOKING: usize = 64;
/// Default cap on outstanding codes in total (`RELAY_MAX_CODES`): tens of megabytes at
/// most, however many tokens are used.
pub const DEFAULT_MAX_CODES: usize = 100_000;

/// Why a code could not be exchanged. The reference says `invalid code` for every case;
/// the variants keep that text while letting logs say more.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    /// No such code is waiting: never issued, already exchanged, or deleted with its
    /// booking.
    #[error("invalid code")]
    Unknown,
    /// The code existed but its TTL had passed; it is consumed all the same.
    #[error("invalid code (expired)")]
    Expired,
}

/// Why no code was issued: a cap on outstanding (unexchanged, unexpired) codes was reached.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SubmitError {
    /// The ticket's booking already has this many codes waiting.
    #[error("booking already has {0} unused codes waiting")]
    BookingFull(usize),
    /// The store already holds this many codes.
    #[error("the relay already has {0} unused codes waiting")]
    StoreFull(usize),
}

/// Caps on outstanding codes. Codes without a booking id share one booking's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLimits {
    /// Most codes waiting for one booking id.
    pub per_booking: usize,
    /// Most codes waiting in total.
    pub total: usize,
}

impl Default for CodeLimits {
    fn default() -> Self {
        CodeLimits {
            per_booking: DEFAULT_MAX_CODES_PER_BOOKING,
            total: DEFAULT_MAX_CODES,
        }
    }
}

struct Entry {
    ticket: Ticket,
    expires_at: Instant,
}

#[derive(Default)]
struct Codes {
    entries: HashMap<String, Entry>,
    /// Codes in the order they were issued (so expiry order, the TTL being fixed), with
    /// their expiry; may still name codes already exchanged or deleted.
    order: VecDeque<(Instant, String)>,
    /// Codes waiting per booking id.
    per_booking: HashMap<String, usize>,
}

impl Codes {
    fn remove(&mut self, code: &str) -> Option<Entry> {
        let entry = self.entries.remove(code)?;
        let bid = entry.ticket.booking_id();
        if let Some(n) = self.per_booking.get_mut(bid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_booking.remove(bid);
            }
        }
        Some(entry)
    }

    /// Free the codes that expired by `now`, oldest first; stops at the first live one, so
    /// the cost is proportional to what is freed. Returns how many were freed.
    fn prune_front(&mut self, now: Instant) -> usize {
        let mut freed = 0;
        while let Some((expires_at, _)) = self.order.front() {
            if now < *expires_at {
                break;
            }
            if let Some((_, code)) = self.order.pop_front() {
                freed += usize::from(self.remove(&code).is_some());
            }
        }
        // Exchanged codes leave their name in `order` until they would have expired;
        // compact when those dominate, so `order` stays within a constant of `entries`.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order.retain(|(_, code)| entries.contains_key(code));
        }
        freed
    }
}

/// Codes waiting to be exchanged, each valid once and for a limited time, with caps on
/// how many may wait per booking and in total.
pub struct CodeStore {
    ttl: Duration,
    limits: CodeLimits,
    codes: Mutex<Codes>,
}

impl CodeStore {
    /// A store whose codes live for `ttl`, with the default [`CodeLimits`].
    pub fn new(ttl: Duration) -> Self {
        Self::with_limits(ttl, CodeLimits::default())
    }

    /// A store whose codes live for `ttl`, capped by `limits`.
    pub fn with_limits(ttl: Duration, limits: CodeLimits) -> Self {
        CodeStore {
            ttl,
            limits,
            codes: Mutex::new(Codes::default()),
        }
    }

    /// How long a code lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The caps on waiting codes.
    pub fn limits(&self) -> CodeLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Codes> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters (a count at worst one off until its code expires), so a poisoned
        // lock is still usable.
        self.codes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store `ticket` under a fresh random code (a UUIDv4 string) and return the code.
    /// Expired codes are freed first; then a booking (or the store) at its cap gets a
    /// [`SubmitError`] and nothing is stored.
    pub fn submit(&self, ticket: Ticket, now: Instant) -> Result<String, SubmitError> {
        let mut codes = self.lock();
        codes.prune_front(now);
        if codes.entries.len() >= self.limits.total {
            return Err(SubmitError::StoreFull(self.limits.total));
        }
        let waiting = codes
            .per_booking
            .get(ticket.booking_id())
            .copied()
            .unwrap_or(0);
        if waiting >= self.limits.per_booking {
            return Err(SubmitError::BookingFull(self.limits.per_booking));
        }
        let code = uuid::Uuid::new_v4().to_string();
        let expires_at = now + self.ttl;
        *codes
            .per_booking
            .entry(ticket.booking_id().to_owned())
            .or_insert(0) += 1;
        codes.order.push_back((expires_at, code.clone()));
        codes
            .entries
            .insert(code.clone(), Entry { ticket, expires_at });
        Ok(code)
    }

    /// Exchange `code` for its ticket. The code is consumed whether or not it had expired.
    pub fn exchange(&self, code: &str, now: Instant) -> Result<Ticket, CodeError> {
        let entry = self.lock().remove(code).ok_or(CodeError::Unknown)?;
        if now >= entry.expires_at {
            return Err(CodeError::Expired);
        }
        Ok(entry.ticket)
    }

    /// Delete every unused code whose ticket carries `booking_id`; returns how many.
    pub fn delete_by_booking_id(&self, booking_id: &str) -> usize {
        let mut codes = self.lock();
        let before = codes.entries.len();
        codes
            .entries
            .retain(|_, e| e.ticket.booking_id() != booking_id);
        codes.per_booking.remove(booking_id);
        before - codes.entries.len()
    }

    /// Remove expired codes; returns how many. Exchange already refuses them, and
    /// [`CodeStore::submit`] frees them as it goes; this frees the rest when nothing is
    /// being issued.
    pub fn prune(&self, now: Instant) -> usize {
        self.lock().prune_front(now)
    }

    /// How many codes are waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// How many codes are waiting for `booking_id`.
    pub fn waiting_for(&self, booking_id: &str) -> usize {
        self.lock()
            .per_booking
            .get(booking_id)
            .copied()
            .unwrap_or(0)
    }

    /// True when no codes are waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for CodeStore {
    fn default() -> Self {
        CodeStore::new(DEFAULT_CODE_TTL)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Claims;
    use relay_common::connection::ConnectionType;

    fn ticket(bid: &str) -> Ticket {
        let token = Claims {
            booking_id: bid.into(),
            ..Claims::default()
        };
        Ticket::grant(&token, ConnectionType::Session, "t", "ws://relay")
    }

    #[test]
    fn exchange_once_returns_the_token_then_fails() {
        let store = CodeStore::default();
        let now = Instant::now();
        let code = store.submit(ticket("b"), now).unwrap();
        assert!(code.len() >= 36);
        assert_eq!(store.exchange(&code, now), Ok(ticket("b")));
        assert_eq!(store.exchange(&code, now), Err(CodeError::Unknown));
        assert_eq!(CodeError::Unknown.to_string(), "invalid code");
    }

    #[test]
    fn ttl_is_enforced_at_exchange_not_by_a_sweep() {
        let store = CodeStore::new(Duration::from_secs(1));
        let now = Instant::now();
        let code = store.submit(ticket("b"), now).unwrap();
        assert_eq!(
            store.exchange(&code, now + Duration::from_secs(1)),
            Err(CodeError::Expired)
        );
        let code = store.submit(ticket("b"), now).unwrap();
        assert!(store
            .exchange(&code, now + Duration::from_millis(999))
            .is_ok());
    }

    #[test]
    fn codes_are_distinct_and_prune_counts() {
        let store = CodeStore::new(Duration::from_secs(1));
        let now = Instant::now();
        let a = store.submit(ticket("b"), now).unwrap();
        let b = store.submit(ticket("b"), now).unwrap();
        assert_ne!(a, b);
        assert_eq!(store.len(), 2);
        assert_eq!(store.prune(now + Duration::from_millis(500)), 0);
        assert_eq!(store.prune(now + Duration::from_secs(3)), 2);
        assert!(store.is_empty());
    }

    #[test]
    fn delete_by_booking_id_removes_only_that_booking() {
        let store = CodeStore::default();
        let now = Instant::now();
        let keep = store.submit(ticket("keep"), now).unwrap();
        let gone = store.submit(ticket("gone"), now).unwrap();
        assert_eq!(store.delete_by_booking_id("gone"), 1);
        assert_eq!(store.exchange(&gone, now), Err(CodeError::Unknown));
        assert_eq!(store.exchange(&keep, now), Ok(ticket("keep")));
    }

    #[test]
    fn concurrent_use_is_safe() {
        let store = std::sync::Arc::new(CodeStore::default());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let now = Instant::now();
                        let Ok(c) = store.submit(ticket(&format!("b{i}")), now) else {
                            continue;
                        };
                        store.delete_by_booking_id("b0");
                        let _ = store.len();
                        let _ = store.exchange(&c, now);
                    }
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().is_ok());
        }
        assert!(store.is_empty());
    }

    fn small(per_booking: usize, total: usize) -> CodeStore {
        CodeStore::with_limits(Duration::from_secs(30), CodeLimits { per_booking, total })
    }

    #[test]
    fn a_booking_at_its_cap_is_refused_and_others_are_not() {
        let store = small(3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(store.submit(ticket("busy"), now).is_ok());
        }
        assert_eq!(
            store.submit(ticket("busy"), now),
            Err(SubmitError::BookingFull(3))
        );
        assert!(store.submit(ticket("other"), now).is_ok());
        assert_eq!(store.waiting_for("busy"), 3);
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn exchanging_or_deleting_frees_a_place_under_the_cap() {
        let store = small(2, 100);
        let now = Instant::now();
        let a = store.submit(ticket("b"), now).unwrap();
        store.submit(ticket("b"), now).unwrap();
        assert!(store.submit(ticket("b"), now).is_err());
        assert!(store.exchange(&a, now).is_ok());
        assert!(store.submit(ticket("b"), now).is_ok());
        assert_eq!(store.delete_by_booking_id("b"), 2);
        assert_eq!(store.waiting_for("b"), 0);
        assert!(store.submit(ticket("b"), now).is_ok());
    }

    #[test]
    fn the_total_cap_holds_across_bookings() {
        let store = small(10, 5);
        let now = Instant::now();
        for i in 0..5 {
            assert!(store.submit(ticket(&format!("b{i}")), now).is_ok());
        }
        assert_eq!(
            store.submit(ticket("b9"), now),
            Err(SubmitError::StoreFull(5))
        );
        assert_eq!(store.len(), 5);
    }

    /// One token issuing codes at a high rate for far longer than the TTL never holds more
    /// than the cap, and expired codes are freed by the inserts themselves (no sweep runs).
    #[test]
    fn expired_codes_are_freed_on_insert_so_a_steady_caller_is_never_refused() {
        let store = small(4, 1000);
        let start = Instant::now();
        for step in 0..10_000u64 {
            // One code every 10 s with a 30 s TTL: three waiting at most. Without pruning
            // on insert the fifth would hit the cap.
            let now = start + Duration::from_secs(step * 10);
            assert!(
                store.submit(ticket("b"), now).is_ok(),
                "refused at step {step}"
            );
            assert!(store.len() <= 3);
        }
        let later = start + Duration::from_secs(200_000);
        assert!(store.submit(ticket("b"), later).is_ok());
        assert_eq!(
            store.len(),
            1,
            "every expired code was freed by that insert"
        );
    }

    #[test]
    fn exchanged_codes_do_not_pile_up_in_the_order_queue() {
        let store = small(4, 1000);
        let now = Instant::now();
        for _ in 0..100_000 {
            let code = store.submit(ticket("b"), now).unwrap();
            assert!(store.exchange(&code, now).is_ok());
        }
        assert!(store.is_empty());
        assert!(store.lock().order.len() <= 1025);
    }
}
