//! B8 slow reader: one reader in ten stops reading (a stalled browser tab) while video
//! flows; the fast readers' delay must not change and the server's memory must stay
//! bounded. The other B8 faults (restart, deny) are in [`super::b8_faults`].

use super::{close_all, connect_many, read_timed, rss_mib, send_paced, topic, usage};
use crate::peers::{Lab, Target};
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// B8 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub readers: usize,
    pub mbps: f64,
    pub seconds: f64,
    /// `--slow-reader-timeout` given to the relay.
    pub slow_timeout: String,
    pub runs: usize,
}

const MESSAGE: usize = 1316 * 7;

struct Point {
    p50: f64,
    p99: f64,
    missing: f64,
    slow_got: f64,
    slow_closed: String,
    peak_rss: f64,
}

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let mut table = Table::new(
        format!(
            "B8 one slow reader in {}: {} Mbit/s in {MESSAGE}-byte messages for {} s, {} run(s)",
            opts.readers, opts.mbps, opts.seconds, opts.runs
        ),
        &[
            "peer",
            "stalled readers",
            "fast readers' delay p50",
            "p99",
            "fast readers' missing msgs",
            "stalled reader got (of sent)",
            "stalled reader closed by server",
            "server peak RSS MiB",
        ],
    );
    let relay_args = vec![
        "--slow-reader-timeout".to_owned(),
        opts.slow_timeout.clone(),
    ];
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &relay_args, &mut table).await else {
            continue;
        };
        for stalled in [0usize, 1] {
            let label = format!("B8 {peer} {stalled} stalled");
            let points = super::repeat(opts.runs, &label, |run| {
                measure(&target, opts, stalled, run)
            })
            .await;
            let col = |f: fn(&Point) -> f64| points.iter().map(f).collect::<Vec<f64>>();
            let closed: Vec<String> = points.iter().map(|p| p.slow_closed.clone()).collect();
            table.row(vec![
                peer.clone(),
                stalled.to_string(),
                agg(&col(|p| p.p50), fmt_ns),
                agg(&col(|p| p.p99), fmt_ns),
                agg(&col(|p| p.missing), dec(0)),
                if stalled == 0 {
                    "-".into()
                } else {
                    agg(&col(|p| p.slow_got * 100.0), |x| format!("{x:.0} %"))
                },
                if stalled == 0 {
                    "-".into()
                } else {
                    closed.join(", ")
                },
                agg(&col(|p| p.peak_rss), dec(1)),
            ]);
        }
        super::stop(target).await;
    }
    table.notes.push(format!("The stalled reader never reads during the run (its socket buffers fill, then the server's queue). The relay runs with --slow-reader-timeout {}.", opts.slow_timeout));
    Ok(table)
}

async fn measure(
    target: &Arc<Target>,
    opts: &Options,
    stalled: usize,
    run: usize,
) -> Result<Point> {
    let topic = topic("b8", &[stalled, run]);
    let mut readers = connect_many(target, &topic, opts.readers, 16).await?;
    let slow: Vec<_> = readers.split_off(opts.readers - stalled.min(opts.readers));
    let (mut writer, writer_rx) = target.open(&topic).await?;
    let echo = tokio::spawn(writer_rx.drain());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rate = opts.mbps * 1e6 / 8.0 / MESSAGE as f64;
    let count = (rate * opts.seconds).ceil().max(1.0) as u64;
    let start = Instant::now();
    let mut set = JoinSet::new();
    let mut keep = Vec::new();
    for (tx, rx) in readers {
        keep.push(tx);
        set.spawn(read_timed(
            rx,
            count - 1,
            start + Duration::from_secs_f64(opts.seconds + 5.0),
        ));
    }
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let pid = target.proc.as_ref().map(|p| p.pid);
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            for _ in 0..10_000 {
                if !sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match pid.and_then(|pid| crate::procs::usage_of(pid).ok()) {
                    Some(u) => peak = peak.max(u.rss),
                    None => break,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let sent = send_paced(
        &mut writer,
        rate,
        count,
        MESSAGE,
        start + Duration::from_secs_f64(opts.seconds + 2.0),
    )
    .await?;
    let mut fast = Latency::new();
    let mut missing = 0;
    let mut rxs = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (stats, rx) = joined?;
        fast.add(&stats.delay);
        missing += sent.saturating_sub(stats.messages);
        rxs.push(rx);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let end_rss = usage(target).map(|u| u.rss).unwrap_or(0);
    let peak_sampled = sampler.await.unwrap_or(0).max(end_rss);
    let (mut slow_got, mut slow_closed) = (f64::NAN, "-".to_owned());
    for (tx, rx) in slow {
        // Now read what is left: was it cut off, and with which close code?
        let (stats, rx) = read_timed(rx, count - 1, Instant::now() + Duration::from_secs(3)).await;
        slow_got = stats.messages as f64 / sent as f64;
        slow_closed = match (stats.ended, stats.close_code) {
            (true, Some(code)) => format!("yes ({code})"),
            (true, None) => "yes (no close frame)".into(),
            (false, _) => "no".into(),
        };
        keep.push(tx);
        rxs.push(rx);
    }
    echo.abort();
    close_all(keep.into_iter().zip(rxs).collect()).await;
    writer.close().await;
    Ok(Point {
        p50: fast.quantile(0.5) as f64,
        p99: fast.quantile(0.99) as f64,
        missing: missing as f64,
        slow_got,
        slow_closed,
        peak_rss: if target.proc.is_some() {
            rss_mib(Some(crate::procs::Usage {
                cpu_s: 0.0,
                rss: peak_sampled,
            }))
        } else {
            f64::NAN
        },
    })
}
