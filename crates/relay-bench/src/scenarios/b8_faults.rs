//! B8 faults, relay only (docs PERFORMANCE.md): what a crash and a booking deny cost.
//!
//! - **restart**: a writer and R readers on one topic, each a `relay_client` [`Session`] (the
//!   project's reconnecting client, as `relay host` uses it), stream 2 Mbit/s; the relay is
//!   SIGKILLed, left down for `--outage`, and started again on the same ports. Measured from
//!   the restarted relay accepting on both ports: the writer's session connected again, and
//!   each reader receiving a message produced after that moment; plus what was lost.
//! - **deny**: N live connections of one or more booking ids, then `POST /bids/deny` for each
//!   id. Measured from sending the deny(s): the HTTP replies, and each connection seeing its
//!   close (which close codes); connections of another booking on the same topic must still
//!   receive afterwards.
//!
//! The peers have neither a reconnecting client nor a deny API, so only the relay runs. It is
//! started here rather than through [`Lab::start`] because the restart must reuse its ports.

use crate::peers::Lab;
use crate::procs::{free_port, Proc, PORT_ATTEMPTS};
use crate::report::{agg, dec, fmt_ns, Table};
use crate::wire;
use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use relay_client::session::{Backoff, Message, Session, SessionConfig, SessionState};
use relay_common::connection::ConnectionType;
use relay_testkit::wait::{try_wait_until, try_wait_until_async};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// B8 faults parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Which measurements: `restart`, `deny`.
    pub parts: Vec<String>,
    /// Readers of the restarted stream.
    pub readers: usize,
    /// Seconds the relay stays down between the kill and the restart.
    pub outage: f64,
    /// Seconds of streaming before the kill.
    pub warmup: f64,
    pub mbps: f64,
    /// First wait of the client's backoff, in seconds (factor and maximum stay the library's).
    pub backoff_min: f64,
    /// Live connections of the denied booking(s).
    pub deny_conns: usize,
    /// Booking ids the denied connections are spread over; one table row each.
    pub bookings: Vec<usize>,
    /// Connections of another, undenied booking.
    pub undenied: usize,
    pub runs: usize,
}

/// Video message size: 7 TS packets of 188 bytes, as in B1 and B8.
const MESSAGE: usize = 1316 * 7;
const SECRET: &str = "relay-bench-b8-faults-secret";
/// How long the restarted stream may take to come back before a run reports it missing.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// How long denied connections may take to close before a run counts them as still open.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(lab: &Lab, opts: &Options) -> Result<Vec<Table>> {
    anyhow::ensure!(
        lab.external_relay.is_none(),
        "b8-faults kills and restarts the relay, so it needs one it starts itself"
    );
    for part in &opts.parts {
        anyhow::ensure!(
            part == "restart" || part == "deny",
            "unknown part {part:?} (known: restart, deny)"
        );
    }
    let mut tables = Vec::new();
    if opts.parts.iter().any(|p| p == "restart") {
        tables.push(restart_table(lab, opts).await);
    }
    if opts.parts.iter().any(|p| p == "deny") {
        tables.push(deny_table(lab, opts).await);
    }
    Ok(tables)
}

// ---------------------------------------------------------------------------------------
// Starting the relay on chosen ports

/// The two ports of one relay, kept across its restart.
struct Ports {
    access: u16,
    relay: u16,
}

impl Ports {
    fn pick() -> Result<Ports> {
        Ok(Ports {
            access: free_port()?,
            relay: free_port()?,
        })
    }

    fn access_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.access)
    }
}

/// A started relay and when it was spawned and first accepted on both ports (process-epoch ns).
struct Started {
    proc: Proc,
    spawned_ns: u64,
    accepting_ns: u64,
}

/// Start `relay serve` on `ports` (pinned like every server of the runner); the log goes to
/// /tmp/relay-bench-`name`.log.
async fn start_relay(lab: &Lab, ports: &Ports, name: &str) -> Result<Started> {
    let access = ports.access_url();
    let args: Vec<String> = [
        "serve",
        "--audience",
        &access,
        "--url",
        &format!("ws://127.0.0.1:{}", ports.relay),
        "--secret",
        SECRET,
        "--port-access",
        &ports.access.to_string(),
        "--port-relay",
        &ports.relay.to_string(),
        "--bind",
        "127.0.0.1",
        "--log-file",
        "stderr",
    ]
    .iter()
    .chain(crate::peers::RELAY_LIMITS_OFF.iter())
    .map(|s| s.to_string())
    .collect();
    let bin = lab.relay_bin.to_string_lossy().into_owned();
    let spawned_ns = wire::now_ns();
    let mut proc = Proc::spawn(name, &bin, &args, lab.server_core)?;
    let accepting_ns = wait_accepting(&mut proc, &[ports.access, ports.relay]).await?;
    Ok(Started {
        proc,
        spawned_ns,
        accepting_ns,
    })
}

/// Start `relay serve` on fresh free ports (kept for a restart). The relay's public URL
/// must be known before it starts, so it cannot use port 0: a relay that does not come up
/// (most likely a port taken between the pick and its bind) is retried on other ports.
async fn start_relay_on_free_ports(lab: &Lab, name: &str) -> Result<(Started, Ports)> {
    let mut failed = None;
    for _ in 0..PORT_ATTEMPTS {
        let ports = Ports::pick()?;
        match start_relay(lab, &ports, name).await {
            Ok(started) => return Ok((started, ports)),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed
        .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
        .context(format!(
            "relay serve on free ports, {PORT_ATTEMPTS} attempts"
        )))
}

/// Poll every millisecond (finer than `procs::wait_listening`, since this instant starts
/// the clock) until each port accepts; returns when the last one did. At most 15 s.
async fn wait_accepting(proc: &mut Proc, ports: &[u16]) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    for &port in ports {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            proc.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {port} within 15 s (log {})",
                    proc.name,
                    proc.log.display()
                );
            }
            sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(wire::now_ns())
}

/// A session token for `topic` carrying `booking_id`, valid for an hour.
fn session_token(access: &str, topic: &str, booking_id: &str, scopes: &[&str]) -> String {
    let grant = relay_auth::Claims::grant(
        ConnectionType::Session.as_str(),
        topic,
        scopes,
        access,
        relay_auth::unix_now(),
        3600,
    );
    relay_auth::mint(
        &relay_auth::Claims {
            booking_id: booking_id.to_owned(),
            ..grant
        },
        SECRET.as_bytes(),
    )
}

/// An admin token (no topic) with one scope, e.g. `relay:admin` for deny, `relay:stats` for status.
fn admin_token(access: &str, scope: &str) -> String {
    let claims = relay_auth::Claims::grant("", "", &[scope], access, relay_auth::unix_now(), 3600);
    relay_auth::mint(&claims, SECRET.as_bytes())
}

/// Resolves once `flag` is true or its sender is gone (holds no borrow of the value, so the
/// future stays `Send` across later awaits).
async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|f| *f).await;
}

// ---------------------------------------------------------------------------------------
// Pure statistics

/// The nearest-rank `q` quantile (0..=1) of sorted `values`; NaN when empty.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `values` without NaNs, sorted.
fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// How a watched connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    /// A close frame with this code.
    Code(u16),
    /// A close frame without a code.
    NoCode,
    /// The stream ended or failed without a close frame.
    NoFrame,
    /// Still open when the watch stopped.
    Open,
}

/// "4003 ×1000, still open ×2": how many connections ended each way, codes in order.
pub fn endings_summary(endings: &[Ending]) -> String {
    let mut counts: BTreeMap<Ending, usize> = BTreeMap::new();
    for e in endings {
        *counts.entry(*e).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(e, n)| match e {
            Ending::Code(code) => format!("{code} ×{n}"),
            Ending::NoCode => format!("close without code ×{n}"),
            Ending::NoFrame => format!("no close frame ×{n}"),
            Ending::Open => format!("still open ×{n}"),
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// One value per run, or the distinct ones joined when runs disagree.
fn same_or_each(values: &[String]) -> String {
    let mut distinct: Vec<&String> = Vec::new();
    for v in values {
        if !distinct.contains(&v) {
            distinct.push(v);
        }
    }
    match distinct.len() {
        0 => "n/a".into(),
        1 => distinct[0].clone(),
        _ => values.join("; "),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Relay kill and restart under live video

/// When a session came back after the kill (0 = not yet) and how many attempts had failed.
#[derive(Default)]
struct LinkLog {
    reconnected_ns: AtomicU64,
    failures: AtomicU32,
}

/// What one reader saw.
#[derive(Default)]
struct ReaderLog {
    received: AtomicU64,
    /// Highest sequence number seen plus one (0 = none yet).
    seq_end: AtomicU64,
    /// Arrival of the first message produced after the restart (0 = none yet).
    first_after_ns: AtomicU64,
}

struct RestartPoint {
    down: f64,
    startup: f64,
    writer: f64,
    readers_link_max: f64,
    readers_p50: f64,
    readers_max: f64,
    recovered: usize,
    lost_p50: f64,
    lost_max: f64,
    writer_dropped: f64,
    failures: f64,
    reconnects_exact: usize,
}

async fn restart_table(lab: &Lab, opts: &Options) -> Table {
    let config = session_config(opts, "");
    let mut table = Table::new(
        format!(
            "B8 relay kill and restart: 1 writer and {} readers (relay_client sessions), {} Mbit/s in {MESSAGE}-byte messages, {} s outage, {} run(s)",
            opts.readers, opts.mbps, opts.outage, opts.runs
        ),
        &[
            "peer", "relay down (kill → accepting)", "restart → accepting", "writer reconnected",
            "last reader reconnected", "readers' video back p50", "max", "readers back on their own", "lost msgs per reader p50", "max",
            "dropped at writer queue", "failed attempts before reconnect", "sessions with exactly 1 reconnect",
        ],
    );
    let points = super::repeat(opts.runs, "B8 restart", |run| restart_once(lab, opts, run)).await;
    let col = |f: fn(&RestartPoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
    let ratio = |f: fn(&RestartPoint) -> usize, of: usize| {
        same_or_each(
            &points
                .iter()
                .map(|p| format!("{}/{of}", f(p)))
                .collect::<Vec<_>>(),
        )
    };
    if points.is_empty() {
        table.row(vec![
            "relay".into(),
            "not run: every run failed (see stderr)".into(),
        ]);
    } else {
        table.row(vec![
            "relay".into(),
            agg(&col(|p| p.down), fmt_ns),
            agg(&col(|p| p.startup), fmt_ns),
            agg(&col(|p| p.writer), fmt_ns),
            agg(&col(|p| p.readers_link_max), fmt_ns),
            agg(&col(|p| p.readers_p50), fmt_ns),
            agg(&col(|p| p.readers_max), fmt_ns),
            ratio(|p| p.recovered, opts.readers),
            agg(&col(|p| p.lost_p50), dec(0)),
            agg(&col(|p| p.lost_max), dec(0)),
            agg(&col(|p| p.writer_dropped), dec(0)),
            agg(&col(|p| p.failures), dec(0)),
            ratio(|p| p.reconnects_exact, opts.readers + 1),
        ]);
    }
    let b = &config.backoff;
    table.notes.push(format!(
        "Relay only: the peers have no reconnecting client. Every client is a `relay_client::session::Session` as `relay host` uses it (access POST with a JWT carrying a booking id, then dial), never reconnected by hand. \
         Its backoff dominates these times: after each failed attempt it waits {:?}, ×{} per consecutive failure ({:?}, {:?}, {:?} …), at most {:?}, jitter {}; a link that stayed up {:?} resets it (the stream runs {} s before the kill, so the lost link counts as {}). \
         A relay that comes back just after a failed retry is found only at the next retry, one (longer) wait later.",
        b.min, b.factor, b.wait(1), b.wait(2), b.wait(3), b.max, if b.jitter { "on" } else { "off" }, config.stable_after, opts.warmup,
        if opts.warmup >= config.stable_after.as_secs_f64() { "stable: the first retry is immediate and fails while the relay is down" } else { "a failure: the first retry already waits" },
    ));
    table.notes.push(
        "Times run from the restarted relay accepting on both ports (polled every 1 ms). Writer / last reader reconnected: the session's state shows its second connect. Video back: a reader receives a message produced after that instant. \
         Lost: messages produced minus messages received, per reader; the stream is live, so what was produced while a link was down is expected to be lost (the writer's session queues up to 128 messages while its link is down and sends them after reconnecting). \
         The relay is SIGKILLed by pid and started again with the same arguments and ports."
            .into(),
    );
    table.notes.push("Not measured: silent link cut (network namespace + DROP), which needs a namespace this runner does not set up.".into());
    table
}

fn session_config(opts: &Options, url: &str) -> SessionConfig {
    let mut config = SessionConfig::new(url).with_user_agent("relay-bench");
    config.backoff = Backoff {
        min: Duration::from_secs_f64(opts.backoff_min.max(0.001)),
        ..Backoff::default()
    };
    config
}

/// Record the first time the session is connected for the second time (after the kill).
async fn watch_reconnect(mut state: watch::Receiver<SessionState>, log: Arc<LinkLog>) {
    loop {
        {
            let s = state.borrow_and_update();
            if s.connects >= 2 && s.is_connected() {
                log.reconnected_ns.store(wire::now_ns(), Ordering::Relaxed);
                log.failures.store(s.failures, Ordering::Relaxed);
                return;
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// Read timed messages until told to stop, then close the session; returns how many times
/// it connected.
async fn read_session(
    mut session: Session,
    log: Arc<ReaderLog>,
    restart_ns: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    loop {
        tokio::select! {
            _ = raised(&mut stop) => break,
            message = session.recv() => {
                let Some(message) = message else { break };
                let now = wire::now_ns();
                let Some((seq, sent)) = wire::parse(message.as_bytes()) else { continue };
                log.received.fetch_add(1, Ordering::Relaxed);
                log.seq_end.fetch_max(seq + 1, Ordering::Relaxed);
                let restart = restart_ns.load(Ordering::Relaxed);
                if restart != 0 && sent >= restart && log.first_after_ns.load(Ordering::Relaxed) == 0 {
                    log.first_after_ns.store(now, Ordering::Relaxed);
                }
            }
        }
    }
    let connects = session.state().borrow().connects;
    session.close().await;
    connects
}

/// Produce paced video messages into the session until halted, counting them in `produced`;
/// a live source does not wait, so a full session queue drops the message. Returns the
/// session (still open, so what it has queued still goes out) and the messages dropped.
async fn write_session(
    mut session: Session,
    rate: f64,
    produced: Arc<AtomicU64>,
    mut halt: watch::Receiver<bool>,
) -> (Session, u64) {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let (mut seq, mut dropped) = (0u64, 0u64);
    loop {
        let due = start + interval.mul_f64(seq as f64);
        tokio::select! {
            _ = raised(&mut halt) => break,
            _ = sleep_until(due) => {
                let message = Message::Binary(wire::message(seq, wire::now_ns(), MESSAGE));
                if session.try_send(message).is_err() {
                    dropped += 1;
                }
                seq += 1;
                produced.store(seq, Ordering::Relaxed);
            }
            // The writer has no read scope, but drain anyway so its reader never pauses.
            message = session.recv() => if message.is_none() { break },
        }
    }
    (session, dropped)
}

async fn restart_once(lab: &Lab, opts: &Options, run: usize) -> Result<RestartPoint> {
    let (first, ports) = start_relay_on_free_ports(lab, "relay-b8-restart").await?;
    let access = ports.access_url();
    let topic = format!("b8-restart-{run}");
    let config = session_config(opts, format!("{access}/session/{topic}").as_str());
    let writer = Session::spawn(config.clone().with_token(session_token(
        &access,
        &topic,
        "b8-restart",
        &[relay_auth::SCOPE_WRITE],
    )));
    let readers: Vec<Session> = (0..opts.readers)
        .map(|_| {
            Session::spawn(config.clone().with_token(session_token(
                &access,
                &topic,
                "b8-restart",
                &[relay_auth::SCOPE_READ],
            )))
        })
        .collect();
    let all_connected = async {
        for s in readers.iter().chain(std::iter::once(&writer)) {
            s.wait_connected().await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), all_connected)
        .await
        .context("sessions did not all connect within 30 s")??;

    let links: Vec<Arc<LinkLog>> = (0..=opts.readers)
        .map(|_| Arc::new(LinkLog::default()))
        .collect();
    let mut watchers = JoinSet::new();
    for (s, log) in std::iter::once(&writer).chain(readers.iter()).zip(&links) {
        watchers.spawn(watch_reconnect(s.state(), log.clone()));
    }
    let restart_ns = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (halt_tx, halt_rx) = watch::channel(false);
    let logs: Vec<Arc<ReaderLog>> = (0..opts.readers)
        .map(|_| Arc::new(ReaderLog::default()))
        .collect();
    let mut reader_tasks = JoinSet::new();
    for (session, log) in readers.into_iter().zip(&logs) {
        reader_tasks.spawn(read_session(
            session,
            log.clone(),
            restart_ns.clone(),
            stop_rx.clone(),
        ));
    }
    let rate = opts.mbps * 1e6 / 8.0 / MESSAGE as f64;
    let produced = Arc::new(AtomicU64::new(0));
    // In JoinSets, so an early error return aborts them and their sessions stop retrying.
    let mut writer_task = JoinSet::new();
    writer_task.spawn(write_session(writer, rate, produced.clone(), halt_rx));

    let receiving = try_wait_until("every reader to receive", Duration::from_secs(15), || {
        logs.iter().all(|l| l.received.load(Ordering::Relaxed) > 0)
    })
    .await
    .is_ok();
    anyhow::ensure!(receiving, "not every reader received within 15 s");
    sleep(Duration::from_secs_f64(opts.warmup.max(0.0))).await;

    // The fault: SIGKILL by pid (Proc::stop), a fixed outage, the same command on the same ports.
    let killed_ns = wire::now_ns();
    first.proc.stop().await;
    sleep(Duration::from_secs_f64(opts.outage.max(0.0))).await;
    let second = start_relay(lab, &ports, "relay-b8-restarted").await?;
    restart_ns.store(second.accepting_ns, Ordering::Relaxed);

    let back = |links: &[Arc<LinkLog>], logs: &[Arc<ReaderLog>]| {
        links[0].reconnected_ns.load(Ordering::Relaxed) != 0
            && logs
                .iter()
                .all(|l| l.first_after_ns.load(Ordering::Relaxed) != 0)
    };
    // The measured instants are taken by the tasks themselves, so the poll period of these
    // waits does not enter them.
    if try_wait_until("recovery", RECOVERY_LIMIT, || back(&links, &logs))
        .await
        .is_err()
    {
        eprintln!("B8 restart run {run}: not everything came back within {RECOVERY_LIMIT:?}");
    }
    // Let the stream run on a little, then stop producing and let the readers catch up.
    sleep(Duration::from_secs(1)).await;
    let _ = halt_tx.send(true);
    let (writer, dropped) = writer_task
        .join_next()
        .await
        .context("writer task missing")??;
    let produced = produced.load(Ordering::Relaxed);
    let _ = try_wait_until("readers to catch up", Duration::from_secs(5), || {
        logs.iter()
            .all(|l| l.seq_end.load(Ordering::Relaxed) >= produced)
    })
    .await;
    let _ = stop_tx.send(true);
    let mut connects = vec![writer.state().borrow().connects];
    while let Some(joined) = reader_tasks.join_next().await {
        connects.push(joined?);
    }
    writer.close().await;
    watchers.abort_all();
    second.proc.stop().await;

    let since = |ns: u64| {
        if ns == 0 {
            f64::NAN
        } else {
            ns.saturating_sub(second.accepting_ns) as f64
        }
    };
    let video = sorted(
        logs.iter()
            .map(|l| since(l.first_after_ns.load(Ordering::Relaxed))),
    );
    let lost = sorted(
        logs.iter()
            .map(|l| produced.saturating_sub(l.received.load(Ordering::Relaxed)) as f64),
    );
    let reader_links = sorted(
        links[1..]
            .iter()
            .map(|l| since(l.reconnected_ns.load(Ordering::Relaxed))),
    );
    let failures = sorted(
        links
            .iter()
            .filter(|l| l.reconnected_ns.load(Ordering::Relaxed) != 0)
            .map(|l| l.failures.load(Ordering::Relaxed) as f64),
    );
    Ok(RestartPoint {
        down: second.accepting_ns.saturating_sub(killed_ns) as f64,
        startup: second.accepting_ns.saturating_sub(second.spawned_ns) as f64,
        writer: since(links[0].reconnected_ns.load(Ordering::Relaxed)),
        readers_link_max: if reader_links.len() == opts.readers {
            nearest_rank(&reader_links, 1.0)
        } else {
            f64::NAN
        },
        readers_p50: nearest_rank(&video, 0.5),
        readers_max: if video.len() == opts.readers {
            nearest_rank(&video, 1.0)
        } else {
            f64::NAN
        },
        recovered: video.len(),
        lost_p50: nearest_rank(&lost, 0.5),
        lost_max: nearest_rank(&lost, 1.0),
        writer_dropped: dropped as f64,
        failures: nearest_rank(&failures, 0.5),
        reconnects_exact: connects.iter().filter(|&&c| c == 2).count(),
    })
}

// ---------------------------------------------------------------------------------------
// 2. Deny with many live connections

struct DenyPoint {
    reply: f64,
    statuses: String,
    p50: f64,
    p99: f64,
    max: f64,
    endings: String,
    kept: String,
}

async fn deny_table(lab: &Lab, opts: &Options) -> Table {
    let mut table = Table::new(
        format!(
            "B8 deny with {} live connections: time from POST /bids/deny to every denied connection closed, {} run(s)",
            opts.deny_conns, opts.runs
        ),
        &[
            "peer", "connections (bookings × each)", "deny reply (last of the POSTs)", "HTTP status", "close seen p50", "p99",
            "max (all closed)", "how the denied connections ended", "other booking still receiving",
        ],
    );
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            table.row(vec!["relay".into(), format!("not run: HTTP client: {e}")]);
            return table;
        }
    };
    for &bookings in &opts.bookings {
        let bookings = bookings.clamp(1, opts.deny_conns.max(1));
        let shape = format!("{} × {}", bookings, opts.deny_conns.div_ceil(bookings));
        let started = start_relay_on_free_ports(lab, "relay-b8-deny").await;
        let (relay, ports) = match started {
            Ok(s) => s,
            Err(e) => {
                table.row(vec!["relay".into(), shape, format!("not run: {e:#}")]);
                continue;
            }
        };
        let access = ports.access_url();
        let label = format!("B8 deny {bookings} booking(s)");
        let points = super::repeat(opts.runs, &label, |run| {
            deny_once(&http, &access, opts, bookings, run)
        })
        .await;
        relay.proc.stop().await;
        let col = |f: fn(&DenyPoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        let text = |f: fn(&DenyPoint) -> &String| {
            same_or_each(&points.iter().map(|p| f(p).clone()).collect::<Vec<_>>())
        };
        table.row(vec![
            "relay".into(),
            shape,
            agg(&col(|p| p.reply), fmt_ns),
            text(|p| &p.statuses),
            agg(&col(|p| p.p50), fmt_ns),
            agg(&col(|p| p.p99), fmt_ns),
            agg(&col(|p| p.max), fmt_ns),
            text(|p| &p.endings),
            text(|p| &p.kept),
        ]);
    }
    table.notes.push(format!(
        "Relay only: the peers have no deny API. Each row: a fresh relay; {} read-only connections opened through the access API with tokens whose booking_id is one of the row's booking ids (round robin, one topic per booking id), \
         plus {} readers and 1 writer of another booking id on the first booking's topic. Once GET /status lists them all, one `POST /bids/deny?bid=…&exp=…` (relay:admin token) per denied booking id goes out at once; \
         times run from just before the first POST. A connection's close is the instant this process read its close frame (or end of stream); all connections are read by one runner core, so the spread includes the runner's own scheduling. \
         Close code 4003 is expected. Afterwards the other booking's writer sends one message, and its readers must all get it while still open.",
        opts.deny_conns, opts.undenied
    ));
    table
}

/// Open one websocket the way a browser does: access POST with the token, dial the uri.
async fn open_ws(
    http: &reqwest::Client,
    access: &str,
    topic: &str,
    booking_id: &str,
    scopes: &[&str],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let token = session_token(access, topic, booking_id, scopes);
    let uri = crate::peers::access_uri(http, access, topic, &token).await?;
    let (ws, _) = tokio_tungstenite::connect_async(uri.as_str())
        .await
        .with_context(|| format!("websocket dial {uri}"))?;
    Ok(ws)
}

/// What one watched connection saw.
struct Watched {
    ending: Ending,
    ended_ns: u64,
}

/// Counters shared by a group of watched connections.
#[derive(Clone, Default)]
struct Counts {
    opened: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    /// Benchmark messages received.
    got: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

/// Where a watched connection goes, and what bounds and stops it.
struct WatchSpec {
    http: reqwest::Client,
    access: String,
    topic: String,
    booking_id: String,
    /// Bounds concurrent opens.
    gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// Open a read-only connection, then read it until it ends or `stop` fires, keeping `counts`.
async fn open_and_watch(spec: WatchSpec, counts: Counts) -> Result<Watched> {
    let WatchSpec {
        http,
        access,
        topic,
        booking_id,
        gate,
        mut stop,
    } = spec;
    let permit = gate.acquire_owned().await?;
    let ws = open_ws(
        &http,
        &access,
        &topic,
        &booking_id,
        &[relay_auth::SCOPE_READ],
    )
    .await;
    drop(permit);
    let mut ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    let end = |ending| {
        counts.ended.fetch_add(1, Ordering::Relaxed);
        Ok(Watched {
            ending,
            ended_ns: wire::now_ns(),
        })
    };
    loop {
        tokio::select! {
            _ = raised(&mut stop) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ok(Watched { ending: Ending::Open, ended_ns: 0 });
            }
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Binary(b))) => {
                    if wire::parse(&b).is_some() {
                        counts.got.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(WsMessage::Close(Some(frame)))) => return end(Ending::Code(u16::from(frame.code))),
                Some(Ok(WsMessage::Close(None))) => return end(Ending::NoCode),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return end(Ending::NoFrame),
            }
        }
    }
}

/// Connections listed by `GET /status` whose topic starts with `prefix`.
async fn listed(http: &reqwest::Client, access: &str, token: &str, prefix: &str) -> Result<usize> {
    let body = http
        .get(format!("{access}/status"))
        .header("Authorization", token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let value: serde_json::Value = serde_json::from_str(&body)?;
    let all = value.as_array().context("GET /status is not an array")?;
    Ok(all
        .iter()
        .filter(|c| {
            c.get("topic")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.starts_with(prefix))
        })
        .count())
}

/// One deny run: open the connections, wait until the relay lists them all, deny the
/// bookings, and measure the replies, the closes and the other booking's survival.
async fn deny_once(
    http: &reqwest::Client,
    access: &str,
    opts: &Options,
    bookings: usize,
    run: usize,
) -> Result<DenyPoint> {
    let n = opts.deny_conns;
    let names = DenyNames::new(bookings, run);
    let mut fleet = open_fleet(http, access, opts, &names).await?;
    fleet.wait_opened(n + opts.undenied).await?;
    wait_listed(http, access, &names.prefix, n + opts.undenied + 1).await?;

    let (start_ns, posts) = post_denies(http, access, &names.bids);
    let all_closed = try_wait_until("denied connections to close", CLOSE_LIMIT, || {
        load(&fleet.denied_counts.ended) >= n
    })
    .await
    .is_ok();
    let (reply_ns, statuses) = deny_replies(posts).await?;
    fleet.send_to_kept_readers(opts.undenied).await?;
    let ends = fleet.finish(start_ns).await?;
    Ok(DenyPoint {
        reply: reply_ns.saturating_sub(start_ns) as f64,
        statuses: statuses.join(", "),
        p50: nearest_rank(&ends.closes, 0.5),
        p99: nearest_rank(&ends.closes, 0.99),
        max: if all_closed {
            nearest_rank(&ends.closes, 1.0)
        } else {
            f64::NAN
        },
        endings: endings_summary(&ends.endings),
        kept: format!(
            "{}/{} received, {}/{} open",
            ends.kept_got, opts.undenied, ends.kept_open, opts.undenied
        ),
    })
}

/// The names of one deny run: its topics (one per booking), the booking ids to deny and
/// the one to keep.
struct DenyNames {
    /// Every topic of the run starts with this, so `GET /status` can count them.
    prefix: String,
    bids: Vec<String>,
    kept_bid: String,
}

impl DenyNames {
    fn new(bookings: usize, run: usize) -> Self {
        DenyNames {
            prefix: format!("b8-deny-{bookings}-r{run}-"),
            bids: (0..bookings)
                .map(|k| format!("deny-{bookings}-r{run}-b{k}"))
                .collect(),
            kept_bid: format!("keep-{bookings}-r{run}"),
        }
    }

    /// The topic of booking `k`; the kept booking shares booking 0's.
    fn topic(&self, k: usize) -> String {
        format!("{}b{k}", self.prefix)
    }
}

fn load(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::Relaxed)
}

/// The connections of one deny run, each read by its own task until it ends or `stop`.
struct DenyFleet {
    denied: JoinSet<Result<Watched>>,
    denied_counts: Counts,
    kept: JoinSet<Result<Watched>>,
    kept_counts: Counts,
    /// The kept booking's writer, on booking 0's topic.
    writer: WebSocket,
    stop: watch::Sender<bool>,
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Start opening `deny_conns` readers spread round robin over the denied bookings and
/// `undenied` readers of the kept booking (at most 32 opens at a time), and open the kept
/// booking's writer.
async fn open_fleet(
    http: &reqwest::Client,
    access: &str,
    opts: &Options,
    names: &DenyNames,
) -> Result<DenyFleet> {
    let (stop, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(32));
    let spec = |topic: String, booking_id: &str| WatchSpec {
        http: http.clone(),
        access: access.to_owned(),
        topic,
        booking_id: booking_id.to_owned(),
        gate: gate.clone(),
        stop: stop_rx.clone(),
    };
    let (denied_counts, kept_counts) = (Counts::default(), Counts::default());
    let mut denied = JoinSet::new();
    for i in 0..opts.deny_conns {
        let k = i % names.bids.len();
        denied.spawn(open_and_watch(
            spec(names.topic(k), &names.bids[k]),
            denied_counts.clone(),
        ));
    }
    let mut kept = JoinSet::new();
    for _ in 0..opts.undenied {
        kept.spawn(open_and_watch(
            spec(names.topic(0), &names.kept_bid),
            kept_counts.clone(),
        ));
    }
    let writer = open_ws(
        http,
        access,
        &names.topic(0),
        &names.kept_bid,
        &[relay_auth::SCOPE_WRITE],
    )
    .await?;
    Ok(DenyFleet {
        denied,
        denied_counts,
        kept,
        kept_counts,
        writer,
        stop,
    })
}

impl DenyFleet {
    /// Wait (up to 120 s) until each of the `readers` has opened or failed. If any failed,
    /// stop the others and return the first failure.
    async fn wait_opened(&mut self, readers: usize) -> Result<()> {
        let (denied_counts, kept_counts) = (&self.denied_counts, &self.kept_counts);
        let settled = || {
            load(&denied_counts.opened)
                + load(&denied_counts.failed)
                + load(&kept_counts.opened)
                + load(&kept_counts.failed)
                >= readers
        };
        let _ = try_wait_until("connections to settle", Duration::from_secs(120), settled).await;
        let opened = load(&denied_counts.opened) + load(&kept_counts.opened);
        if opened < readers {
            let _ = self.stop.send(true);
            // A failed open ended its task with the error: report the first one.
            while let Some(joined) = self.denied.join_next().await {
                joined??;
            }
            while let Some(joined) = self.kept.join_next().await {
                joined??;
            }
            bail!("only {opened} of {readers} connections opened within 120 s");
        }
        Ok(())
    }

    /// The other booking must be untouched: its writer sends one message, and its
    /// `readers` must all get it (waited for up to 5 s).
    async fn send_to_kept_readers(&mut self, readers: usize) -> Result<()> {
        self.writer
            .send(WsMessage::Binary(wire::message(0, wire::now_ns(), 64)))
            .await?;
        let got = &self.kept_counts.got;
        let _ = try_wait_until("kept connections to hear", Duration::from_secs(5), || {
            load(got) >= readers
        })
        .await;
        Ok(())
    }

    /// Stop every reader and close the writer, then collect how each connection ended;
    /// close times count from `start_ns`.
    async fn finish(mut self, start_ns: u64) -> Result<FleetEnds> {
        let _ = self.stop.send(true);
        let _ = self.writer.close(None).await;
        let mut endings = Vec::with_capacity(self.denied.len());
        let mut closes = Vec::with_capacity(self.denied.len());
        while let Some(joined) = self.denied.join_next().await {
            let watched = joined??;
            endings.push(watched.ending);
            if watched.ending != Ending::Open {
                closes.push(watched.ended_ns.saturating_sub(start_ns) as f64);
            }
        }
        let mut kept_open = 0;
        while let Some(joined) = self.kept.join_next().await {
            if joined??.ending == Ending::Open {
                kept_open += 1;
            }
        }
        Ok(FleetEnds {
            endings,
            closes: sorted(closes),
            kept_open,
            kept_got: load(&self.kept_counts.got),
        })
    }
}

/// How a deny run's connections ended.
struct FleetEnds {
    /// One per denied connection.
    endings: Vec<Ending>,
    /// Sorted nanoseconds from the first deny POST to each denied connection's close.
    closes: Vec<f64>,
    /// Kept readers still open when stopped, and messages they received.
    kept_open: usize,
    kept_got: usize,
}

/// Wait (up to 30 s) until `GET /status` lists `want` connections on the run's topics.
/// The upgrade completes before the hub registers a connection, so without this the deny
/// could miss a connection that was still joining.
async fn wait_listed(
    http: &reqwest::Client,
    access: &str,
    prefix: &str,
    want: usize,
) -> Result<()> {
    let stats = admin_token(access, relay_auth::SCOPE_STATS);
    let failed = std::cell::RefCell::new(None);
    let all_listed = try_wait_until_async(
        &format!("GET /status to list all {want} connections"),
        Duration::from_secs(30),
        || {
            let (failed, stats) = (&failed, &stats);
            async move {
                match listed(http, access, stats, prefix).await {
                    Ok(count) => count >= want,
                    Err(e) => {
                        *failed.borrow_mut() = Some(e); // stop waiting: report it
                        true
                    }
                }
            }
        },
    )
    .await;
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    Ok(all_listed?)
}

/// A deny POST's HTTP status (or failure) and the instant its reply arrived.
type DenyReply = (reqwest::Result<u16>, u64);

/// Send one `POST /bids/deny` per booking id, all at once. Returns the instant just before
/// the first went out and the tasks that yield the replies.
fn post_denies(http: &reqwest::Client, access: &str, bids: &[String]) -> (u64, JoinSet<DenyReply>) {
    let admin = admin_token(access, relay_auth::SCOPE_ADMIN);
    let exp = relay_auth::unix_now() + 3600;
    let start_ns = wire::now_ns();
    let mut posts = JoinSet::new();
    for bid in bids {
        let request = http
            .post(format!("{access}/bids/deny?bid={bid}&exp={exp}"))
            .header("Authorization", admin.clone());
        posts.spawn(async move {
            let status = request.send().await.map(|r| r.status().as_u16());
            (status, wire::now_ns())
        });
    }
    (start_ns, posts)
}

/// The instant the last deny reply arrived, and the distinct statuses (or failures).
async fn deny_replies(mut posts: JoinSet<DenyReply>) -> Result<(u64, Vec<String>)> {
    let mut reply_ns = 0u64;
    let mut statuses = Vec::new();
    while let Some(joined) = posts.join_next().await {
        let (status, at) = joined?;
        reply_ns = reply_ns.max(at);
        statuses.push(match status {
            Ok(code) => code.to_string(),
            Err(e) => format!("failed: {e}"),
        });
    }
    statuses.sort();
    statuses.dedup();
    Ok((reply_ns, statuses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_recorded_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50.0);
        assert_eq!(nearest_rank(&v, 0.99), 99.0);
        assert_eq!(nearest_rank(&v, 1.0), 100.0);
        assert_eq!(nearest_rank(&v, 0.0), 1.0);
        assert_eq!(nearest_rank(&[7.0], 0.99), 7.0);
        assert!(nearest_rank(&[], 0.5).is_nan());
        assert_eq!(sorted([3.0, f64::NAN, 1.0]), vec![1.0, 3.0]);
    }

    #[test]
    fn endings_are_counted_per_kind() {
        let endings = [
            Ending::Code(4003),
            Ending::Open,
            Ending::Code(4003),
            Ending::NoFrame,
            Ending::Code(1000),
        ];
        assert_eq!(
            endings_summary(&endings),
            "1000 ×1, 4003 ×2, no close frame ×1, still open ×1"
        );
        assert_eq!(endings_summary(&[]), "-");
    }

    #[test]
    fn runs_that_agree_show_once() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(same_or_each(&s(&["10/10", "10/10"])), "10/10");
        assert_eq!(same_or_each(&s(&["10/10", "9/10"])), "10/10; 9/10");
        assert_eq!(same_or_each(&[]), "n/a");
    }
}
