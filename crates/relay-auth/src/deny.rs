//! The booking deny/allow lists.
//!
//! `POST /bids/deny` puts a booking id on the deny list (so it can obtain no more codes and
//! its live connections are closed); `POST /bids/allow` takes it off again. Both lists hold
//! an expiry (unix seconds) after which a periodic prune forgets the entry.
//!
//! A session request records its booking on the allow list with [`DenyStore::admit`],
//! which refuses a denied booking and never removes a deny entry, in one step under the
//! lock: only the admin's [`DenyStore::allow`] may undo a deny.

use std::collections::HashMap;
use std::sync::Mutex;

/// [`DenyStore::admit`] refused: the booking is on the deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("booking is on the deny list")]
pub struct BookingDenied;

#[derive(Default)]
struct Lists {
    deny: HashMap<String, i64>,
    allow: HashMap<String, i64>,
}

/// Deny and allow lists of booking ids, each entry with an expiry in unix seconds.
#[derive(Default)]
pub struct DenyStore {
    lists: Mutex<Lists>,
}

impl DenyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lists> {
        // Every operation is a single map update, so a poisoned lock is still consistent.
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deny `booking_id` until `exp`; it leaves the allow list.
    pub fn deny(&self, booking_id: &str, exp: i64) {
        let mut l = self.lock();
        l.allow.remove(booking_id);
        l.deny.insert(booking_id.to_owned(), exp);
    }

    /// Allow `booking_id` until `exp`; it leaves the deny list.
    pub fn allow(&self, booking_id: &str, exp: i64) {
        let mut l = self.lock();
        l.deny.remove(booking_id);
        l.allow.insert(booking_id.to_owned(), exp);
    }

    /// Refuse `booking_id` if it is denied, else record it as allowed until `exp`; one
    /// atomic step that never touches the deny list, so a session request racing a deny
    /// can never undo it (the reference checked, then called `allow`, which removed the
    /// deny entry).
    pub fn admit(&self, booking_id: &str, exp: i64) -> Result<(), BookingDenied> {
        let mut l = self.lock();
        if l.deny.contains_key(booking_id) {
            return Err(BookingDenied);
        }
        l.allow.insert(booking_id.to_owned(), exp);
        Ok(())
    }

    /// True when `booking_id` is on the deny list (until it is pruned).
    pub fn is_denied(&self, booking_id: &str) -> bool {
        self.lock().deny.contains_key(booking_id)
    }

    /// Forget entries that expired strictly before `now`; returns how many were removed.
    pub fn prune(&self, now: i64) -> usize {
        let mut l = self.lock();
        let before = l.deny.len() + l.allow.len();
        l.deny.retain(|_, exp| *exp >= now);
        l.allow.retain(|_, exp| *exp >= now);
        before - l.deny.len() - l.allow.len()
    }

    /// Denied booking ids with their expiries, sorted by id (what the server saves).
    pub fn denied_entries(&self) -> Vec<(String, i64)> {
        let mut entries: Vec<(String, i64)> = self
            .lock()
            .deny
            .iter()
            .map(|(id, exp)| (id.clone(), *exp))
            .collect();
        entries.sort();
        entries
    }

    /// Denied booking ids, sorted.
    pub fn deny_list(&self) -> Vec<String> {
        sorted_keys(&self.lock().deny)
    }

    /// Allowed booking ids, sorted.
    pub fn allow_list(&self) -> Vec<String> {
        sorted_keys(&self.lock().allow)
    }
}

fn sorted_keys(map: &HashMap<String, i64>) -> Vec<String> {
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's TestDeny, with time passed in rather than mocked.
    #[test]
    fn lists_and_pruning_follow_the_reference() {
        let store = DenyStore::new();
        let now = 1_000;
        store.allow("a", now + 5);
        store.allow("b", now + 20);
        store.deny("c", now + 5);
        store.deny("d", now + 20);
        assert_eq!(store.allow_list(), ["a", "b"]);
        assert_eq!(store.deny_list(), ["c", "d"]);
        assert!(store.is_denied("c"));
        assert!(!store.is_denied("a"));

        store.deny("a", now + 5);
        assert_eq!(store.allow_list(), ["b"]);
        assert!(store.is_denied("a"));
        store.allow("a", now + 5);
        assert!(!store.is_denied("a"));

        assert_eq!(store.prune(now + 11), 2);
        assert_eq!(store.allow_list(), ["b"]);
        assert_eq!(store.deny_list(), ["d"]);
        // exp == now is kept, as in the reference (strictly-less pruning).
        assert_eq!(store.prune(now + 20), 0);
    }

    #[test]
    fn admit_refuses_a_denied_booking_and_never_removes_the_deny() {
        let store = DenyStore::new();
        assert_eq!(store.admit("a", 100), Ok(()));
        assert_eq!(store.allow_list(), ["a"]);
        store.deny("a", 200);
        assert_eq!(store.admit("a", 100), Err(BookingDenied));
        assert!(store.is_denied("a"), "admit must never undo a deny");
        assert_eq!(store.deny_list(), ["a"]);
        assert!(store.allow_list().is_empty());
        assert_eq!(store.denied_entries(), [("a".to_owned(), 200)]);
        // Only the admin's allow takes it off.
        store.allow("a", 300);
        assert_eq!(store.admit("a", 300), Ok(()));
    }

    /// Admissions racing a deny on other threads: whatever the interleaving, the booking
    /// ends denied, and every admission after the deny returned is refused.
    #[test]
    fn admissions_racing_a_deny_never_undo_it() {
        for round in 0..200 {
            let store = std::sync::Arc::new(DenyStore::new());
            let bid = format!("b{round}");
            let denied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let admitters: Vec<_> = (0..3)
                .map(|_| {
                    let (store, bid, denied) = (store.clone(), bid.clone(), denied.clone());
                    std::thread::spawn(move || {
                        for _ in 0..200 {
                            let was_denied = denied.load(std::sync::atomic::Ordering::SeqCst);
                            let admitted = store.admit(&bid, 10).is_ok();
                            assert!(!(was_denied && admitted), "admitted after the deny");
                        }
                    })
                })
                .collect();
            store.deny(&bid, 20);
            denied.store(true, std::sync::atomic::Ordering::SeqCst);
            for a in admitters {
                assert!(a.join().is_ok());
            }
            assert!(store.is_denied(&bid), "round {round}: the deny was undone");
        }
    }
}
