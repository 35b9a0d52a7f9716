//! B10, the relay cluster on NATS (issue 18): B1's video fan-out with the writer on node A
//! and the readers split over nodes A and B, against a single-node B1 started in the same
//! run (relay CPU per delivered GB, added delay, nats-server's CPU); and the cross-node
//! latency of small messages (a reader on A and one on B: what the NATS hop adds).
//! NATS is a throw-away `nats-server -js` (relay_testkit::nats).

use super::b1_video::{fan_out, FanOut, Placement};
use super::topic;
use crate::peers::{Lab, Target};
use crate::report::{agg, dec, fmt_ns, Table};
use anyhow::{bail, Result};
use relay_testkit::nats::NatsServer;
use std::sync::Arc;

/// B10 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Readers of the fan-out, split evenly over nodes A and B (and all on the single node).
    pub readers: usize,
    pub seconds: f64,
    pub mbps: f64,
    /// 188-byte TS packets per video message (as B1).
    pub ts_packets: usize,
    /// Message rates of the cross-node latency part.
    pub rates: Vec<u64>,
    /// Message size of the cross-node latency part.
    pub size: usize,
    pub runs: usize,
}

/// The processes of one B10 run.
struct Setup {
    single: Arc<Target>,
    node_a: Arc<Target>,
    node_b: Arc<Target>,
    nats: NatsServer,
}

/// Two tables: the fan-out, then the cross-node latency.
pub async fn run(lab: &Lab, opts: &Options) -> Result<Vec<Table>> {
    if !relay_testkit::programs::installed(relay_testkit::nats::NATS_SERVER) {
        bail!(
            "B10 needs nats-server: {}",
            relay_testkit::nats::INSTALL_HINT
        );
    }
    let nats = tokio::task::spawn_blocking(NatsServer::start).await?;
    let node = |name: &str| -> Vec<String> {
        ["--nats", &nats.url(), "--node-name", name]
            .map(str::to_owned)
            .to_vec()
    };
    let setup = Setup {
        single: Arc::new(lab.start("relay", &[]).await?),
        node_a: Arc::new(lab.start("relay", &node("bench-a")).await?),
        node_b: Arc::new(lab.start("relay", &node("bench-b")).await?),
        nats,
    };
    let tables = vec![
        fan_out_table(&setup, opts).await,
        latency_table(&setup, opts).await,
    ];
    let Setup {
        single,
        node_a,
        node_b,
        nats,
    } = setup;
    for target in [single, node_a, node_b] {
        super::stop(target).await;
    }
    drop(nats);
    Ok(tables)
}

/// One row's measurement: the fan-out, and nats-server's CPU seconds over its window.
fn nats_cpu_pct(out: &FanOut) -> f64 {
    out.also_cpu.first().copied().unwrap_or(f64::NAN) / out.elapsed * 100.0
}

async fn fan_out_table(setup: &Setup, opts: &Options) -> Table {
    let size = 188 * opts.ts_packets.max(1);
    let rate = opts.mbps * 1e6 / 8.0 / size as f64;
    let n = opts.readers.max(2);
    let mut table = Table::new(
        format!("B10 cluster fan-out: {} Mbit/s in {size}-byte messages ({rate:.1} msg/s) to {n} readers, {} s per run, {} run(s)", opts.mbps, opts.seconds, opts.runs),
        &["setup", "delivered / expected", "missing msgs (readers affected)", "added delay p50", "p99", "node B readers' p50", "node B readers' p99", "relay CPU-s per delivered GB (all nodes)", "relay CPU %", "nats-server CPU %"],
    );
    let nats_pid = setup.nats.pid();
    let single = Placement {
        writer: &setup.single,
        readers: vec![(&setup.single, n)],
        also_sample: Vec::new(),
    };
    let cluster = Placement {
        writer: &setup.node_a,
        readers: vec![(&setup.node_a, n / 2), (&setup.node_b, n - n / 2)],
        also_sample: nats_pid.into_iter().collect(),
    };
    for (label, placement) in [
        ("single node (B1)", &single),
        ("cluster: writer on A, readers on A and B", &cluster),
    ] {
        let points = super::repeat(opts.runs, &format!("B10 {label}"), |run| async move {
            fan_out(
                placement,
                &topic("b10", &[n, run]),
                size,
                rate,
                opts.seconds,
            )
            .await
        })
        .await;
        let col = |f: &dyn Fn(&FanOut) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        let remote = |q: f64| {
            col(&|p| {
                p.per_group
                    .get(1)
                    .map_or(f64::NAN, |l| l.quantile(q) as f64)
            })
        };
        table.row(vec![
            label.to_owned(),
            agg(&col(&|p| p.delivered() * 100.0), |x| format!("{x:.2} %")),
            format!(
                "{} ({})",
                agg(&col(&|p| p.missing as f64), dec(0)),
                agg(&col(&|p| p.readers_missing as f64), dec(0))
            ),
            agg(&col(&|p| p.all.quantile(0.5) as f64), fmt_ns),
            agg(&col(&|p| p.all.quantile(0.99) as f64), fmt_ns),
            agg(&remote(0.5), fmt_ns),
            agg(&remote(0.99), fmt_ns),
            agg(&col(&|p| p.cpu_per_gb()), dec(2)),
            agg(&col(&|p| p.cpu / p.elapsed * 100.0), dec(1)),
            agg(&col(&nats_cpu_pct), dec(1)),
        ]);
    }
    table.notes.push("The same readers, writer and rate on one node and on two; the cluster's relay CPU is both nodes' together. Node B readers get every message through nats-server (the writer's node publishes each message once). Added delay and CPU measured as in B1.".into());
    table
}

async fn latency_table(setup: &Setup, opts: &Options) -> Table {
    let mut table = Table::new(
        format!(
            "B10 cross-node latency: {}-byte messages, writer and one reader on node A, one reader on node B, {} s per run, {} run(s)",
            opts.size, opts.seconds, opts.runs
        ),
        &["rate msg/s", "same node p50", "p99", "other node p50", "p99", "NATS hop adds p50", "p99", "missing (other node)", "nats-server CPU %"],
    );
    let placement = Placement {
        writer: &setup.node_a,
        readers: vec![(&setup.node_a, 1), (&setup.node_b, 1)],
        also_sample: setup.nats.pid().into_iter().collect(),
    };
    for &rate in &opts.rates {
        let points = super::repeat(opts.runs, &format!("B10 latency {rate}/s"), |run| {
            let topic = topic("b10-lat", &[rate as usize, run]);
            let placement = &placement;
            async move { fan_out(placement, &topic, opts.size, rate as f64, opts.seconds).await }
        })
        .await;
        let q = |group: usize, q: f64| -> Vec<f64> {
            points
                .iter()
                .map(|p| {
                    p.per_group
                        .get(group)
                        .map_or(f64::NAN, |l| l.quantile(q) as f64)
                })
                .collect()
        };
        let hop = |quantile: f64| -> Vec<f64> {
            q(1, quantile)
                .iter()
                .zip(q(0, quantile))
                .map(|(remote, local)| remote - local)
                .collect()
        };
        table.row(vec![
            rate.to_string(),
            agg(&q(0, 0.5), fmt_ns),
            agg(&q(0, 0.99), fmt_ns),
            agg(&q(1, 0.5), fmt_ns),
            agg(&q(1, 0.99), fmt_ns),
            agg(&hop(0.5), fmt_ns),
            agg(&hop(0.99), fmt_ns),
            agg(
                &points
                    .iter()
                    .map(|p| {
                        p.per_group
                            .get(1)
                            .map_or(f64::NAN, |l| p.sent.saturating_sub(l.count()) as f64)
                    })
                    .collect::<Vec<_>>(),
                dec(0),
            ),
            agg(&points.iter().map(nats_cpu_pct).collect::<Vec<_>>(), dec(1)),
        ]);
    }
    table.notes.push("NATS hop: the other-node reader's quantile minus the same-node reader's, from the same messages of the same run.".into());
    table
}
