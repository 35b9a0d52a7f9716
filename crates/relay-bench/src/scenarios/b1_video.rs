//! B1 video fan-out: one synthetic 2 Mbit/s MPEG-TS-sized stream (messages of 1316·N bytes
//! carrying sequence numbers and send times) to N readers on one topic.

use super::{
    close_all, connect_many, cpu_between, read_timed, rss_mib, send_paced, topic, usage,
    ReaderStats,
};
use crate::peers::Lab;
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// B1 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub readers: Vec<usize>,
    pub seconds: f64,
    pub mbps: f64,
    /// TS packets (188 B) per message: 7 makes the 1316-byte UDP-sized chunk; the default
    /// 7×7 is about one frame of 2 Mbit/s video at 25 fps.
    pub ts_packets: usize,
    pub runs: usize,
}

/// One measurement.
struct Point {
    delivered: f64,
    missing: f64,
    readers_missing: f64,
    p50: f64,
    p99: f64,
    worst_p99: f64,
    cpu_pct: f64,
    cpu_per_gb: f64,
    rss: f64,
}

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let size = 188 * opts.ts_packets.max(1);
    let rate = opts.mbps * 1e6 / 8.0 / size as f64;
    let mut table = Table::new(
        format!("B1 video fan-out: {} Mbit/s in {size}-byte messages ({rate:.1} msg/s), {} s per run, {} run(s)", opts.mbps, opts.seconds, opts.runs),
        &["peer", "readers", "delivered / expected", "missing msgs (readers affected)", "added delay p50", "p99", "worst reader's p99", "server CPU %", "server CPU-s per delivered GB", "server RSS MiB"],
    );
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        for &n in &opts.readers {
            let label = format!("B1 {peer} {n} readers");
            let points = super::repeat(opts.runs, &label, |run| {
                measure(&target, n, size, rate, opts.seconds, run)
            })
            .await;
            let col = |f: fn(&Point) -> f64| points.iter().map(f).collect::<Vec<f64>>();
            table.row(vec![
                peer.clone(),
                n.to_string(),
                agg(&col(|p| p.delivered * 100.0), |x| format!("{x:.2} %")),
                format!(
                    "{} ({})",
                    agg(&col(|p| p.missing), dec(0)),
                    agg(&col(|p| p.readers_missing), dec(0))
                ),
                agg(&col(|p| p.p50), fmt_ns),
                agg(&col(|p| p.p99), fmt_ns),
                agg(&col(|p| p.worst_p99), fmt_ns),
                agg(&col(|p| p.cpu_pct), dec(1)),
                agg(&col(|p| p.cpu_per_gb), dec(2)),
                agg(&col(|p| p.rss), dec(1)),
            ]);
        }
        super::stop(target).await;
    }
    table.notes.push("Added delay: reader receive time minus the writer's send stamp (one clock, one process). Missing: sequence gaps seen by readers. Server CPU from /proc/<pid>/stat utime+stime over the sending window.".into());
    Ok(table)
}

async fn measure(
    target: &Arc<crate::peers::Target>,
    n: usize,
    size: usize,
    rate: f64,
    seconds: f64,
    run: usize,
) -> Result<Point> {
    let topic = topic("b1", &[n, run]);
    let readers = connect_many(target, &topic, n, 64).await?;
    let (mut writer, writer_rx) = target.open(&topic).await?;
    let echo = tokio::spawn(writer_rx.drain());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = (rate * seconds).ceil().max(1.0) as u64;
    let start = Instant::now();
    let read_deadline = start + Duration::from_secs_f64(seconds + 5.0);
    let mut set = JoinSet::new();
    let mut keep = Vec::with_capacity(n);
    for (tx, rx) in readers {
        keep.push(tx);
        set.spawn(read_timed(rx, count - 1, read_deadline));
    }
    let before = usage(target);
    let sent = send_paced(
        &mut writer,
        rate,
        count,
        size,
        start + Duration::from_secs_f64(seconds + 2.0),
    )
    .await?;
    let mut all = Latency::new();
    let mut per_reader: Vec<ReaderStats> = Vec::with_capacity(n);
    let mut rxs = Vec::with_capacity(n);
    while let Some(joined) = set.join_next().await {
        let (stats, rx) = joined?;
        all.add(&stats.delay);
        per_reader.push(stats);
        rxs.push(rx);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = usage(target);
    let bytes: u64 = per_reader.iter().map(|s| s.bytes).sum();
    let cpu = cpu_between(before, after);
    let point = Point {
        delivered: bytes as f64 / (sent as f64 * size as f64 * n as f64),
        missing: per_reader
            .iter()
            .map(|s| sent.saturating_sub(s.messages))
            .sum::<u64>() as f64,
        readers_missing: per_reader.iter().filter(|s| s.messages < sent).count() as f64,
        p50: all.quantile(0.5) as f64,
        p99: all.quantile(0.99) as f64,
        worst_p99: per_reader
            .iter()
            .map(|s| s.delay.quantile(0.99))
            .max()
            .unwrap_or(0) as f64,
        cpu_pct: cpu / elapsed * 100.0,
        cpu_per_gb: cpu / (bytes as f64 / 1e9),
        rss: rss_mib(after),
    };
    echo.abort();
    let conns = keep.into_iter().zip(rxs).collect();
    close_all(conns).await;
    writer.close().await;
    Ok(point)
}
