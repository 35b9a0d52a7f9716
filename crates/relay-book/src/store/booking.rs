//! Bookings: availability, the booking transaction (facts gathered, `rules::check_booking`,
//! write), reads, activities, cancellation with its refund and queued deny calls, grace
//! cancellation of no-shows, and pruning. Every per-user and per-resource query is bounded by
//! an index (`bookings_user`, `reservations_resource_end`, `bookings_grace`,
//! `bookings_current_end`), so none of them grows with old bookings.

use sqlx::AnyConnection;
use sqlx::Row;

use super::db::{self, Backend, StoredBooking, BOOKING_COLUMNS};
use super::{BookingRequest, Cancelled, DenyCall, LoadedManifest, Store, StoreError};
use crate::interval::{self, Interval};
use crate::model::{Booking, PolicyStatus, ResourceState};
use crate::rules::{self, BookingFacts, GroupCheck};
use crate::timefmt::{Nanos, DISTANT_FUTURE, SECOND};

/// Who cancels no-shows.
const GRACE_CANCELLER: &str = "auto-grace-check";

impl Store {
    /// Free gaps of a slot (§3.3), unpaginated. `slot <s> not found`; an unavailable
    /// resource is `Refused("not available because unavailable because <reason>")`.
    pub async fn availability(&self, slot: &str, now: Nanos) -> Result<Vec<Interval>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        let loaded = self.manifest_on(&mut connection).await?;
        let manifest = &loaded.manifest;
        let found = manifest
            .slots
            .get(slot)
            .ok_or_else(|| StoreError::NotFound(format!("slot {slot} not found")))?;
        let policy = manifest
            .policies
            .get(&found.policy)
            .ok_or_else(|| StoreError::NotFound(format!("policy {} not found", found.policy)))?;
        let filter = loaded
            .filters
            .get(&found.window)
            .ok_or_else(|| StoreError::NotFound(format!("window {} not found", found.window)))?;
        let state = sqlx::query("SELECT available, reason FROM resources WHERE name = $1")
            .bind(&found.resource)
            .fetch_optional(&mut *connection)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("resource {} not found", found.resource))
            })?;
        if let Some(refusal) = db::resource_state(&state)?.refusal() {
            return Err(StoreError::Refused(format!(
                "not available because {refusal}"
            )));
        }
        let busy = busy(&mut connection, &found.resource, now).await?;
        let horizon = if policy.enforce_book_ahead {
            now.saturating_add(policy.book_ahead.0)
        } else {
            DISTANT_FUTURE
        };
        Ok(interval::availability(&busy, filter, now, horizon))
    }

    /// Check and make a booking in one transaction (`Refused(<rule message>)`).
    pub async fn make_booking(
        &self,
        request: BookingRequest,
        now: Nanos,
    ) -> Result<Booking, StoreError> {
        let mut tx = self.write_tx().await?;
        let loaded = self.manifest_on(&mut tx).await?;
        let booking = make_in_tx(&mut tx, self.inner.backend, &loaded, &request, now).await?;
        tx.commit().await?;
        Ok(booking)
    }

    /// The user's current bookings that have not ended (`user not found`).
    pub async fn bookings_of(&self, user: &str, now: Nanos) -> Result<Vec<Booking>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        db::require_user(&mut connection, user).await?;
        let rows = sqlx::query(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings \
             WHERE user_name = $1 AND old = 0 AND end_ns > $2 ORDER BY start_ns, name"
        ))
        .bind(user)
        .bind(now)
        .fetch_all(&mut *connection)
        .await?;
        Ok(db::bookings(&rows)?)
    }

    /// The user's old bookings (ended or cancelled) (`user not found`).
    pub async fn old_bookings_of(
        &self,
        user: &str,
        now: Nanos,
    ) -> Result<Vec<Booking>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        db::require_user(&mut connection, user).await?;
        let rows = sqlx::query(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings \
             WHERE user_name = $1 AND (old = 1 OR end_ns <= $2) ORDER BY start_ns, name"
        ))
        .bind(user)
        .bind(now)
        .fetch_all(&mut *connection)
        .await?;
        Ok(db::bookings(&rows)?)
    }

    /// The user's standing under a policy (`user not found` / `policy not found`).
    pub async fn policy_status(
        &self,
        user: &str,
        policy: &str,
        now: Nanos,
    ) -> Result<PolicyStatus, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        db::require_user(&mut connection, user).await?;
        let loaded = self.manifest_on(&mut connection).await?;
        if !loaded.manifest.policies.contains_key(policy) {
            return Err(StoreError::NotFound("policy not found".to_owned()));
        }
        let Some(usage) = usage_of(&mut connection, user, policy).await? else {
            return Ok(PolicyStatus::default());
        };
        let current_bookings = current_under_policy(&mut connection, user, policy, now).await?;
        let old_bookings = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM bookings \
             WHERE user_name = $1 AND policy = $2 AND (old = 1 OR end_ns <= $3)",
        )
        .bind(user)
        .bind(policy)
        .bind(now)
        .fetch_one(&mut *connection)
        .await?;
        Ok(PolicyStatus {
            current_bookings,
            old_bookings,
            usage,
        })
    }

    /// Mark a booking started for an activity (§3.8) after `rules::check_activity`.
    /// `owner` is the path user for non-admin tokens: a booking of someone else is
    /// `NotFound("not found")` (§7 item 6 fixed). An empty `owner` (admin tokens) skips
    /// the owner check.
    pub async fn start_activity(
        &self,
        owner: &str,
        booking: &str,
        now: Nanos,
    ) -> Result<Booking, StoreError> {
        let backend = self.inner.backend;
        let mut tx = self.write_tx().await?;
        let stored = owned_current(&mut tx, backend, owner, booking).await?;
        let state = sqlx::query("SELECT available, reason FROM resources WHERE name = $1")
            .bind(&stored.resource)
            .fetch_optional(&mut *tx)
            .await?;
        let state = match state {
            Some(row) => db::resource_state(&row)?,
            None => ResourceState {
                available: false,
                reason: format!("resource {} not found", stored.resource),
            },
        };
        rules::check_activity(&stored.booking, &state, now).map_err(StoreError::Refused)?;
        sqlx::query(
            "UPDATE bookings SET started = 1, started_at = COALESCE(started_at, $2) \
             WHERE name = $1 AND old = 0",
        )
        .bind(booking)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut started = stored.booking;
        started.started = true;
        started.started_at = started.started_at.or(Some(now));
        Ok(started)
    }

    /// Cancel a current booking (§3.6): owner check as for activities (empty `owner`: any);
    /// `not found`, `cannot cancel booking that has already ended`, `cannot cancel booking
    /// that has already been used` (cancel-after-use disabled). Refunds usage (§3.5). A
    /// started booking queues one deny call per distinct stream URL of its resource, in the
    /// same transaction; nothing waits for a relay.
    pub async fn cancel_booking(
        &self,
        owner: &str,
        booking: &str,
        by: &str,
        now: Nanos,
    ) -> Result<Cancelled, StoreError> {
        let backend = self.inner.backend;
        let mut tx = self.write_tx().await?;
        let stored = owned_current(&mut tx, backend, owner, booking).await?;
        if stored.booking.when.end <= now {
            return Err(StoreError::Refused(
                "cannot cancel booking that has already ended".to_owned(),
            ));
        }
        if stored.booking.started && self.inner.options.disable_cancel_after_use {
            return Err(StoreError::Refused(
                "cannot cancel booking that has already been used".to_owned(),
            ));
        }
        let loaded = self.manifest_or_empty(&mut tx).await?;
        lock_user(&mut tx, backend, &stored.booking.user).await?;
        let cancelled = cancel_in_tx(&mut tx, &loaded, stored, by, now, true).await?;
        tx.commit().await?;
        Ok(cancelled)
    }

    /// Cancel every unstarted booking whose grace period has passed (§3.7), charging grace +
    /// penalty, unless the store is locked (§7 item 15 fixed). A booking that has already
    /// ended is left to expire (charged in full). Returns the cancelled ones.
    pub async fn cancel_no_shows(&self, now: Nanos) -> Result<Vec<Booking>, StoreError> {
        if self.lock_state().await?.locked {
            return Ok(Vec::new());
        }
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM bookings WHERE old = 0 AND grace_at IS NOT NULL \
             AND grace_at <= $1 AND started = 0 AND cancelled = 0 AND end_ns > $1 \
             ORDER BY grace_at, name",
        )
        .bind(now)
        .fetch_all(&self.inner.pool)
        .await?;
        let backend = self.inner.backend;
        let mut cancelled = Vec::new();
        for name in due {
            let mut tx = self.write_tx().await?;
            let Some(stored) = current_booking(&mut tx, backend, &name).await? else {
                continue;
            };
            let loaded = self.manifest_or_empty(&mut tx).await?;
            let enforced = loaded
                .manifest
                .policies
                .get(&stored.booking.policy)
                .is_some_and(|policy| policy.enforce_grace_period);
            let still_due = stored.grace_at.is_some_and(|at| at <= now)
                && !stored.booking.started
                && stored.booking.when.end > now;
            if !enforced || !still_due {
                continue;
            }
            lock_user(&mut tx, backend, &stored.booking.user).await?;
            let done = cancel_in_tx(&mut tx, &loaded, stored, GRACE_CANCELLER, now, false).await?;
            tx.commit().await?;
            cancelled.push(done.booking);
        }
        Ok(cancelled)
    }

    /// Move ended bookings to old bookings and drop ended diary entries (§3.9).
    pub async fn prune(&self, now: Nanos) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query("UPDATE bookings SET old = 1 WHERE old = 0 AND end_ns <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM reservations WHERE end_ns <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Every current booking.
    pub async fn all_bookings(&self) -> Result<Vec<Booking>, StoreError> {
        self.bookings_where(0).await
    }

    /// Every old booking.
    pub async fn all_old_bookings(&self) -> Result<Vec<Booking>, StoreError> {
        self.bookings_where(1).await
    }

    async fn bookings_where(&self, old: i64) -> Result<Vec<Booking>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE old = $1 ORDER BY start_ns, name"
        ))
        .bind(old)
        .fetch_all(&self.inner.pool)
        .await?;
        Ok(db::bookings(&rows)?)
    }
}

/// Gather the facts of §3.4 inside the transaction, run the rules, and write the booking,
/// its diary entry and its charge. PostgreSQL: the resource row, then the user row, are
/// locked first so concurrent requests check one after another.
pub(super) async fn make_in_tx(
    connection: &mut AnyConnection,
    backend: Backend,
    loaded: &LoadedManifest,
    request: &BookingRequest,
    now: Nanos,
) -> Result<Booking, StoreError> {
    let lock = backend.for_update();
    let slot = loaded.manifest.slots.get(&request.slot);
    let resource = slot.map(|slot| slot.resource.as_str()).unwrap_or_default();
    let policy = slot.map(|slot| slot.policy.as_str()).unwrap_or_default();
    let resource_state = sqlx::query(&format!(
        "SELECT available, reason FROM resources WHERE name = $1{lock}"
    ))
    .bind(resource)
    .fetch_optional(&mut *connection)
    .await?;
    let resource_state = match resource_state {
        Some(row) => db::resource_state(&row)?,
        None => ResourceState {
            available: true,
            reason: String::new(),
        },
    };
    let user = request.user.as_str();
    if !request.group_check {
        db::ensure_user(connection, user).await?;
    }
    let exists = db::user_exists(connection, user, lock).await?;
    let group_check = if request.group_check {
        GroupCheck::On(if exists {
            Some(db::groups_of(connection, user).await?)
        } else {
            None
        })
    } else {
        GroupCheck::Off
    };
    let facts = BookingFacts {
        manifest: &loaded.manifest,
        filters: &loaded.filters,
        slot: &request.slot,
        user,
        when: request.when,
        now,
        group_check,
        current_under_policy: current_under_policy(connection, user, policy, now).await?,
        usage: usage_of(connection, user, policy).await?.unwrap_or(0),
        busy: &busy(connection, resource, now).await?,
        resource_state: &resource_state,
        name_in_use: name_in_use(connection, &request.name).await?,
        name: &request.name,
    };
    let accepted = rules::check_booking(&facts).map_err(StoreError::Refused)?;
    let booking = Booking {
        name: request.name.clone(),
        policy: accepted.policy.clone(),
        slot: request.slot.clone(),
        user: request.user.clone(),
        when: request.when,
        ..Booking::default()
    };
    db::insert_booking(
        connection,
        &booking,
        &accepted.resource,
        false,
        accepted.grace_check_at,
    )
    .await
    .map_err(refusal_of_conflict)?;
    if accepted.exclusive {
        sqlx::query(
            "INSERT INTO reservations (booking, resource, start_ns, end_ns) VALUES ($1, $2, $3, $4)",
        )
        .bind(&booking.name)
        .bind(&accepted.resource)
        .bind(booking.when.start)
        .bind(booking.when.end)
        .execute(&mut *connection)
        .await
        .map_err(refusal_of_conflict)?;
    }
    sqlx::query(
        "INSERT INTO user_usage (user_name, policy, nanos) VALUES ($1, $2, $3) \
         ON CONFLICT (user_name, policy) DO UPDATE SET nanos = user_usage.nanos + excluded.nanos",
    )
    .bind(user)
    .bind(&accepted.policy)
    .bind(accepted.charge)
    .execute(&mut *connection)
    .await?;
    Ok(booking)
}

/// What the database's own guards mean to a client: the exclusion constraint is the diary's
/// `conflict with existing`, a duplicate current name is `name already in use`.
fn refusal_of_conflict(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(database) = &error {
        if database.code().as_deref() == Some("23P01") {
            return StoreError::Refused("conflict with existing".to_owned());
        }
        if database.is_unique_violation() {
            return StoreError::Refused("name already in use".to_owned());
        }
    }
    StoreError::Database(error)
}

/// Cancel `stored` (a current booking): drop its diary entry, move it to old bookings with
/// the cancellation fields, refund usage per §3.5, and (when `deny` and it has started)
/// queue one deny call per distinct stream URL of its resource.
pub(super) async fn cancel_in_tx(
    connection: &mut AnyConnection,
    loaded: &LoadedManifest,
    stored: StoredBooking,
    by: &str,
    now: Nanos,
    deny: bool,
) -> Result<Cancelled, StoreError> {
    let StoredBooking {
        booking, resource, ..
    } = stored;
    sqlx::query("DELETE FROM reservations WHERE booking = $1")
        .bind(&booking.name)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE bookings SET old = 1, cancelled = 1, cancelled_at = $2, cancelled_by = $3 \
         WHERE name = $1 AND old = 0",
    )
    .bind(&booking.name)
    .bind(now)
    .bind(by)
    .execute(&mut *connection)
    .await?;
    let policy = loaded
        .manifest
        .policies
        .get(&booking.policy)
        .cloned()
        .unwrap_or_default();
    let refund = rules::refund(&booking, &policy, now);
    sqlx::query("UPDATE user_usage SET nanos = nanos - $3 WHERE user_name = $1 AND policy = $2")
        .bind(&booking.user)
        .bind(&booking.policy)
        .bind(refund)
        .execute(&mut *connection)
        .await?;
    let mut deny_calls = Vec::new();
    if deny && booking.started {
        for relay_url in stream_urls(loaded, &resource) {
            deny_calls.push(queue_deny(connection, &relay_url, &booking, now).await?);
        }
    }
    let booking = Booking {
        cancelled: true,
        cancelled_at: Some(now),
        cancelled_by: Some(by.to_owned()),
        ..booking
    };
    Ok(Cancelled {
        booking,
        deny_calls,
    })
}

/// Distinct stream URLs of a resource, in the manifest's stream order.
fn stream_urls(loaded: &LoadedManifest, resource: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    let streams = loaded
        .manifest
        .resources
        .get(resource)
        .and_then(|resource| resource.streams.clone())
        .unwrap_or_default();
    for stream in streams {
        if let Some(found) = loaded.manifest.streams.get(&stream) {
            if !found.url.is_empty() && !urls.contains(&found.url) {
                urls.push(found.url.clone());
            }
        }
    }
    urls
}

async fn queue_deny(
    connection: &mut AnyConnection,
    relay_url: &str,
    booking: &Booking,
    now: Nanos,
) -> Result<DenyCall, sqlx::Error> {
    let exp = booking.when.end.div_euclid(SECOND);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO deny_calls (relay_url, booking, exp, attempts, next_attempt_at, state, \
         last_error, created_at) VALUES ($1, $2, $3, 0, $4, 'pending', NULL, $4) RETURNING id",
    )
    .bind(relay_url)
    .bind(&booking.name)
    .bind(exp)
    .bind(now)
    .fetch_one(&mut *connection)
    .await?;
    Ok(DenyCall {
        id,
        relay_url: relay_url.to_owned(),
        booking: booking.name.clone(),
        exp,
        attempts: 0,
        next_attempt_at: now,
        state: "pending".to_owned(),
        last_error: None,
    })
}

/// Every current booking, locked on PostgreSQL.
pub(super) async fn current_bookings(
    connection: &mut AnyConnection,
    backend: Backend,
) -> Result<Vec<StoredBooking>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE old = 0 ORDER BY start_ns, name{}",
        backend.for_update()
    ))
    .fetch_all(&mut *connection)
    .await?;
    rows.iter().map(db::stored_booking).collect()
}

/// The current booking of this name, locked on PostgreSQL.
async fn current_booking(
    connection: &mut AnyConnection,
    backend: Backend,
    name: &str,
) -> Result<Option<StoredBooking>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {BOOKING_COLUMNS} FROM bookings WHERE name = $1 AND old = 0{}",
        backend.for_update()
    ))
    .bind(name)
    .fetch_optional(&mut *connection)
    .await?
    .as_ref()
    .map(db::stored_booking)
    .transpose()
}

/// Whether a current booking has this name.
async fn name_in_use(connection: &mut AnyConnection, name: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT name FROM bookings WHERE name = $1 AND old = 0")
            .bind(name)
            .fetch_optional(&mut *connection)
            .await?
            .is_some(),
    )
}

/// The current booking, if `owner` is empty or owns it; otherwise `not found`.
async fn owned_current(
    connection: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    name: &str,
) -> Result<StoredBooking, StoreError> {
    current_booking(connection, backend, name)
        .await?
        .filter(|stored| owner.is_empty() || stored.booking.user == owner)
        .ok_or_else(|| StoreError::NotFound("not found".to_owned()))
}

async fn lock_user(
    connection: &mut AnyConnection,
    backend: Backend,
    user: &str,
) -> Result<(), sqlx::Error> {
    db::user_exists(connection, user, backend.for_update()).await?;
    Ok(())
}

/// The user's current bookings under `policy` that have not ended.
async fn current_under_policy(
    connection: &mut AnyConnection,
    user: &str,
    policy: &str,
    now: Nanos,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM bookings \
         WHERE user_name = $1 AND old = 0 AND end_ns > $3 AND policy = $2",
    )
    .bind(user)
    .bind(policy)
    .bind(now)
    .fetch_one(&mut *connection)
    .await
}

/// The user's usage under `policy`, `None` when never charged.
async fn usage_of(
    connection: &mut AnyConnection,
    user: &str,
    policy: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT nanos FROM user_usage WHERE user_name = $1 AND policy = $2")
        .bind(user)
        .bind(policy)
        .fetch_optional(&mut *connection)
        .await
}

/// Diary entries of `resource` that end after `now`.
async fn busy(
    connection: &mut AnyConnection,
    resource: &str,
    now: Nanos,
) -> Result<Vec<Interval>, sqlx::Error> {
    sqlx::query("SELECT start_ns, end_ns FROM reservations WHERE resource = $1 AND end_ns > $2")
        .bind(resource)
        .bind(now)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| {
            Ok(Interval {
                start: row.try_get(0)?,
                end: row.try_get(1)?,
            })
        })
        .collect()
}
