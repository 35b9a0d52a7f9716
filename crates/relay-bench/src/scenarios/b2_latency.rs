//! B2 small-message latency: one writer, open loop at a fixed rate, 1/10/100 readers, with
//! a direct TCP round trip measured in the same run as the floor.

use super::{close_all, connect_many, cpu_between, read_timed, send_paced, topic, usage};
use crate::peers::Lab;
use crate::procs::{spawn_listening, Proc};
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// B2 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub sizes: Vec<usize>,
    pub rates: Vec<u64>,
    pub readers: Vec<usize>,
    pub seconds: f64,
    pub runs: usize,
}

struct Point {
    achieved: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    missing: f64,
    cpu_per_million: f64,
}

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let mut table = Table::new(
        format!(
            "B2 small-message latency, one writer → N readers, {} s per run, {} run(s)",
            opts.seconds, opts.runs
        ),
        &[
            "peer",
            "size B",
            "rate msg/s",
            "readers",
            "achieved msg/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "missing",
            "server CPU-s per M delivered",
        ],
    );
    floor_rows(lab, opts, &mut table).await;
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        for &size in &opts.sizes {
            for &rate in &opts.rates {
                for &n in &opts.readers {
                    let label = format!("B2 {peer} {size} B {rate}/s {n} readers");
                    let points = super::repeat(opts.runs, &label, |run| {
                        measure(&target, size, rate, n, opts.seconds, run)
                    })
                    .await;
                    let col = |f: fn(&Point) -> f64| points.iter().map(f).collect::<Vec<f64>>();
                    table.row(vec![
                        peer.clone(),
                        size.to_string(),
                        rate.to_string(),
                        n.to_string(),
                        agg(&col(|p| p.achieved), dec(0)),
                        agg(&col(|p| p.p50), fmt_ns),
                        agg(&col(|p| p.p99), fmt_ns),
                        agg(&col(|p| p.p999), fmt_ns),
                        agg(&col(|p| p.max), fmt_ns),
                        agg(&col(|p| p.missing), dec(0)),
                        agg(&col(|p| p.cpu_per_million), dec(1)),
                    ]);
                }
            }
        }
        super::stop(target).await;
    }
    table.notes.push("Latency is one way (writer's send stamp → reader's receive), across the relay: two loopback hops, like the TCP round trip floor. The writer paces with tokio's 1 ms timer, so at 10k msg/s messages leave in bursts of ~10.".into());
    Ok(table)
}

/// Round trips through a direct TCP echo on the server core: the floor.
async fn floor_rows(lab: &Lab, opts: &Options, table: &mut Table) {
    let Some(bin) = &lab.echo_bin else { return };
    let result = async {
        let (echo, ports) = spawn_listening(1, |ports| {
            Proc::spawn(
                "tcp-echo",
                &bin.to_string_lossy(),
                &["tcp-echo".into(), "--port".into(), ports[0].to_string()],
                lab.server_core,
            )
        })
        .await?;
        let port = ports[0];
        let mut rows = Vec::new();
        for &size in &opts.sizes {
            let mut runs: Vec<Latency> = Vec::new();
            for _ in 0..opts.runs {
                runs.push(crate::floor::round_trips(port, size, 5_000).await?);
            }
            let col = |q: f64| {
                runs.iter()
                    .map(|h| {
                        if q >= 1.0 {
                            h.max() as f64
                        } else {
                            h.quantile(q) as f64
                        }
                    })
                    .collect::<Vec<f64>>()
            };
            rows.push(vec![
                "direct TCP round trip (floor)".into(),
                size.to_string(),
                "closed loop".into(),
                "1".into(),
                "-".into(),
                agg(&col(0.5), fmt_ns),
                agg(&col(0.99), fmt_ns),
                agg(&col(0.999), fmt_ns),
                agg(&col(1.0), fmt_ns),
                "0".into(),
                "-".into(),
            ]);
        }
        echo.stop().await;
        anyhow::Ok(rows)
    }
    .await;
    match result {
        Ok(rows) => rows.into_iter().for_each(|r| table.row(r)),
        Err(e) => table.row(vec![
            "direct TCP round trip (floor)".into(),
            format!("not run: {e:#}"),
        ]),
    }
}

async fn measure(
    target: &Arc<crate::peers::Target>,
    size: usize,
    rate: u64,
    n: usize,
    seconds: f64,
    run: usize,
) -> Result<Point> {
    let topic = topic("b2", &[size, rate as usize, n, run]);
    let readers = connect_many(target, &topic, n, 32).await?;
    let (mut writer, writer_rx) = target.open(&topic).await?;
    let echo = tokio::spawn(writer_rx.drain());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let count = ((rate as f64) * seconds).ceil().max(1.0) as u64;
    let start = Instant::now();
    let mut set = JoinSet::new();
    let mut keep = Vec::new();
    for (tx, rx) in readers {
        keep.push(tx);
        set.spawn(read_timed(
            rx,
            count - 1,
            start + Duration::from_secs_f64(seconds + 3.0),
        ));
    }
    let before = usage(target);
    let sent = send_paced(
        &mut writer,
        rate as f64,
        count,
        size,
        start + Duration::from_secs_f64(seconds * 2.0 + 1.0),
    )
    .await?;
    let send_secs = start.elapsed().as_secs_f64();
    let mut all = Latency::new();
    let (mut missing, mut delivered) = (0u64, 0u64);
    let mut rxs = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (stats, rx) = joined?;
        all.add(&stats.delay);
        missing += sent.saturating_sub(stats.messages);
        delivered += stats.messages;
        rxs.push(rx);
    }
    let cpu = cpu_between(before, usage(target));
    echo.abort();
    close_all(keep.into_iter().zip(rxs).collect()).await;
    writer.close().await;
    Ok(Point {
        achieved: sent as f64 / send_secs,
        p50: all.quantile(0.5) as f64,
        p99: all.quantile(0.99) as f64,
        p999: all.quantile(0.999) as f64,
        max: all.max() as f64,
        missing: missing as f64,
        cpu_per_million: cpu / (delivered as f64 / 1e6),
    })
}
