//! B1 video fan-out: one synthetic 2 Mbit/s MPEG-TS-sized stream (messages of 1316·N bytes
//! carrying sequence numbers and send times) to N readers on one topic.

use super::{
    close_all, connect_many, cpu_between, read_timed, rss_mib, send_paced, topic, usage,
    ReaderStats,
};
use crate::peers::{Lab, Target};
use crate::procs::{usage_of, Usage};
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
    let placement = Placement {
        writer: target,
        readers: vec![(target, n)],
        also_sample: Vec::new(),
    };
    let out = fan_out(&placement, &topic("b1", &[n, run]), size, rate, seconds).await?;
    let after = usage(target);
    Ok(Point {
        delivered: out.delivered(),
        missing: out.missing as f64,
        readers_missing: out.readers_missing as f64,
        p50: out.all.quantile(0.5) as f64,
        p99: out.all.quantile(0.99) as f64,
        worst_p99: out.worst_p99 as f64,
        cpu_pct: out.cpu / out.elapsed * 100.0,
        cpu_per_gb: out.cpu_per_gb(),
        rss: rss_mib(after),
    })
}

/// Where one fan-out measurement's connections go: the writer's target, and how many
/// readers on each target (one target for B1; two cluster nodes for B10).
pub struct Placement<'a> {
    pub writer: &'a Arc<Target>,
    pub readers: Vec<(&'a Arc<Target>, usize)>,
    /// More processes whose CPU is sampled over the same window (nats-server in B10).
    pub also_sample: Vec<u32>,
}

/// What one fan-out measurement saw.
pub struct FanOut {
    /// Messages the writer sent.
    pub sent: u64,
    pub size: usize,
    /// Readers in all.
    pub readers: usize,
    /// Payload bytes every reader received, summed.
    pub bytes: u64,
    pub missing: u64,
    pub readers_missing: u64,
    /// Every reader's added delay.
    pub all: Latency,
    /// The added delay of the readers of each entry of [`Placement::readers`], in order.
    pub per_group: Vec<Latency>,
    pub worst_p99: u64,
    /// CPU seconds of the distinct targets' processes over the sending window.
    pub cpu: f64,
    /// CPU seconds of each [`Placement::also_sample`] process over the same window.
    pub also_cpu: Vec<f64>,
    /// Seconds from the first send to the last reader done.
    pub elapsed: f64,
}

impl FanOut {
    /// Delivered bytes over expected bytes.
    pub fn delivered(&self) -> f64 {
        self.bytes as f64 / (self.sent as f64 * self.size as f64 * self.readers as f64)
    }

    /// Server CPU seconds per delivered GB.
    pub fn cpu_per_gb(&self) -> f64 {
        self.cpu / (self.bytes as f64 / 1e9)
    }
}

/// One writer sends `size`-byte timed messages at `rate` for `seconds` on `topic`; the
/// readers placed as `placement` says time every message.
pub async fn fan_out(
    placement: &Placement<'_>,
    topic: &str,
    size: usize,
    rate: f64,
    seconds: f64,
) -> Result<FanOut> {
    let mut groups = Vec::with_capacity(placement.readers.len());
    for (target, n) in &placement.readers {
        groups.push(connect_many(target, topic, *n, 64).await?);
    }
    let (mut writer, writer_rx) = placement.writer.open(topic).await?;
    let echo = tokio::spawn(writer_rx.drain());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = (rate * seconds).ceil().max(1.0) as u64;
    let start = Instant::now();
    let read_deadline = start + Duration::from_secs_f64(seconds + 5.0);
    let mut set = JoinSet::new();
    let mut keep = Vec::new();
    for (group, readers) in groups.into_iter().enumerate() {
        for (tx, rx) in readers {
            keep.push(tx);
            set.spawn(async move { (group, read_timed(rx, count - 1, read_deadline).await) });
        }
    }
    let mut targets: Vec<&Arc<Target>> = vec![placement.writer];
    for (target, _) in &placement.readers {
        if !targets.iter().any(|t| Arc::ptr_eq(t, target)) {
            targets.push(target);
        }
    }
    let sample = || {
        let relays: Vec<Option<Usage>> = targets.iter().map(|t| usage(t)).collect();
        let others: Vec<Option<Usage>> = placement
            .also_sample
            .iter()
            .map(|pid| usage_of(*pid).ok())
            .collect();
        (relays, others)
    };
    let before = sample();
    let sent = send_paced(
        &mut writer,
        rate,
        count,
        size,
        start + Duration::from_secs_f64(seconds + 2.0),
    )
    .await?;
    let mut all = Latency::new();
    let mut per_group: Vec<Latency> = placement.readers.iter().map(|_| Latency::new()).collect();
    let mut per_reader: Vec<ReaderStats> = Vec::with_capacity(keep.len());
    let mut rxs = Vec::with_capacity(keep.len());
    while let Some(joined) = set.join_next().await {
        let (group, (stats, rx)) = joined?;
        all.add(&stats.delay);
        per_group[group].add(&stats.delay);
        per_reader.push(stats);
        rxs.push(rx);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = sample();
    let between = |b: &[Option<Usage>], a: &[Option<Usage>]| -> Vec<f64> {
        b.iter().zip(a).map(|(b, a)| cpu_between(*b, *a)).collect()
    };
    let out = FanOut {
        sent,
        size,
        readers: per_reader.len(),
        bytes: per_reader.iter().map(|s| s.bytes).sum(),
        missing: per_reader
            .iter()
            .map(|s| sent.saturating_sub(s.messages))
            .sum(),
        readers_missing: per_reader.iter().filter(|s| s.messages < sent).count() as u64,
        all,
        per_group,
        worst_p99: per_reader
            .iter()
            .map(|s| s.delay.quantile(0.99))
            .max()
            .unwrap_or(0),
        cpu: between(&before.0, &after.0).iter().sum(),
        also_cpu: between(&before.1, &after.1),
        elapsed,
    };
    echo.abort();
    close_all(keep.into_iter().zip(rxs).collect()).await;
    writer.close().await;
    Ok(out)
}
