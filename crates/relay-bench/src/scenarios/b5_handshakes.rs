//! B5 handshakes per second: access POST → websocket upgrade → first message, at several
//! concurrencies. Each worker has its own topic with an echo client already on it; a
//! handshake counts once the new connection gets its hello echoed back.

use super::{cpu_between, usage};
use crate::peers::{Lab, Target};
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::Result;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// B5 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub concurrency: Vec<usize>,
    pub seconds: f64,
    pub runs: usize,
}

/// Upper bound on handshakes per worker per run, so every loop is bounded in count too.
const MAX_PER_WORKER: u64 = 200_000;

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let mut table = Table::new(
        format!("B5 handshakes per second (connect → upgrade → first message back), {} s per run, {} run(s)", opts.seconds, opts.runs),
        &["peer", "concurrency", "handshakes/s", "handshake p50", "p99", "errors", "server CPU-ms per handshake"],
    );
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        if target.single_room() {
            table.row(vec![
                peer.clone(),
                "-".into(),
                "not run: one shared room, so every hello reaches every worker".into(),
            ]);
            super::stop(target).await;
            continue;
        }
        for &c in &opts.concurrency {
            let mut rates = Vec::new();
            let (mut p50, mut p99, mut errors, mut cpu_ms) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..opts.runs {
                match measure(&target, c, opts.seconds, run).await {
                    Ok((rate, hist, errs, cpu)) => {
                        rates.push(rate);
                        p50.push(hist.quantile(0.5) as f64);
                        p99.push(hist.quantile(0.99) as f64);
                        errors.push(errs as f64);
                        cpu_ms.push(cpu * 1000.0 / hist.count().max(1) as f64);
                    }
                    Err(e) => eprintln!("B5 {peer} c={c}: {e:#}"),
                }
            }
            table.row(vec![
                peer.clone(),
                c.to_string(),
                agg(&rates, dec(0)),
                agg(&p50, fmt_ns),
                agg(&p99, fmt_ns),
                agg(&errors, dec(0)),
                agg(&cpu_ms, dec(3)),
            ]);
        }
        super::stop(target).await;
    }
    table.notes.push("For the relay each handshake mints a JWT (client side, a few µs), POSTs it to /session/{topic} on a kept-alive HTTP connection, then opens a new TCP connection and upgrades with the one-time code. Peers without an access step only do the TCP connection, the upgrade (and for NATS its CONNECT/SUB/PING). The connection is then dropped without a close handshake.".into());
    Ok(table)
}

/// Returns (handshakes per second, latency histogram, errors, server CPU seconds).
async fn measure(
    target: &Arc<Target>,
    concurrency: usize,
    seconds: f64,
    run: usize,
) -> Result<(f64, Latency, u64, f64)> {
    let mut bots = Vec::new();
    for w in 0..concurrency {
        let (mut tx, mut rx) = target
            .open(&super::topic("b5", &[concurrency, run, w]))
            .await?;
        bots.push(tokio::spawn(async move {
            while let Ok(Some(m)) = rx.recv().await {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        }));
    }
    let before = usage(target);
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    let mut set = JoinSet::new();
    for w in 0..concurrency {
        let target = target.clone();
        let topic = super::topic("b5", &[concurrency, run, w]);
        set.spawn(async move {
            let mut hist = Latency::new();
            let mut errors = 0u64;
            for _ in 0..MAX_PER_WORKER {
                if Instant::now() >= stop {
                    break;
                }
                let t0 = crate::wire::now_ns();
                let one = async {
                    let (mut tx, mut rx) = target.open(&topic).await?;
                    tx.send(Bytes::from_static(b"hello")).await?;
                    match rx.recv().await? {
                        Some(_) => anyhow::Ok(()),
                        None => anyhow::bail!("closed before the first message"),
                    }
                };
                match tokio::time::timeout(Duration::from_secs(5), one).await {
                    Ok(Ok(())) => hist.record(crate::wire::now_ns() - t0),
                    _ => errors += 1,
                }
            }
            (hist, errors)
        });
    }
    let mut all = Latency::new();
    let mut errors = 0;
    while let Some(joined) = set.join_next().await {
        let (hist, errs) = joined?;
        all.add(&hist);
        errors += errs;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_between(before, usage(target));
    for bot in bots {
        bot.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((all.count() as f64 / elapsed, all, errors, cpu))
}
