//! Exclusivity is the database's job (issue 15): many users book the same slot for the same
//! interval at the same moment, split across two `relay book serve` processes on one
//! PostgreSQL database, or sent to one process on SQLite. Exactly one gets 204; every other
//! gets 404 `could not make the booking because conflict with existing`, and one booking is
//! stored.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod book_support;
mod support;

use book_support::{admin, book_serve, Database};
use relay_testkit::book::{booking_rows, manifest, slot_name, BookApi, CONFLICT, GROUP};
use relay_testkit::postgres::PgCluster;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// Users racing for the one interval.
const RACERS: usize = 40;

/// `RACERS` users, each logged in and in the group through server `i % servers.len()`,
/// book slot 0 for the same half hour tomorrow, all released at once, each through the
/// server it joined on; then the replies and the stored bookings are checked.
async fn exactly_one_of_many_gets_the_slot(servers: &[BookApi]) {
    let admin = admin();
    servers[0]
        .put_manifest(&admin, &manifest(1, "http://127.0.0.1:9", &json!({})))
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let from = UNIX_EPOCH + Duration::from_secs((now / 86_400 + 1) * 86_400 + 10 * 3600);
    let to = from + Duration::from_secs(1800);

    let release = Arc::new(Barrier::new(RACERS));
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        let (api, release) = (servers[i % servers.len()].clone(), release.clone());
        racers.spawn(async move {
            let user = format!("racer-{i:03}");
            let token = api.login(&user).await.unwrap();
            let joined = api.join(&user, &token, GROUP).await.unwrap();
            assert_eq!(joined.status, 204, "{user}: {joined:?}");
            release.wait().await;
            let reply = api.book(&user, &token, &slot_name(0), from, to).await;
            (user, reply.unwrap())
        });
    }
    let mut winners = Vec::new();
    let mut refused = 0;
    while let Some(raced) = racers.join_next().await {
        let (user, reply) = raced.unwrap();
        if reply.status == 204 {
            assert_eq!(reply.body, "", "{user}");
            winners.push(user);
        } else {
            assert_eq!(
                (reply.status, reply.json()),
                (404, json!({"code": "404", "message": CONFLICT})),
                "{user}: {reply:?}"
            );
            refused += 1;
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(refused, RACERS - 1);
    for api in servers {
        let stored = booking_rows(&api.get_json("/admin/bookings", &admin).await.unwrap());
        assert_eq!(stored.len(), 1, "{} stores {stored:?}", api.base());
        assert_eq!(stored[0].user, winners[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_postgres_give_the_slot_to_exactly_one() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    let database = Database::Postgres(&url);
    let first = book_serve(&database, &[]);
    let second = book_serve(&database, &[]);
    exactly_one_of_many_gets_the_slot(&[first.api.clone(), second.api.clone()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_on_sqlite_gives_the_slot_to_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = book_serve(&Database::Sqlite(dir.path()), &[]);
    exactly_one_of_many_gets_the_slot(std::slice::from_ref(&server.api)).await;
}
