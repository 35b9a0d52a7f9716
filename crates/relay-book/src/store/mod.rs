//! The store: every booking, user, usage total, resource state, the lock and the manifest,
//! in SQLite (embedded default, `BOOK_PERSIST_DIR`) or PostgreSQL (`BOOK_DATABASE_URL`),
//! through one sqlx code path with versioned migrations (`migrations/sqlite`,
//! `migrations/postgres`). Every change is committed before the call returns.
//!
//! Exclusivity is the database's job: a booking's diary entry (`reservations`) is written in
//! the same transaction as its checks; PostgreSQL also holds an exclusion constraint, so two
//! server processes racing for one slot cannot both succeed.
//!
//! How: one `sqlx::AnyPool` and runtime queries written once with `$N` placeholders (the
//! SQLite driver numbers `$N` like PostgreSQL does; a test checks it). An `AnyPool` rather
//! than an enum over two pools keeps one query text and one row decoder per idea; its price
//! is Any's small type set, so flags are 0/1 integers and times and durations nanoseconds,
//! which both backends decode to the same Rust types. The few statements that differ by
//! backend (`FOR UPDATE`, how a write transaction begins) come from `db::Backend`.
//! Migrations are per backend (`migrations/sqlite`, `migrations/postgres`), embedded with
//! `sqlx::migrate!` and chosen at open.
//!
//! Write transactions and races:
//! - SQLite: one writer at a time (an in-process gate, then `BEGIN IMMEDIATE` against other
//!   processes), so a booking's checks and its write see one state.
//! - PostgreSQL: the booking transaction locks the resource row, then the user row
//!   (`FOR UPDATE`), so checks see a consistent state across server processes; the exclusion
//!   constraint on `reservations` is the last word (`23P01` → `conflict with existing`).
//!   Lock order: resource before user (booking); booking row before user (cancellation,
//!   grace); bulk replacement takes every resource first, then the bookings.
//!
//! The manifest is stored as JSON with a version counter; each call re-reads the version
//! (one cheap row) and re-parses only when another call or process replaced it.
//!
//! Owner: store helper.

mod booking;
mod db;
mod deny;
mod replace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Connection, Executor, Row};

use crate::interval::{Filter, Interval};
use crate::manifest::Manifest;
use crate::model::{Booking, Counts, LockState, ResourceState, User};
use crate::timefmt::{Nanos, SECOND};

use db::Backend;

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
    /// How many current bookings the replacement cancelled first (in its transaction).
    pub cancelled: u64,
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
    /// SQLite only: one write transaction at a time in this process.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// The last manifest read, with its version.
    manifest: Mutex<Option<(i64, Arc<LoadedManifest>)>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Store {
    /// Open (and migrate) the store.
    pub async fn open(location: &Location, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = match location {
            Location::SqliteDir(dir) => {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                let file = dir.join("book.sqlite");
                (
                    format!("sqlite://{}?mode=rwc", file.display()),
                    Backend::Sqlite,
                )
            }
            Location::Url(url) => (url.clone(), Backend::from_url(url)?),
        };
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; FULL makes every
                            // commit durable before the reply.
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA busy_timeout = 30000;",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(10)
                    .connect(&url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        let write_gate =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                options,
                write_gate,
                manifest: Mutex::new(None),
            }),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// A round trip to the database, for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.pool.acquire().await?.ping().await?;
        Ok(())
    }

    // ---- manifest, lock, counts, resources ----

    /// The current manifest (`NoManifest` before the first replace).
    pub async fn manifest(&self) -> Result<Arc<LoadedManifest>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        self.manifest_on(&mut connection).await
    }

    /// The manifest as seen on `connection` (inside a transaction: the transaction's view),
    /// re-parsed only when its version changed.
    async fn manifest_on(
        &self,
        connection: &mut AnyConnection,
    ) -> Result<Arc<LoadedManifest>, StoreError> {
        let version: i64 = sqlx::query("SELECT manifest_version FROM settings WHERE id = 1")
            .fetch_one(&mut *connection)
            .await?
            .try_get(0)?;
        if let Some((cached, loaded)) = self.cached_manifest() {
            if cached == version {
                return Ok(loaded);
            }
        }
        let row = sqlx::query("SELECT manifest, manifest_version FROM settings WHERE id = 1")
            .fetch_one(&mut *connection)
            .await?;
        let text: Option<String> = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let text = text.ok_or(StoreError::NoManifest)?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
        let filters = manifest
            .filters()
            .map_err(|error| StoreError::Refused(error.category))?;
        let loaded = Arc::new(LoadedManifest { manifest, filters });
        if let Ok(mut cache) = self.inner.manifest.lock() {
            *cache = Some((version, loaded.clone()));
        }
        Ok(loaded)
    }

    fn cached_manifest(&self) -> Option<(i64, Arc<LoadedManifest>)> {
        self.inner.manifest.lock().ok()?.clone()
    }

    /// The manifest, or an empty one before the first replace (for paths that must work
    /// without one, such as cancellation).
    async fn manifest_or_empty(
        &self,
        connection: &mut AnyConnection,
    ) -> Result<Arc<LoadedManifest>, StoreError> {
        match self.manifest_on(connection).await {
            Err(StoreError::NoManifest) => Ok(Arc::new(LoadedManifest {
                manifest: Manifest::default(),
                filters: BTreeMap::new(),
            })),
            other => other,
        }
    }

    /// Check, then replace the manifest. Resources are set available with reason
    /// `Loaded at <RFC3339 now>`; diary entries of bookings whose slot still exists are kept.
    pub async fn replace_manifest(
        &self,
        manifest: Manifest,
        now: Nanos,
    ) -> Result<ManifestReport, StoreError> {
        manifest
            .check()
            .map_err(|error| StoreError::Refused(error.category))?;
        manifest
            .filters()
            .map_err(|error| StoreError::Refused(error.category))?;
        let text = serde_json::to_string(&manifest)
            .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        let reason = format!("Loaded at {}", rfc3339_seconds(now));
        let mut tx = self.write_tx().await?;
        // Serialise replacements across processes and see the previous manifest for refunds.
        sqlx::query(&format!(
            "SELECT manifest_version FROM settings WHERE id = 1{}",
            self.inner.backend.for_update()
        ))
        .execute(&mut *tx)
        .await?;
        let previous = self.manifest_or_empty(&mut tx).await?;
        let mut report = ManifestReport::default();
        let current = booking::current_bookings(&mut tx, self.inner.backend).await?;
        for stored in current {
            if manifest.slots.contains_key(&stored.booking.slot) {
                continue;
            }
            let cancelled =
                booking::cancel_in_tx(&mut tx, &previous, stored, "replaceManifest", now, true)
                    .await?;
            report.cancelled.push(cancelled.booking.name);
        }
        sqlx::query(
            "UPDATE settings SET manifest = $1, manifest_version = manifest_version + 1 WHERE id = 1",
        )
        .bind(&text)
        .execute(&mut *tx)
        .await?;
        let resources: Vec<String> = sqlx::query("SELECT name FROM resources")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        for gone in resources
            .iter()
            .filter(|name| !manifest.resources.contains_key(*name))
        {
            sqlx::query("DELETE FROM resources WHERE name = $1")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM reservations WHERE resource = $1")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        for name in manifest.resources.keys() {
            sqlx::query(
                "INSERT INTO resources (name, available, reason) VALUES ($1, 1, $2) \
                 ON CONFLICT (name) DO UPDATE SET available = 1, reason = excluded.reason",
            )
            .bind(name)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The lock and its message (start: unlocked, `Welcome to the interval booking store`).
    pub async fn lock_state(&self) -> Result<LockState, StoreError> {
        let row = sqlx::query("SELECT locked, message FROM settings WHERE id = 1")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(LockState {
            locked: row.try_get::<i64, _>(0)? != 0,
            message: row.try_get(1)?,
        })
    }

    /// Set the lock; the message only when given.
    pub async fn set_lock(
        &self,
        locked: bool,
        message: Option<&str>,
    ) -> Result<LockState, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE settings SET locked = $1, message = COALESCE($2, message) WHERE id = 1",
        )
        .bind(i64::from(locked))
        .bind(message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.lock_state().await
    }

    /// Counts for the admin status.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        let loaded = self.manifest_or_empty(&mut connection).await?;
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
        let manifest = &loaded.manifest;
        Ok(Counts {
            bookings: count("SELECT COUNT(*) FROM bookings WHERE old = 0")
                .fetch_one(&mut *connection)
                .await?,
            old_bookings: count("SELECT COUNT(*) FROM bookings WHERE old = 1")
                .fetch_one(&mut *connection)
                .await?,
            users: count("SELECT COUNT(*) FROM users")
                .fetch_one(&mut *connection)
                .await?,
            descriptions: len(manifest.descriptions.len()),
            filters: len(loaded.filters.len()),
            policies: len(manifest.policies.len()),
            resources: len(manifest.resources.len()),
            slots: len(manifest.slots.len()),
            streams: len(manifest.streams.len()),
            uis: len(manifest.uis.len()),
            ui_sets: len(manifest.ui_sets.len()),
            windows: len(manifest.windows.len()),
        })
    }

    /// `resource <r> not found` when missing.
    pub async fn resource_state(&self, resource: &str) -> Result<ResourceState, StoreError> {
        let row = sqlx::query("SELECT available, reason FROM resources WHERE name = $1")
            .bind(resource)
            .fetch_optional(&self.inner.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("resource {resource} not found")))?;
        db::resource_state(&row)
    }

    /// Set a resource's availability and reason.
    pub async fn set_resource_state(
        &self,
        resource: &str,
        state: ResourceState,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let changed =
            sqlx::query("UPDATE resources SET available = $1, reason = $2 WHERE name = $3")
                .bind(i64::from(state.available))
                .bind(&state.reason)
                .bind(resource)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "resource {resource} not found"
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- users and groups ----

    /// Join a group (creates the user; idempotent). The caller has checked the group exists.
    pub async fn join_group(&self, user: &str, group: &str) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        db::ensure_user(&mut tx, user).await?;
        sqlx::query(
            "INSERT INTO user_groups (user_name, group_name) VALUES ($1, $2) \
             ON CONFLICT (user_name, group_name) DO NOTHING",
        )
        .bind(user)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user's groups (`user not found`).
    pub async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        db::require_user(&mut connection, user).await?;
        Ok(db::groups_of(&mut connection, user).await?)
    }

    /// Every user, for the admin export.
    pub async fn users(&self) -> Result<BTreeMap<String, User>, StoreError> {
        let mut connection = self.inner.pool.acquire().await?;
        let mut users: BTreeMap<String, User> = BTreeMap::new();
        for row in sqlx::query("SELECT name FROM users")
            .fetch_all(&mut *connection)
            .await?
        {
            users.insert(row.try_get(0)?, User::default());
        }
        for row in sqlx::query("SELECT user_name, group_name FROM user_groups ORDER BY group_name")
            .fetch_all(&mut *connection)
            .await?
        {
            if let Some(user) = users.get_mut(&row.try_get::<String, _>(0)?) {
                user.groups.push(row.try_get(1)?);
            }
        }
        for row in sqlx::query("SELECT user_name, policy, nanos FROM user_usage")
            .fetch_all(&mut *connection)
            .await?
        {
            if let Some(user) = users.get_mut(&row.try_get::<String, _>(0)?) {
                user.usage.insert(row.try_get(1)?, row.try_get(2)?);
            }
        }
        for row in sqlx::query("SELECT user_name, name, old FROM bookings ORDER BY start_ns, name")
            .fetch_all(&mut *connection)
            .await?
        {
            if let Some(user) = users.get_mut(&row.try_get::<String, _>(0)?) {
                let name: String = row.try_get(1)?;
                if row.try_get::<i64, _>(2)? != 0 {
                    user.old_bookings.push(name);
                } else {
                    user.bookings.push(name);
                }
            }
        }
        Ok(users)
    }

    /// Begin a write transaction: on SQLite after taking the writer gate, with
    /// `BEGIN IMMEDIATE` so other processes wait too.
    async fn write_tx(&self) -> Result<db::WriteTx, StoreError> {
        let gate = match &self.inner.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        };
        let tx = match self.inner.backend {
            Backend::Sqlite => self.inner.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.inner.pool.begin().await?,
        };
        Ok(db::WriteTx { tx, _gate: gate })
    }
}

/// A collection size as the status counts' type.
fn len(size: usize) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// `2022-11-05T00:00:00Z`: Go's `time.RFC3339` of `now`, whole seconds, UTC.
fn rfc3339_seconds(now: Nanos) -> String {
    time::OffsetDateTime::from_unix_timestamp(now.div_euclid(SECOND))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
