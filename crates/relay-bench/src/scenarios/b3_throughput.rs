//! B3 single-stream throughput: one writer, one reader, large messages, with a window of
//! messages in flight so no server queue overflows; direct loopback TCP as the ceiling.

use super::{close_all, cpu_between, topic, usage};
use crate::peers::{Lab, Target};
use crate::report::{agg, dec, Table};
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// B3 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub seconds: f64,
    pub runs: usize,
}

/// At most this many bytes (and 64 messages) in flight: well inside the relay's queue bounds.
const WINDOW_BYTES: usize = 8 << 20;

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let mut table = Table::new(
        format!(
            "B3 single-stream throughput, one writer → one reader, {} s per run, {} run(s)",
            opts.seconds, opts.runs
        ),
        &[
            "peer",
            "message size",
            "Gbit/s",
            "% of direct TCP",
            "server CPU-s per GB",
        ],
    );
    let mut ceiling = Vec::new();
    for &size in &opts.sizes {
        let mut runs = Vec::new();
        for _ in 0..opts.runs {
            runs.push(crate::floor::stream_throughput(size, opts.seconds).await? * 8.0 / 1e9);
        }
        table.row(vec![
            "direct loopback TCP (ceiling)".into(),
            human_size(size),
            agg(&runs, dec(2)),
            "100 %".into(),
            "-".into(),
        ]);
        ceiling.push(crate::report::median(&runs));
    }
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        for (i, &size) in opts.sizes.iter().enumerate() {
            let mut gbps = Vec::new();
            let mut cpu_per_gb = Vec::new();
            for run in 0..opts.runs {
                match measure(&target, size, opts.seconds, run).await {
                    Ok((rate, cpu)) => {
                        gbps.push(rate * 8.0 / 1e9);
                        cpu_per_gb.push(cpu);
                    }
                    Err(e) => eprintln!("B3 {peer} {size} B: {e:#}"),
                }
            }
            let floor = ceiling.get(i).copied().unwrap_or(f64::NAN);
            let pct: Vec<f64> = gbps.iter().map(|g| g / floor * 100.0).collect();
            table.row(vec![
                peer.clone(),
                human_size(size),
                agg(&gbps, dec(2)),
                agg(&pct, |x| format!("{x:.0} %")),
                agg(&cpu_per_gb, dec(2)),
            ]);
        }
        super::stop(target).await;
    }
    table.notes.push("Both ends of the direct TCP stream run in the load generator; through a peer the writer, server and reader each copy the bytes. websocat mirrors every message back to the writer too (the writer drains it).".into());
    Ok(table)
}

pub fn human_size(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Returns (delivered bytes per second, server CPU-s per delivered GB).
async fn measure(
    target: &Arc<Target>,
    size: usize,
    seconds: f64,
    run: usize,
) -> Result<(f64, f64)> {
    let topic = topic("b3", &[size, run]);
    let (reader_tx, mut reader_rx) = target.open(&topic).await?;
    let (mut writer, writer_rx) = target.open(&topic).await?;
    let echo = tokio::spawn(writer_rx.drain());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let reader = {
        let (received, bytes, progress) = (received.clone(), bytes.clone(), progress.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = reader_rx.recv().await {
                bytes.fetch_add(m.len() as u64, Ordering::Relaxed);
                received.fetch_add(1, Ordering::Release);
                progress.notify_one();
            }
            reader_rx
        })
    };
    let window = (WINDOW_BYTES / size).clamp(2, 64) as u64;
    let payload = crate::wire::message(0, 0, size);
    let before = usage(target);
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < stop {
        if sent - received.load(Ordering::Acquire) < window {
            writer.feed(payload.clone()).await?;
            sent += 1;
            if sent.is_multiple_of(8) {
                writer.flush().await?;
            }
        } else {
            writer.flush().await?;
            let _ = tokio::time::timeout(Duration::from_secs(5), progress.notified()).await;
        }
    }
    writer.flush().await?;
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Acquire) < sent && Instant::now() < drain_deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), progress.notified()).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_between(before, usage(target));
    let delivered = bytes.load(Ordering::Relaxed) as f64;
    reader.abort();
    echo.abort();
    writer.close().await;
    close_all(vec![]).await;
    drop(reader_tx);
    Ok((delivered / elapsed, cpu / (delivered / 1e9)))
}
