//! End to end with the real `relay` binary: `relay monitor` probes a `relay serve` with the
//! reference's `RELAY_MONITOR_*` variables. A relay frozen with SIGSTOP makes the monitor
//! run `RELAY_MONITOR_COMMAND` within `THRESHOLD × TRIGGER_AFTER_MISSES` plus one interval
//! (waited for with that bound plus slack, since the machine may be loaded); a healthy relay
//! never makes it run over 30 s of probes. Without a command, the default action kills the
//! pid in `RELAY_MONITOR_PIDFILE`. Needs the `kill` command (procps) and `sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use support::{serve_on_free_ports, spawn_and_read, wait_until_blocking, Killed, Served, RELAY};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "monitor-e2e-secret-of-32-bytes-ok";
/// The monitor's settings, in the reference's spelling (Go durations).
const INTERVAL: Duration = Duration::from_millis(200);
const THRESHOLD: Duration = Duration::from_secs(1);
const MISSES: u32 = 3;
/// Extra time allowed on top of the bound, for a loaded machine.
const SLACK: Duration = Duration::from_secs(15);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-monitor-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_relay(dir: &Path) -> Served {
    let log = dir.join("relay.log");
    serve_on_free_ports(|command, pa, pr| {
        command
            .env("RELAY_AUDIENCE", format!("http://127.0.0.1:{pa}"))
            .env("RELAY_URL", format!("ws://127.0.0.1:{pr}"))
            .env("RELAY_SECRET", SECRET)
            .env("RELAY_PORT_ACCESS", pa.to_string())
            .env("RELAY_PORT_RELAY", pr.to_string())
            .env("RELAY_BIND", "127.0.0.1")
            .env("RELAY_LOG_FILE", &log)
            .env("RELAY_LOG_LEVEL", "info");
    })
}

/// `relay monitor` against `relay`, whose command touches `marker`; logs (text, info) to
/// `<dir>/monitor.log`. Returns once its metrics listener is up, with that listener's address.
fn start_monitor(dir: &Path, relay: &Served, marker: &Path) -> (Killed, String) {
    let mut command = Command::new(RELAY);
    command.env("RELAY_MONITOR_COMMAND", r#"touch "$MARKER""#);
    start_monitor_with(dir, relay, marker, &mut command)
}

fn start_monitor_with(
    dir: &Path,
    relay: &Served,
    marker: &Path,
    command: &mut Command,
) -> (Killed, String) {
    command
        .arg("monitor")
        .env("RELAY_MONITOR_AUDIENCE", format!("http://{}", relay.access))
        .env("RELAY_MONITOR_SECRET", SECRET)
        .env("RELAY_MONITOR_INTERVAL", "200ms")
        .env("RELAY_MONITOR_THRESHOLD", "1s")
        .env("RELAY_MONITOR_TRIGGER_AFTER_MISSES", MISSES.to_string())
        .env("RELAY_MONITOR_NO_RETRIGGER_WITHIN", "60s")
        .env("MARKER", marker)
        .env("RELAY_MONITOR_METRICS_LISTEN", "127.0.0.1:0")
        .env("RELAY_MONITOR_LOG_LEVEL", "info")
        .env("RELAY_MONITOR_LOG_FORMAT", "text")
        .env("RELAY_MONITOR_LOG_FILE", dir.join("monitor.log"))
        .stderr(Stdio::null());
    let (child, lines) = spawn_and_read(command, &["relay monitor: metrics listening on "]);
    let lines = lines.expect("relay monitor exited at start");
    (child, lines[0].clone())
}

/// The body of `GET /metrics` from the monitor at `address`.
fn metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Good measurements logged so far.
fn good_samples(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("monitor.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("relay monitor: latency") && !l.contains("above threshold"))
        .count()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("the kill command is required for this test (procps)");
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[test]
fn a_relay_frozen_with_sigstop_makes_the_monitor_run_its_command() {
    let dir = temp_dir("frozen");
    let marker = dir.join("triggered");
    let relay = start_relay(&dir);
    let (_monitor, _) = start_monitor(&dir, &relay, &marker);
    wait_until_blocking("three good measurements", SLACK, || good_samples(&dir) >= 3);
    assert!(!marker.exists(), "triggered while the relay was healthy");

    let pid = relay.process.0.id();
    signal(pid, "STOP");
    let frozen = Instant::now();
    let bound = THRESHOLD * MISSES + INTERVAL;
    wait_until_blocking(
        &format!("the monitor's command within {bound:?} (+{SLACK:?} slack)"),
        bound + SLACK,
        || marker.exists(),
    );
    eprintln!(
        "monitor ran its command {:?} after SIGSTOP (bound {bound:?})",
        frozen.elapsed()
    );
    signal(pid, "CONT");
    let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
    assert!(log.contains("probe missing"), "{log}");
    assert!(log.contains("running the command"), "{log}");
}

#[test]
fn a_healthy_relay_never_triggers_the_monitor_over_30_s() {
    let dir = temp_dir("healthy");
    let marker = dir.join("triggered");
    let relay = start_relay(&dir);
    let (_monitor, metrics_address) = start_monitor(&dir, &relay, &marker);
    // 150 measurements at one per 200 ms: 30 s of probing, counted rather than slept.
    let samples = 150;
    wait_until_blocking(
        &format!("{samples} good measurements"),
        Duration::from_secs(30) * 3,
        || good_samples(&dir) >= samples,
    );
    assert!(!marker.exists(), "the monitor triggered on a healthy relay");
    let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
    assert!(!log.contains("running the command"), "{log}");
    let metrics = metrics(&metrics_address);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let latency = metrics
        .lines()
        .find_map(|l| l.strip_prefix("relay_monitor_latency_seconds "))
        .unwrap_or_else(|| panic!("no latency gauge in {metrics}"));
    let latency: f64 = latency.trim().parse().unwrap();
    assert!(
        latency > 0.0 && latency < THRESHOLD.as_secs_f64(),
        "{latency}"
    );
    assert!(
        metrics.contains("relay_monitor_triggers_total 0"),
        "{metrics}"
    );
    drop(relay);
}

#[test]
fn the_default_action_kills_the_frozen_relay_named_by_the_pid_file() {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp_dir("pidfile");
    let mut relay = start_relay(&dir);
    let pid = relay.process.0.id();
    let pidfile = dir.join("relay.pid");
    std::fs::write(&pidfile, format!("{pid}\n")).unwrap();
    let mut command = Command::new(RELAY);
    command.env("RELAY_MONITOR_PIDFILE", &pidfile);
    let (_monitor, _) = start_monitor_with(&dir, &relay, &dir.join("unused"), &mut command);
    wait_until_blocking("three good measurements", SLACK, || good_samples(&dir) >= 3);

    signal(pid, "STOP");
    let bound = THRESHOLD * MISSES + INTERVAL;
    let mut status = None;
    wait_until_blocking(
        &format!("the monitor to kill the relay within {bound:?} (+{SLACK:?} slack)"),
        bound + SLACK,
        || {
            status = relay.process.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert_eq!(status.and_then(|s| s.signal()), Some(9), "{status:?}");
}
