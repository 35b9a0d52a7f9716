//! The runtime records the store keeps and the API returns: bookings, users, resource
//! state, status. Their JSON is the reference's (alphabetical keys, false booleans and empty
//! strings left out, three-digit timestamps).
//!
//! Owner: domain helper (serialisation); the store fills them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::interval::Interval;
use crate::timefmt::{DurationNanos, Nanos};

/// One booking, current or old.
///
/// JSON (`Serialize`): `{"cancelled":true?, "cancelled_at":"<time or zero>", "name", "policy",
/// "slot", "started":true?, "started_at":"<time or zero>", "user", "when":{"end","start"}}`,
/// keys alphabetical, false booleans omitted, `cancelled_at`/`started_at` always present
/// (the zero time `0001-01-01T00:00:00.000Z` when unset). `Deserialize` accepts that form
/// (admin import); unknown fields are ignored and missing ones are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Booking {
    pub name: String,
    pub policy: String,
    pub slot: String,
    pub user: String,
    pub when: Interval,
    pub cancelled: bool,
    pub cancelled_at: Option<Nanos>,
    /// Subject of the token, `admin`, `auto-grace-check`, `replaceManifest`. Not on the wire.
    pub cancelled_by: Option<String>,
    pub started: bool,
    pub started_at: Option<Nanos>,
    /// Never set by the reference; kept for import/export fidelity.
    pub unfulfilled: bool,
}

impl Serialize for Booking {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        todo!("domain: {}", serializer.is_human_readable())
    }
}

impl<'de> Deserialize<'de> for Booking {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        todo!("domain: {}", deserializer.is_human_readable())
    }
}

/// A user's record (admin export: `bookings`, `groups`, `old_bookings`, `usage` with
/// humanised durations).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub bookings: Vec<String>,
    pub old_bookings: Vec<String>,
    pub groups: Vec<String>,
    /// Usage charged per policy name.
    pub usage: BTreeMap<String, DurationNanos>,
}

/// Runtime state of a resource (not in the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub available: bool,
    pub reason: String,
}

/// Store-wide counts for `StoreStatusAdmin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub bookings: i64,
    pub descriptions: i64,
    pub filters: i64,
    pub old_bookings: i64,
    pub policies: i64,
    pub resources: i64,
    pub slots: i64,
    pub streams: i64,
    pub uis: i64,
    pub ui_sets: i64,
    pub users: i64,
    pub windows: i64,
}

/// The lock and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub locked: bool,
    pub message: String,
}

/// A user's standing under one policy (`PolicyStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyStatus {
    pub current_bookings: i64,
    pub old_bookings: i64,
    pub usage: DurationNanos,
}
