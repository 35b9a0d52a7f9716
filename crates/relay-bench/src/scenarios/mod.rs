//! The scenarios (B1–B5, B8 of docs PERFORMANCE.md, B9 of issue 15, B10 of issue 18, the soak of issue 19) and the load pieces they share:
//! connecting many clients, a paced writer, and readers that time every message.

pub mod b10_cluster;
pub mod b1_video;
pub mod b2_latency;
pub mod b3_throughput;
pub mod b4_idle_memory;
pub mod b5_handshakes;
pub mod b8_faults;
pub mod b8_slow_reader;
pub mod b9_booking;
pub mod soak;

use crate::peers::{Lab, Rx, Target, Tx};
use crate::procs::Usage;
use crate::report::Latency;
use crate::report::Table;
use crate::wire;
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Open `n` connections to `topic`, `concurrency` at a time (bounded by 120 s overall).
pub async fn connect_many(
    target: &Arc<Target>,
    topic: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<(Tx, Rx)>> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (gate, target, topic) = (gate.clone(), target.clone(), topic.to_owned());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            target.open(&topic).await
        });
    }
    let mut out = Vec::with_capacity(n);
    let all = async {
        while let Some(joined) = set.join_next().await {
            out.push(joined??);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{}: connecting {n} clients took over 120 s", target.name)
        })??;
    Ok(out)
}

/// What one reader saw.
#[derive(Default)]
pub struct ReaderStats {
    pub delay: Latency,
    pub messages: u64,
    pub bytes: u64,
    pub close_code: Option<u16>,
    pub ended: bool,
}

/// Read timed messages until `last_seq` arrives, the connection ends, or `deadline`;
/// anything that is not a benchmark message (see [`wire`]) is skipped.
pub async fn read_timed(mut rx: Rx, last_seq: u64, deadline: Instant) -> (ReaderStats, Rx) {
    let mut stats = ReaderStats::default();
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv()).await;
        let now = wire::now_ns();
        let payload = match got {
            Err(_) => break,
            Ok(Ok(Some(p))) => p,
            Ok(_) => {
                stats.ended = true;
                stats.close_code = rx.close_code;
                break;
            }
        };
        let Some((seq, sent)) = wire::parse(&payload) else {
            continue;
        };
        stats.messages += 1;
        stats.bytes += payload.len() as u64;
        stats.delay.record(now.saturating_sub(sent));
        if seq >= last_seq {
            break;
        }
    }
    (stats, rx)
}

/// Send `count` messages of `size` bytes at `rate` per second, each stamped with the time
/// it was actually written (tokio's timer wakes at 1 ms granularity, so at high rates
/// messages leave in small bursts). Stops early at `deadline`. Returns how many were sent.
pub async fn send_paced(
    tx: &mut Tx,
    rate: f64,
    count: u64,
    size: usize,
    deadline: Instant,
) -> Result<u64> {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    for seq in 0..count {
        let due = start + interval.mul_f64(seq as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if Instant::now() >= deadline {
            return Ok(seq);
        }
        tx.send(wire::message(seq, wire::now_ns(), size)).await?;
    }
    Ok(count)
}

/// Usage of the target's process, if the runner started it.
pub fn usage(target: &Target) -> Option<Usage> {
    target.proc.as_ref().and_then(|p| p.usage().ok())
}

/// CPU seconds the target spent between two samples (NaN when unknown).
pub fn cpu_between(before: Option<Usage>, after: Option<Usage>) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => a.cpu_s - b.cpu_s,
        _ => f64::NAN,
    }
}

/// RSS in MiB (NaN when unknown).
pub fn rss_mib(u: Option<Usage>) -> f64 {
    u.map(|u| u.rss as f64 / (1024.0 * 1024.0))
        .unwrap_or(f64::NAN)
}

/// Close every connection and give the server a moment to forget them.
pub async fn close_all(conns: Vec<(Tx, Rx)>) {
    let mut set = JoinSet::new();
    for (tx, rx) in conns {
        set.spawn(async move {
            tx.close().await;
            drop(rx);
        });
    }
    while set.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A topic name unique to one measurement.
pub fn topic(scenario: &str, parts: &[usize]) -> String {
    let parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    format!("bench-{scenario}-{}", parts.join("-"))
}

/// Start `peer` for a scenario; if it cannot start, say so in the table and return `None`.
pub async fn start_or_note(
    lab: &Lab,
    peer: &str,
    relay_args: &[String],
    table: &mut Table,
) -> Option<Arc<Target>> {
    match lab.start(peer, relay_args).await {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            table.row(vec![peer.to_owned(), format!("not run: {e:#}")]);
            None
        }
    }
}

/// Stop a target once every clone of it is gone.
pub async fn stop(target: Arc<Target>) {
    if let Ok(t) = Arc::try_unwrap(target) {
        t.stop().await;
    }
}

/// Run `measure` `runs` times; failed runs are reported on stderr and left out.
pub async fn repeat<P, F, Fut>(runs: usize, label: &str, mut measure: F) -> Vec<P>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<P>>,
{
    let mut points = Vec::with_capacity(runs);
    for run in 0..runs {
        match measure(run).await {
            Ok(p) => points.push(p),
            Err(e) => eprintln!("{label} run {run}: {e:#}"),
        }
    }
    points
}
