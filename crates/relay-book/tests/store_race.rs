//! Exclusivity is the database's job: many concurrent bookings of one slot interval give
//! exactly one success, on two stores over one PostgreSQL (as two server processes would
//! be) and on one SQLite store; two grace checkers racing cancel each no-show once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod store_common;

use relay_book::store::{Store, StoreError};
use store_common::{at, manifest, request, Db, HOUR, T0};

const RACERS: usize = 50;

/// `RACERS` users (all in `g-a`) book `sl-a` for the same hour at once, round-robin over
/// `stores`; exactly one wins and every other is refused with the diary's message.
async fn race(stores: Vec<Store>) {
    let first = &stores[0];
    first.replace_manifest(manifest(), T0).await.unwrap();
    for racer in 0..RACERS {
        first
            .join_group(&format!("u-{racer}"), "g-a")
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = stores[racer % stores.len()].clone();
        tasks.spawn(async move {
            let user = format!("u-{racer}");
            let when = at(T0 + HOUR, T0 + 2 * HOUR);
            store
                .make_booking(request(&format!("b-{racer}"), "sl-a", &user, when), T0)
                .await
        });
    }
    let mut wins = Vec::new();
    let mut refusals = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            Ok(booking) => wins.push(booking.name),
            Err(StoreError::Refused(text)) => refusals.push(text),
            Err(other) => panic!("a racer failed instead of being refused: {other:?}"),
        }
    }
    assert_eq!(wins.len(), 1, "winners: {wins:?}");
    assert_eq!(refusals.len(), RACERS - 1);
    assert!(
        refusals.iter().all(|text| text == "conflict with existing"),
        "{refusals:?}"
    );
    for store in &stores {
        let stored = store.all_bookings().await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].name, wins[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_postgres_give_one_winner() {
    let db = Db::postgres();
    let stores = vec![db.open().await, db.open().await];
    race(stores).await;
    // Below the store's row locks, the exclusion constraint refuses an overlapping diary
    // entry by itself (half-open: touching is fine).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.cluster.as_ref().unwrap().url())
        .await
        .unwrap();
    let insert = "INSERT INTO reservations (booking, resource, start_ns, end_ns) \
                  VALUES ($1, 'r-a', $2, $3)";
    let overlapping = sqlx::query(insert)
        .bind("raw-1")
        .bind(T0 + HOUR + 1)
        .bind(T0 + 3 * HOUR)
        .execute(&pool)
        .await
        .unwrap_err();
    let code = overlapping
        .as_database_error()
        .and_then(|error| error.code());
    assert_eq!(code.as_deref(), Some("23P01"), "{overlapping}");
    sqlx::query(insert)
        .bind("raw-2")
        .bind(T0 + 2 * HOUR)
        .bind(T0 + 3 * HOUR)
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_sqlite_store_gives_one_winner() {
    let db = Db::sqlite();
    race(vec![db.open().await]).await;
}

/// Two server processes run their grace checkers at once: every no-show is cancelled
/// exactly once and charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_cancel_each_no_show_once() {
    let db = Db::postgres();
    let (one, two) = (db.open().await, db.open().await);
    // Unlimited users: every no-show may hold the same hour.
    let mut shared = manifest();
    shared
        .policies
        .get_mut("p-grace")
        .unwrap()
        .enforce_unlimited_users = true;
    one.replace_manifest(shared, T0).await.unwrap();
    let no_shows = 20_i64;
    for index in 0..no_shows {
        let user = format!("u-{index}");
        one.join_group(&user, "g-a").await.unwrap();
        let when = at(T0 + HOUR, T0 + 2 * HOUR);
        one.make_booking(request(&format!("b-{index}"), "sl-g", &user, when), T0)
            .await
            .unwrap();
    }
    // Every grace time (start + 5 minutes) has passed; every booking is still running.
    let now = T0 + HOUR + 10 * store_common::MINUTE;
    let (first, second) = tokio::join!(one.cancel_no_shows(now), two.cancel_no_shows(now));
    let mut names: Vec<String> = first
        .unwrap()
        .into_iter()
        .chain(second.unwrap())
        .map(|booking| booking.name)
        .collect();
    names.sort();
    let mut expected: Vec<String> = (0..no_shows).map(|index| format!("b-{index}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    for index in 0..no_shows {
        let status = two
            .policy_status(&format!("u-{index}"), "p-grace", now)
            .await
            .unwrap();
        assert_eq!(status.usage, 15 * store_common::MINUTE, "u-{index}");
        assert_eq!(status.old_bookings, 1);
    }
}
