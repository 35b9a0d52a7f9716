//! `relay-bench`: run one benchmark scenario against the relay and its peers and print a
//! markdown table. See BENCHMARKS.md at the repository root for results and commands.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use relay_bench::peers::{Lab, ALL_PEERS};
use relay_bench::scenarios::{
    b10_cluster, b1_video, b2_latency, b3_throughput, b4_idle_memory, b5_handshakes, b8_faults,
    b8_slow_reader, b9_booking, soak,
};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Side-by-side benchmarks of the relay and its peers (scenarios B1–B5, B8 of PERFORMANCE.md; B9, the booking server)"
)]
#[command(
    after_help = "Run scripts/bench-peers.sh first to install the peers (websocat, nats-server, node ws).\n\
Example: relay-bench b1 --readers 100,500,1000 --runs 3"
)]
struct Cli {
    /// Peers to include, in table order.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "relay,node-ws,websocat,nats"
    )]
    peers: Vec<String>,
    /// Repetitions per measurement (tables show median and min–max).
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// The relay binary (default: `relay` next to this program, i.e. the same target dir).
    #[arg(long, global = true, env = "RELAY_BENCH_RELAY_BIN")]
    relay_bin: Option<PathBuf>,
    /// The repository's bench/ folder (holds the Node relay).
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench"))]
    bench_dir: PathBuf,
    /// Do not pin servers to core 0 and the load generator to core 1.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Start `relay serve` with its default connection caps and access rate limits instead
    /// of `--limits off`. Each connection's token carries its own booking id either way, so
    /// the per-booking limits see what a class of students with one booking each looks like.
    /// For B9, `relay book serve` keeps its default login rate limit instead of none.
    #[arg(long, global = true)]
    relay_limits: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// B1 video fan-out: one 2 Mbit/s stream to N readers.
    B1 {
        #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
        readers: Vec<usize>,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2.0)]
        mbps: f64,
        /// 188-byte TS packets per message.
        #[arg(long, default_value_t = 49)]
        ts_packets: usize,
    },
    /// B2 small-message latency, open loop.
    B2 {
        #[arg(long, value_delimiter = ',', default_value = "64,1024")]
        sizes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
        rates: Vec<u64>,
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        readers: Vec<usize>,
        #[arg(long, default_value_t = 1.5)]
        seconds: f64,
    },
    /// B3 single-stream throughput against direct loopback TCP.
    B3 {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1024,16384,65536,1048576"
        )]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// B4 memory per idle authorised connection.
    B4 {
        #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
        counts: Vec<usize>,
    },
    /// B5 handshakes per second.
    B5 {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Load-generator processes (this binary again, as `b5-worker`), each with its share
        /// of the connections; at most one per connection. 1 keeps the load in this process.
        /// They share the load generator's core (core 1) unless --no-pin.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
        generators: u16,
    },
    /// B8 one stalled reader among fast ones.
    B8 {
        #[arg(long, default_value_t = 10)]
        readers: usize,
        #[arg(long, default_value_t = 20.0)]
        mbps: f64,
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        #[arg(long, default_value = "2s")]
        slow_timeout: String,
    },
    /// B8 faults, relay only: kill and restart under live video; deny with many live connections.
    B8Faults {
        /// Which measurements to run: restart, deny.
        #[arg(long, value_delimiter = ',', default_value = "restart,deny")]
        parts: Vec<String>,
        /// Readers of the restarted stream.
        #[arg(long, default_value_t = 10)]
        readers: usize,
        /// Seconds the relay stays down between the kill and the restart.
        #[arg(long, default_value_t = 1.0)]
        outage: f64,
        /// Seconds of streaming before the kill (past the client's 10 s stable_after, the
        /// lost link counts as a stable one, as under a long-running stream).
        #[arg(long, default_value_t = 11.0)]
        warmup: f64,
        #[arg(long, default_value_t = 2.0)]
        mbps: f64,
        /// First wait of the client's reconnect backoff, seconds (the library's default is 1).
        #[arg(long, default_value_t = 1.0)]
        backoff_min: f64,
        /// Live connections of the denied booking(s).
        #[arg(long, default_value_t = 1000)]
        deny_conns: usize,
        /// Booking ids the denied connections are spread over, one table row each; all are denied.
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        bookings: Vec<usize>,
        /// Connections of another booking on the same topic, which must stay open.
        #[arg(long, default_value_t = 10)]
        undenied: usize,
    },
    /// B9 booking rush: users log in, join a group and book slots of `relay book serve`.
    B9 {
        /// Users in the rush; each books once.
        #[arg(long, default_value_t = 1000)]
        book_users: usize,
        /// Slots, one rig each.
        #[arg(long, default_value_t = 60)]
        book_slots: usize,
        /// Overlapping 45-minute intervals offered per slot (contention).
        #[arg(long, default_value_t = 8)]
        book_intervals: usize,
        /// The users start evenly over this many seconds.
        #[arg(long, default_value_t = 10.0)]
        book_seconds: f64,
        /// Databases, one pair of rows each: sqlite, postgres.
        #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
        book_databases: Vec<String>,
        /// PostgreSQL to use instead of a throw-away cluster (initdb in a temp directory).
        #[arg(long)]
        book_database_url: Option<String>,
        /// Old bookings stored before the second row of each database (0: no second row).
        #[arg(long, default_value_t = 100_000)]
        book_history: usize,
    },
    /// B10 relay cluster on NATS: B1's fan-out with readers on two nodes against one node,
    /// and the cross-node latency of small messages (needs nats-server).
    B10 {
        /// Readers of the fan-out, split over nodes A and B.
        #[arg(long, default_value_t = 1000)]
        readers: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 2.0)]
        mbps: f64,
        /// 188-byte TS packets per video message.
        #[arg(long, default_value_t = 49)]
        ts_packets: usize,
        /// Message rates of the cross-node latency part.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        rates: Vec<u64>,
        /// Message size of the cross-node latency part.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Soak (issue 19): a mixed load on real processes (relay, booking server, HTTP relay,
    /// shell host and client) for --duration, sampled every --sample-every; writes
    /// samples.csv, soak-rss.png, soak-fds.png, soak-connections.png and summary.md to --out
    /// and exits non-zero if an invariant failed.
    Soak(soak::Options),
    /// Print the machine description used in BENCHMARKS.md.
    Machine,
    /// Internal: one B5 load-generator process (started by `b5 --generators N`).
    #[command(hide = true)]
    B5Worker {
        /// The target, as the runner describes it (JSON).
        #[arg(long)]
        target: String,
        #[arg(long, value_delimiter = ',')]
        topics: Vec<String>,
        #[arg(long)]
        seconds: f64,
    },
    /// Internal: the TCP echo server used as the B2 floor.
    #[command(hide = true)]
    TcpEcho {
        #[arg(long)]
        port: u16,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let pin = !cli.no_pin
        && std::thread::available_parallelism()
            .map(|n| n.get() >= 2)
            .unwrap_or(false);
    // A B5 worker keeps the affinity its runner gave it (core 1 when pinned, none with --no-pin).
    if pin
        && !matches!(
            cli.scenario,
            Scenario::TcpEcho { .. } | Scenario::B5Worker { .. }
        )
    {
        // Threads inherit the main thread's affinity, so pin before the runtime starts.
        let status = std::process::Command::new("taskset")
            .args(["-pc", "1", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("taskset (util-linux) is needed to pin; pass --no-pin to skip")?;
        anyhow::ensure!(status.success(), "taskset failed to pin the load generator");
    }
    // reqwest may be built without a default TLS provider (features unify with the
    // relay's), and then panics when a client is built; the bench only needs one present.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli, pin))
}

async fn run(cli: Cli, pin: bool) -> Result<()> {
    if let Scenario::B5Worker {
        target,
        topics,
        seconds,
    } = &cli.scenario
    {
        // Its stdout is the pipe to the runner: nothing else may be printed there.
        return b5_handshakes::worker(target, topics, *seconds).await;
    }
    let exe = std::env::current_exe()?;
    let relay_bin = cli
        .relay_bin
        .clone()
        .unwrap_or_else(|| exe.with_file_name("relay"));
    for peer in &cli.peers {
        anyhow::ensure!(
            ALL_PEERS.contains(&peer.as_str()),
            "unknown peer {peer:?} (known: {})",
            ALL_PEERS.join(", ")
        );
    }
    let lab = Lab {
        relay_bin,
        bench_dir: cli.bench_dir.clone(),
        server_core: pin.then_some(0),
        peers: cli.peers.clone(),
        external_relay: None,
        echo_bin: Some(exe.clone()),
        relay_limits: cli.relay_limits,
    };
    let runs = cli.runs.max(1);
    if !cli.relay_limits && !matches!(cli.scenario, Scenario::TcpEcho { .. } | Scenario::Machine) {
        eprintln!(
            "relay-bench: every relay serve started here gets {} (RELAY_LIMITS=off): no \
             connection caps or access rate limits, so B5's handshakes are not throttled",
            relay_bench::peers::RELAY_LIMITS_OFF.join(" ")
        );
    }
    let machine = relay_bench::machine::describe();
    let table = match cli.scenario {
        Scenario::TcpEcho { port } => return relay_bench::floor::serve_echo(port).await,
        Scenario::B5Worker { .. } => return Ok(()),
        Scenario::Machine => {
            println!("{machine}");
            return Ok(());
        }
        Scenario::Soak(opts) => {
            soak::run(&lab, &opts).await?;
            println!(
                "{machine} Load average {} at end.",
                relay_bench::machine::load_average()
            );
            return Ok(());
        }
        Scenario::B1 {
            readers,
            seconds,
            mbps,
            ts_packets,
        } => {
            b1_video::run(
                &lab,
                &b1_video::Options {
                    readers,
                    seconds,
                    mbps,
                    ts_packets,
                    runs,
                },
            )
            .await?
        }
        Scenario::B2 {
            sizes,
            rates,
            readers,
            seconds,
        } => {
            b2_latency::run(
                &lab,
                &b2_latency::Options {
                    sizes,
                    rates,
                    readers,
                    seconds,
                    runs,
                },
            )
            .await?
        }
        Scenario::B3 { sizes, seconds } => {
            b3_throughput::run(
                &lab,
                &b3_throughput::Options {
                    sizes,
                    seconds,
                    runs,
                },
            )
            .await?
        }
        Scenario::B4 { counts } => {
            b4_idle_memory::run(&lab, &b4_idle_memory::Options { counts }).await?
        }
        Scenario::B5 {
            concurrency,
            seconds,
            generators,
        } => {
            b5_handshakes::run(
                &lab,
                &b5_handshakes::Options {
                    concurrency,
                    seconds,
                    runs,
                    generators: usize::from(generators),
                    worker_bin: Some(exe.clone()),
                },
            )
            .await?
        }
        Scenario::B8 {
            readers,
            mbps,
            seconds,
            slow_timeout,
        } => {
            b8_slow_reader::run(
                &lab,
                &b8_slow_reader::Options {
                    readers,
                    mbps,
                    seconds,
                    slow_timeout,
                    runs,
                },
            )
            .await?
        }
        Scenario::B9 {
            book_users,
            book_slots,
            book_intervals,
            book_seconds,
            book_databases,
            book_database_url,
            book_history,
        } => {
            b9_booking::run(
                &lab,
                &b9_booking::Options {
                    users: book_users,
                    slots: book_slots,
                    intervals: book_intervals,
                    seconds: book_seconds,
                    databases: book_databases,
                    database_url: book_database_url,
                    history: book_history,
                    runs,
                },
            )
            .await?
        }
        Scenario::B10 {
            readers,
            seconds,
            mbps,
            ts_packets,
            rates,
            size,
        } => {
            let opts = b10_cluster::Options {
                readers,
                seconds,
                mbps,
                ts_packets,
                rates,
                size,
                runs,
            };
            print_all_but_last(b10_cluster::run(&lab, &opts).await?).context("b10: no table")?
        }
        Scenario::B8Faults {
            parts,
            readers,
            outage,
            warmup,
            mbps,
            backoff_min,
            deny_conns,
            bookings,
            undenied,
        } => {
            let opts = b8_faults::Options {
                parts,
                readers,
                outage,
                warmup,
                mbps,
                backoff_min,
                deny_conns,
                bookings,
                undenied,
                runs,
            };
            print_all_but_last(b8_faults::run(&lab, &opts).await?)
                .context("b8-faults: no part selected")?
        }
    };
    let placement = if pin {
        "servers pinned to core 0, load generator to core 1"
    } else {
        "unpinned"
    };
    println!(
        "{}\n{machine} {placement}; load average {} at end.",
        table.to_markdown(),
        relay_bench::machine::load_average()
    );
    Ok(())
}

/// A scenario with several tables: print all but the last here and return the last, which
/// gets the machine footer; `None` when there is no table.
fn print_all_but_last(
    mut tables: Vec<relay_bench::report::Table>,
) -> Option<relay_bench::report::Table> {
    let last = tables.pop()?;
    for table in &tables {
        println!("{}", table.to_markdown());
    }
    Some(last)
}
