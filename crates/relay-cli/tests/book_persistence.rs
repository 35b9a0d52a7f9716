//! Nothing is lost (issue 15, "Persistence and scale"): `relay book serve` is killed with
//! SIGKILL in the middle of a rush of bookings from many concurrent users and restarted on
//! the same database, on SQLite and on PostgreSQL. Every booking whose 204 was received is
//! there, and the usage totals are those of the stored bookings. And grace checks resume
//! after a restart: a booking whose grace period passed while the server was down is
//! cancelled at start-up and charged grace + penalty (spec §3.5, §3.7).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod book_support;
mod support;

use book_support::{admin, book_serve, BookServer, Database, WAIT};
use relay_testkit::book::{
    booking_rows, go_duration, manifest, rfc3339, slot_name, BookApi, BookingRow, GROUP, POLICY,
};
use relay_testkit::postgres::PgCluster;
use relay_testkit::{wait_until, wait_until_async};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// Users in the rush; each books [`PER_USER`] times, one request after another.
const USERS: usize = 60;
const PER_USER: usize = 4;
/// Slots (one rig each) the users share; user `u` books slot `u % SLOTS` at hours no other
/// user of that slot books, so every booking can succeed.
const SLOTS: usize = 20;
/// The server is killed once this many 204s have come back.
const KILL_AFTER: usize = 60;
/// Where no relay listens: these tests never start a booking, so no deny call is made.
const NO_RELAY: &str = "http://127.0.0.1:9";

/// One booking request of the rush, and what it should be stored as.
#[derive(Debug, Clone)]
struct Request {
    user: String,
    slot: String,
    from: SystemTime,
    to: SystemTime,
}

impl Request {
    fn matches(&self, row: &BookingRow) -> bool {
        row.user == self.user
            && row.slot == self.slot
            && row.start == rfc3339(self.from)
            && row.end == rfc3339(self.to)
    }
}

fn user_name(u: usize) -> String {
    format!("rush-user-{u:03}")
}

/// Midnight UTC two days from now: far enough ahead that no rule refuses the rush.
fn day_after_tomorrow() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs((now / 86_400 + 2) * 86_400)
}

/// User `u`'s bookings: on slot `u % SLOTS`, in hours of its own, 10 to 30 minutes long
/// (so users' usage totals differ).
fn requests_of(u: usize, base: SystemTime) -> Vec<Request> {
    (0..PER_USER)
        .map(|k| {
            let hour = (u / SLOTS * PER_USER + k) as u64;
            let from = base + Duration::from_secs(hour * 3600);
            let minutes = 10 + 5 * ((u + k) % 5) as u64;
            Request {
                user: user_name(u),
                slot: slot_name(u % SLOTS),
                from,
                to: from + Duration::from_secs(minutes * 60),
            }
        })
        .collect()
}

/// Log in and join [`GROUP`] as each of `users`, all at once; their tokens by name.
async fn join_all(api: &BookApi, users: &[String]) -> BTreeMap<String, String> {
    let mut set = JoinSet::new();
    for user in users {
        let (api, user) = (api.clone(), user.clone());
        set.spawn(async move {
            let token = api.login(&user).await.unwrap();
            let joined = api.join(&user, &token, GROUP).await.unwrap();
            assert_eq!(joined.status, 204, "{user}: {joined:?}");
            (user, token)
        });
    }
    let mut tokens = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (user, token) = joined.unwrap();
        tokens.insert(user, token);
    }
    tokens
}

/// The usage `users` (a `GET /admin/users` reply) shows for `user` under [`POLICY`].
fn usage_of(users: &Value, user: &str) -> String {
    users[user]["usage"][POLICY]
        .as_str()
        .unwrap_or("0s")
        .to_owned()
}

/// Start a server on `database`, send the rush, kill it with SIGKILL after [`KILL_AFTER`]
/// 204s, restart it on the same database and check what it kept.
async fn killed_mid_rush_keeps_every_acknowledged_booking(database: Database<'_>) {
    let server = book_serve(&database, &[]);
    let api = server.api.clone();
    let admin = admin();
    api.put_manifest(&admin, &manifest(SLOTS, NO_RELAY, &json!({})))
        .await
        .unwrap();
    let users: Vec<String> = (0..USERS).map(user_name).collect();
    let tokens = Arc::new(join_all(&api, &users).await);

    let base = day_after_tomorrow();
    let acknowledged: Arc<Mutex<Vec<Request>>> = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut rush = JoinSet::new();
    for u in 0..USERS {
        let (api, tokens, acknowledged, answered) = (
            api.clone(),
            tokens.clone(),
            acknowledged.clone(),
            answered.clone(),
        );
        rush.spawn(async move {
            for request in requests_of(u, base) {
                let token = &tokens[&request.user];
                let reply = api
                    .book(
                        &request.user,
                        token,
                        &request.slot,
                        request.from,
                        request.to,
                    )
                    .await;
                // No reply: the server was killed. Its later requests would find it gone too.
                let Ok(reply) = reply else { return };
                assert_eq!(
                    (reply.status, reply.body.as_str()),
                    (204, ""),
                    "{request:?}"
                );
                acknowledged.lock().unwrap().push(request);
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let count = answered.clone();
    wait_until_async(&format!("{KILL_AFTER} bookings made"), WAIT, || {
        let count = count.clone();
        async move { count.load(Ordering::SeqCst) >= KILL_AFTER }
    })
    .await;
    server.kill9();
    while let Some(done) = rush.join_next().await {
        done.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < USERS * PER_USER,
        "the rush was over before the kill ({} bookings), so the kill tested nothing",
        acknowledged.len()
    );

    let restarted: BookServer = book_serve(&database, &[]);
    let api = &restarted.api;
    let stored = booking_rows(&api.get_json("/admin/bookings", &admin).await.unwrap());
    eprintln!(
        "{} of {} bookings acknowledged before the kill; {} stored after the restart",
        acknowledged.len(),
        USERS * PER_USER,
        stored.len()
    );
    for request in &acknowledged {
        assert!(
            stored.iter().any(|row| request.matches(row)),
            "{request:?} was acknowledged with 204 but is not stored after the restart"
        );
    }
    // A request in flight at the kill may or may not have been committed; each user had at
    // most one in flight.
    for user in &users {
        let stored_of_user = stored.iter().filter(|r| &r.user == user).count();
        let acknowledged_of_user = acknowledged.iter().filter(|r| &r.user == user).count();
        assert!(
            stored_of_user == acknowledged_of_user || stored_of_user == acknowledged_of_user + 1,
            "{user}: {acknowledged_of_user} acknowledged, {stored_of_user} stored"
        );
    }
    // Usage totals are those of the stored bookings, and so include every acknowledged one.
    let all_users = api.get_json("/admin/users", &admin).await.unwrap();
    for (u, user) in users.iter().enumerate() {
        let seconds: u64 = requests_of(u, base)
            .iter()
            .filter(|request| stored.iter().any(|row| request.matches(row)))
            .map(|request| request.to.duration_since(request.from).unwrap().as_secs())
            .sum();
        assert_eq!(
            usage_of(&all_users, user),
            go_duration(Duration::from_secs(seconds)),
            "{user}: {}",
            all_users[user]
        );
        let listed = all_users[user]["bookings"].as_array().unwrap();
        for row in stored.iter().filter(|r| &r.user == user) {
            assert!(listed.contains(&json!(row.name)), "{user}: {listed:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_killed_mid_rush_keeps_every_acknowledged_booking() {
    let dir = tempfile::tempdir().unwrap();
    killed_mid_rush_keeps_every_acknowledged_booking(Database::Sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_killed_mid_rush_keeps_every_acknowledged_booking() {
    let cluster = PgCluster::start();
    let url = cluster.url();
    killed_mid_rush_keeps_every_acknowledged_booking(Database::Postgres(&url)).await;
}

/// A no-show whose grace period ends while the server is down is cancelled when it starts
/// again (checks every hour, so only the start-up check can do it), charged grace + penalty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_that_ended_while_down_is_enforced_at_start_up() {
    const GRACE: Duration = Duration::from_secs(2);
    const PENALTY: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let database = Database::Sqlite(dir.path());
    let hourly = [("BOOK_CHECK_EVERY", "1h")];
    let server = book_serve(&database, &hourly);
    let admin = admin();
    let rules = json!({
        "enforce_grace_period": true, "grace_period": go_duration(GRACE),
        "grace_penalty": go_duration(PENALTY),
        "enforce_allow_start_in_past": true, "allow_start_in_past_within": "1m",
    });
    server
        .api
        .put_manifest(&admin, &manifest(1, NO_RELAY, &rules))
        .await
        .unwrap();
    let user = user_name(0);
    let tokens = join_all(&server.api, std::slice::from_ref(&user)).await;
    let token = &tokens[&user];
    let from = SystemTime::now();
    let to = from + Duration::from_secs(3600);
    let booked = server
        .api
        .book(&user, token, &slot_name(0), from, to)
        .await
        .unwrap();
    assert_eq!((booked.status, booked.body.as_str()), (204, ""));
    let stored = booking_rows(
        &server
            .api
            .get_json("/admin/bookings", &admin)
            .await
            .unwrap(),
    );
    assert_eq!(stored.len(), 1, "{stored:?}");
    let booking = stored[0].name.clone();
    server.kill9();

    wait_until("the grace period to end", WAIT, || {
        SystemTime::now() > from + GRACE + Duration::from_millis(100)
    })
    .await;
    let restarted = book_serve(&database, &hourly);
    let api = &restarted.api;
    let old_bookings =
        || async { booking_rows(&api.get_json("/admin/oldbookings", &admin).await.unwrap()) };
    wait_until_async("the no-show cancelled after the restart", WAIT, || async {
        !old_bookings().await.is_empty()
    })
    .await;
    let old = old_bookings().await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(
        (old[0].name.as_str(), old[0].cancelled),
        (booking.as_str(), true)
    );
    let current = booking_rows(&api.get_json("/admin/bookings", &admin).await.unwrap());
    assert!(current.is_empty(), "{current:?}");
    let users = api.get_json("/admin/users", &admin).await.unwrap();
    assert_eq!(
        usage_of(&users, &user),
        go_duration(GRACE + PENALTY),
        "{users}"
    );
}
