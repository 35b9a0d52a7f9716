//! End to end for `relay host`, with the programs an experiment uses: ffmpeg posts MPEG-TS
//! to the real `relay host` binary, which carries it (rules from a TOML file, tokens from
//! `relay token`) to the real `relay serve`; a viewer records what arrives and ffprobe
//! checks it decodes with every frame. websocat plays the serial bridge on feed `data`
//! and a remote user on the relay. A fault test restarts the relay while ffmpeg streams.
//! ffmpeg, ffprobe, curl and websocat must be installed; the tests fail if they are not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{
    on_a_free_port, relay_token, require, serve, serve_on_free_ports, spawn_and_read, wait_until,
    websocat, Killed, Served, INSTALL_HINT,
};

use relay_client::session::{Message, Session, SessionConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const SECRET: &str = "host-e2e-secret";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-host-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A token from the real `relay token`.
fn mint(access: &str, topic: &str, read: bool, write: bool) -> String {
    let (read, write) = (read.to_string(), write.to_string());
    let scopes = [
        ("RELAY_TOKEN_SCOPE_READ", read.as_str()),
        ("RELAY_TOKEN_SCOPE_WRITE", write.as_str()),
    ];
    relay_token(SECRET, access, topic, &[], &scopes)
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The real `relay serve`, restartable on the same ports. The host dials the uri it hands
/// out, so its public URL must be known before it starts: the first start takes free
/// ports (retried if one is lost) and reads back the addresses it printed.
struct Relay {
    access: String,
    port_access: u16,
    port_relay: u16,
    log: PathBuf,
}

/// The longest wait between two reconnect attempts of a host destination.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How long a test waits for a program to get going.
const WAIT: Duration = Duration::from_secs(15);

fn configure_serve(command: &mut Command, port_access: u16, port_relay: u16, log: &Path) {
    command
        .env("RELAY_AUDIENCE", format!("http://127.0.0.1:{port_access}"))
        .env("RELAY_URL", format!("ws://127.0.0.1:{port_relay}"))
        .env("RELAY_SECRET", SECRET)
        .env("RELAY_PORT_ACCESS", port_access.to_string())
        .env("RELAY_PORT_RELAY", port_relay.to_string())
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_ALLOW_NO_BOOKING_ID", "true")
        .env("RELAY_LOG_FILE", log)
        .env("RELAY_LOG_LEVEL", "info");
}

impl Relay {
    /// Starts the relay on free ports.
    async fn start(dir: &Path) -> (Self, Killed) {
        let log = dir.join("relay.log");
        let served = {
            let log = log.clone();
            tokio::task::spawn_blocking(move || {
                serve_on_free_ports(|command, pa, pr| configure_serve(command, pa, pr, &log))
            })
            .await
            .unwrap()
        };
        let relay = Relay {
            access: format!("http://{}", served.access),
            port_access: served.access.port(),
            port_relay: served.relay.port(),
            log,
        };
        (relay, served.process)
    }

    /// Starts the relay again on the ports of the first start.
    async fn restart(&self) -> Killed {
        let (port_access, port_relay, log) = (self.port_access, self.port_relay, self.log.clone());
        let served: Option<Served> = tokio::task::spawn_blocking(move || {
            let mut command = Command::new(RELAY);
            command.arg("serve");
            configure_serve(&mut command, port_access, port_relay, &log);
            serve(&mut command)
        })
        .await
        .unwrap();
        served
            .expect("relay serve restarts on its ports (another process took one meanwhile?)")
            .process
    }
}

/// The real `relay host` with a rules file on a port of its own choosing: returns the
/// process and the port it printed.
async fn start_host(dir: &Path, rules: &Path) -> (Killed, u16) {
    let mut command = Command::new(RELAY);
    command
        .arg("host")
        .env("VW_PORT", "0")
        .env("VW_RULES", rules)
        // The rules record the host's output into this directory (recording is off unless
        // a record directory is set).
        .env("VW_RECORD_DIR", dir)
        .env("VW_LOG_LEVEL", "info")
        .env("VW_LOG_FILE", dir.join("host.log"));
    let (child, printed) =
        tokio::task::spawn_blocking(move || spawn_and_read(&mut command, &[HOST_LINE]))
            .await
            .unwrap();
    let port = printed
        .as_ref()
        .and_then(|lines| host_port(lines.first()?))
        .expect("relay host prints the address it listens on");
    let health = format!("http://127.0.0.1:{port}/healthcheck");
    wait_until("relay host to listen", WAIT, || {
        curl(&[&health]).as_deref() == Some("\"ok\"\n")
    })
    .await;
    (child, port)
}

/// What `relay host` prints on stdout once it listens, before its base URL.
const HOST_LINE: &str = "relay host listening on ";

/// The port of a printed `http://ADDR` base URL.
fn host_port(url: &str) -> Option<u16> {
    let addr: std::net::SocketAddr = url.strip_prefix("http://")?.parse().ok()?;
    Some(addr.port())
}

/// Whether every listed destination of the host reports a live relay link.
fn host_connected(port: u16, ids: &[&str]) -> bool {
    let Some(body) = curl(&[&format!("http://127.0.0.1:{port}/api/status")]) else {
        return false;
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    ids.iter()
        .all(|id| status[id]["connected"] == serde_json::Value::Bool(true))
}

/// Binary messages with their arrival times.
type Received = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A viewer on the relay that records every binary message, with arrival times.
struct Recorder {
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(access: &str, topic: &str, token: String) -> Self {
        let config = SessionConfig::new(format!("{access}/session/{topic}")).with_token(token);
        let mut session = Session::spawn(config);
        tokio::time::timeout(Duration::from_secs(15), session.wait_connected())
            .await
            .unwrap()
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = session.recv().await {
                if let Message::Binary(data) = message {
                    sink.lock().unwrap().push((Instant::now(), data.to_vec()));
                }
            }
        });
        Recorder { received, task }
    }

    fn bytes(&self) -> Vec<u8> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, d)| d.clone())
            .collect()
    }

    fn count_since(&self, since: Instant) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= since)
            .count()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// ffmpeg encoding a test pattern as the experiment's camera would, posting to /ts/video.
fn ffmpeg_camera(port: u16, frames: Option<u32>) -> Killed {
    let mut command = Command::new("ffmpeg");
    command.args([
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
    ]);
    if let Some(frames) = frames {
        command.args(["-frames:v", &frames.to_string()]);
    }
    command
        .args([
            "-c:v",
            "mpeg1video",
            "-b:v",
            "1000k",
            "-bf",
            "0",
            "-f",
            "mpegts",
        ])
        .arg(format!("http://127.0.0.1:{port}/ts/video"))
        .stdin(Stdio::null());
    Killed(command.spawn().unwrap())
}

/// Frames ffprobe counts in a recording, and what ffmpeg says when decoding it.
fn probe(path: &Path) -> (u64, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    // ffprobe may print the count once per program and once per stream.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let frames = stdout
        .lines()
        .find_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(0);
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    (frames, String::from_utf8_lossy(&decode.stderr).into_owned())
}

fn say(child: &mut Killed, line: &str) {
    let stdin = child.0.stdin.as_mut().unwrap();
    writeln!(stdin, "{line}").unwrap();
    stdin.flush().unwrap();
}

fn write_rules(path: &Path, access: &str, extra: &str) {
    let recording = path.with_file_name("host-out.ts");
    let recording = recording.display();
    let rules = format!(
        r#"# Written by the e2e test the way an experiment would.
[[destinations]]
id = "video"
stream = "video"
destination = "{access}/session/expt00-video"
token_file = "video.jwt"
file = "{recording}"

[[destinations]]
id = "data"
stream = "data"
destination = "{access}/session/expt00-data"
token_file = "data.jwt"
{extra}"#
    );
    std::fs::write(path, rules).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_video_and_serial_data_flow_through_the_real_host_and_relay() {
    for program in ["ffmpeg", "ffprobe", "curl", "websocat"] {
        require(program, INSTALL_HINT);
    }
    let dir = temp_dir("flow");
    let (relay, _relay_process) = Relay::start(&dir).await;
    std::fs::write(
        dir.join("video.jwt"),
        mint(&relay.access, "expt00-video", false, true),
    )
    .unwrap();
    std::fs::write(
        dir.join("data.jwt"),
        mint(&relay.access, "expt00-data", true, true),
    )
    .unwrap();
    let rules = dir.join("rules.toml");
    write_rules(&rules, &relay.access, "");
    let (mut host, port) = start_host(&dir, &rules).await;
    wait_until(
        "host destinations to connect",
        Duration::from_secs(15),
        || host_connected(port, &["video", "data"]),
    )
    .await;

    // Video: ffmpeg → /ts/video → relay → a read-only viewer.
    let viewer = Recorder::start(
        &relay.access,
        "expt00-video",
        mint(&relay.access, "expt00-video", true, false),
    )
    .await;
    let frames = 100;
    let mut camera = ffmpeg_camera(port, Some(frames));
    let posted = tokio::task::spawn_blocking(move || camera.0.wait().unwrap())
        .await
        .unwrap();
    assert!(posted.success(), "ffmpeg failed to post to relay host");
    let recording = dir.join("recording.ts");
    let mut last = (0, String::new());
    wait_until(
        "the viewer's recording to hold every frame",
        Duration::from_secs(15),
        || {
            std::fs::write(&recording, viewer.bytes()).unwrap();
            last = probe(&recording);
            last.0 >= frames as u64
        },
    )
    .await;
    let (decoded, errors) = last;
    assert_eq!(decoded, frames as u64, "frame count of the recording");
    assert!(
        errors.trim().is_empty(),
        "the recording does not decode cleanly: {errors}"
    );
    println!(
        "video: {frames} frames, {} bytes, decoded without errors",
        viewer.bytes().len()
    );
    // The host's own raw recording of what it sent is the same playable stream.
    let (recorded, errors) = probe(&dir.join("host-out.ts"));
    assert_eq!(
        recorded, frames as u64,
        "frame count of the host's recording"
    );
    assert!(
        errors.trim().is_empty(),
        "the host's recording does not decode cleanly: {errors}"
    );

    // Data: websocat as the serial bridge on /ws/data ↔ websocat as a user on the relay.
    let (mut bridge, bridge_out) = websocat(&format!("ws://127.0.0.1:{port}/ws/data"), &[]);
    let user_token = mint(&relay.access, "expt00-data", true, true);
    let uri = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: {user_token}"),
        &format!("{}/session/expt00-data", relay.access),
    ])
    .expect("access POST failed");
    let uri: serde_json::Value = serde_json::from_str(&uri).unwrap();
    let (mut user, user_out) = websocat(uri["uri"].as_str().unwrap(), &[]);
    // Either side may connect last; repeat the first command until the bridge hears it.
    let mut heard = None;
    for _ in 0..50 {
        say(&mut user, "{\"set\":\"speed\",\"to\":2}");
        if let Ok(line) = bridge_out.recv_timeout(Duration::from_millis(200)) {
            heard = Some(line);
            break;
        }
    }
    assert_eq!(heard.as_deref(), Some("{\"set\":\"speed\",\"to\":2}"));
    say(&mut bridge, "{\"speed\":2}");
    let reply = loop {
        let line = user_out
            .recv_timeout(Duration::from_secs(5))
            .expect("the user got no reply");
        if !line.starts_with("{\"set\"") {
            break line;
        }
    };
    assert_eq!(reply, "{\"speed\":2}");

    // SIGHUP reloads the rules file: a new stream destination appears, others stay up.
    write_rules(
        &rules,
        &relay.access,
        &format!(
            "\n[[streams]]\nstream = \"stream/all\"\nfeeds = [\"video\", \"data\"]\n\n[[destinations]]\nid = \"all\"\nstream = \"stream/all\"\ndestination = \"{}/session/expt00-all\"\ntoken_file = \"video.jwt\"\n",
            relay.access
        ),
    );
    assert!(Command::new("kill")
        .args(["-HUP", &host.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    wait_until(
        "the reloaded rule to appear",
        Duration::from_secs(10),
        || {
            curl(&[&format!("http://127.0.0.1:{port}/api/streams/all")])
                .is_some_and(|b| b.contains("stream/all"))
        },
    )
    .await;
    assert!(host_connected(port, &["video", "data"]));

    // SIGTERM: clean exit 0.
    assert!(Command::new("kill")
        .args(["-TERM", &host.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut status = None;
    wait_until(
        "relay host to exit on SIGTERM",
        Duration::from_secs(10),
        || {
            status = host.0.try_wait().unwrap();
            status.is_some()
        },
    )
    .await;
    let status = status.unwrap();
    assert!(status.success(), "relay host exited with {status}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reconnects_by_itself_when_the_relay_restarts_during_streaming() {
    for program in ["ffmpeg", "ffprobe", "curl"] {
        require(program, INSTALL_HINT);
    }
    let dir = temp_dir("fault");
    let (relay, relay_process) = Relay::start(&dir).await;
    std::fs::write(
        dir.join("video.jwt"),
        mint(&relay.access, "expt00-video", false, true),
    )
    .unwrap();
    std::fs::write(
        dir.join("data.jwt"),
        mint(&relay.access, "expt00-data", true, true),
    )
    .unwrap();
    let rules = dir.join("rules.toml");
    write_rules(&rules, &relay.access, "");
    let (_host, port) = start_host(&dir, &rules).await;
    wait_until(
        "host destinations to connect",
        Duration::from_secs(15),
        || host_connected(port, &["video"]),
    )
    .await;
    let viewer = Recorder::start(
        &relay.access,
        "expt00-video",
        mint(&relay.access, "expt00-video", true, false),
    )
    .await;
    let _camera = ffmpeg_camera(port, None);
    let started = Instant::now();
    wait_until("video before the fault", Duration::from_secs(15), || {
        viewer.count_since(started) >= 25
    })
    .await;

    drop(relay_process); // SIGKILL: the relay vanishes without closing anything.
    wait_until("the host to notice", Duration::from_secs(15), || {
        !host_connected(port, &["video"])
    })
    .await;
    let _relay_process = relay.restart().await;
    let restarted = Instant::now();
    // Nobody waits longer than the 10 s backoff cap (proved exactly, under paused time, in
    // relay-host's tests/timing.rs); here the cap plus a margin bounds the wait, as a
    // tighter wall-clock assert would flake on a loaded machine.
    wait_until("the host to reconnect", BACKOFF_CAP + WAIT, || {
        host_connected(port, &["video"])
    })
    .await;
    let host_back = restarted.elapsed();
    wait_until("video at the viewer again", Duration::from_secs(20), || {
        viewer.count_since(restarted) >= 25
    })
    .await;
    let video_back = restarted.elapsed();
    println!("relay restarted: host reconnected after {host_back:?}; viewer had 25 new frames after {video_back:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn relayhost_names_from_the_reference_help_work_and_bad_numbers_are_refused() {
    require("curl", INSTALL_HINT);
    // A given port (not 0) shows the alias is honoured; it is retried if it is lost.
    let (host, _port) = tokio::task::spawn_blocking(|| {
        on_a_free_port(
            "relay host on RELAYHOST_PORT",
            |port| {
                let command = Command::new(RELAY)
                    .arg("host")
                    .env("RELAYHOST_PORT", port.to_string())
                    .env("RELAYHOST_LOGLEVEL", "warning")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                Some(Killed(command))
            },
            |port| curl(&[&format!("http://127.0.0.1:{port}/healthcheck")]).is_some(),
        )
    })
    .await
    .unwrap();
    drop(host);

    for (name, value) in [
        ("RELAYHOST_PORT", "eighty"),
        ("VW_PORT", "eighty"),
        ("VW_HTTPWAITMS", "soon"),
    ] {
        let out = Command::new(RELAY)
            .arg("host")
            .env(name, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(value),
            "{name}={value}: unclear error: {stderr}"
        );
    }
}

/// A shutdown wait past one year is refused at start-up with exit 1, naming the variable.
#[test]
fn a_huge_http_wait_is_refused_at_start_up() {
    let mut command = Command::new(RELAY);
    command
        .arg("host")
        .env("VW_PORT", "0")
        .env("VW_BIND", "127.0.0.1")
        .env("VW_HTTPWAITMS", "99999999999999");
    let (code, stderr) = support::run_to_exit(&mut command);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("VW_HTTPWAITMS"), "{stderr}");
    assert!(stderr.contains("at most 1 year"), "{stderr}");
}
