//! The pieces of SQL every store path shares: which backend, how a write transaction is
//! held, how a booking row reads and writes, and the user look-ups.

use std::ops::{Deref, DerefMut};

use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::{Any, Row, Transaction};

use super::StoreError;
use crate::interval::Interval;
use crate::model::{Booking, ResourceState};
use crate::timefmt::Nanos;

/// The database behind the pool; chooses migrations and the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// From a `postgres://`/`postgresql://` or `sqlite:` URL.
    pub(super) fn from_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::Database(sqlx::Error::Configuration(
                format!("unsupported database URL (want postgres:// or sqlite://): {url}").into(),
            )))
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Row lock suffix: PostgreSQL locks the rows a check depends on; SQLite's single writer
    /// already excludes every other writer.
    pub(super) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// A write transaction, holding the SQLite writer gate (if any) until it ends.
pub(super) struct WriteTx {
    pub(super) tx: Transaction<'static, Any>,
    pub(super) _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// The columns [`stored_booking`] reads, in order.
pub(super) const BOOKING_COLUMNS: &str = "name, policy, slot, resource, user_name, start_ns, \
     end_ns, cancelled, cancelled_at, cancelled_by, started, started_at, unfulfilled, grace_at";

/// A booking row with the store-only columns.
#[derive(Debug, Clone)]
pub(super) struct StoredBooking {
    pub(super) booking: Booking,
    /// The slot's resource when booked: the diary the booking sits in.
    pub(super) resource: String,
    pub(super) grace_at: Option<Nanos>,
}

pub(super) fn stored_booking(row: &AnyRow) -> Result<StoredBooking, sqlx::Error> {
    Ok(StoredBooking {
        booking: Booking {
            name: row.try_get(0)?,
            policy: row.try_get(1)?,
            slot: row.try_get(2)?,
            user: row.try_get(4)?,
            when: Interval {
                start: row.try_get(5)?,
                end: row.try_get(6)?,
            },
            cancelled: row.try_get::<i64, _>(7)? != 0,
            cancelled_at: row.try_get(8)?,
            cancelled_by: row.try_get(9)?,
            started: row.try_get::<i64, _>(10)? != 0,
            started_at: row.try_get(11)?,
            unfulfilled: row.try_get::<i64, _>(12)? != 0,
        },
        resource: row.try_get(3)?,
        grace_at: row.try_get(13)?,
    })
}

pub(super) fn bookings(rows: &[AnyRow]) -> Result<Vec<Booking>, sqlx::Error> {
    rows.iter()
        .map(|row| stored_booking(row).map(|stored| stored.booking))
        .collect()
}

/// Insert a booking row, current or old.
pub(super) async fn insert_booking(
    connection: &mut AnyConnection,
    booking: &Booking,
    resource: &str,
    old: bool,
    grace_at: Option<Nanos>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bookings (name, policy, slot, resource, user_name, start_ns, end_ns, \
         cancelled, cancelled_at, cancelled_by, started, started_at, unfulfilled, old, grace_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&booking.name)
    .bind(&booking.policy)
    .bind(&booking.slot)
    .bind(resource)
    .bind(&booking.user)
    .bind(booking.when.start)
    .bind(booking.when.end)
    .bind(i64::from(booking.cancelled))
    .bind(booking.cancelled_at)
    .bind(booking.cancelled_by.as_deref())
    .bind(i64::from(booking.started))
    .bind(booking.started_at)
    .bind(i64::from(booking.unfulfilled))
    .bind(i64::from(old))
    .bind(grace_at)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Create the user if missing.
pub(super) async fn ensure_user(
    connection: &mut AnyConnection,
    user: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(user)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Whether the user exists; with `lock` (`FOR UPDATE` or empty) to serialise on the user.
pub(super) async fn user_exists(
    connection: &mut AnyConnection,
    user: &str,
    lock: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query(&format!("SELECT name FROM users WHERE name = $1{lock}"))
            .bind(user)
            .fetch_optional(&mut *connection)
            .await?
            .is_some(),
    )
}

/// `user not found` unless the user exists.
pub(super) async fn require_user(
    connection: &mut AnyConnection,
    user: &str,
) -> Result<(), StoreError> {
    if user_exists(connection, user, "").await? {
        Ok(())
    } else {
        Err(StoreError::NotFound("user not found".to_owned()))
    }
}

/// The user's groups, sorted.
pub(super) async fn groups_of(
    connection: &mut AnyConnection,
    user: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT group_name FROM user_groups WHERE user_name = $1 ORDER BY group_name",
    )
    .bind(user)
    .fetch_all(&mut *connection)
    .await
}

/// A `resources` row (`available, reason`).
pub(super) fn resource_state(row: &AnyRow) -> Result<ResourceState, StoreError> {
    Ok(ResourceState {
        available: row.try_get::<i64, _>(0)? != 0,
        reason: row.try_get(1)?,
    })
}
