//! The store suite: every case runs against SQLite (a temp dir) and PostgreSQL (a throw-away
//! cluster), through the public `Store` API only (plus query plans for the history case).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod store_common;

use relay_book::interval::Interval;
use relay_book::model::Booking;
use relay_book::model::{LockState, PolicyStatus, ResourceState};
use relay_book::store::{DenyCall, Location, Store, StoreError, StoreOptions};
use relay_book::timefmt::{format_go_time, Nanos};
use sqlx::Row;
use store_common::{at, manifest, request, Db, HOUR, MINUTE, T0};

/// Each case as `<case>::sqlite` and `<case>::postgres`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn sqlite() {
                    super::$case(super::Db::sqlite()).await;
                }
                #[tokio::test]
                async fn postgres() {
                    super::$case(super::Db::postgres()).await;
                }
            }
        )*
    };
}

on_both_backends!(
    dollar_placeholders_are_numbered,
    lock_starts_with_the_welcome_and_is_shared,
    groups_are_joined_once_and_listed,
    manifest_is_versioned_and_seen_by_a_second_store,
    resources_follow_the_manifest,
    booking_is_listed_then_cancelled_and_refunded,
    overlapping_bookings_conflict_and_back_to_back_ones_do_not,
    prune_moves_ended_bookings_and_frees_the_diary,
    grace_cancels_no_shows_after_a_restart_but_not_while_locked,
    grace_already_past_when_booked_is_still_checked,
    everything_survives_a_reopen,
    replacing_the_manifest_keeps_diaries_and_cancels_orphans,
    replacing_bookings_reports_drops,
    replacing_old_bookings_keeps_groups_and_recomputes_usage,
    activity_then_cancel_queues_deny_calls,
    user_reads_use_an_index_with_ten_thousand_old_bookings,
);

fn refusal(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::Refused(text)) => text,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The refusal's text when `user` books `slot` at `when` by the name `name`, at `T0`.
async fn book_refused(store: &Store, name: &str, slot: &str, user: &str, when: Interval) -> String {
    refusal(
        store
            .make_booking(request(name, slot, user, when), T0)
            .await,
    )
}

fn not_found(result: Result<impl std::fmt::Debug, StoreError>) -> String {
    match result {
        Err(StoreError::NotFound(text)) => text,
        other => panic!("expected not found, got {other:?}"),
    }
}

/// A store with the test manifest loaded at T0 and `user` in group `g-a`.
async fn loaded(db: &Db, user: &str) -> Store {
    let store = db.open().await;
    store.replace_manifest(manifest(), T0).await.unwrap();
    store.join_group(user, "g-a").await.unwrap();
    store
}

async fn book(
    store: &Store,
    name: &str,
    slot: &str,
    user: &str,
    start: Nanos,
    end: Nanos,
) -> Booking {
    store
        .make_booking(request(name, slot, user, at(start, end)), T0)
        .await
        .unwrap()
}

async fn usage(store: &Store, user: &str, policy: &str, now: Nanos) -> i64 {
    store.policy_status(user, policy, now).await.unwrap().usage
}

async fn raw_pool(db: &Db) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = match &db.location {
        Location::SqliteDir(dir) => format!("sqlite://{}", dir.join("book.sqlite").display()),
        Location::Url(url) => url.clone(),
    };
    sqlx::AnyPool::connect(&url).await.unwrap()
}

async fn dollar_placeholders_are_numbered(db: Db) {
    let _store = db.open().await;
    let pool = raw_pool(&db).await;
    let row = sqlx::query("SELECT $2 - $1, $1 + $1")
        .bind(10_i64)
        .bind(3_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64, _>(0).unwrap(), -7);
    assert_eq!(row.try_get::<i64, _>(1).unwrap(), 20);
}

async fn lock_starts_with_the_welcome_and_is_shared(db: Db) {
    let store = db.open().await;
    let welcome = LockState {
        locked: false,
        message: "Welcome to the interval booking store".to_owned(),
    };
    assert_eq!(store.lock_state().await.unwrap(), welcome);
    let locked = store.set_lock(true, Some("maintenance")).await.unwrap();
    assert_eq!(
        locked,
        LockState {
            locked: true,
            message: "maintenance".to_owned()
        }
    );
    let other = db.open().await;
    assert_eq!(other.lock_state().await.unwrap(), locked);
    let unlocked = other.set_lock(false, None).await.unwrap();
    assert_eq!(
        unlocked,
        LockState {
            locked: false,
            message: "maintenance".to_owned()
        }
    );
    assert_eq!(store.lock_state().await.unwrap(), unlocked);
    store.ping().await.unwrap();
}

async fn groups_are_joined_once_and_listed(db: Db) {
    let store = db.open().await;
    assert_eq!(not_found(store.user_groups("u-1").await), "user not found");
    store.join_group("u-1", "g-b").await.unwrap();
    store.join_group("u-1", "g-a").await.unwrap();
    store.join_group("u-1", "g-a").await.unwrap();
    assert_eq!(store.user_groups("u-1").await.unwrap(), ["g-a", "g-b"]);
    let users = store.users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users["u-1"].groups, ["g-a", "g-b"]);
    assert!(users["u-1"].bookings.is_empty());
    assert_eq!(store.counts().await.unwrap().users, 1);
}

async fn manifest_is_versioned_and_seen_by_a_second_store(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.manifest().await,
        Err(StoreError::NoManifest)
    ));
    let report = store.replace_manifest(manifest(), T0).await.unwrap();
    assert!(report.cancelled.is_empty());
    assert_eq!(store.manifest().await.unwrap().manifest, manifest());
    let other = db.open().await;
    assert_eq!(other.manifest().await.unwrap().manifest, manifest());
    // A replace by the second store is seen by the first (its cache is keyed by version).
    let mut changed = manifest();
    changed.groups.get_mut("g-a").unwrap().policies = vec!["p-a".to_owned()];
    other.replace_manifest(changed.clone(), T0).await.unwrap();
    assert_eq!(store.manifest().await.unwrap().manifest, changed);
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts.slots,
            counts.policies,
            counts.resources,
            counts.streams,
            counts.windows,
            counts.filters
        ),
        (3, 2, 2, 3, 1, 1)
    );
    // A manifest that fails its check is refused with the bare category, and nothing changes.
    let mut broken = manifest();
    broken.slots.get_mut("sl-a").unwrap().resource = "r-missing".to_owned();
    assert_eq!(
        refusal(store.replace_manifest(broken, T0).await),
        "missing reference(s)"
    );
    assert_eq!(other.manifest().await.unwrap().manifest, changed);
}

async fn resources_follow_the_manifest(db: Db) {
    let store = db.open().await;
    store
        .replace_manifest(manifest(), T0 + 1_500_000)
        .await
        .unwrap();
    let loaded = ResourceState {
        available: true,
        reason: "Loaded at 2024-01-08T00:00:00Z".to_owned(),
    };
    assert_eq!(store.resource_state("r-a").await.unwrap(), loaded);
    let down = ResourceState {
        available: false,
        reason: "broken".to_owned(),
    };
    store.set_resource_state("r-b", down.clone()).await.unwrap();
    assert_eq!(store.resource_state("r-b").await.unwrap(), down);
    assert_eq!(
        refusal(store.availability("sl-b", T0).await),
        "not available because unavailable because broken"
    );
    let no_reason = ResourceState {
        available: false,
        reason: String::new(),
    };
    store.set_resource_state("r-a", no_reason).await.unwrap();
    assert_eq!(
        refusal(store.availability("sl-a", T0).await),
        "not available because unavailable"
    );
    assert_eq!(
        not_found(store.availability("sl-x", T0).await),
        "slot sl-x not found"
    );
    assert_eq!(
        not_found(store.resource_state("r-x").await),
        "resource r-x not found"
    );
    assert_eq!(
        not_found(store.set_resource_state("r-x", down.clone()).await),
        "resource r-x not found"
    );
    // A replace makes every resource available again and deletes the ones that left.
    let mut smaller = manifest();
    smaller.slots.remove("sl-b");
    smaller.resources.remove("r-b");
    smaller.policies.get_mut("p-a").unwrap().slots = Some(vec!["sl-a".to_owned()]);
    store.replace_manifest(smaller, T0 + HOUR).await.unwrap();
    assert_eq!(
        not_found(store.resource_state("r-b").await),
        "resource r-b not found"
    );
    assert_eq!(
        store.resource_state("r-a").await.unwrap(),
        ResourceState {
            available: true,
            reason: "Loaded at 2024-01-08T01:00:00Z".to_owned()
        }
    );
}

async fn booking_is_listed_then_cancelled_and_refunded(db: Db) {
    let store = loaded(&db, "u-1").await;
    let when = at(T0 + HOUR, T0 + HOUR + 30 * MINUTE);
    let made = book(&store, "b-1", "sl-a", "u-1", when.start, when.end).await;
    assert_eq!(
        made,
        Booking {
            name: "b-1".to_owned(),
            policy: "p-a".to_owned(),
            slot: "sl-a".to_owned(),
            user: "u-1".to_owned(),
            when,
            ..Booking::default()
        }
    );
    assert_eq!(store.bookings_of("u-1", T0).await.unwrap(), [made]);
    assert_eq!(
        store.policy_status("u-1", "p-a", T0).await.unwrap(),
        PolicyStatus {
            current_bookings: 1,
            old_bookings: 0,
            usage: 30 * MINUTE
        }
    );
    assert_eq!(
        store.availability("sl-a", T0).await.unwrap(),
        [
            at(T0, when.start),
            at(when.end, relay_book::timefmt::DISTANT_FUTURE)
        ]
    );
    // Someone else's booking is not found; the owner (or an admin: "") may cancel.
    assert_eq!(
        not_found(store.cancel_booking("u-2", "b-1", "u-2", T0).await),
        "not found"
    );
    let cancelled = store
        .cancel_booking("u-1", "b-1", "u-1", T0 + MINUTE)
        .await
        .unwrap();
    assert!(cancelled.deny_calls.is_empty());
    assert_eq!(cancelled.booking.cancelled_by.as_deref(), Some("u-1"));
    assert!(cancelled.booking.cancelled);
    assert_eq!(usage(&store, "u-1", "p-a", T0).await, 0);
    assert!(store.bookings_of("u-1", T0).await.unwrap().is_empty());
    let old = store.old_bookings_of("u-1", T0).await.unwrap();
    assert_eq!(old.len(), 1);
    assert!(old[0].cancelled);
    assert_eq!(old[0].cancelled_at, Some(T0 + MINUTE));
    assert_eq!(
        not_found(store.cancel_booking("", "b-1", "admin", T0).await),
        "not found"
    );
    assert_eq!(
        not_found(store.bookings_of("nobody", T0).await),
        "user not found"
    );
    assert_eq!(
        not_found(store.policy_status("u-1", "p-x", T0).await),
        "policy not found"
    );
    assert_eq!(
        store.policy_status("u-1", "p-grace", T0).await.unwrap(),
        PolicyStatus::default()
    );
    // The diary entry went with the cancellation.
    book(&store, "b-2", "sl-a", "u-1", when.start, when.end).await;
    // A user outside every group is refused by the rules, inside the transaction.
    assert_eq!(
        book_refused(&store, "b-3", "sl-b", "stranger", when).await,
        "user stranger not found"
    );
    // An ended booking cannot be cancelled.
    assert_eq!(
        refusal(store.cancel_booking("u-1", "b-2", "u-1", when.end).await),
        "cannot cancel booking that has already ended"
    );
}

async fn overlapping_bookings_conflict_and_back_to_back_ones_do_not(db: Db) {
    let store = loaded(&db, "u-1").await;
    store.join_group("u-2", "g-a").await.unwrap();
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    // sl-g shares r-a: its diary is the resource's.
    assert_eq!(
        book_refused(
            &store,
            "b-2",
            "sl-g",
            "u-2",
            at(T0 + HOUR + MINUTE, T0 + 3 * HOUR)
        )
        .await,
        "conflict with existing"
    );
    book(&store, "b-3", "sl-g", "u-2", T0 + 2 * HOUR, T0 + 3 * HOUR).await;
    book(&store, "b-4", "sl-b", "u-2", T0 + HOUR, T0 + 2 * HOUR).await;
    assert_eq!(
        book_refused(
            &store,
            "b-1",
            "sl-b",
            "u-2",
            at(T0 + 5 * HOUR, T0 + 6 * HOUR)
        )
        .await,
        "name already in use"
    );
    assert_eq!(usage(&store, "u-2", "p-a", T0).await, HOUR);
    assert_eq!(usage(&store, "u-2", "p-grace", T0).await, HOUR);
}

async fn prune_moves_ended_bookings_and_frees_the_diary(db: Db) {
    let store = loaded(&db, "u-1").await;
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    book(&store, "b-2", "sl-a", "u-1", T0 + 3 * HOUR, T0 + 4 * HOUR).await;
    let after_first = T0 + 2 * HOUR;
    // Before any prune, reads already treat the ended booking as old (§7 item 23 fixed).
    let current: Vec<String> = store
        .bookings_of("u-1", after_first)
        .await
        .unwrap()
        .into_iter()
        .map(|booking| booking.name)
        .collect();
    assert_eq!(current, ["b-2"]);
    assert_eq!(
        store.old_bookings_of("u-1", after_first).await.unwrap()[0].name,
        "b-1"
    );
    assert_eq!(store.prune(after_first).await.unwrap(), 1);
    assert_eq!(store.prune(after_first).await.unwrap(), 0);
    let old = store.all_old_bookings().await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].name, "b-1");
    assert!(!old[0].cancelled);
    assert_eq!(store.all_bookings().await.unwrap().len(), 1);
    assert_eq!(
        store.availability("sl-a", after_first).await.unwrap()[0],
        at(after_first, T0 + 3 * HOUR)
    );
    // Expiry does not change usage.
    assert_eq!(usage(&store, "u-1", "p-a", after_first).await, 2 * HOUR);
}

async fn grace_cancels_no_shows_after_a_restart_but_not_while_locked(db: Db) {
    let store = loaded(&db, "u-1").await;
    let start = T0 + HOUR;
    book(&store, "b-1", "sl-g", "u-1", start, start + HOUR).await;
    // Grace longer than the booking's remaining life: b-2 ends before its check runs.
    book(
        &store,
        "b-2",
        "sl-g",
        "u-1",
        T0 + 3 * HOUR,
        T0 + 3 * HOUR + MINUTE,
    )
    .await;
    let grace_at = start + 5 * MINUTE;
    assert!(store
        .cancel_no_shows(grace_at - 1)
        .await
        .unwrap()
        .is_empty());
    store.set_lock(true, Some("exams")).await.unwrap();
    assert!(store.cancel_no_shows(grace_at).await.unwrap().is_empty());
    store.set_lock(false, None).await.unwrap();
    drop(store);
    let store = db.open().await;
    let cancelled = store.cancel_no_shows(grace_at).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].name, "b-1");
    assert_eq!(
        cancelled[0].cancelled_by.as_deref(),
        Some("auto-grace-check")
    );
    assert!(store.cancel_no_shows(grace_at).await.unwrap().is_empty());
    // Charged grace + penalty, plus b-2's full minute.
    assert_eq!(
        usage(&store, "u-1", "p-grace", grace_at).await,
        15 * MINUTE + MINUTE
    );
    let after_b2 = T0 + 3 * HOUR + 10 * MINUTE;
    assert!(store.cancel_no_shows(after_b2).await.unwrap().is_empty());
    assert_eq!(
        store.old_bookings_of("u-1", after_b2).await.unwrap().len(),
        2
    );
}

async fn grace_already_past_when_booked_is_still_checked(db: Db) {
    let store = db.open().await;
    let mut lenient = manifest();
    let policy = lenient.policies.get_mut("p-grace").unwrap();
    policy.enforce_allow_start_in_past = true;
    policy.allow_start_in_past_within = relay_book::manifest::GoDuration(HOUR);
    store.replace_manifest(lenient, T0).await.unwrap();
    store.join_group("u-1", "g-a").await.unwrap();
    // Start 30 minutes ago: its grace check time (25 minutes ago) has already passed.
    book(&store, "b-late", "sl-g", "u-1", T0 - 30 * MINUTE, T0 + HOUR).await;
    let cancelled = store.cancel_no_shows(T0).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].name, "b-late");
    assert_eq!(cancelled[0].cancelled_at, Some(T0));
    assert_eq!(usage(&store, "u-1", "p-grace", T0).await, 15 * MINUTE);
}

async fn everything_survives_a_reopen(db: Db) {
    let store = loaded(&db, "u-1").await;
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    store.set_lock(true, Some("back soon")).await.unwrap();
    let users = store.users().await.unwrap();
    let bookings = store.all_bookings().await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.manifest().await.unwrap().manifest, manifest());
    assert_eq!(store.users().await.unwrap(), users);
    assert_eq!(store.all_bookings().await.unwrap(), bookings);
    assert_eq!(users["u-1"].bookings, ["b-1"]);
    assert_eq!(users["u-1"].usage["p-a"], HOUR);
    assert!(store.lock_state().await.unwrap().locked);
    assert_eq!(
        book_refused(&store, "b-2", "sl-a", "u-1", at(T0 + HOUR, T0 + 2 * HOUR)).await,
        "conflict with existing"
    );
}

async fn replacing_the_manifest_keeps_diaries_and_cancels_orphans(db: Db) {
    let store = loaded(&db, "u-1").await;
    book(&store, "b-a", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    book(&store, "b-b", "sl-b", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    let mut smaller = manifest();
    smaller.slots.remove("sl-b");
    smaller.policies.get_mut("p-a").unwrap().slots = Some(vec!["sl-a".to_owned()]);
    let report = store.replace_manifest(smaller, T0).await.unwrap();
    assert_eq!(report.cancelled, ["b-b"]);
    assert_eq!(usage(&store, "u-1", "p-a", T0).await, HOUR);
    let old = store.all_old_bookings().await.unwrap();
    assert_eq!(old[0].cancelled_by.as_deref(), Some("replaceManifest"));
    assert_eq!(
        book_refused(&store, "b-c", "sl-g", "u-1", at(T0 + HOUR, T0 + 2 * HOUR)).await,
        "conflict with existing"
    );
}

async fn replacing_bookings_reports_drops(db: Db) {
    let store = loaded(&db, "u-1").await;
    let future = book(&store, "b-future", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    let running = book(&store, "b-running", "sl-b", "u-1", T0, T0 + 2 * HOUR).await;
    let now = T0 + MINUTE;
    let mut malformed = future.clone();
    malformed.policy = String::new();
    assert_eq!(
        refusal(store.replace_bookings(vec![malformed], now).await),
        "malformed booking : b-future missing policy"
    );
    let mut imported = future.clone();
    imported.user = "u-new".to_owned();
    let report = store
        .replace_bookings(vec![running.clone(), future.clone(), imported], now)
        .await
        .unwrap();
    assert_eq!(report.kept, ["b-future"]);
    assert_eq!(
        report.dropped,
        [(
            "b-running".to_owned(),
            format!(
                "booking cannot start in the past (start: {}, now:{})",
                format_go_time(T0),
                format_go_time(now)
            )
        )]
    );
    // The later duplicate won: b-future now belongs to a user the import created.
    let current = store.all_bookings().await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].user, "u-new");
    assert_eq!(usage(&store, "u-new", "p-a", now).await, HOUR);
    // Both old ones were cancelled (refunded: one before its start, one a minute in).
    assert_eq!(usage(&store, "u-1", "p-a", now).await, MINUTE);
    assert_eq!(store.all_old_bookings().await.unwrap().len(), 2);
}

async fn replacing_old_bookings_keeps_groups_and_recomputes_usage(db: Db) {
    let store = loaded(&db, "u-1").await;
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    let old = Booking {
        name: "old-1".to_owned(),
        policy: "p-a".to_owned(),
        slot: "sl-b".to_owned(),
        user: "u-2".to_owned(),
        when: at(T0 - 2 * HOUR, T0 - HOUR),
        ..Booking::default()
    };
    let cancelled_early = Booking {
        name: "old-2".to_owned(),
        user: "u-1".to_owned(),
        cancelled: true,
        cancelled_at: Some(T0 - 3 * HOUR),
        cancelled_by: Some("u-1".to_owned()),
        ..old.clone()
    };
    store
        .replace_old_bookings(vec![old.clone(), cancelled_early.clone()], T0)
        .await
        .unwrap();
    assert_eq!(store.user_groups("u-1").await.unwrap(), ["g-a"]);
    let users = store.users().await.unwrap();
    // u-1: the current booking in full, the early-cancelled old one not at all.
    assert_eq!(users["u-1"].usage["p-a"], HOUR);
    assert_eq!(users["u-2"].usage["p-a"], HOUR);
    assert_eq!(users["u-2"].old_bookings, ["old-1"]);
    assert_eq!(
        store.all_old_bookings().await.unwrap(),
        [old, cancelled_early]
    );
    assert_eq!(store.counts().await.unwrap().old_bookings, 2);
}

async fn activity_then_cancel_queues_deny_calls(db: Db) {
    let store = loaded(&db, "u-1").await;
    let strict = db
        .open_with(StoreOptions {
            disable_cancel_after_use: true,
        })
        .await;
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    let during = T0 + HOUR + MINUTE;
    assert_eq!(
        refusal(store.start_activity("u-1", "b-1", T0).await),
        "too early"
    );
    assert_eq!(
        not_found(store.start_activity("u-2", "b-1", during).await),
        "not found"
    );
    let started = store.start_activity("u-1", "b-1", during).await.unwrap();
    assert!(started.started);
    assert_eq!(started.started_at, Some(during));
    assert_eq!(
        refusal(strict.cancel_booking("u-1", "b-1", "u-1", during).await),
        "cannot cancel booking that has already been used"
    );
    let cancelled = store
        .cancel_booking("", "b-1", "admin", during)
        .await
        .unwrap();
    let exp = (T0 + 2 * HOUR) / 1_000_000_000;
    let urls: Vec<&str> = cancelled
        .deny_calls
        .iter()
        .map(|call| call.relay_url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            "https://relay-one.example/access",
            "https://relay-two.example/access"
        ]
    );
    assert!(cancelled
        .deny_calls
        .iter()
        .all(|call| call.booking == "b-1" && call.exp == exp && call.state == "pending"));
    // Refund: started, no grace policy: charged from start to cancellation.
    assert_eq!(usage(&store, "u-1", "p-a", during).await, MINUTE);
    assert!(store
        .due_deny_calls(during - 1, 10)
        .await
        .unwrap()
        .is_empty());
    let due = store.due_deny_calls(during, 10).await.unwrap();
    assert_eq!(due, cancelled.deny_calls);
    let (first, second) = (due[0].id, due[1].id);
    store.record_deny_attempt(first, None, None).await.unwrap();
    store
        .record_deny_attempt(
            second,
            Some("connection refused"),
            Some(during + 2 * 1_000_000_000),
        )
        .await
        .unwrap();
    assert_eq!(
        store.due_deny_calls(during, 10).await.unwrap(),
        Vec::<DenyCall>::new()
    );
    let retry = store
        .due_deny_calls(during + 2 * 1_000_000_000, 10)
        .await
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].attempts, 1);
    assert_eq!(retry[0].last_error.as_deref(), Some("connection refused"));
    store
        .record_deny_attempt(second, Some("still refused"), None)
        .await
        .unwrap();
    let recent = store.deny_calls(10).await.unwrap();
    let states: Vec<(i64, &str, i64)> = recent
        .iter()
        .map(|call| (call.id, call.state.as_str(), call.attempts))
        .collect();
    assert_eq!(states, [(second, "failed", 2), (first, "ok", 1)]);
    assert!(store
        .due_deny_calls(T0 + 10 * HOUR, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn user_reads_use_an_index_with_ten_thousand_old_bookings(db: Db) {
    let store = loaded(&db, "u-1").await;
    let history: Vec<Booking> = (0..10_000_i64)
        .map(|i| Booking {
            name: format!("old-{i}"),
            policy: "p-a".to_owned(),
            slot: "sl-a".to_owned(),
            user: format!("u-{}", i % 100),
            when: at(T0 - (i + 2) * HOUR, T0 - (i + 1) * HOUR),
            ..Booking::default()
        })
        .collect();
    store.replace_old_bookings(history, T0).await.unwrap();
    book(&store, "b-1", "sl-a", "u-1", T0 + HOUR, T0 + 2 * HOUR).await;
    let current = store.bookings_of("u-1", T0).await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(
        store.policy_status("u-1", "p-a", T0).await.unwrap(),
        PolicyStatus {
            current_bookings: 1,
            old_bookings: 100,
            usage: 101 * HOUR
        }
    );
    let pool = raw_pool(&db).await;
    if db.kind == "postgres" {
        sqlx::query("ANALYZE bookings")
            .execute(&pool)
            .await
            .unwrap();
    }
    // The store's per-user reads: current, old, and the counts of a policy status.
    for user_read in [
        "SELECT name FROM bookings WHERE user_name = 'u-1' AND old = 0 AND end_ns > 0",
        "SELECT name FROM bookings WHERE user_name = 'u-1' AND (old = 1 OR end_ns <= 0)",
        "SELECT COUNT(*) FROM bookings WHERE user_name = 'u-1' AND policy = 'p-a' \
         AND (old = 1 OR end_ns <= 0)",
    ] {
        let plan = query_plan(&pool, db.kind, user_read).await;
        let indexed = plan.contains("Index") || plan.contains("USING INDEX");
        let scans_all = plan.contains("Seq Scan") || plan.contains("SCAN bookings");
        assert!(
            indexed && !scans_all,
            "{user_read}: plan without an index:\n{plan}"
        );
    }
}

/// The query plan's text (`EXPLAIN` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite).
async fn query_plan(pool: &sqlx::AnyPool, kind: &str, sql: &str) -> String {
    let (explain, column) = if kind == "postgres" {
        ("EXPLAIN", 0)
    } else {
        ("EXPLAIN QUERY PLAN", 3)
    };
    sqlx::query(&format!("{explain} {sql}"))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>(column).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_sqlite_url_opens_a_store_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("by-url.sqlite").display()
    );
    let store = Store::open(&Location::Url(url.clone()), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.join_group("u-1", "g-a").await.unwrap();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(matches!(
        Store::open(
            &Location::Url("mysql://x/y".to_owned()),
            StoreOptions::default()
        )
        .await,
        Err(StoreError::Database(sqlx::Error::Configuration(_)))
    ));
}
