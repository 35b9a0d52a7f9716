//! One-time codes: the access API stores a [`Ticket`] under a random code, and the
//! websocket upgrade exchanges the code for it exactly once.
//!
//! Unlike the reference, the TTL is enforced at exchange (not only by a periodic sweep),
//! every operation takes the lock, and a denied booking's unused codes are deleted.

use crate::Ticket;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The reference's code lifetime.
pub const DEFAULT_CODE_TTL: Duration = Duration::from_secs(30);

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

struct Entry {
    ticket: Ticket,
    expires_at: Instant,
}

/// Codes waiting to be exchanged, each valid once and for a limited time.
pub struct CodeStore {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl CodeStore {
    /// A store whose codes live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        CodeStore {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long a code lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // operation is a single insert/remove/retain), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store `ticket` under a fresh random code (a UUIDv4 string) and return the code.
    pub fn submit(&self, ticket: Ticket, now: Instant) -> String {
        let code = uuid::Uuid::new_v4().to_string();
        let entry = Entry {
            ticket,
            expires_at: now + self.ttl,
        };
        self.lock().insert(code.clone(), entry);
        code
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
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.ticket.booking_id() != booking_id);
        before - entries.len()
    }

    /// Remove expired codes; returns how many. Exchange already refuses them, this only
    /// frees their memory.
    pub fn prune(&self, now: Instant) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| now < e.expires_at);
        before - entries.len()
    }

    /// How many codes are waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
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
        let code = store.submit(ticket("b"), now);
        assert!(code.len() >= 36);
        assert_eq!(store.exchange(&code, now), Ok(ticket("b")));
        assert_eq!(store.exchange(&code, now), Err(CodeError::Unknown));
        assert_eq!(CodeError::Unknown.to_string(), "invalid code");
    }

    #[test]
    fn ttl_is_enforced_at_exchange_not_by_a_sweep() {
        let store = CodeStore::new(Duration::from_secs(1));
        let now = Instant::now();
        let code = store.submit(ticket("b"), now);
        assert_eq!(
            store.exchange(&code, now + Duration::from_secs(1)),
            Err(CodeError::Expired)
        );
        let code = store.submit(ticket("b"), now);
        assert!(store
            .exchange(&code, now + Duration::from_millis(999))
            .is_ok());
    }

    #[test]
    fn codes_are_distinct_and_prune_counts() {
        let store = CodeStore::new(Duration::from_secs(1));
        let now = Instant::now();
        let a = store.submit(ticket("b"), now);
        let b = store.submit(ticket("b"), now);
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
        let keep = store.submit(ticket("keep"), now);
        let gone = store.submit(ticket("gone"), now);
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
                        let c = store.submit(ticket(&format!("b{i}")), now);
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
}
