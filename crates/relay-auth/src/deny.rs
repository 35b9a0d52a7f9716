//! The booking deny/allow lists.
//!
//! `POST /bids/deny` puts a booking id on the deny list (so it can obtain no more codes and
//! its live connections are closed); `POST /bids/allow` takes it off again. Both lists hold
//! an expiry (unix seconds) after which a periodic prune forgets the entry.

use std::collections::HashMap;
use std::sync::Mutex;

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
}
