//! B5 handshakes per second: access POST → websocket upgrade → first message, at several
//! concurrencies. Each worker has its own topic with an echo client already on it; a
//! handshake counts once the new connection gets its hello echoed back.
//!
//! The load comes from this process (`--generators 1`) or from several load-generator
//! processes: the runner starts its own binary N times as `relay-bench b5-worker`, gives
//! each a share of the topics, starts them all at once and merges what they report (counts,
//! errors and latency histograms). The server's CPU time is read from /proc by the runner
//! around the whole window either way. Workers inherit the runner's core (core 1 when
//! pinned), so the servers keep core 0 to themselves.

use super::{cpu_between, usage};
use crate::peers::{Lab, Target};
use crate::report::{agg, dec, fmt_ns, Latency, Table};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// B5 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    pub concurrency: Vec<usize>,
    pub seconds: f64,
    pub runs: usize,
    /// Load-generator processes; 1 runs the whole load inside this process, as before.
    /// A measurement never uses more processes than it has connections (its concurrency).
    pub generators: usize,
    /// The `relay-bench` binary started as `b5-worker` when `generators` > 1.
    pub worker_bin: Option<PathBuf>,
}

/// Upper bound on handshakes per worker per run, so every loop is bounded in count too.
const MAX_PER_WORKER: u64 = 200_000;

/// How long worker processes get to open their echo clients and say they are ready.
const WORKER_READY_WITHIN: Duration = Duration::from_secs(120);

/// What a worker prints once its echo clients are on their topics.
const READY: &str = "ready";

/// What the runner writes to every worker to start the measurement window.
const GO: &str = "go";

/// Run B5 against every peer of `lab`: one row per peer and concurrency.
pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let generators = opts.generators.max(1);
    if generators > 1 && opts.worker_bin.is_none() {
        bail!("B5 with --generators {generators} needs the relay-bench binary for its workers");
    }
    let placement = if generators == 1 {
        "load generator: this process".to_owned()
    } else {
        format!("load generator: up to {generators} processes (--generators {generators})")
    };
    let mut table = Table::new(
        format!("B5 handshakes per second (connect → upgrade → first message back), {} s per run, {} run(s), {placement}", opts.seconds, opts.runs),
        &["peer", "concurrency", "generator processes", "handshakes/s", "handshake p50", "p99", "errors", "server CPU-ms per handshake"],
    );
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        if target.single_room() {
            table.row(vec![
                peer.clone(),
                "-".into(),
                "-".into(),
                "not run: one shared room, so every hello reaches every worker".into(),
            ]);
            super::stop(target).await;
            continue;
        }
        for &c in &opts.concurrency {
            let processes = if generators == 1 {
                "1 (in-process)".to_owned()
            } else {
                generators.min(c.max(1)).to_string()
            };
            let mut rates = Vec::new();
            let (mut p50, mut p99, mut errors, mut cpu_ms) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..opts.runs {
                let measured = match &opts.worker_bin {
                    Some(bin) if generators > 1 => {
                        measure_processes(&target, bin, generators, c, opts.seconds, run).await
                    }
                    _ => measure(&target, c, opts.seconds, run).await,
                };
                match measured {
                    Ok(m) => {
                        rates.push(m.rate);
                        p50.push(m.report.latency.quantile(0.5) as f64);
                        p99.push(m.report.latency.quantile(0.99) as f64);
                        errors.push(m.report.errors as f64);
                        cpu_ms.push(m.cpu_ms_per_handshake());
                    }
                    Err(e) => eprintln!("B5 {peer} c={c}: {e:#}"),
                }
            }
            table.row(vec![
                peer.clone(),
                c.to_string(),
                processes,
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
    if generators > 1 {
        table.notes.push(format!("Load from {generators} worker processes (`relay-bench b5-worker`), each with its share of the concurrency's topics and its own connect → upgrade → first message loop; they start together, and their counts, errors and latency histograms are merged. handshakes/s is all handshakes over the runner's window from the start signal to the last report; server CPU per handshake is the server's /proc CPU time over that window divided by all handshakes."));
    }
    Ok(table)
}

/// One measurement: the merged report of every generator, the window it took, and the
/// server's CPU seconds over that window.
struct Measured {
    report: WorkerReport,
    rate: f64,
    cpu_s: f64,
}

impl Measured {
    fn new(report: WorkerReport, elapsed_s: f64, cpu_s: f64) -> Measured {
        Measured {
            rate: report.latency.count() as f64 / elapsed_s,
            report,
            cpu_s,
        }
    }

    /// Server CPU milliseconds per completed handshake (NaN when the CPU is unknown).
    fn cpu_ms_per_handshake(&self) -> f64 {
        self.cpu_s * 1000.0 / self.report.latency.count().max(1) as f64
    }
}

/// What one load generator (a task set in this process, or a worker process) measured.
#[derive(Default)]
pub struct WorkerReport {
    /// One sample per completed handshake (its count is the handshake count).
    pub latency: Latency,
    /// Handshakes that failed or took over 5 s.
    pub errors: u64,
}

impl WorkerReport {
    /// The report as the single line a worker prints.
    pub fn to_line(&self) -> String {
        serde_json::json!({
            "handshakes": self.latency.count(),
            "errors": self.errors,
            "latency": self.latency.buckets(),
        })
        .to_string()
    }

    /// A report printed by [`WorkerReport::to_line`]; the handshake count must agree
    /// with the histogram.
    pub fn from_line(line: &str) -> Result<WorkerReport> {
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("worker report {line:?}"))?;
        let number = |key: &str| {
            v.get(key)
                .and_then(|n| n.as_u64())
                .with_context(|| format!("worker report: no {key:?} count"))
        };
        let buckets = v
            .get("latency")
            .and_then(|l| l.as_array())
            .context("worker report: no latency buckets")?
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([value, count]) => value.as_u64().zip(count.as_u64()),
                _ => None,
            })
            .collect::<Option<Vec<(u64, u64)>>>()
            .context("worker report: latency buckets are not [value, count] pairs")?;
        let report = WorkerReport {
            latency: Latency::from_buckets(&buckets),
            errors: number("errors")?,
        };
        let handshakes = number("handshakes")?;
        if report.latency.count() != handshakes {
            bail!(
                "worker report: {handshakes} handshakes but {} latency samples",
                report.latency.count()
            );
        }
        Ok(report)
    }
}

/// All reports as one: counts and errors added, histograms merged.
pub fn merge(reports: &[WorkerReport]) -> WorkerReport {
    let mut all = WorkerReport::default();
    for r in reports {
        all.latency.add(&r.latency);
        all.errors += r.errors;
    }
    all
}

/// `topics` dealt round robin into at most `processes` non-empty shares.
pub fn shares(topics: &[String], processes: usize) -> Vec<Vec<String>> {
    let n = processes.max(1).min(topics.len());
    let mut out = vec![Vec::new(); n];
    for (i, topic) in topics.iter().enumerate() {
        out[i % n].push(topic.clone());
    }
    out
}

/// The topics of one measurement, one per concurrent worker.
fn topics(concurrency: usize, run: usize) -> Vec<String> {
    (0..concurrency)
        .map(|w| super::topic("b5", &[concurrency, run, w]))
        .collect()
}

/// Put an echo client on every topic: it sends back whatever it receives.
async fn echo_clients(target: &Arc<Target>, topics: &[String]) -> Result<Vec<JoinHandle<()>>> {
    let mut bots = Vec::new();
    for topic in topics {
        let (mut tx, mut rx) = target.open(topic).await?;
        bots.push(tokio::spawn(async move {
            while let Ok(Some(m)) = rx.recv().await {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        }));
    }
    Ok(bots)
}

/// Full handshakes on `topic`, one after another, until `stop`.
async fn handshake_loop(target: Arc<Target>, topic: String, stop: Instant) -> WorkerReport {
    let mut report = WorkerReport::default();
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
            Ok(Ok(())) => report.latency.record(crate::wire::now_ns() - t0),
            _ => report.errors += 1,
        }
    }
    report
}

/// One handshake loop per topic, concurrently, for `seconds` from now; merged.
async fn handshake_loops(
    target: &Arc<Target>,
    topics: &[String],
    seconds: f64,
) -> Result<WorkerReport> {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let mut set = JoinSet::new();
    for topic in topics {
        set.spawn(handshake_loop(target.clone(), topic.clone(), stop));
    }
    let mut reports = Vec::new();
    while let Some(joined) = set.join_next().await {
        reports.push(joined?);
    }
    Ok(merge(&reports))
}

/// The whole load from this process.
async fn measure(
    target: &Arc<Target>,
    concurrency: usize,
    seconds: f64,
    run: usize,
) -> Result<Measured> {
    let topics = topics(concurrency, run);
    let bots = echo_clients(target, &topics).await?;
    let before = usage(target);
    let start = Instant::now();
    let report = handshake_loops(target, &topics, seconds).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_between(before, usage(target));
    for bot in bots {
        bot.abort();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Measured::new(report, elapsed, cpu))
}

/// A started worker process and its two pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(bin: &PathBuf, target: &Target, topics: &[String], seconds: f64) -> Result<Worker> {
        let mut child = Command::new(bin)
            .arg("b5-worker")
            .arg("--target")
            .arg(target.spec())
            .arg("--topics")
            .arg(topics.join(","))
            .arg("--seconds")
            .arg(seconds.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start B5 worker {}", bin.display()))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// The worker's next line; an error if it exits first.
    async fn line(&mut self) -> Result<String> {
        match self.stdout.next_line().await? {
            Some(line) => Ok(line),
            None => {
                let status = self.child.wait().await?;
                bail!("B5 worker exited ({status}) without reporting; see its stderr above")
            }
        }
    }
}

/// The load from `generators` worker processes (at most one per topic).
async fn measure_processes(
    target: &Arc<Target>,
    bin: &PathBuf,
    generators: usize,
    concurrency: usize,
    seconds: f64,
    run: usize,
) -> Result<Measured> {
    let mut workers = shares(&topics(concurrency, run), generators)
        .iter()
        .map(|share| Worker::spawn(bin, target, share, seconds))
        .collect::<Result<Vec<_>>>()?;
    let ready = async {
        for w in &mut workers {
            let line = w.line().await?;
            if line.trim() != READY {
                bail!("B5 worker said {line:?} instead of {READY:?}");
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(WORKER_READY_WITHIN, ready)
        .await
        .context("B5 workers did not get ready")??;
    let before = usage(target);
    let start = Instant::now();
    for w in &mut workers {
        w.stdin.write_all(format!("{GO}\n").as_bytes()).await?;
        w.stdin.flush().await?;
    }
    // Every loop ends by `seconds` plus one handshake's 5 s timeout.
    let within = Duration::from_secs_f64(seconds) + Duration::from_secs(30);
    let reports = async {
        let mut reports = Vec::with_capacity(workers.len());
        for w in &mut workers {
            reports.push(WorkerReport::from_line(&w.line().await?)?);
        }
        anyhow::Ok(reports)
    };
    let reports = tokio::time::timeout(within, reports)
        .await
        .context("B5 workers did not report in time")??;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_between(before, usage(target));
    for mut w in workers {
        drop(w.stdin);
        if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
            .await
            .is_err()
        {
            let _ = w.child.kill().await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Measured::new(merge(&reports), elapsed, cpu))
}

/// The `b5-worker` side: put echo clients on `topics` of the target in `spec`, print
/// "ready", wait for "go" on stdin, run one handshake loop per topic for `seconds`, print
/// the report as one line and return (exiting drops every connection).
pub async fn worker(spec: &str, topics: &[String], seconds: f64) -> Result<()> {
    let target = Arc::new(Target::from_spec(spec)?);
    let bots = echo_clients(&target, topics).await?;
    let mut out = tokio::io::stdout();
    out.write_all(format!("{READY}\n").as_bytes()).await?;
    out.flush().await?;
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    match input.next_line().await? {
        Some(line) if line.trim() == GO => {}
        other => bail!("B5 worker: expected {GO:?} on stdin, got {other:?}"),
    }
    let report = handshake_loops(&target, topics, seconds).await?;
    out.write_all(format!("{}\n", report.to_line()).as_bytes())
        .await?;
    out.flush().await?;
    for bot in bots {
        bot.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(samples: &[u64], errors: u64) -> WorkerReport {
        let mut r = WorkerReport {
            errors,
            ..WorkerReport::default()
        };
        for &s in samples {
            r.latency.record(s);
        }
        r
    }

    #[test]
    fn merged_reports_add_counts_and_histograms() {
        let a: Vec<u64> = (1..=900).map(|i| i * 1_000).collect();
        let b: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        let merged = merge(&[report(&a, 2), report(&b, 3), WorkerReport::default()]);
        assert_eq!(merged.latency.count(), 1000);
        assert_eq!(merged.errors, 5);
        // The same samples recorded in one histogram give the same quantiles.
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let one = report(&all, 0);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0] {
            assert_eq!(merged.latency.quantile(q), one.latency.quantile(q), "q={q}");
        }
        // p50 falls among the fast worker's samples, p99 among the slow one's.
        assert!(merged.latency.quantile(0.5) < 1_000_000);
        assert!(merged.latency.quantile(0.99) >= 90_000_000);
        assert_eq!(merge(&[]).latency.count(), 0);
    }

    #[test]
    fn reports_survive_the_pipe_between_processes() {
        let a = report(&[5_000, 5_000, 70_000, 3_000_000_000], 4);
        let line = a.to_line();
        assert!(!line.contains('\n'), "{line}");
        let back = WorkerReport::from_line(&line).unwrap();
        assert_eq!(back.errors, 4);
        assert_eq!(back.latency.count(), 4);
        assert_eq!(back.latency.buckets(), a.latency.buckets());
        // Merging what came through the pipe equals merging the originals.
        let b = report(&[1_000, 2_000], 0);
        let through = merge(&[back, WorkerReport::from_line(&b.to_line()).unwrap()]);
        let direct = merge(&[a, b]);
        assert_eq!(through.latency.buckets(), direct.latency.buckets());
        assert_eq!(through.errors, direct.errors);
        let empty = WorkerReport::from_line(&WorkerReport::default().to_line()).unwrap();
        assert_eq!(empty.latency.count(), 0);
    }

    #[test]
    fn bad_report_lines_are_refused() {
        assert!(WorkerReport::from_line("").is_err());
        assert!(WorkerReport::from_line("ready").is_err());
        assert!(WorkerReport::from_line(r#"{"handshakes":1,"errors":0,"latency":[]}"#).is_err());
        assert!(WorkerReport::from_line(r#"{"handshakes":1,"errors":0,"latency":[[5]]}"#).is_err());
        assert!(
            WorkerReport::from_line(r#"{"handshakes":2,"errors":0,"latency":[[5,2]]}"#).is_ok()
        );
    }

    #[test]
    fn topics_are_dealt_to_at_most_one_process_each() {
        let t: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        assert_eq!(
            shares(&t, 2),
            vec![vec!["t0", "t2", "t4"], vec!["t1", "t3"]]
        );
        let one = shares(&t[..1], 4);
        assert_eq!(one, vec![vec!["t0".to_owned()]]);
        assert_eq!(shares(&t, 0).len(), 1);
        assert_eq!(shares(&t, 9).len(), 5);
        assert_eq!(shares(&t, 3).iter().map(Vec::len).sum::<usize>(), t.len());
    }
}
