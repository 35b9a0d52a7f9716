//! Silent network cuts (issue 19 §1): each link of a deployment runs over a veth pair into
//! a network namespace ([`relay_testkit::netns::Netns`]), is cut without a FIN (nftables
//! drops every packet arriving over the veth, on both sides), and healed again. For each
//! link the test measures how long each side takes to notice (with short ping and idle
//! timeouts, so the run is quick), checks that nothing leaks (the relay's `/status`
//! connections and its open file descriptors return to their baseline), that the link
//! comes back by itself after the heal within its backoff, and that only what was sent
//! while the link was down is lost — and, where the system counts it, that it is counted.
//! Each test prints its measurements (`netns-fault:` lines; the numbers are in
//! docs/RELIABILITY.md): run with `--nocapture` to see them.
//!
//! Links: relay ↔ `relay host`, relay ↔ viewer, relay ↔ shell host, relay ↔ shell client,
//! HTTP-relay server ↔ `relay http client`, booking server ↔ PostgreSQL, relay node ↔ NATS.
//!
//! Needs root (CI runs as root), `ip`, `nft`, `curl`, `websocat`, Python's websockets,
//! PostgreSQL and nats-server (`scripts/test.sh` installs them); fails loudly without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{require, serve_on_free_ports, wait_until_blocking, Killed, Served, RELAY};

use relay_testkit::netns::Netns;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "netns-faults-secret";
/// The peers that run inside a namespace (echo server, TCP client, websocket viewer/writer).
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/netns_peer.py");
/// Debian's Python, which python3-websockets installs for (a `python3` earlier on PATH,
/// such as pyenv's, may not have it).
const PYTHON: &str = "/usr/bin/python3";

/// Short timings for every side, so a cut is noticed in about a second.
const RELAY_PING: &str = "300ms";
const RELAY_PONG_TIMEOUT: &str = "1s";
const PEER_PING: &str = "300ms";
const PEER_IDLE: &str = "1s";
const PEER_PING_MS: &str = "300";
const PEER_IDLE_MS: &str = "1000";
/// The host logs its drop totals at most this often (milliseconds).
const DROP_LOG_MS: u64 = 200;

/// Generous bounds for a side to notice a cut or a link to come back: the configured
/// timeouts are about 1 s and the longest reconnect backoff is 10 s; these only stop a
/// broken test from hanging.
const NOTICE_WITHIN: Duration = Duration::from_secs(15);
const BACKOFF_WITHIN: Duration = Duration::from_secs(20);
/// How long the link stays cut after both sides noticed, so messages are sent while down.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// A child whose stdout lines are kept with the time each arrived.
struct Watched {
    /// Killed when the test ends.
    _process: Killed,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

fn watch(command: &mut Command) -> Watched {
    watch_output(command.stdout(Stdio::piped()).stderr(Stdio::null()), false)
}

/// [`watch`] for a program that logs on stderr (its stdout is dropped).
fn watch_stderr(command: &mut Command) -> Watched {
    watch_output(command.stdout(Stdio::null()).stderr(Stdio::piped()), true)
}

/// Starts `command` and keeps the lines of its piped stdout (or stderr).
fn watch_output(command: &mut Command, stderr: bool) -> Watched {
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let output: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    Watched {
        _process: Killed(child),
        lines,
    }
}

impl Watched {
    /// The first line after `after` that satisfies `matches`, with its arrival time.
    fn first(&self, after: Instant, matches: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(at, line)| *at >= after && matches(line))
            .cloned()
    }

    /// Waits for [`Watched::first`]; its arrival time.
    fn wait_for(
        &self,
        what: &str,
        after: Instant,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Instant {
        wait_until_blocking(what, within, || self.first(after, &matches).is_some());
        self.first(after, &matches).unwrap().0
    }

    /// Every line starting with `prefix`, the rest parsed as a number.
    fn numbers(&self, prefix: &str) -> Vec<(Instant, u64)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, line)| Some((*at, line.strip_prefix(prefix)?.trim().parse().ok()?)))
            .collect()
    }

    /// The highest number seen after `prefix` (the last message delivered so far).
    fn highest(&self, prefix: &str) -> u64 {
        self.numbers(prefix)
            .iter()
            .map(|&(_, k)| k)
            .max()
            .expect("a numbered line")
    }
}

/// `relay serve` in the root namespace, bound to the root side of `ns`'s link (so the
/// namespace reaches it over the veth, and the test over loopback).
struct Relay {
    served: Served,
    access: String,
    stats: String,
}

fn start_relay(ns: &Netns) -> Relay {
    let ip = ns.host_ip().to_string();
    let served = serve_on_free_ports(|command, pa, pr| {
        command
            .args(["--bind", &ip, "--log-file", "stderr"])
            .env("RELAY_AUDIENCE", format!("http://{ip}:{pa}"))
            .env("RELAY_URL", format!("ws://{ip}:{pr}"))
            .env("RELAY_SECRET", SECRET)
            .env("RELAY_PORT_ACCESS", pa.to_string())
            .env("RELAY_PORT_RELAY", pr.to_string())
            .env("RELAY_ALLOW_NO_BOOKING_ID", "true")
            .env("RELAY_PING_INTERVAL", RELAY_PING)
            .env("RELAY_PONG_TIMEOUT", RELAY_PONG_TIMEOUT)
            .env("RELAY_WRITE_TIMEOUT", "1s")
            .stderr(Stdio::null());
    });
    let access = format!("http://{}", served.access);
    let stats = token(&access, &["--scope-other", "relay:stats"], "stats");
    Relay {
        served,
        access,
        stats,
    }
}

/// A token from `relay token` for `topic`, with `args` choosing the scopes.
fn token(access: &str, args: &[&str], topic: &str) -> String {
    support::relay_token(SECRET, access, topic, args, &[])
}

fn read_write_token(access: &str, topic: &str) -> String {
    token(access, &[], topic)
}

impl Relay {
    /// `GET /status`: one entry per connection.
    fn status(&self) -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-H"])
            .arg(format!("Authorization: {}", self.stats))
            .arg(format!("{}/status", self.access))
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Connections from the namespace at `ip`.
    fn connections_from(&self, ip: &str) -> usize {
        self.status()
            .iter()
            .filter(|c| c["remote_addr"].as_str().is_some_and(|a| a.starts_with(ip)))
            .count()
    }

    /// Open file descriptors of the relay process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.served.process.0.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits until the relay's connections and descriptors are back to `baseline`.
    fn wait_for_baseline(&self, baseline: (usize, usize)) {
        wait_until_blocking(
            &format!("relay connections and fds back to {baseline:?}"),
            NOTICE_WITHIN,
            || (self.status().len(), self.fds()) == baseline,
        );
    }

    fn baseline(&self) -> (usize, usize) {
        (self.status().len(), self.fds())
    }
}

fn python(ns: Option<&Netns>, args: &[&str]) -> Command {
    let mut command = match ns {
        Some(ns) => ns.command(PYTHON),
        None => Command::new(PYTHON),
    };
    command.arg("-u").arg(PEER).args(args);
    command
}

fn require_tools() {
    for program in ["ip", "nft", "curl", PYTHON, "websocat"] {
        require(program, "run scripts/test.sh, which installs it");
    }
    let ok = Command::new(PYTHON)
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python websockets is required: run scripts/test.sh (python3-websockets)"
    );
}

/// What one cut showed.
struct Measured {
    link: &'static str,
    noticed: Vec<(&'static str, Duration)>,
    recovered: Duration,
    lost: String,
}

impl Measured {
    fn print(&self) {
        let noticed: Vec<String> = self
            .noticed
            .iter()
            .map(|(side, d)| format!("{side} {:.2}s", d.as_secs_f64()))
            .collect();
        let noticed = if noticed.is_empty() {
            "never".to_owned()
        } else {
            noticed.join(", ")
        };
        println!(
            "netns-fault: {} | noticed: {} | back after heal: {:.2}s | lost: {}",
            self.link,
            noticed,
            self.recovered.as_secs_f64(),
            self.lost
        );
    }
}

/// The sequence numbers `viewer` missed after `before` (the last one it got before the
/// cut), asserting that each was sent (per `sent`) before `back`, when the link was back.
fn lost_while_down(
    viewer: &Watched,
    sent: &[(Instant, u64)],
    before: u64,
    back: Instant,
) -> Vec<u64> {
    let received: BTreeSet<u64> = viewer
        .numbers("msg seq ")
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let last = received.iter().last().copied().unwrap_or(before);
    let lost: Vec<u64> = (before + 1..=last)
        .filter(|k| !received.contains(k))
        .collect();
    for k in &lost {
        let at = sent.iter().find(|(_, s)| s == k).unwrap().0;
        assert!(
            at <= back,
            "message {k} was lost but sent after the link was back"
        );
    }
    lost
}

/// The host's local API, asked from inside the namespace.
fn host_api(ns: &Netns, port: u16, path: &str) -> Value {
    let out = ns
        .command("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn relay_to_relay_host() {
    require_tools();
    let ns = Netns::create();
    let relay = start_relay(&ns);
    let topic = "nsf-host";
    let host = watch(
        ns.command(RELAY)
            .arg("host")
            .env("VW_PORT", "0")
            .env("VW_LINK_PING_MS", PEER_PING_MS)
            .env("VW_LINK_IDLE_MS", PEER_IDLE_MS)
            .env("VW_DROP_LOG_MS", DROP_LOG_MS.to_string())
            .env("VW_LOG_LEVEL", "warn")
            .env("VW_LOG_FILE", "stdout"),
    );
    let prefix = "relay host listening on http://127.0.0.1:";
    let long_ago = Instant::now() - Duration::from_secs(60);
    host.wait_for("relay host to listen", long_ago, NOTICE_WITHIN, |l| {
        l.starts_with(prefix)
    });
    let port: u16 = host.first(long_ago, |l| l.starts_with(prefix)).unwrap().1[prefix.len()..]
        .parse()
        .unwrap();
    let rule = serde_json::json!({
        "id": "up", "stream": "data",
        "destination": format!("{}/session/{topic}", relay.access),
        "token": read_write_token(&relay.access, topic),
    });
    let added = ns
        .command("curl")
        .args(["-s", "-X", "POST", "-d"])
        .arg(rule.to_string())
        .arg(format!("http://127.0.0.1:{port}/api/destinations"))
        .output()
        .unwrap();
    assert!(added.status.success());
    let connected = || host_api(&ns, port, "/api/status")["up"]["connected"] == true;
    wait_until_blocking("the host's link to the relay", NOTICE_WITHIN, connected);
    // The viewer, in the root namespace (never cut), reads what the host sends.
    let viewer = watch(&mut python(
        None,
        &[
            "viewer",
            &format!("{}/session/{topic}", relay.access),
            &read_write_token(&relay.access, topic),
            "1",
            "10",
        ],
    ));
    viewer.wait_for(
        "the viewer to open",
        Instant::now() - Duration::from_secs(60),
        NOTICE_WITHIN,
        |l| l == "open",
    );
    // The experiment's program, inside the namespace: one numbered message every 20 ms.
    let mut publisher = ns
        .command("websocat")
        .args(["--text", &format!("ws://127.0.0.1:{port}/ws/data")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Killed)
        .unwrap();
    let mut input = publisher.0.stdin.take().unwrap();
    let sent: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (sent, stop) = (sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if writeln!(input, "seq {k}").is_err() {
                    break;
                }
                sent.lock().unwrap().push((Instant::now(), k));
                k += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    viewer.wait_for(
        "the first messages",
        Instant::now() - Duration::from_secs(60),
        NOTICE_WITHIN,
        |l| l.starts_with("msg seq"),
    );
    let baseline = relay.baseline();
    let ns_ip = ns.ns_ip().to_string();
    wait_until_blocking("ten messages through", NOTICE_WITHIN, || {
        viewer.numbers("msg seq ").len() >= 10
    });
    // Start-up is not under test: count from the last message delivered before the cut.
    let before = viewer.highest("msg seq ");

    let cut_at = Instant::now();
    ns.cut();
    wait_until_blocking("the relay to drop the host", NOTICE_WITHIN, || {
        relay.connections_from(&ns_ip) == 0
    });
    let relay_noticed = cut_at.elapsed();
    wait_until_blocking("the host to see its link down", NOTICE_WITHIN, || {
        !connected()
    });
    let host_noticed = cut_at.elapsed();
    std::thread::sleep(DOWN_FOR); // messages keep coming while the link is down
    let heal_at = Instant::now();
    ns.heal();
    wait_until_blocking("the host to reconnect", BACKOFF_WITHIN, || {
        connected() && relay.connections_from(&ns_ip) == 1
    });
    let recovered = heal_at.elapsed();
    let back_at = Instant::now();
    // Everything sent from now on arrives again.
    let after = viewer.wait_for("messages after the heal", back_at, NOTICE_WITHIN, |l| {
        l.starts_with("msg seq")
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    let sent = sent.lock().unwrap().clone();
    let last = sent.last().unwrap().1;
    wait_until_blocking("the last message", NOTICE_WITHIN, || {
        viewer.numbers("msg seq ").iter().any(|&(_, k)| k == last)
    });
    let lost = lost_while_down(&viewer, &sent, before, after);
    let drops = host_api(&ns, port, "/api/drops");
    let counted = drops["link_down"].as_u64().unwrap()
        + drops["link_busy"].as_u64().unwrap()
        + drops["queue_full"].as_u64().unwrap();
    // Counted drops were never delivered; the rest went into the dead socket before the
    // host noticed.
    assert!(
        counted <= lost.len() as u64,
        "counted {counted} > lost {}",
        lost.len()
    );
    // The drops are in the host's log too: totals, at most once per period.
    let logged = |l: &str| l.contains("messages dropped since start");
    let first_log = host.wait_for("the host to log its drops", cut_at, NOTICE_WITHIN, logged);
    let log_lines = host
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| logged(l))
        .count() as u128;
    let periods = first_log.elapsed().as_millis() / u128::from(DROP_LOG_MS) + 1;
    assert!(
        log_lines <= periods,
        "{log_lines} drop log lines in {periods} periods"
    );
    relay.wait_for_baseline(baseline);
    Measured {
        link: "relay <-> relay host",
        noticed: vec![("relay", relay_noticed), ("host", host_noticed)],
        recovered,
        lost: format!(
            "{} of {} messages sent from the cut on, {counted} counted by the host (/api/drops {drops})",
            lost.len(),
            last - before
        ),
    }
    .print();
}

#[test]
fn relay_to_viewer() {
    require_tools();
    let ns = Netns::create();
    let relay = start_relay(&ns);
    let topic = "nsf-viewer";
    let session = format!("{}/session/{topic}", relay.access);
    let writer = watch(&mut python(
        None,
        &["writer", &session, &read_write_token(&relay.access, topic)],
    ));
    let viewer = watch(&mut python(
        Some(&ns),
        &[
            "viewer",
            &session,
            &read_write_token(&relay.access, topic),
            "0.3",
            "1",
        ],
    ));
    let long_ago = Instant::now() - Duration::from_secs(60);
    viewer.wait_for(
        "the viewer's first messages",
        long_ago,
        NOTICE_WITHIN,
        |l| l.starts_with("msg seq"),
    );
    let baseline = relay.baseline();
    // Count from the last message delivered before the cut.
    let before = viewer.highest("msg seq ");
    let ns_ip = ns.ns_ip().to_string();

    let cut_at = Instant::now();
    ns.cut();
    wait_until_blocking("the relay to drop the viewer", NOTICE_WITHIN, || {
        relay.connections_from(&ns_ip) == 0
    });
    let relay_noticed = cut_at.elapsed();
    let viewer_noticed = viewer.wait_for(
        "the viewer to see its link lost",
        cut_at,
        NOTICE_WITHIN,
        |l| l.starts_with("lost"),
    ) - cut_at;
    std::thread::sleep(DOWN_FOR);
    let heal_at = Instant::now();
    ns.heal();
    let reopened = viewer.wait_for("the viewer to reconnect", heal_at, BACKOFF_WITHIN, |l| {
        l == "open"
    });
    let recovered = reopened - heal_at;
    let first_after = viewer.wait_for("messages after the heal", reopened, NOTICE_WITHIN, |l| {
        l.starts_with("msg seq")
    });
    let sent = writer.numbers("sent ");
    let lost = lost_while_down(&viewer, &sent, before, first_after);
    relay.wait_for_baseline(baseline);
    Measured {
        link: "relay <-> viewer",
        noticed: vec![("relay", relay_noticed), ("viewer", viewer_noticed)],
        recovered,
        lost: format!(
            "{} messages, all sent between the cut and the viewer's reconnect (a viewer gets live data only; the gap shows in its sequence, the relay counts no drop for a reader that is gone)",
            lost.len()
        ),
    }
    .print();
}

/// `relay shell host` and `relay shell client` with short timings; `ns_side` says which
/// of the two runs inside the namespace. Returns them and the client's listening port.
fn shell_pair(
    relay: &Relay,
    ns: &Netns,
    service_port: u16,
    host_in_ns: bool,
) -> (Watched, Watched, u16) {
    let session = format!("{}/shell/expt", relay.access);
    let host_token = token(&relay.access, &["--role", "host"], "expt");
    let client_token = token(&relay.access, &["--role", "client"], "expt");
    let in_ns = |inside: bool| {
        if inside {
            ns.command(RELAY)
        } else {
            Command::new(RELAY)
        }
    };
    let host = watch(
        in_ns(host_in_ns)
            .args(["shell", "host"])
            .env("SHELLHOST_RELAYSESSION", &session)
            .env("SHELLHOST_TOKEN", host_token)
            .env("SHELLHOST_LOCALHOST", "127.0.0.1")
            .env("SHELLHOST_LOCALPORT", service_port.to_string())
            .env("SHELLHOST_PING_INTERVAL", PEER_PING)
            .env("SHELLHOST_IDLE_TIMEOUT", PEER_IDLE),
    );
    wait_until_blocking(
        "the shell host's management connection",
        NOTICE_WITHIN,
        || relay.status().iter().any(|c| c["topic"] == "shell/expt"),
    );
    let client = watch(
        in_ns(!host_in_ns)
            .args(["shell", "client"])
            .env("SHELLCLIENT_RELAYSESSION", &session)
            .env("SHELLCLIENT_TOKEN", client_token)
            .env("SHELLCLIENT_LOCALPORT", "0")
            .env("SHELLCLIENT_PING_INTERVAL", PEER_PING)
            .env("SHELLCLIENT_IDLE_TIMEOUT", PEER_IDLE),
    );
    let prefix = "relay shell client listening on ";
    client.wait_for(
        "the shell client to listen",
        Instant::now() - Duration::from_secs(60),
        NOTICE_WITHIN,
        |l| l.starts_with(prefix),
    );
    let line = client
        .first(Instant::now() - Duration::from_secs(60), |l| {
            l.starts_with(prefix)
        })
        .unwrap()
        .1;
    let port = line[prefix.len()..]
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .port();
    (host, client, port)
}

/// The echo service (the stand-in for sshd) and the port it printed.
fn echo_service(ns: Option<&Netns>) -> (Watched, u16) {
    let echo = watch(&mut python(ns, &["echo"]));
    echo.wait_for(
        "the echo service",
        Instant::now() - Duration::from_secs(60),
        NOTICE_WITHIN,
        |l| l.starts_with("listening"),
    );
    let port = echo.numbers("listening ")[0].1 as u16;
    (echo, port)
}

/// One shell cut: `host_in_ns` puts the shell host (and its service) in the namespace,
/// otherwise the shell client (and the admin's TCP client).
fn shell_cut(host_in_ns: bool) -> Measured {
    require_tools();
    let ns = Netns::create();
    let relay = start_relay(&ns);
    let (echo, service_port) = echo_service(host_in_ns.then_some(&ns));
    let (_host, _client, client_port) = shell_pair(&relay, &ns, service_port, host_in_ns);
    let baseline = relay.baseline();
    let admin_ns = (!host_in_ns).then_some(&ns);
    let port = client_port.to_string();
    let admin = watch(&mut python(admin_ns, &["tcp-client", &port]));
    wait_until_blocking("bytes through the tunnel", NOTICE_WITHIN, || {
        admin.numbers("echo ").len() >= 3
    });
    let ns_ip = ns.ns_ip().to_string();
    let cut_at = Instant::now();
    ns.cut();
    wait_until_blocking(
        "the relay to drop the namespace's connections",
        NOTICE_WITHIN,
        || relay.connections_from(&ns_ip) == 0,
    );
    let relay_noticed = cut_at.elapsed();
    // The admin's TCP connection ends (no half-open ssh), and so does the service's.
    let admin_end = admin.wait_for(
        "the admin's connection to end",
        cut_at,
        NOTICE_WITHIN,
        |l| l == "eof" || l.starts_with("error"),
    ) - cut_at;
    let service_end = echo.wait_for(
        "the service's connection to end",
        cut_at,
        NOTICE_WITHIN,
        |l| l == "closed 0",
    ) - cut_at;
    let sent_lines = admin.numbers("echo ").last().map_or(0, |&(_, k)| k + 1);
    std::thread::sleep(DOWN_FOR);
    let heal_at = Instant::now();
    ns.heal();
    if host_in_ns {
        wait_until_blocking("the shell host to reconnect", BACKOFF_WITHIN, || {
            relay.connections_from(&ns_ip) == 1
        });
    }
    // A new tunnel works again (the shell client dials per connection).
    let again = watch(&mut python(admin_ns, &["tcp-client", &port]));
    again.wait_for(
        "a new tunnel to carry bytes",
        heal_at,
        BACKOFF_WITHIN,
        |l| l.starts_with("echo "),
    );
    let recovered = heal_at.elapsed();
    drop(again);
    echo.wait_for(
        "the new tunnel's service connection to close",
        heal_at,
        NOTICE_WITHIN,
        |l| l == "closed 0",
    );
    relay.wait_for_baseline(baseline);
    let (client_side, host_side) = if host_in_ns {
        ("admin (outside)", "service via shell host (inside)")
    } else {
        ("admin via shell client (inside)", "service (outside)")
    };
    Measured {
        link: if host_in_ns { "relay <-> shell host" } else { "relay <-> shell client" },
        noticed: vec![("relay", relay_noticed), (client_side, admin_end), (host_side, service_end)],
        recovered,
        lost: format!(
            "the open tunnel (a TCP stream: both ends closed, {sent_lines} lines echoed before the cut); new tunnels work"
        ),
    }
}

#[test]
fn relay_to_shell_host() {
    shell_cut(true).print();
}

#[test]
fn relay_to_shell_client() {
    shell_cut(false).print();
}

/// How a request made during a cut fared: the link is cut, `request` is started, the
/// link stays cut for [`HELD_CUT`], then healed, and the request's output is awaited.
struct Held {
    /// Whether the request was still waiting when the link was healed.
    waited: bool,
    /// Its output (curl's `%{http_code}`).
    output: String,
    /// From its start to its answer.
    held_for: Duration,
    /// From the heal to its answer.
    after_heal: Duration,
    /// How long the link was cut.
    cut_for: Duration,
}

/// How long a link stays cut around a held request.
const HELD_CUT: Duration = Duration::from_secs(2);

fn hold_over_cut(ns: &Netns, request: impl FnOnce() -> std::process::Child) -> Held {
    let cut_at = Instant::now();
    ns.cut();
    let started = Instant::now();
    let mut child = request();
    std::thread::sleep(HELD_CUT);
    let waited = child.try_wait().unwrap().is_none();
    let heal_at = Instant::now();
    ns.heal();
    let output = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    Held {
        waited,
        output,
        held_for: started.elapsed(),
        after_heal: heal_at.elapsed(),
        cut_for: heal_at - cut_at,
    }
}

/// curl with `--max-time 60`, printing only the HTTP status, as a child to wait on.
fn curl_status(command: &mut Command, args: &[&str]) -> std::process::Child {
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "60",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn output_of(child: std::process::Child) -> String {
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// `HTTP relay server <-> relay http client`: the client and its backend run in the
/// namespace; the server, and the user calling it, in the root namespace.
#[test]
fn http_relay_server_to_client() {
    require_tools();
    let ns = Netns::create();
    let ip = ns.host_ip().to_string();
    let site = tempfile_dir("netns-http");
    std::fs::write(site.join("hello"), "hello").unwrap();
    let backend = watch(
        ns.command(PYTHON)
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&site),
    );
    let long_ago = Instant::now() - Duration::from_secs(60);
    backend.wait_for("the backend", long_ago, NOTICE_WITHIN, |l| {
        l.starts_with("Serving HTTP")
    });
    let backend_port = backend
        .first(long_ago, |l| l.starts_with("Serving HTTP"))
        .unwrap()
        .1
        .split(" port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let server = watch_stderr(
        Command::new(RELAY)
            .args(["http", "serve", "--port=0", "--insecure"])
            .arg(format!("--bind={ip}")),
    );
    server.wait_for("the HTTP relay server", long_ago, NOTICE_WITHIN, |l| {
        l.contains("Relay server listening")
    });
    let line = server
        .first(long_ago, |l| l.contains("Relay server listening"))
        .unwrap()
        .1;
    let port: String = line
        .split("\"Port\":")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let _client = watch(
        ns.command(RELAY)
            .args([
                "http",
                "client",
                "--backend_scheme=http",
                "--relay_scheme=http",
                "--server_name=nsf",
                "--disable_auth_for_remote",
            ])
            .arg(format!("--backend_address=127.0.0.1:{backend_port}"))
            .arg(format!("--relay_address={ip}:{port}")),
    );
    let url = format!("http://{ip}:{port}/client/nsf/hello");
    wait_until_blocking("the relay http client to serve", NOTICE_WITHIN, || {
        output_of(curl_status(&mut Command::new("curl"), &[&url])) == "200"
    });
    let server_pid = server._process.0.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{server_pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let baseline = fds();
    let held = hold_over_cut(&ns, || curl_status(&mut Command::new("curl"), &[&url]));
    assert!(
        held.waited,
        "the request during the cut ended before the heal"
    );
    assert_eq!(
        held.output, "200",
        "the request held over the cut is answered after the heal"
    );
    assert_eq!(
        output_of(curl_status(&mut Command::new("curl"), &[&url])),
        "200"
    );
    // At most the baseline: it was read just after a curl got its answer, and under load
    // the server may not have closed that connection yet, so it can count one socket more
    // than the server holds once settled. A leak still shows as more.
    wait_until_blocking(
        &format!("the server's fds back to at most {baseline}"),
        NOTICE_WITHIN,
        || fds() <= baseline,
    );
    Measured {
        link: "HTTP relay server <-> relay http client",
        noticed: vec![],
        recovered: held.after_heal,
        lost: format!(
            "nothing: neither side noticed (relay calls have a 60 s deadline); a user request made during the cut was held {:.2}s (cut {:.2}s, then TCP retransmission) and answered 200",
            held.held_for.as_secs_f64(),
            held.cut_for.as_secs_f64()
        ),
    }
    .print();
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `booking server <-> PostgreSQL`: the booking server runs in the namespace, PostgreSQL
/// in the root namespace, listening on the root side of the link.
#[test]
fn booking_server_to_postgres() {
    require_tools();
    let ns = Netns::create();
    let pg = relay_testkit::postgres::PgCluster::start_also_on(ns.host_ip().into());
    let url = format!("postgres://postgres@{}:{}/test", ns.host_ip(), pg.port());
    let (secret, audience) = (
        "netns-book-admin-secret-0123456789abcdef",
        "http://book.test",
    );
    let book = watch(
        ns.command(RELAY)
            .args(["book", "serve"])
            .env("BOOK_AUDIENCE", audience)
            .env("BOOK_ADMIN_SECRET", secret)
            .env(
                "BOOK_RELAY_SECRET",
                "netns-book-relay-secret-0123456789abcdef",
            )
            .env("BOOK_BIND", "127.0.0.1")
            .env("BOOK_PORT", "0")
            .env("BOOK_DATABASE_URL", &url)
            .env("BOOK_LOG_FILE", "stderr"),
    );
    let prefix = "relay book: API listening on ";
    let long_ago = Instant::now() - Duration::from_secs(60);
    book.wait_for(
        "relay book serve to listen",
        long_ago,
        Duration::from_secs(60),
        |l| l.starts_with(prefix),
    );
    let address =
        book.first(long_ago, |l| l.starts_with(prefix)).unwrap().1[prefix.len()..].to_owned();
    let admin = relay_testkit::book::admin_token(secret, audience, Duration::from_secs(3600));
    // An admin request that reads the database, from inside the namespace.
    let auth = format!("Authorization: {admin}");
    let url = format!("http://{address}/api/v1/admin/status");
    let request = || curl_status(&mut ns.command("curl"), &["-H", &auth, &url]);
    assert_eq!(output_of(request()), "200");
    let book_pid = book._process.0.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{book_pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let ns_ip = ns.ns_ip().to_string();
    let pg_sessions = || {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port().to_string(),
                "-U",
                "postgres",
                "-d",
                "test",
                "-tAc",
            ])
            .arg(format!(
                "select count(*) from pg_stat_activity where client_addr = '{ns_ip}'"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    };
    let baseline = (fds(), pg_sessions());

    let held = hold_over_cut(&ns, request);
    // PostgreSQL did not notice either: its sessions from the namespace are all there.
    let pg_still = pg_sessions();
    assert!(
        held.waited,
        "the request during the cut ended before the heal"
    );
    assert_eq!(
        held.output, "200",
        "the request held over the cut is answered after the heal"
    );
    assert_eq!(output_of(request()), "200");
    // The pool may open more connections (up to its 10) at any time; besides those, the
    // booking server's descriptors are back to what they were.
    let others = |(fds, sessions): (usize, usize)| fds.checked_sub(sessions);
    wait_until_blocking(
        "the booking server's other fds back to baseline, at most 10 PostgreSQL sessions",
        NOTICE_WITHIN,
        || {
            let now = (fds(), pg_sessions());
            others(now) == others(baseline) && now.1 <= 10
        },
    );
    Measured {
        link: "booking server <-> PostgreSQL",
        // Neither side has a deadline that a short cut reaches.
        noticed: vec![],
        recovered: held.after_heal,
        lost: format!(
            "nothing: neither side noticed; a request made during the cut was held {:.2}s (cut {:.2}s, then TCP retransmission) and answered 200; PostgreSQL still had {pg_still} session(s) from the namespace after the heal",
            held.held_for.as_secs_f64(),
            held.cut_for.as_secs_f64()
        ),
    }
    .print();
}

/// The value of the metric line starting with `name` in an OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// `relay node <-> NATS`: node `a` runs in the namespace (its clients inside with it),
/// nats-server and node `b` in the root namespace. A writer on `b` feeds a viewer on `a`.
#[test]
fn relay_node_to_nats() {
    require_tools();
    require("nats-server", "run scripts/test.sh, which installs it");
    let ns = Netns::create();
    let dir = tempfile_dir("netns-nats");
    let conf = dir.join("nats.conf");
    // The server drops a client that misses 2 pings 300 ms apart.
    std::fs::write(
        &conf,
        format!(
            "listen: \"{}:-1\"\nhttp: \"127.0.0.1:-1\"\nping_interval: \"300ms\"\nping_max: 2\njetstream {{ store_dir: \"{}\" }}\n",
            ns.host_ip(),
            dir.join("js").display()
        ),
    )
    .unwrap();
    let nats = watch_stderr(Command::new("nats-server").arg("-c").arg(&conf));
    let long_ago = Instant::now() - Duration::from_secs(60);
    let after_prefix = |prefix: &'static str| {
        nats.wait_for("nats-server to start", long_ago, NOTICE_WITHIN, |l| {
            l.contains(prefix)
        });
        let line = nats.first(long_ago, |l| l.contains(prefix)).unwrap().1;
        line.split(prefix).nth(1).unwrap().trim().to_owned()
    };
    let nats_url = format!(
        "nats://{}",
        after_prefix("Listening for client connections on ")
    );
    let monitor = after_prefix("Starting http monitor on ");
    let audience = "http://relay.test";
    let node = |command: &mut Command, name: &str, pa: u16, pr: u16| {
        command
            .args([
                "--nats",
                &nats_url,
                "--node-name",
                name,
                "--log-file",
                "stdout",
            ])
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_AUDIENCE", audience)
            .env("RELAY_URL", format!("ws://127.0.0.1:{pr}"))
            .env("RELAY_SECRET", SECRET)
            .env("RELAY_PORT_ACCESS", pa.to_string())
            .env("RELAY_PORT_RELAY", pr.to_string())
            .env("RELAY_ALLOW_NO_BOOKING_ID", "true")
            .env("RELAY_LOG_LEVEL", "warn");
    };
    // Node a has the namespace's port space to itself.
    let mut a_command = ns.command(RELAY);
    a_command.arg("serve");
    node(&mut a_command, "a", 3000, 3001);
    let a = watch(&mut a_command);
    a.wait_for("node a to listen", long_ago, NOTICE_WITHIN, |l| {
        l.starts_with("relay: relay listening on")
    });
    let b = serve_on_free_ports(|command, pa, pr| {
        node(command, "b", pa, pr);
        command.stderr(Stdio::null());
    });
    let b_access = format!("http://{}", b.access);
    let b_peers = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("{b_access}/metrics"))
            .output()
            .unwrap();
        metric(&String::from_utf8_lossy(&out.stdout), "relay_cluster_peers").unwrap_or(-1.0)
    };
    let nats_has_a = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("http://{monitor}/connz"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("\"relay a\"")
    };
    wait_until_blocking("node b to hear node a", NOTICE_WITHIN, || b_peers() == 1.0);
    let topic = "nsf-nats";
    let writer = watch(&mut python(
        None,
        &[
            "writer",
            &format!("{b_access}/session/{topic}"),
            &read_write_token(audience, topic),
        ],
    ));
    let viewer = watch(&mut python(
        Some(&ns),
        &[
            "viewer",
            "http://127.0.0.1:3000/session/nsf-nats",
            &read_write_token(audience, topic),
            "0.3",
            "1",
        ],
    ));
    wait_until_blocking("messages from node b to node a", NOTICE_WITHIN, || {
        viewer.numbers("msg seq ").len() >= 10
    });
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let (a_pid, b_pid) = (a._process.0.id(), b.process.0.id());
    let baseline = (fds(a_pid), fds(b_pid));
    let before = viewer.highest("msg seq ");

    let cut_at = Instant::now();
    ns.cut();
    // Node b misses node a's hello (one a second) after 3 s.
    wait_until_blocking("node b to miss node a", NOTICE_WITHIN, || b_peers() == 0.0);
    let b_noticed = cut_at.elapsed();
    std::thread::sleep(DOWN_FOR);
    // nats-server pings only an idle client, and node a's client pings every 60 s: while
    // messages flow to node a, neither side may have noticed yet.
    let nats_dropped_a = !nats_has_a();
    let a_noticed_during_cut = a
        .first(cut_at, |l| l.contains("NATS unreachable"))
        .map(|(at, _)| at - cut_at);
    let heal_at = Instant::now();
    ns.heal();
    wait_until_blocking("node b to hear node a again", BACKOFF_WITHIN, || {
        b_peers() == 1.0 && nats_has_a()
    });
    let recovered = heal_at.elapsed();
    let first_after = viewer.wait_for(
        "messages across nodes again",
        heal_at,
        BACKOFF_WITHIN,
        |l| l.starts_with("msg seq"),
    );
    let sent = writer.numbers("sent ");
    let lost = lost_while_down(&viewer, &sent, before, first_after);
    wait_until_blocking("both nodes' fds back to baseline", NOTICE_WITHIN, || {
        (fds(a_pid), fds(b_pid)) == baseline
    });
    let a_noticed = match (
        a_noticed_during_cut,
        a.first(heal_at, |l| l.contains("NATS unreachable")),
    ) {
        (Some(d), _) => format!("node a {:.2}s", d.as_secs_f64()),
        (None, Some((at, _))) => format!(
            "node a only after the heal (+{:.2}s)",
            (at - heal_at).as_secs_f64()
        ),
        (None, None) => "node a never (its connection survived the cut)".to_owned(),
    };
    let nats_noticed = if nats_dropped_a {
        "nats-server dropped node a during the cut"
    } else {
        "nats-server had not dropped node a by the heal"
    };
    println!(
        "netns-fault: relay node <-> NATS | noticed: {nats_noticed}, node b (peer gone) {:.2}s, {a_noticed} | back after heal: {:.2}s | lost: {} messages from node b to node a's viewer, all sent before node a was back; the relay counts none of them",
        b_noticed.as_secs_f64(),
        recovered.as_secs_f64(),
        lost.len()
    );
}
