//! B9 booking rush (issue 15): N users each log in, join a group and book one of S slots,
//! started evenly over T seconds, against a `relay book serve` this runner starts, on SQLite
//! and on PostgreSQL; then again with H old bookings already stored.
//!
//! - **Contention:** user `i` books slot `i % S`, 45 minutes from `08:00 + 30 min × ((i / S)
//!   % K)` of a day of its own per run, so the K intervals of a slot overlap their
//!   neighbours and most slots are asked for more than once: many requests are refused.
//! - **Measured:** successes; refusals by message; double bookings (two bookings of one
//!   slot, whose rig has no other slot, with overlapping half-open intervals in
//!   `GET /admin/bookings`; must be 0); bookings stored for the run (must equal the
//!   successes); p50 and p99 of the booking request alone (`POST /slots/{slot}`), measured
//!   from sending to the reply.
//! - **History:** seeded through the relay-book `Store` library before the server starts
//!   (`replace_old_bookings`, one transaction), not through `PUT /admin/oldbookings`, so the
//!   seed does not depend on the API's body limit. The old bookings belong to the rush's own
//!   users (H / N each), 30 minutes each, on the same slots, in the weeks before today, so
//!   per-user reads and the max-bookings tidy meet a real history. The table gives the
//!   ratio of the p50 and p99 with history to those without.
//!
//! PostgreSQL is a throw-away cluster (`relay_testkit::postgres::PgCluster`, initdb in a
//! temporary directory) unless `--book-database-url` names one; each run books a day of its
//! own, so runs on one database never meet.

use crate::peers::Lab;
use crate::procs::Proc;
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::{bail, Context, Result};
use relay_book::interval::Interval;
use relay_book::manifest::Manifest;
use relay_book::model::Booking;
use relay_book::store::{Location, Store, StoreOptions};
use relay_testkit::book::{
    admin_token, booking_rows, double_bookings, manifest, rfc3339, slot_name, BookApi, GROUP,
    POLICY,
};
use relay_testkit::postgres::PgCluster;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// B9 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Users in the rush; each books once.
    pub users: usize,
    /// Slots (one rig each).
    pub slots: usize,
    /// Overlapping intervals offered per slot (K).
    pub intervals: usize,
    /// The rush's users start evenly over this many seconds.
    pub seconds: f64,
    /// `sqlite`, `postgres`: one pair of table rows each.
    pub databases: Vec<String>,
    /// PostgreSQL to use instead of a throw-away cluster.
    pub database_url: Option<String>,
    /// Old bookings stored before the second row of each database (0: no second row).
    pub history: usize,
    pub runs: usize,
}

pub(crate) const ADMIN_SECRET: &str = "relay-bench-b9-admin-secret-0123456789abcdef";
const RELAY_SECRET: &str = "relay-bench-b9-relay-secret-0123456789abcdef";
/// `BOOK_AUDIENCE`: the server listens on port 0, so its audience is a name.
pub(crate) const AUDIENCE: &str = "http://book.bench";
/// What `relay book serve` prints once its API is bound, before the address.
const LISTENING_LINE: &str = "relay book: API listening on ";
/// No relay is called: nobody starts a booking.
pub(crate) const NO_RELAY: &str = "http://127.0.0.1:9";
/// The prefix every booking refusal carries; the table shows the rest.
const REFUSAL_PREFIX: &str = "could not make the booking because ";
const NANOS_PER_SECOND: i64 = 1_000_000_000;
/// Length of a rush booking and the step between a slot's intervals.
const BOOKING: Duration = Duration::from_secs(45 * 60);
const STEP: Duration = Duration::from_secs(30 * 60);
/// Length of a seeded old booking.
const OLD_BOOKING: i64 = 30 * 60 * NANOS_PER_SECOND;

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    anyhow::ensure!(
        opts.users > 0 && opts.slots > 0 && opts.intervals > 0,
        "b9: users, slots and intervals must be more than 0"
    );
    let mut table = Table::new(
        format!(
            "B9 booking rush: {} users each log in, join a group and book one of {} slots ({} overlapping 45-minute intervals each), started over {} s, {} run(s)",
            opts.users, opts.slots, opts.intervals, opts.seconds, opts.runs
        ),
        &[
            "database",
            "old bookings",
            "successes",
            "refusals by message (per run)",
            "other failures (all runs)",
            "double bookings",
            "stored",
            "booking p50",
            "booking p99",
            "p50 / p99 vs no history",
            "last reply after",
        ],
    );
    let mut round = 0;
    for database in &opts.databases {
        let backend = match Backend::new(database, opts) {
            Ok(backend) => backend,
            Err(e) => {
                table.row(vec![database.clone(), format!("not run: {e:#}")]);
                continue;
            }
        };
        let mut without_history: Option<(f64, f64)> = None;
        let histories = if opts.history > 0 {
            vec![0, opts.history]
        } else {
            vec![0]
        };
        for history in histories {
            match measure(lab, opts, &backend, history, &mut round).await {
                Ok(outcomes) => {
                    let row = Row::of(&outcomes);
                    let versus = match (history, without_history) {
                        (0, _) => {
                            without_history = Some((row.p50, row.p99));
                            "—".to_owned()
                        }
                        (_, Some((p50, p99))) => {
                            format!("{:.2}× / {:.2}×", row.p50 / p50, row.p99 / p99)
                        }
                        (_, None) => "n/a".to_owned(),
                    };
                    table.row(row.cells(database, history, versus));
                }
                Err(e) => table.row(vec![
                    database.clone(),
                    history.to_string(),
                    format!("not run: {e:#}"),
                ]),
            }
        }
    }
    table.notes.push(format!(
        "Each user: POST /login/{{user}}, POST /users/{{user}}/groups/{GROUP}, then POST /slots/{{slot}}; the latency is that last request's, from sending to the reply, over all runs. \
         Refusals are 404 `{REFUSAL_PREFIX}…`; other failures are any other status or no reply (logins included). \
         Double bookings: pairs of overlapping bookings of one rig in GET /admin/bookings after the rush. Stored: bookings of the run's day there (should equal the successes). \
         Old bookings are seeded with the relay-book Store library (replace_old_bookings) before the server starts; they belong to the rush's users. \
         The server is `relay book serve` with BOOK_LOGIN_RATE_PER_IP={}; its log is /tmp/relay-bench-book-<database>.log.",
        if lab.relay_limits { "its default" } else { "off" }
    ));
    Ok(table)
}

/// Where the server keeps its bookings during one database's rows.
pub(crate) enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres {
        url: String,
        /// The throw-away cluster, if this runner started it (stopped on drop).
        _cluster: Option<PgCluster>,
    },
}

impl Backend {
    fn new(database: &str, opts: &Options) -> Result<Backend> {
        match database {
            "sqlite" => Ok(Backend::Sqlite(tempfile::tempdir()?)),
            "postgres" => Ok(match &opts.database_url {
                Some(url) => Backend::Postgres {
                    url: url.clone(),
                    _cluster: None,
                },
                None => {
                    let cluster = PgCluster::try_start().map_err(anyhow::Error::msg)?;
                    Backend::Postgres {
                        url: cluster.url(),
                        _cluster: Some(cluster),
                    }
                }
            }),
            other => bail!("unknown database {other:?} (known: sqlite, postgres)"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    fn location(&self) -> Location {
        match self {
            Backend::Sqlite(dir) => Location::SqliteDir(dir.path().to_owned()),
            Backend::Postgres { url, .. } => Location::Url(url.clone()),
        }
    }

    /// The server's setting for this database.
    fn setting(&self) -> (String, String) {
        match self {
            Backend::Sqlite(dir) => (
                "BOOK_PERSIST_DIR".into(),
                dir.path().to_string_lossy().into_owned(),
            ),
            Backend::Postgres { url, .. } => ("BOOK_DATABASE_URL".into(), url.clone()),
        }
    }
}

/// What one rush gave.
struct Outcome {
    successes: usize,
    refusals: BTreeMap<String, usize>,
    failures: usize,
    doubles: usize,
    stored: usize,
    latency: Latency,
    last_reply: Duration,
}

/// Seed `history` old bookings (if any), start the server, and run the rush `opts.runs`
/// times, each on a day of its own (`round` counts days across calls).
async fn measure(
    lab: &Lab,
    opts: &Options,
    backend: &Backend,
    history: usize,
    round: &mut u64,
) -> Result<Vec<Outcome>> {
    let rigs = manifest(opts.slots, NO_RELAY, &serde_json::json!({}));
    if history > 0 {
        seed_history(backend, &rigs, opts, history).await?;
    }
    let (mut server, api) = start_server(lab, backend).await?;
    let admin = admin_token(ADMIN_SECRET, AUDIENCE, Duration::from_secs(24 * 3600));
    let mut outcomes = Vec::new();
    let measured = async {
        api.put_manifest(&admin, &rigs)
            .await
            .map_err(anyhow::Error::msg)?;
        for _ in 0..opts.runs {
            *round += 1;
            server.check_alive()?;
            outcomes.push(rush(&api, &admin, opts, *round).await?);
        }
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    measured?;
    Ok(outcomes)
}

/// Start `relay book serve` on 127.0.0.1 port 0 with `backend`, pinned like every server.
pub(crate) async fn start_server(lab: &Lab, backend: &Backend) -> Result<(Proc, BookApi)> {
    let login_rate = if lab.relay_limits { None } else { Some("off") };
    let mut env: Vec<(String, String)> = [
        ("BOOK_AUDIENCE", AUDIENCE),
        ("BOOK_ADMIN_SECRET", ADMIN_SECRET),
        ("BOOK_RELAY_SECRET", RELAY_SECRET),
        ("BOOK_BIND", "127.0.0.1"),
        ("BOOK_PORT", "0"),
        ("BOOK_LOG_FILE", "stdout"),
        ("BOOK_LOG_LEVEL", "warn"),
    ]
    .into_iter()
    .chain(login_rate.map(|rate| ("BOOK_LOGIN_RATE_PER_IP", rate)))
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.push(backend.setting());
    let bin = lab.relay_bin.to_string_lossy().into_owned();
    let args = ["book".to_owned(), "serve".to_owned()];
    let name = format!("book-{}", backend.name());
    let mut proc = Proc::spawn_with_env(&name, &bin, &args, &env, lab.server_core)?;
    let address = proc
        .printed(LISTENING_LINE, Duration::from_secs(60))
        .await?;
    Ok((proc, BookApi::new(format!("http://{address}/api/v1"))))
}

/// Unix nanoseconds of `t`.
fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Store `history` old bookings of the rush's users through the Store library: the
/// manifest first (old bookings must name its policy and slots), then one replacement.
async fn seed_history(
    backend: &Backend,
    rigs: &serde_json::Value,
    opts: &Options,
    history: usize,
) -> Result<()> {
    let started = Instant::now();
    let store = Store::open(&backend.location(), StoreOptions::default())
        .await
        .context("open the store to seed history")?;
    let now = nanos(SystemTime::now());
    let manifest: Manifest = serde_json::from_value(rigs.clone())?;
    store.replace_manifest(manifest, now).await?;
    // Ends a day before now, then back in 30-minute steps, one column per slot.
    let latest_end = now - 24 * 3600 * NANOS_PER_SECOND;
    let bookings = (0..history)
        .map(|j| {
            let step = i64::try_from(j / opts.slots).unwrap_or(i64::MAX / OLD_BOOKING / 2);
            let end = latest_end - step * OLD_BOOKING;
            Booking {
                name: format!("b9-history-{j:06}"),
                policy: POLICY.to_owned(),
                slot: slot_name(j % opts.slots),
                user: user_name(j % opts.users),
                when: Interval {
                    start: end - OLD_BOOKING,
                    end,
                },
                cancelled: false,
                cancelled_at: None,
                cancelled_by: None,
                started: false,
                started_at: None,
                unfulfilled: false,
            }
        })
        .collect();
    store.replace_old_bookings(bookings, now).await?;
    eprintln!(
        "b9: seeded {history} old bookings in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        backend.name()
    );
    Ok(())
}

fn user_name(i: usize) -> String {
    format!("b9-user-{i:05}")
}

/// Midnight UTC `round + 1` days from now: a day no other run books.
fn day_of(round: u64) -> SystemTime {
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    UNIX_EPOCH + Duration::from_secs((today + 1 + round) * 86_400)
}

/// What one user's attempt came to.
enum Attempt {
    Booked(Duration),
    Refused(Duration, String),
    Failed(String),
}

/// One rush on the day of `round`, then the admin list's double bookings and stored count.
async fn rush(api: &BookApi, admin: &str, opts: &Options, round: u64) -> Result<Outcome> {
    let day = day_of(round);
    let first = day + Duration::from_secs(8 * 3600);
    let pace = Duration::from_secs_f64(opts.seconds.max(0.0) / opts.users as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let api = Arc::new(api.clone());
    let mut set = JoinSet::new();
    for i in 0..opts.users {
        let api = api.clone();
        let slot = slot_name(i % opts.slots);
        let interval = u32::try_from((i / opts.slots) % opts.intervals).unwrap_or(0);
        let from = first + STEP * interval;
        set.spawn(async move {
            tokio::time::sleep_until(start + pace.mul_f64(i as f64)).await;
            let attempt = book_once(&api, &user_name(i), &slot, from, from + BOOKING).await;
            (attempt, start.elapsed())
        });
    }
    let mut outcome = Outcome {
        successes: 0,
        refusals: BTreeMap::new(),
        failures: 0,
        doubles: 0,
        stored: 0,
        latency: Latency::new(),
        last_reply: Duration::ZERO,
    };
    let mut first_failure = None;
    while let Some(joined) = set.join_next().await {
        let (attempt, at) = joined?;
        outcome.last_reply = outcome.last_reply.max(at);
        match attempt {
            Attempt::Booked(took) => {
                outcome.successes += 1;
                outcome.latency.record(duration_ns(took));
            }
            Attempt::Refused(took, message) => {
                outcome.latency.record(duration_ns(took));
                *outcome.refusals.entry(message).or_default() += 1;
            }
            Attempt::Failed(why) => {
                outcome.failures += 1;
                first_failure.get_or_insert(why);
            }
        }
    }
    if let Some(why) = first_failure {
        eprintln!(
            "b9 round {round}: {} failure(s), first: {why}",
            outcome.failures
        );
    }
    let listed = api
        .get_json("/admin/bookings", admin)
        .await
        .map_err(anyhow::Error::msg)?;
    let rows = booking_rows(&listed);
    outcome.doubles = double_bookings(&rows).len();
    let date = rfc3339(day);
    let date = date.get(..10).unwrap_or_default();
    outcome.stored = rows.iter().filter(|r| r.start.starts_with(date)).count();
    Ok(outcome)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Log in, join the group, and book; only the booking request is timed.
async fn book_once(
    api: &BookApi,
    user: &str,
    slot: &str,
    from: SystemTime,
    to: SystemTime,
) -> Attempt {
    let token = match api.login(user).await {
        Ok(token) => token,
        Err(e) => return Attempt::Failed(e),
    };
    match api.join(user, &token, GROUP).await {
        Ok(reply) if reply.status == 204 => {}
        Ok(reply) => return Attempt::Failed(format!("join: {reply:?}")),
        Err(e) => return Attempt::Failed(format!("join: {e}")),
    }
    let sent = Instant::now();
    let reply = match api.book(user, &token, slot, from, to).await {
        Ok(reply) => reply,
        Err(e) => return Attempt::Failed(format!("book: {e}")),
    };
    let took = sent.elapsed();
    let message = reply.json()["message"].as_str().map(str::to_owned);
    match (reply.status, message) {
        (204, _) => Attempt::Booked(took),
        (404, Some(message)) if message.starts_with(REFUSAL_PREFIX) => {
            Attempt::Refused(took, message.trim_start_matches(REFUSAL_PREFIX).to_owned())
        }
        _ => Attempt::Failed(format!("book: {reply:?}")),
    }
}

/// One table row's numbers over a measurement's runs.
struct Row {
    successes: Vec<f64>,
    refusals: BTreeMap<String, usize>,
    failures: usize,
    doubles: usize,
    stored: Vec<f64>,
    p50: f64,
    p99: f64,
    last_reply: Vec<f64>,
}

impl Row {
    fn of(outcomes: &[Outcome]) -> Row {
        let mut latency = Latency::new();
        let mut refusals = BTreeMap::new();
        for outcome in outcomes {
            latency.add(&outcome.latency);
            for (message, count) in &outcome.refusals {
                *refusals.entry(message.clone()).or_default() += count;
            }
        }
        Row {
            successes: outcomes.iter().map(|o| o.successes as f64).collect(),
            refusals,
            failures: outcomes.iter().map(|o| o.failures).sum(),
            doubles: outcomes.iter().map(|o| o.doubles).sum(),
            stored: outcomes.iter().map(|o| o.stored as f64).collect(),
            p50: latency.quantile(0.5) as f64,
            p99: latency.quantile(0.99) as f64,
            last_reply: outcomes
                .iter()
                .map(|o| o.last_reply.as_secs_f64())
                .collect(),
        }
    }

    fn cells(&self, database: &str, history: usize, versus: String) -> Vec<String> {
        let runs = self.successes.len().max(1);
        let refusals = if self.refusals.is_empty() {
            "none".to_owned()
        } else {
            self.refusals
                .iter()
                .map(|(message, count)| format!("{} × `{message}`", count / runs))
                .collect::<Vec<_>>()
                .join("; ")
        };
        vec![
            database.to_owned(),
            history.to_string(),
            agg(&self.successes, dec(0)),
            refusals,
            self.failures.to_string(),
            self.doubles.to_string(),
            agg(&self.stored, dec(0)),
            fmt_ns(self.p50),
            fmt_ns(self.p99),
            versus,
            agg(&self.last_reply, |s| format!("{s:.1} s")),
        ]
    }
}
