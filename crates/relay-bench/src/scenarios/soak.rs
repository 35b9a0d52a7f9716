//! Soak (issue 19): a mixed load on real processes for a long time, sampled every few
//! seconds, with invariants checked at the end and plots of RSS, file descriptors and
//! connections over time.
//!
//! Processes (all started here, logs in /tmp as every scenario's): `relay serve`,
//! `relay book serve` (SQLite), `relay http serve` and `relay http client` (its backend is
//! a tiny HTTP server in this process), `relay shell host` and `relay shell client` (the
//! host exposes a TCP echo, `relay-bench tcp-echo`, standing in for sshd).
//!
//! Load, until `--duration` is over:
//! - writers at video rate (MPEG-TS-sized messages, 188 × 7 bytes, paced to `--mbps`);
//! - `--viewers` readers, each reconnecting every 2–6 s (staggered), one in ten with the
//!   booking id that is denied and allowed again every 10 s;
//! - a reader with a 4-second token every few seconds, which the relay must close with 4001;
//! - shell sessions (connect to the shell client's port, echo 4 KiB, close);
//! - HTTP-relay requests (GET through `relay http serve` to the backend);
//! - bookings made and every other one cancelled.
//!
//! Each sample: per process RSS, CPU, open fds, sockets and threads; for the relay its
//! websocket connection gauge and drop counter from `/metrics`. Written to `samples.csv`;
//! `summary.md` has the RSS slope per hour after warm-up (least squares) and the invariants.

use crate::peers::{Lab, Rx, Target};
use crate::plot::{self, Series};
use crate::procs::{spawn_listening, usage_of, Proc};
use crate::scenarios::b9_booking::{self, Backend};
use crate::wire;
use anyhow::{bail, Context, Result};
use rand::Rng;
use relay_testkit::book::{
    admin_token, booking_rows, double_bookings, manifest, rfc3339, slot_name, BookApi, GROUP,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// Soak parameters (also the `relay-bench soak` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// How long the load runs (Go duration: 90s, 2m, 1h).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Samples before this are left out of the RSS slope (default: 10 % of --duration).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Output directory (default: bench-results/soak-<unix time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Readers that reconnect every 2–6 s.
    #[arg(long, default_value_t = 200)]
    pub viewers: usize,
    /// Video writers (the viewers are spread over their topics).
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Megabits per second per writer.
    #[arg(long, default_value_t = 2.0)]
    pub mbps: f64,
    /// 188-byte TS packets per message.
    #[arg(long, default_value_t = 7)]
    pub ts_packets: usize,
    /// Period of the deny + allow pair.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub deny_every: Duration,
    /// Period of a new reader with an expiring token.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub expiring_every: Duration,
    /// Period of a shell session.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub shell_every: Duration,
    /// Period of an HTTP-relay request.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub http_every: Duration,
    /// Period of a booking (every other one is cancelled).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub book_every: Duration,
}

impl Options {
    /// The output directory: `--out`, or bench-results/soak-<unix time>.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!("bench-results/soak-{}", relay_auth::unix_now()))
        })
    }
}

/// The booking id that is denied and allowed again.
const DENIED_BOOKING: &str = "soak-denied";
/// Lifetime of an expiring reader's token, seconds.
const EXPIRING_LIFETIME: i64 = 4;
/// Users who book.
const BOOK_USERS: usize = 4;
/// The shell id.
const SHELL: &str = "soak-shell";
/// The HTTP relay's backend name.
const HTTP_NAME: &str = "soak";
/// Most error messages kept for the summary.
const KEPT_ERRORS: usize = 30;

/// Counters of the load, shared by its tasks.
#[derive(Default)]
struct Counters {
    writer_messages: AtomicU64,
    viewer_sessions: AtomicU64,
    viewer_messages: AtomicU64,
    /// Sequence numbers a reader skipped between its first and last message.
    viewer_gaps: AtomicU64,
    denied_refusals: AtomicU64,
    denied_closes: AtomicU64,
    slow_closes: AtomicU64,
    expiring_sessions: AtomicU64,
    expired_4001: AtomicU64,
    denies: AtomicU64,
    allows: AtomicU64,
    shell_sessions: AtomicU64,
    http_requests: AtomicU64,
    booked: AtomicU64,
    cancelled: AtomicU64,
    errors: AtomicU64,
    kept: Mutex<Vec<String>>,
}

impl Counters {
    fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Count an unexpected failure and keep its message (the first few).
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() < KEPT_ERRORS {
                eprintln!("soak: {what}");
                kept.push(what);
            }
        }
    }
}

/// Everything the load needs to reach the processes.
struct Rig {
    relay: Target,
    access: String,
    secret: Vec<u8>,
    http: reqwest::Client,
    book: BookApi,
    book_admin: String,
    shell_port: u16,
    http_port: u16,
    counters: Counters,
    end: Instant,
    size: usize,
}

/// One row of samples.csv.
#[derive(Debug, Clone)]
struct Sample {
    t_s: f64,
    process: String,
    pid: u32,
    rss_kib: u64,
    cpu_s: f64,
    fds: u64,
    sockets: u64,
    threads: u64,
    /// The relay's `relay_connections` gauge (others: none).
    ws_connections: Option<u64>,
    /// The relay's `relay_drops_total` (others: none).
    drops: Option<u64>,
}

/// Run the soak; writes samples.csv, the PNGs and summary.md into `opts.out`, and fails
/// (after writing them) if an invariant does not hold.
pub async fn run(lab: &Lab, opts: &Options) -> Result<()> {
    let out = opts.out_dir();
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let echo_bin = lab
        .echo_bin
        .clone()
        .context("soak: needs this binary for tcp-echo")?;
    let started = Instant::now();
    let mut procs: Vec<Proc> = Vec::new();
    let setup = set_up(lab, &echo_bin, opts, &mut procs).await;
    let (rig, book_dir) = match setup {
        Ok(r) => r,
        Err(e) => {
            for p in procs {
                p.stop().await;
            }
            return Err(e);
        }
    };
    let rig = Arc::new(rig);
    let relay_proc = rig
        .relay
        .proc
        .as_ref()
        .context("soak: the relay has no process")?;
    let mut samples = Vec::new();
    let baseline = sample_all(&rig, relay_proc, &procs, started).await;
    samples.extend(baseline.iter().cloned());
    eprintln!(
        "soak: {} processes up; load for {:?}, samples every {:?}, output in {}",
        procs.len() + 1,
        opts.duration,
        opts.sample_every,
        out.display()
    );
    let mut load = start_load(&rig, opts);
    let mut next = Instant::now() + opts.sample_every;
    while Instant::now() < rig.end {
        sleep_until(next.min(rig.end)).await;
        next += opts.sample_every;
        samples.extend(sample_all(&rig, relay_proc, &procs, started).await);
    }
    while let Some(joined) = load.join_next().await {
        if let Err(e) = joined {
            rig.counters.error(format!("load task: {e}"));
        }
    }
    // Load over: wait for the relay's connections and every process's sockets to settle.
    let settled = wait_settled(&rig, relay_proc, &procs, &baseline, started).await;
    samples.extend(settled.iter().cloned());
    let mut invariants = Vec::new();
    check_counters(&rig, &settled, &baseline, &mut invariants).await;
    let mut all_alive = true;
    let mut panicked = Vec::new();
    let mut logs = vec![(relay_proc.name.clone(), relay_proc.log.clone())];
    logs.extend(procs.iter().map(|p| (p.name.clone(), p.log.clone())));
    for p in procs.iter_mut() {
        if let Err(e) = p.check_alive() {
            all_alive = false;
            rig.counters.error(format!("{e:#}"));
        }
    }
    for (name, log) in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("panicked") {
            panicked.push(format!("{name} ({})", log.display()));
        }
    }
    invariants.push(Invariant::new(
        "no panics in any process's log",
        panicked.is_empty(),
        if panicked.is_empty() {
            "none".into()
        } else {
            panicked.join(", ")
        },
    ));
    invariants.push(Invariant::new(
        "every process alive at the end",
        all_alive,
        format!("{} processes", logs.len()),
    ));
    let errors = Counters::get(&rig.counters.errors);
    let kept = rig
        .counters
        .kept
        .lock()
        .map(|k| k.clone())
        .unwrap_or_default();
    invariants.push(Invariant::new(
        "no unexpected failures in the load",
        errors == 0,
        if errors == 0 {
            "0".into()
        } else {
            format!("{errors}; first: {}", kept.join(" | "))
        },
    ));
    for p in procs {
        p.stop().await;
    }
    if let Ok(rig) = Arc::try_unwrap(rig) {
        rig.relay.stop().await;
    }
    drop(book_dir);
    let report = write_outputs(opts, &out, &samples, &invariants, started.elapsed())?;
    println!("{report}");
    let failed: Vec<&Invariant> = invariants.iter().filter(|i| !i.ok).collect();
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|i| format!("- {}: {}", i.name, i.detail))
            .collect();
        bail!(
            "soak: {} invariant(s) failed:\n{}",
            failed.len(),
            list.join("\n")
        );
    }
    Ok(())
}

/// Start every process and wait until each answers; `procs` collects them as they start
/// (the relay is kept in the rig's target).
async fn set_up(
    lab: &Lab,
    echo_bin: &Path,
    opts: &Options,
    procs: &mut Vec<Proc>,
) -> Result<(Rig, Backend)> {
    let relay = lab.start("relay", &[]).await.context("start relay serve")?;
    let (access, secret) = relay
        .relay_access()
        .map(|(a, s)| (a.to_owned(), s.to_vec()))
        .context("soak: the relay has no access API")?;
    let bin = lab.relay_bin.to_string_lossy().into_owned();
    let long = i64::try_from(opts.duration.as_secs()).unwrap_or(i64::MAX / 2) + 3600;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(crate::peers::IDLE_BEFORE_SERVER_CLOSES)
        .build()
        .context("HTTP client")?;

    // The booking server, SQLite, with a manifest of four rigs and users in its group.
    let backend = Backend::Sqlite(tempfile::tempdir()?);
    let (book_proc, book) = b9_booking::start_server(lab, &backend)
        .await
        .context("start relay book serve")?;
    procs.push(book_proc);
    let book_admin = admin_token(
        b9_booking::ADMIN_SECRET,
        b9_booking::AUDIENCE,
        opts.duration + Duration::from_secs(3600),
    );
    book.put_manifest(
        &book_admin,
        &manifest(BOOK_USERS, b9_booking::NO_RELAY, &serde_json::json!({})),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    for u in 0..BOOK_USERS {
        let user = book_user(u);
        let token = book.login(&user).await.map_err(anyhow::Error::msg)?;
        let joined = book.join(&user, &token, GROUP).await?;
        anyhow::ensure!(joined.status == 204, "join {user}: {joined:?}");
    }

    // The HTTP relay: server, an HTTP backend here, and its relay client.
    let (http_proc, ports) = spawn_listening(1, |p| {
        let args = [
            "http",
            "serve",
            &format!("--port={}", p[0]),
            "--bind=127.0.0.1",
            "--log_level=4",
        ];
        Proc::spawn(
            "soak-http-serve",
            &bin,
            &args.map(str::to_owned),
            lab.server_core,
        )
    })
    .await
    .context("start relay http serve")?;
    procs.push(http_proc);
    let http_port = ports[0];
    let backend_listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend_port = backend_listener.local_addr()?.port();
    tokio::spawn(serve_http_backend(backend_listener));
    let args = [
        "http".to_owned(),
        "client".to_owned(),
        "--backend_scheme=http".to_owned(),
        "--relay_scheme=http".to_owned(),
        "--log_level=4".to_owned(),
        "--disable_auth_for_remote".to_owned(),
        format!("--backend_address=127.0.0.1:{backend_port}"),
        format!("--relay_address=127.0.0.1:{http_port}"),
        format!("--server_name={HTTP_NAME}"),
    ];
    procs.push(Proc::spawn(
        "soak-http-client",
        &bin,
        &args,
        lab.server_core,
    )?);

    // The shell: a TCP echo standing in for sshd, the host and the client.
    let echo_bin = echo_bin.to_string_lossy().into_owned();
    let (echo, ports) = spawn_listening(1, |p| {
        let args = ["tcp-echo".to_owned(), "--port".to_owned(), p[0].to_string()];
        Proc::spawn("soak-echo", &echo_bin, &args, lab.server_core)
    })
    .await?;
    procs.push(echo);
    let echo_port = ports[0];
    let session = format!("{access}/shell/{SHELL}");
    let host_token = shell_token(&access, &secret, relay_auth::SCOPE_SHELL_HOST, long);
    let args = [
        "shell".to_owned(),
        "host".to_owned(),
        format!("--relay-session={session}"),
        format!("--token={host_token}"),
        format!("--local-port={echo_port}"),
        "--local-host=127.0.0.1".to_owned(),
    ];
    procs.push(Proc::spawn(
        "soak-shell-host",
        &bin,
        &args,
        lab.server_core,
    )?);
    let client_token = shell_token(&access, &secret, relay_auth::SCOPE_SHELL_CLIENT, long);
    let (shell_client, ports) = spawn_listening(1, |p| {
        let args = [
            "shell".to_owned(),
            "client".to_owned(),
            format!("--relay-session={session}"),
            format!("--token={client_token}"),
            format!("--local-port={}", p[0]),
        ];
        Proc::spawn("soak-shell-client", &bin, &args, lab.server_core)
    })
    .await?;
    procs.push(shell_client);
    let shell_port = ports[0];

    let rig = Rig {
        relay,
        access,
        secret,
        http,
        book,
        book_admin,
        shell_port,
        http_port,
        counters: Counters::default(),
        end: Instant::now() + opts.duration,
        size: 188 * opts.ts_packets.max(1),
    };
    // Ready when a shell session echoes and an HTTP request comes back through the relays.
    relay_testkit::wait::try_wait_until_async(
        "a shell session to echo through the relay",
        Duration::from_secs(30),
        || async { shell_session(rig.shell_port).await.is_ok() },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    relay_testkit::wait::try_wait_until_async(
        "an HTTP-relay request to come back",
        Duration::from_secs(30),
        || async { http_request(&rig, 0).await.is_ok() },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let rig = Rig {
        end: Instant::now() + opts.duration,
        ..rig
    };
    Ok((rig, backend))
}

/// A shell token (`host` or `client` scope) for [`SHELL`].
fn shell_token(access: &str, secret: &[u8], scope: &str, lifetime: i64) -> String {
    let claims = relay_auth::Claims::grant(
        relay_common::connection::ConnectionType::Shell.as_str(),
        SHELL,
        &[scope],
        access,
        relay_auth::unix_now(),
        lifetime,
    );
    relay_auth::mint(&claims, secret)
}

/// Join `topic` on the relay with a session token of `scopes`, `booking_id` and `lifetime`
/// seconds.
async fn open(
    rig: &Rig,
    topic: &str,
    scopes: &[&str],
    booking_id: &str,
    lifetime: i64,
) -> Result<(crate::peers::Tx, Rx)> {
    let claims = relay_auth::Claims {
        booking_id: booking_id.to_owned(),
        ..relay_auth::Claims::grant(
            relay_common::connection::ConnectionType::Session.as_str(),
            topic,
            scopes,
            &rig.access,
            relay_auth::unix_now(),
            lifetime,
        )
    };
    let token = relay_auth::mint(&claims, &rig.secret);
    rig.relay.open_with_token(topic, &token).await
}

fn book_user(u: usize) -> String {
    format!("soak-user-{u}")
}

fn video_topic(w: usize) -> String {
    format!("soak-video-{w}")
}

/// Answer every request with 200 and `soak-ok <path>`, closing each connection after it.
async fn serve_http_backend(listener: TcpListener) {
    while let Ok((mut socket, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
                }
            }
            let line = String::from_utf8_lossy(&head);
            let path = line.split_whitespace().nth(1).unwrap_or("?").to_owned();
            let body = format!("soak-ok {path}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// One shell session: connect to the shell client's port, send 4 KiB, read it back, close.
async fn shell_session(port: u16) -> Result<()> {
    let run = async {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        let sent: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        socket.write_all(&sent).await?;
        let mut back = vec![0u8; sent.len()];
        socket.read_exact(&mut back).await?;
        anyhow::ensure!(back == sent, "the echo differs from what was sent");
        socket.shutdown().await?;
        anyhow::Ok(())
    };
    timeout(Duration::from_secs(20), run)
        .await
        .context("shell session took over 20 s")?
}

/// One GET through the HTTP relay; fails unless the backend's answer comes back.
async fn http_request(rig: &Rig, i: u64) -> Result<()> {
    let url = format!(
        "http://127.0.0.1:{}/client/{HTTP_NAME}/ping/{i}",
        rig.http_port
    );
    let response = rig
        .http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(
        status.is_success() && body.starts_with("soak-ok "),
        "GET {url}: {status} {body:?}"
    );
    Ok(())
}

/// Spawn every part of the load; each ends by itself at `rig.end`.
fn start_load(rig: &Arc<Rig>, opts: &Options) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let rate = opts.mbps * 1e6 / 8.0 / rig.size as f64;
    for w in 0..opts.writers.max(1) {
        set.spawn(writer(rig.clone(), w, rate));
    }
    let writers = opts.writers.max(1);
    for v in 0..opts.viewers {
        // Staggered: the viewers' first connections spread over the first 3 s.
        let delay = Duration::from_secs_f64(3.0 * v as f64 / opts.viewers.max(1) as f64);
        set.spawn(viewer(rig.clone(), v, video_topic(v % writers), delay));
    }
    set.spawn(every(rig.clone(), opts.deny_every, deny_and_allow));
    set.spawn(every(
        rig.clone(),
        opts.expiring_every,
        |rig, i| async move {
            expiring(rig, i, video_topic(0)).await;
        },
    ));
    set.spawn(every(rig.clone(), opts.shell_every, |rig, _| async move {
        match shell_session(rig.shell_port).await {
            Ok(()) => rig.counters.add(&rig.counters.shell_sessions, 1),
            Err(e) => rig.counters.error(format!("shell session: {e:#}")),
        }
    }));
    set.spawn(every(rig.clone(), opts.http_every, |rig, i| async move {
        match http_request(&rig, i).await {
            Ok(()) => rig.counters.add(&rig.counters.http_requests, 1),
            Err(e) => rig.counters.error(format!("HTTP relay: {e:#}")),
        }
    }));
    set.spawn(every(rig.clone(), opts.book_every, book_and_cancel));
    set
}

/// Run `job(rig, i)` every `period` until the end, each in its own task (so a slow one does
/// not delay the next), and wait for them all.
async fn every<F, Fut>(rig: Arc<Rig>, period: Duration, job: F)
where
    F: Fn(Arc<Rig>, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut jobs = JoinSet::new();
    let mut i = 0;
    let mut next = Instant::now();
    while next < rig.end {
        sleep_until(next).await;
        // Reap finished jobs as we go, so an hour of them is not kept.
        while let Some(joined) = jobs.try_join_next() {
            if let Err(e) = joined {
                rig.counters.error(format!("job: {e}"));
            }
        }
        jobs.spawn(job(rig.clone(), i));
        i += 1;
        next += period.max(Duration::from_millis(10));
    }
    while let Some(joined) = jobs.join_next().await {
        if let Err(e) = joined {
            rig.counters.error(format!("job: {e}"));
        }
    }
}

/// One writer at `rate` messages per second on its topic until the end.
async fn writer(rig: Arc<Rig>, w: usize, rate: f64) {
    let topic = video_topic(w);
    let lifetime = i64::try_from(rig.end.saturating_duration_since(Instant::now()).as_secs())
        .unwrap_or(0)
        + 3600;
    let booking = format!("soak-writer-{w}");
    let (mut tx, rx) =
        match open(&rig, &topic, &[relay_auth::SCOPE_WRITE], &booking, lifetime).await {
            Ok(pair) => pair,
            Err(e) => return rig.counters.error(format!("writer {w}: {e:#}")),
        };
    let drain = tokio::spawn(rx.drain());
    match crate::scenarios::send_paced(&mut tx, rate, u64::MAX, rig.size, rig.end).await {
        Ok(sent) => rig.counters.add(&rig.counters.writer_messages, sent),
        Err(e) => rig.counters.error(format!("writer {w}: {e:#}")),
    }
    tx.close().await;
    drain.abort();
}

/// What one read-only connection saw.
#[derive(Default)]
struct Seen {
    messages: u64,
    gaps: u64,
    /// `None` when still open at the deadline (then closed by us).
    close_code: Option<Option<u16>>,
}

/// Read until `deadline` or the connection ends, counting messages and skipped sequence
/// numbers (the writer numbers its messages from 0, so a gap is a message this reader never
/// got while connected).
async fn read_until(mut rx: Rx, deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut last: Option<u64> = None;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return seen,
            Ok(Ok(Some(payload))) => {
                let Some((seq, _)) = wire::parse(&payload) else {
                    continue;
                };
                seen.messages += 1;
                if let Some(prev) = last {
                    seen.gaps += seq.saturating_sub(prev + 1);
                }
                last = Some(seq);
            }
            Ok(_) => {
                seen.close_code = Some(rx.close_code);
                return seen;
            }
        }
    }
}

/// One viewer: connect, read for 2–6 s, close, repeat until the end. One in ten carries the
/// booking id that gets denied.
async fn viewer(rig: Arc<Rig>, v: usize, topic: String, delay: Duration) {
    sleep(delay).await;
    let denied_group = v.is_multiple_of(10);
    let booking = if denied_group {
        DENIED_BOOKING.to_owned()
    } else {
        format!("soak-viewer-{v}")
    };
    let c = &rig.counters;
    while Instant::now() < rig.end {
        let life = Duration::from_secs_f64(rand::rng().random_range(2.0..6.0));
        let (tx, rx) = match open(&rig, &topic, &[relay_auth::SCOPE_READ], &booking, 600).await {
            Ok(pair) => pair,
            Err(_) if denied_group => {
                // Refused while the booking is denied; wait a little and try again.
                c.add(&c.denied_refusals, 1);
                sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                c.error(format!("viewer {v}: {e:#}"));
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        c.add(&c.viewer_sessions, 1);
        let seen = read_until(rx, (Instant::now() + life).min(rig.end)).await;
        c.add(&c.viewer_messages, seen.messages);
        c.add(&c.viewer_gaps, seen.gaps);
        match seen.close_code {
            None => tx.close().await,
            Some(Some(4003)) if denied_group => c.add(&c.denied_closes, 1),
            Some(Some(4008)) => c.add(&c.slow_closes, 1),
            Some(code) => c.error(format!("viewer {v}: closed by the relay with {code:?}")),
        }
    }
}

/// A reader whose token lives [`EXPIRING_LIFETIME`] seconds: the relay must close it with
/// 4001 (expired) by itself.
async fn expiring(rig: Arc<Rig>, i: u64, topic: String) {
    let c = &rig.counters;
    let booking = format!("soak-expiring-{i}");
    let read = [relay_auth::SCOPE_READ];
    let (tx, rx) = match open(&rig, &topic, &read, &booking, EXPIRING_LIFETIME).await {
        Ok(pair) => pair,
        Err(e) => return c.error(format!("expiring reader {i}: {e:#}")),
    };
    c.add(&c.expiring_sessions, 1);
    // Past its expiry by a wide margin: the relay closes at exp, whatever the load.
    let seen = read_until(
        rx,
        Instant::now() + Duration::from_secs(EXPIRING_LIFETIME as u64 + 30),
    )
    .await;
    c.add(&c.viewer_messages, seen.messages);
    c.add(&c.viewer_gaps, seen.gaps);
    match seen.close_code {
        Some(Some(4001)) => c.add(&c.expired_4001, 1),
        other => {
            c.error(format!(
                "expiring reader {i}: ended with {other:?}, not 4001"
            ));
            tx.close().await;
        }
    }
}

/// POST /bids/deny for [`DENIED_BOOKING`], and 2 s later /bids/allow.
async fn deny_and_allow(rig: Arc<Rig>, _: u64) {
    let c = &rig.counters;
    let admin = relay_auth::mint(
        &relay_auth::Claims::grant(
            "",
            "",
            &[relay_auth::SCOPE_ADMIN],
            &rig.access,
            relay_auth::unix_now(),
            600,
        ),
        &rig.secret,
    );
    let exp = relay_auth::unix_now() + 600;
    for (i, what) in ["deny", "allow"].into_iter().enumerate() {
        if i == 1 {
            sleep(Duration::from_secs(2)).await;
        }
        let url = format!("{}/bids/{what}?bid={DENIED_BOOKING}&exp={exp}", rig.access);
        match rig
            .http
            .post(&url)
            .header("Authorization", &admin)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                c.add(if i == 0 { &c.denies } else { &c.allows }, 1)
            }
            Ok(r) => c.error(format!("POST {url}: {}", r.status())),
            Err(e) => c.error(format!("POST {url}: {:#}", anyhow::Error::new(e))),
        }
    }
}

/// Book a slot (a fresh hour in the future each time, so none conflict); cancel every other
/// booking again.
async fn book_and_cancel(rig: Arc<Rig>, i: u64) {
    let c = &rig.counters;
    let n = usize::try_from(i).unwrap_or(0);
    let user = book_user(n % BOOK_USERS);
    let slot = slot_name(n % BOOK_USERS);
    let today = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let from = SystemTime::UNIX_EPOCH + Duration::from_secs((today + 2) * 86_400 + i * 3600);
    let to = from + Duration::from_secs(1800);
    let result = async {
        let token = rig.book.login(&user).await.map_err(anyhow::Error::msg)?;
        let reply = rig.book.book(&user, &token, &slot, from, to).await?;
        anyhow::ensure!(reply.status == 204, "book {slot} for {user}: {reply:?}");
        c.add(&c.booked, 1);
        if i % 2 == 1 {
            return Ok(());
        }
        let mine = rig
            .book
            .get_json(&format!("/users/{user}/bookings"), &token)
            .await
            .map_err(anyhow::Error::msg)?;
        let start = rfc3339(from);
        let name = booking_rows(&mine)
            .into_iter()
            .find(|r| r.start == start)
            .map(|r| r.name)
            .with_context(|| format!("{user}'s booking at {start} is not in their list"))?;
        let path = format!("/users/{user}/bookings/{name}");
        let reply = rig
            .book
            .send(reqwest::Method::DELETE, &path, Some(&token), None)
            .await?;
        // The API answers a cancellation with 404 "cancelled", as the reference does.
        anyhow::ensure!(
            reply.status == 404 && reply.body.contains("cancelled"),
            "DELETE {path}: {reply:?}"
        );
        c.add(&c.cancelled, 1);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        c.error(format!("booking {i}: {e:#}"));
    }
}

/// Open fds, of which sockets, of `pid`.
fn fd_counts(pid: u32) -> (u64, u64) {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let (mut fds, mut sockets) = (0, 0);
    for entry in dir.flatten() {
        fds += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    (fds, sockets)
}

/// Threads of `pid` (its tokio workers and blocking threads).
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The relay's `/metrics` as name → value (labelled series summed under their name).
async fn relay_metrics(rig: &Rig) -> Result<BTreeMap<String, f64>> {
    let text = rig
        .http
        .get(format!("{}/metrics", rig.access))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_owned()).or_default() += v;
        }
    }
    Ok(out)
}

/// One sample of every process.
async fn sample_all(rig: &Rig, relay: &Proc, procs: &[Proc], started: Instant) -> Vec<Sample> {
    let t_s = started.elapsed().as_secs_f64();
    let metrics = relay_metrics(rig).await.ok();
    let metric = |name: &str| {
        metrics
            .as_ref()
            .and_then(|m| m.get(name))
            .map(|v| *v as u64)
    };
    std::iter::once(relay)
        .chain(procs.iter())
        .map(|p| {
            let usage = usage_of(p.pid).unwrap_or_default();
            let (fds, sockets) = fd_counts(p.pid);
            let is_relay = std::ptr::eq(p, relay);
            Sample {
                t_s,
                process: p.name.clone(),
                pid: p.pid,
                rss_kib: usage.rss / 1024,
                cpu_s: usage.cpu_s,
                fds,
                sockets,
                threads: threads(p.pid),
                ws_connections: is_relay.then(|| metric("relay_connections")).flatten(),
                drops: is_relay.then(|| metric("relay_drops_total")).flatten(),
            }
        })
        .collect()
}

/// After the load: sample until the relay's connections are back to `baseline` and no
/// process holds more than 2 sockets over its baseline (at most 60 s). Returns the last
/// sample.
async fn wait_settled(
    rig: &Rig,
    relay: &Proc,
    procs: &[Proc],
    baseline: &[Sample],
    started: Instant,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = sample_all(rig, relay, procs, started).await;
        if settled(&now, baseline).is_empty() || Instant::now() >= deadline {
            return now;
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// What is not back to its baseline in `now` (empty when everything is).
fn settled(now: &[Sample], baseline: &[Sample]) -> Vec<String> {
    let mut off = Vec::new();
    for (n, b) in now.iter().zip(baseline) {
        if n.ws_connections != b.ws_connections {
            off.push(format!(
                "{} websockets {:?} (baseline {:?})",
                n.process, n.ws_connections, b.ws_connections
            ));
        }
        if n.sockets > b.sockets + 2 {
            off.push(format!(
                "{} sockets {} (baseline {})",
                n.process, n.sockets, b.sockets
            ));
        }
        if n.fds > b.fds + 2 {
            off.push(format!("{} fds {} (baseline {})", n.process, n.fds, b.fds));
        }
    }
    off
}

/// One checked invariant.
struct Invariant {
    name: String,
    ok: bool,
    detail: String,
}

impl Invariant {
    fn new(name: &str, ok: bool, detail: String) -> Invariant {
        Invariant {
            name: name.to_owned(),
            ok,
            detail,
        }
    }
}

/// The counters of the load against the relay's and the booking server's own counts.
async fn check_counters(
    rig: &Rig,
    settled_now: &[Sample],
    baseline: &[Sample],
    out: &mut Vec<Invariant>,
) {
    let c = &rig.counters;
    let get = Counters::get;
    let metrics = relay_metrics(rig).await.unwrap_or_default();
    let m = |name: &str| metrics.get(name).copied().unwrap_or(f64::NAN) as u64;
    let (drops, slow) = (
        m("relay_drops_total"),
        m("relay_slow_reader_disconnects_total"),
    );
    out.push(Invariant::new(
        "the load ran: writer messages, viewer sessions, expiring readers, shell sessions, HTTP requests, bookings, denies all > 0",
        [&c.writer_messages, &c.viewer_sessions, &c.expiring_sessions, &c.shell_sessions, &c.http_requests, &c.booked, &c.denies]
            .iter()
            .all(|x| get(x) > 0),
        format!(
            "writer messages {}, viewer sessions {} ({} messages), expiring readers {}, shell sessions {}, HTTP requests {}, booked {}, cancelled {}, denies {}, allows {}",
            get(&c.writer_messages), get(&c.viewer_sessions), get(&c.viewer_messages), get(&c.expiring_sessions),
            get(&c.shell_sessions), get(&c.http_requests), get(&c.booked), get(&c.cancelled), get(&c.denies), get(&c.allows)
        ),
    ));
    out.push(Invariant::new(
        "no message lost uncounted: sequence gaps seen by readers ≤ relay_drops_total",
        get(&c.viewer_gaps) <= drops,
        format!("gaps {}, relay drops {drops}", get(&c.viewer_gaps)),
    ));
    out.push(Invariant::new(
        "readers closed as too slow (4008) ≤ relay_slow_reader_disconnects_total",
        get(&c.slow_closes) <= slow,
        format!("4008 seen {}, relay counted {slow}", get(&c.slow_closes)),
    ));
    out.push(Invariant::new(
        "relay_messages_in_total ≥ messages the writers sent",
        m("relay_messages_in_total") >= get(&c.writer_messages),
        format!(
            "relay {} (shell tunnel messages included), writers {}",
            m("relay_messages_in_total"),
            get(&c.writer_messages)
        ),
    ));
    out.push(Invariant::new(
        "every expiring token's connection closed by the relay with 4001",
        get(&c.expired_4001) == get(&c.expiring_sessions),
        format!("{} of {}", get(&c.expired_4001), get(&c.expiring_sessions)),
    ));
    out.push(Invariant::new(
        "every deny answered, every allow answered, and denies closed the denied booking's live readers (4003)",
        get(&c.denies) == get(&c.allows) && (get(&c.denies) == 0 || get(&c.denied_closes) > 0),
        format!(
            "denies {}, allows {}, 4003 closes {}, refusals while denied {}",
            get(&c.denies), get(&c.allows), get(&c.denied_closes), get(&c.denied_refusals)
        ),
    ));
    let listed = rig.book.get_json("/admin/bookings", &rig.book_admin).await;
    let (ok, detail) = match listed {
        Ok(list) => {
            let rows: Vec<_> = booking_rows(&list)
                .into_iter()
                .filter(|r| r.user.starts_with("soak-user-") && !r.cancelled)
                .collect();
            let doubles = double_bookings(&rows).len();
            let want = get(&c.booked) - get(&c.cancelled).min(get(&c.booked));
            (
                rows.len() as u64 == want && doubles == 0,
                format!(
                    "booked {} − cancelled {} = {want}; listed {}; double bookings {doubles}",
                    get(&c.booked),
                    get(&c.cancelled),
                    rows.len()
                ),
            )
        }
        Err(e) => (false, e),
    };
    out.push(Invariant::new(
        "bookings made − cancelled = bookings listed, none double",
        ok,
        detail,
    ));
    let off = settled(settled_now, baseline);
    out.push(Invariant::new(
        "after the load: relay websockets back to baseline, every process's sockets and fds within 2 of baseline",
        off.is_empty(),
        if off.is_empty() {
            settled_now
                .iter()
                .map(|s| format!("{} {} fds", s.process, s.fds))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            off.join("; ")
        },
    ));
}

/// Least-squares slope of `points` (x, y); NaN with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        f64::NAN
    } else {
        sxy / sxx
    }
}

/// Per process, in start order: its samples' (minutes, value) for `value`.
fn per_process(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Vec<Series> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        if !order.contains(&s.process) {
            order.push(s.process.clone());
        }
        if let Some(v) = value(s) {
            by.entry(s.process.clone())
                .or_default()
                .push((s.t_s / 60.0, v));
        }
    }
    order
        .into_iter()
        .filter_map(|label| by.remove(&label).map(|points| Series { label, points }))
        .collect()
}

/// samples.csv, the three PNGs and summary.md in `out`; returns the summary's text.
fn write_outputs(
    opts: &Options,
    out: &Path,
    samples: &[Sample],
    invariants: &[Invariant],
    took: Duration,
) -> Result<String> {
    let mut csv =
        String::from("t_s,process,pid,rss_kib,cpu_s,fds,sockets,threads,ws_connections,drops\n");
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for s in samples {
        let _ = writeln!(
            csv,
            "{:.1},{},{},{},{:.2},{},{},{},{},{}",
            s.t_s,
            s.process,
            s.pid,
            s.rss_kib,
            s.cpu_s,
            s.fds,
            s.sockets,
            s.threads,
            opt(s.ws_connections),
            opt(s.drops)
        );
    }
    std::fs::write(out.join("samples.csv"), csv)?;
    let rss = per_process(samples, |s| Some(s.rss_kib as f64 / 1024.0));
    plot::lines(
        &out.join("soak-rss.png"),
        "RSS per process",
        "minutes",
        "RSS (MiB)",
        &rss,
    )?;
    let fds = per_process(samples, |s| Some(s.fds as f64));
    plot::lines(
        &out.join("soak-fds.png"),
        "Open file descriptors per process",
        "minutes",
        "fds",
        &fds,
    )?;
    let mut conns = per_process(samples, |s| Some(s.sockets as f64));
    for s in &mut conns {
        s.label = format!("{} sockets", s.label);
    }
    conns.extend(
        per_process(samples, |s| s.ws_connections.map(|c| c as f64))
            .into_iter()
            .map(|s| Series {
                label: format!("{} websockets (relay_connections)", s.label),
                points: s.points,
            }),
    );
    plot::lines(
        &out.join("soak-connections.png"),
        "Connections per process",
        "minutes",
        "connections",
        &conns,
    )?;

    // Slopes over the load after warm-up: from the first sample (load start) + warm-up to
    // the load's end (the settled sample after it is left out).
    let first = samples.first().map_or(0.0, |s| s.t_s);
    let load_end = first + opts.duration.as_secs_f64();
    let warmup = opts.warmup.unwrap_or(opts.duration / 10).as_secs_f64();
    let mut md = format!(
        "# Soak\n\n{} of load (run took {:.1} min), samples every {:?}, warm-up {:.0} s; {} viewers, {} writer(s) at {} Mbit/s.\n\n\
         | process | RSS start MiB | RSS end MiB | RSS min–max after warm-up MiB | RSS slope after warm-up (MiB/h) | fds min–max | sockets min–max | threads max | samples |\n|---|---|---|---|---|---|---|---|---|\n",
        humantime(opts.duration), took.as_secs_f64() / 60.0, opts.sample_every, warmup, opts.viewers, opts.writers, opts.mbps
    );
    for series in per_process(samples, |s| Some(s.rss_kib as f64 / 1024.0)) {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.process == series.label)
            .collect();
        let after: Vec<&Sample> = mine
            .iter()
            .copied()
            .filter(|s| s.t_s >= first + warmup && s.t_s <= load_end + 1.0)
            .collect();
        let pts: Vec<(f64, f64)> = after
            .iter()
            .map(|s| (s.t_s / 3600.0, s.rss_kib as f64 / 1024.0))
            .collect();
        let range = |v: &mut dyn Iterator<Item = f64>| {
            let v: Vec<f64> = v.collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.0}–{hi:.0}")
        };
        let mib = |s: Option<&&Sample>| s.map_or(f64::NAN, |s| s.rss_kib as f64 / 1024.0);
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {} | {:+.2} | {} | {} | {} | {} |",
            series.label,
            mib(mine.first()),
            mib(mine.last()),
            range(&mut after.iter().map(|s| s.rss_kib as f64 / 1024.0)),
            slope(&pts),
            range(&mut mine.iter().map(|s| s.fds as f64)),
            range(&mut mine.iter().map(|s| s.sockets as f64)),
            mine.iter().map(|s| s.threads).max().unwrap_or(0),
            mine.len()
        );
    }
    md.push_str("\n## Invariants\n\n| invariant | result | detail |\n|---|---|---|\n");
    for i in invariants {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            i.name,
            if i.ok { "ok" } else { "**FAILED**" },
            i.detail.replace('|', "/")
        );
    }
    md.push_str(
        "\n![RSS](soak-rss.png)\n\n![fds](soak-fds.png)\n\n![connections](soak-connections.png)\n",
    );
    std::fs::write(out.join("summary.md"), &md)?;
    Ok(md)
}

/// `1h 0m 5s` style.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, s) => format!("{h} h {m} min {s} s"),
    }
}

/// Parse `90s`, `2m`, `1h`, `1h30m` (Go durations, as the relay's flags take).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    relay_common::goduration::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(process: &str, fds: u64, sockets: u64, ws: Option<u64>) -> Sample {
        Sample {
            t_s: 0.0,
            process: process.into(),
            pid: 1,
            rss_kib: 0,
            cpu_s: 0.0,
            fds,
            sockets,
            threads: 1,
            ws_connections: ws,
            drops: None,
        }
    }

    #[test]
    fn slope_is_the_least_squares_fit() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat_noise = [(0.0, 10.0), (1.0, 12.0), (2.0, 10.0), (3.0, 12.0)];
        assert!((slope(&flat_noise) - 0.4).abs() < 1e-9);
        assert!(slope(&[(1.0, 1.0)]).is_nan());
        assert!(slope(&[(1.0, 1.0), (1.0, 2.0)]).is_nan());
    }

    #[test]
    fn settled_names_what_is_above_its_baseline() {
        let baseline = [sample("relay", 16, 8, Some(2)), sample("book", 20, 5, None)];
        let back = [sample("relay", 18, 9, Some(2)), sample("book", 20, 5, None)];
        assert!(settled(&back, &baseline).is_empty());
        let not = [
            sample("relay", 30, 20, Some(5)),
            sample("book", 23, 5, None),
        ];
        let off = settled(&not, &baseline);
        assert_eq!(off.len(), 4, "{off:?}");
        assert!(off[0].contains("relay websockets Some(5)"), "{off:?}");
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(parse_duration("60m").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
    }
}
