//! The store: every booking, user, usage total, resource state, the lock and the manifest,
//! in SQLite (embedded default, `BOOK_PERSIST_DIR`) or PostgreSQL (`BOOK_DATABASE_URL`),
//! through one sqlx code path with versioned migrations (`migrations/sqlite`,
//! `migrations/postgres`). Every change is committed before the call returns.
//!
//! Exclusivity is the database's job: a booking's diary entry (`reservations`) is written in
//! the same transaction as its checks; PostgreSQL also holds an exclusion constraint, so two
//! server processes racing for one slot cannot both succeed.
//!
//! Owner: store helper.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::interval::{Filter, Interval};
use crate::manifest::Manifest;
use crate::model::{Booking, Counts, LockState, PolicyStatus, ResourceState, User};
use crate::timefmt::Nanos;

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// `book.sqlite` in this directory (created if missing).
    SqliteDir(PathBuf),
    /// A `postgres://` (or `sqlite://`) URL.
    Url(String),
}

/// Behaviour the server's settings choose.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// `BOOK_DISABLE_CANCEL_AFTER_USE`: a started booking cannot be cancelled.
    pub disable_cancel_after_use: bool,
}

/// Why a store call failed. The server maps each to the reference's status and body.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Something named does not exist; the text is the reference's (`user not found`,
    /// `resource r-a not found`, `not found`).
    #[error("{0}")]
    NotFound(String),
    /// A rule refused (booking checks, cancellation and activity checks); the text is the
    /// reference's message without any route prefix.
    #[error("{0}")]
    Refused(String),
    /// No manifest has been loaded yet.
    #[error("no manifest loaded")]
    NoManifest,
    /// The database failed; nothing was changed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed at start-up.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The manifest as loaded: the document plus its compiled windows.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    pub filters: BTreeMap<String, Filter>,
}

/// A booking request.
#[derive(Debug, Clone)]
pub struct BookingRequest {
    /// A fresh UUIDv4 for user bookings; the given name for admin import.
    pub name: String,
    pub slot: String,
    pub user: String,
    pub when: Interval,
    /// On for the user route; off for admin import (missing users are created).
    pub group_check: bool,
}

/// A cancelled booking and the relay deny calls it queued (started bookings only).
#[derive(Debug, Clone)]
pub struct Cancelled {
    pub booking: Booking,
    pub deny_calls: Vec<DenyCall>,
}

/// One queued relay deny call (§4.7): `POST {relay_url}/bids/deny?bid={booking}&exp={exp}`,
/// retried with backoff until it succeeds or the booking ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyCall {
    pub id: i64,
    pub relay_url: String,
    pub booking: String,
    /// Booking end, unix seconds.
    pub exp: i64,
    pub attempts: i64,
    pub next_attempt_at: Nanos,
    /// `pending`, `ok` or `failed` (gave up at the booking's end).
    pub state: String,
    pub last_error: Option<String>,
}

/// What a bulk replacement of current bookings did (§3.10, §7 item 9 fixed: drops are
/// reported).
#[derive(Debug, Clone, Default)]
pub struct ReplaceReport {
    /// Bookings re-made.
    pub kept: Vec<String>,
    /// `(name, reason)` for every booking the rules refused.
    pub dropped: Vec<(String, String)>,
}

/// What a manifest replacement did (§7 item 8 fixed: diaries are kept; bookings whose slot
/// disappeared are cancelled and listed).
#[derive(Debug, Clone, Default)]
pub struct ManifestReport {
    pub cancelled: Vec<String>,
}

/// The booking store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<()>,
}

#[allow(unused_variables)]
impl Store {
    /// Open (and migrate) the store.
    pub async fn open(location: &Location, options: StoreOptions) -> Result<Store, StoreError> {
        todo!("store")
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        todo!("store {:?}", self.inner)
    }

    /// A round trip to the database, for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        todo!("store")
    }

    // ---- manifest, lock, counts, resources ----

    /// The current manifest (`NoManifest` before the first replace).
    pub async fn manifest(&self) -> Result<Arc<LoadedManifest>, StoreError> {
        todo!("store")
    }

    /// Check, then replace the manifest. Resources are set available with reason
    /// `Loaded at <RFC3339 now>`; diary entries of bookings whose slot still exists are kept.
    pub async fn replace_manifest(
        &self,
        manifest: Manifest,
        now: Nanos,
    ) -> Result<ManifestReport, StoreError> {
        todo!("store")
    }

    /// The lock and its message (start: unlocked, `Welcome to the interval booking store`).
    pub async fn lock_state(&self) -> Result<LockState, StoreError> {
        todo!("store")
    }

    /// Set the lock; the message only when given.
    pub async fn set_lock(
        &self,
        locked: bool,
        message: Option<&str>,
    ) -> Result<LockState, StoreError> {
        todo!("store")
    }

    /// Counts for the admin status.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        todo!("store")
    }

    /// `resource <r> not found` when missing.
    pub async fn resource_state(&self, resource: &str) -> Result<ResourceState, StoreError> {
        todo!("store")
    }

    /// Set a resource's availability and reason.
    pub async fn set_resource_state(
        &self,
        resource: &str,
        state: ResourceState,
    ) -> Result<(), StoreError> {
        todo!("store")
    }

    // ---- users and groups ----

    /// Join a group (creates the user; idempotent). The caller has checked the group exists.
    pub async fn join_group(&self, user: &str, group: &str) -> Result<(), StoreError> {
        todo!("store")
    }

    /// The user's groups (`user not found`).
    pub async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        todo!("store")
    }

    /// Every user, for the admin export.
    pub async fn users(&self) -> Result<BTreeMap<String, User>, StoreError> {
        todo!("store")
    }

    // ---- bookings ----

    /// Free gaps of a slot (§3.3), unpaginated. `slot <s> not found`; an unavailable
    /// resource is `Refused("not available because unavailable because <reason>")`.
    pub async fn availability(&self, slot: &str, now: Nanos) -> Result<Vec<Interval>, StoreError> {
        todo!("store")
    }

    /// Check and make a booking in one transaction (`Refused(<rule message>)`).
    pub async fn make_booking(
        &self,
        request: BookingRequest,
        now: Nanos,
    ) -> Result<Booking, StoreError> {
        todo!("store")
    }

    /// The user's current bookings that have not ended (`user not found`).
    pub async fn bookings_of(&self, user: &str, now: Nanos) -> Result<Vec<Booking>, StoreError> {
        todo!("store")
    }

    /// The user's old bookings (ended or cancelled) (`user not found`).
    pub async fn old_bookings_of(
        &self,
        user: &str,
        now: Nanos,
    ) -> Result<Vec<Booking>, StoreError> {
        todo!("store")
    }

    /// The user's standing under a policy (`user not found` / `policy not found`).
    pub async fn policy_status(
        &self,
        user: &str,
        policy: &str,
        now: Nanos,
    ) -> Result<PolicyStatus, StoreError> {
        todo!("store")
    }

    /// Mark a booking started for an activity (§3.8) after `rules::check_activity`.
    /// `owner` is the path user for non-admin tokens: a booking of someone else is
    /// `NotFound("not found")` (§7 item 6 fixed).
    pub async fn start_activity(
        &self,
        owner: &str,
        booking: &str,
        now: Nanos,
    ) -> Result<Booking, StoreError> {
        todo!("store")
    }

    /// Cancel a current booking (§3.6): owner check as for activities; `not found`,
    /// `cannot cancel booking that has already ended`, `cannot cancel booking that has
    /// already been used` (cancel-after-use disabled). Refunds usage (§3.5). A started
    /// booking queues one deny call per distinct stream URL of its resource, in the same
    /// transaction.
    pub async fn cancel_booking(
        &self,
        owner: &str,
        booking: &str,
        by: &str,
        now: Nanos,
    ) -> Result<Cancelled, StoreError> {
        todo!("store")
    }

    /// Cancel every unstarted booking whose grace period has passed (§3.7), charging grace +
    /// penalty, unless the store is locked (§7 item 15 fixed). Returns the cancelled ones.
    pub async fn cancel_no_shows(&self, now: Nanos) -> Result<Vec<Booking>, StoreError> {
        todo!("store")
    }

    /// Move ended bookings to old bookings and drop ended diary entries (§3.9).
    pub async fn prune(&self, now: Nanos) -> Result<u64, StoreError> {
        todo!("store")
    }

    /// Every current booking.
    pub async fn all_bookings(&self) -> Result<Vec<Booking>, StoreError> {
        todo!("store")
    }

    /// Every old booking.
    pub async fn all_old_bookings(&self) -> Result<Vec<Booking>, StoreError> {
        todo!("store")
    }

    /// Replace current bookings (§3.10) and report what was dropped.
    pub async fn replace_bookings(
        &self,
        bookings: Vec<Booking>,
        now: Nanos,
    ) -> Result<ReplaceReport, StoreError> {
        todo!("store")
    }

    /// Replace old bookings (§3.10).
    pub async fn replace_old_bookings(
        &self,
        bookings: Vec<Booking>,
        now: Nanos,
    ) -> Result<(), StoreError> {
        todo!("store")
    }

    // ---- relay deny calls (§4.7) ----

    /// Pending deny calls whose next attempt is due.
    pub async fn due_deny_calls(
        &self,
        now: Nanos,
        limit: i64,
    ) -> Result<Vec<DenyCall>, StoreError> {
        todo!("store")
    }

    /// Record an attempt: success, or failure with the next attempt time (`None`: give up,
    /// state `failed`).
    pub async fn record_deny_attempt(
        &self,
        id: i64,
        error: Option<&str>,
        retry_at: Option<Nanos>,
    ) -> Result<(), StoreError> {
        todo!("store")
    }

    /// Recent deny calls (newest first), for `/admin/status`.
    pub async fn deny_calls(&self, limit: i64) -> Result<Vec<DenyCall>, StoreError> {
        todo!("store")
    }
}
