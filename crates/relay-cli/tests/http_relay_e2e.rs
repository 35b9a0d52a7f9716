//! End-to-end tests of `relay http serve` and `relay http client` with the programs a user
//! would run: curl through the relay to a Python `http.server` backend, and websocat for
//! a websocket echo through a 101 upgrade. A missing program fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{on_a_free_port, port_open, require, wait_until_blocking as wait_until, Killed};

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("http-relay-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const BACKEND_PY: &str = r#"
import http.server, os, sys, time

release = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/":
            self.reply(200, b"Hello")
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            def chunk(data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            chunk(b"chunk1\n")
            # The second chunk is produced only after the test saw the first one.
            deadline = time.time() + 20
            while not os.path.exists(release) and time.time() < deadline:
                time.sleep(0.02)
            chunk(b"chunk2\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = b""
        while len(body) < length:
            part = self.rfile.read(length - len(body))
            if not part:
                break
            body += part
        self.reply(200, b"%d %d" % (len(body), sum(body)))

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The Python backend and the port it listens on.
fn start_backend(dir: &Path) -> (Killed, u16) {
    require("python3", "install Python 3");
    let script = dir.join("backend.py");
    std::fs::write(&script, BACKEND_PY).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(dir.join("release"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap();
    (Killed(child), port)
}

/// `relay http serve --port=0`, its port scraped from the log as the reference's tests do.
fn start_server(extra: &[&str]) -> (Killed, u16) {
    let mut child = Command::new(RELAY)
        .args(["http", "serve", "--port=0", "--bind=127.0.0.1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Relay server listening").nth(1) {
                if let Some(port) = rest.split("\"Port\":").nth(1) {
                    let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(digits.parse::<u16>().unwrap());
                }
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server never logged its port");
    (Killed(child), port)
}

fn start_client(relay_port: u16, backend_port: u16, name: &str, extra: &[&str]) -> Killed {
    let child = Command::new(RELAY)
        .args([
            "http",
            "client",
            "--backend_scheme=http",
            "--relay_scheme=http",
            "--log_level=4",
        ])
        .arg(format!("--backend_address=127.0.0.1:{backend_port}"))
        .arg(format!("--relay_address=127.0.0.1:{relay_port}"))
        .arg(format!("--server_name={name}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Killed(child)
}

fn curl(args: &[&str]) -> Output {
    require("curl", "apt-get install -y curl");
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .unwrap()
}

fn curl_text(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reference's WaitForClient: retry while the relay says "unknown client".
fn wait_for_client(relay_port: u16, name: &str) {
    let url = format!("http://127.0.0.1:{relay_port}/client/{name}/");
    wait_until(
        &format!("relay client {name}"),
        Duration::from_secs(15),
        || !curl_text(&["-w", "%{http_code}", &url]).contains("unknown client"),
    );
}

#[test]
fn curl_get_post_and_stream_through_the_relay() {
    let dir = temp_dir("curl");
    let (_backend, backend_port) = start_backend(&dir);
    let (_server, relay_port) = start_server(&[]);
    let _client = start_client(
        relay_port,
        backend_port,
        "remote1",
        &["--disable_auth_for_remote"],
    );
    wait_for_client(relay_port, "remote1");
    let base = format!("http://127.0.0.1:{relay_port}/client/remote1");

    // GET, and the reference's TestHttpRelay statuses.
    assert_eq!(curl_text(&[&format!("{base}/")]), "Hello");
    assert_eq!(
        curl_text(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/bad-path")
        ]),
        "404"
    );
    let wrong = format!("http://127.0.0.1:{relay_port}/client/wrong/");
    assert_eq!(
        curl_text(&["-o", "/dev/null", "-w", "%{http_code}", &wrong]),
        "503"
    );
    // X-Server-Name routing.
    let by_header = format!("http://127.0.0.1:{relay_port}/");
    assert_eq!(
        curl_text(&["-H", "X-Server-Name: remote1", &by_header]),
        "Hello"
    );

    // POST of a 10 MB body.
    let body: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let expected = format!(
        "{} {}",
        body.len(),
        body.iter().map(|b| u64::from(*b)).sum::<u64>()
    );
    let data = format!("@{}", file.display());
    assert_eq!(
        curl_text(&[
            "--data-binary",
            &data,
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{base}/sum")
        ]),
        expected
    );

    // A chunked stream: the backend writes chunk2 only once curl has printed chunk1.
    let mut stream = Command::new("curl")
        .args(["-sSN", "--max-time", "30", &format!("{base}/stream")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(stream.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "chunk1\n");
    assert!(!dir.join("release").exists());
    std::fs::write(dir.join("release"), b"go").unwrap();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "chunk2\n");
    assert!(stream.wait().unwrap().success());
}

#[test]
fn websocat_echo_through_a_101_upgrade() {
    require(
        "websocat",
        "cargo install websocat (not packaged in Debian bookworm)",
    );
    // websocat cannot report a port it chose: it is given one, retried if it loses it.
    let (_echo, port) = on_a_free_port(
        "websocat echo server",
        |port| {
            Some(Killed(
                Command::new("websocat")
                    .args(["-t", &format!("ws-l:127.0.0.1:{port}"), "mirror:"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ))
        },
        port_open,
    );
    let (_server, relay_port) = start_server(&[]);
    let _client = start_client(relay_port, port, "ws1", &["--disable_auth_for_remote"]);
    wait_for_client(relay_port, "ws1");
    let url = format!("ws://127.0.0.1:{relay_port}/client/ws1/");
    let mut user = Command::new("websocat")
        .args(["-n", "--max-messages-rev", "2", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    user.stdin
        .take()
        .unwrap()
        .write_all(b"hello\nsecond line\n")
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(user.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("websocat did not finish")
        .unwrap();
    assert!(
        out.status.success(),
        "websocat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nsecond line\n");
}

fn robot_token(secret: &[u8], name: &str) -> String {
    let claims = relay_auth::Claims {
        scopes: vec![format!("http:server:{name}")],
        aud: relay_auth::Audience::single("http-relay"),
        exp: Some(4_000_000_000),
        ..relay_auth::Claims::default()
    };
    relay_auth::mint(&claims, secret)
}

#[test]
fn a_token_for_robot_a_cannot_poll_robot_b() {
    let dir = temp_dir("auth");
    let (_backend, backend_port) = start_backend(&dir);
    let (_server, relay_port) =
        start_server(&["--auth_secret=e2e-secret", "--auth_audience=http-relay"]);
    let token_a = robot_token(b"e2e-secret", "robot-a");

    // Robot A's token, polling as robot B: the client is refused and exits with an error.
    let token_arg = format!("--relay_token={token_a}");
    let mut thief = start_client(relay_port, backend_port, "robot-b", &[&token_arg]);
    let mut status = None;
    wait_until(
        "the refused client to exit",
        Duration::from_secs(15),
        || {
            status = thief.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(!status.unwrap().success());
    let mut stderr = String::new();
    thief
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("403"), "{stderr}");
    let b_url = format!("http://127.0.0.1:{relay_port}/client/robot-b/");
    assert!(
        curl_text(&[&b_url]).contains("unknown client"),
        "robot-b must never have registered"
    );

    // The same token serves robot A.
    let _robot_a = start_client(relay_port, backend_port, "robot-a", &[&token_arg]);
    wait_for_client(relay_port, "robot-a");
    assert_eq!(
        curl_text(&[&format!("http://127.0.0.1:{relay_port}/client/robot-a/")]),
        "Hello"
    );
}

/// Out-of-range durations are refused at start-up with exit 1 and the flag's name: a zero
/// inactivity timeout would reap every request, and a duration past one year is refused
/// everywhere (`now + it` can overflow).
#[test]
fn out_of_range_durations_are_refused_at_start_up() {
    let serve = |flag: &str| {
        let mut command = Command::new(RELAY);
        command.args(["http", "serve", "--port=0", "--bind=127.0.0.1", flag]);
        support::run_to_exit(&mut command)
    };
    for (flag, name, says) in [
        (
            "--inactive_request_timeout=0",
            "--inactive_request_timeout",
            "more than 0",
        ),
        (
            "--inactive_backend_timeout=1000000h",
            "--inactive_backend_timeout",
            "at most 1 year",
        ),
    ] {
        let (code, stderr) = serve(flag);
        assert_eq!(code, Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(says),
            "{flag}: {stderr}"
        );
    }
    let mut command = Command::new(RELAY);
    command.args([
        "http",
        "client",
        "--relay_address=127.0.0.1:9",
        "--backend_address=127.0.0.1:9",
        "--disable_auth_for_remote",
        "--backend_timeout=1000000h",
    ]);
    let (code, stderr) = support::run_to_exit(&mut command);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--backend_timeout"), "{stderr}");
    assert!(stderr.contains("at most 1 year"), "{stderr}");
}

/// Issue 13: on a public address without `--auth_secret` the server refuses to start
/// (exit 2, the reason on stderr) unless `--insecure` is given.
#[test]
fn http_serve_refuses_public_address_without_secret() {
    let mut refused = Command::new(RELAY);
    refused
        .args(["http", "serve", "--port=0", "--bind=0.0.0.0"])
        .env_remove("RELAY_HTTP_SECRET")
        .env_remove("RELAY_HTTP_INSECURE");
    let (code, stderr) = support::run_to_exit(&mut refused);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--auth_secret") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let mut child = Command::new(RELAY)
        .args(["http", "serve", "--port=0", "--bind=0.0.0.0", "--insecure"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let listening = lines.any(|line| line.contains("Relay server listening"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "--insecure starts the server");
}

/// The Go binaries' single-dash flag spelling, as existing Kubernetes manifests write it
/// (`-relay_address=…`, `-server_name x`), starts both programs; a request goes through,
/// and `/metrics` then has the reference's `broker_requests` line in the text format.
#[test]
fn go_single_dash_flags_start_server_and_client() {
    let dir = temp_dir("go-flags");
    let (_backend, backend_port) = start_backend(&dir);
    let (_server, relay_port) =
        start_server(&["-block_size=10240", "-inactive_request_timeout", "60s"]);
    let _client = Killed(
        Command::new(RELAY)
            .args([
                "http",
                "client",
                "-backend_scheme=http",
                "-relay_scheme",
                "http",
                "-disable_auth_for_remote",
                "-log_level=4",
                "-server_name",
                "go-robot",
            ])
            .arg(format!("-backend_address=127.0.0.1:{backend_port}"))
            .arg(format!("-relay_address=127.0.0.1:{relay_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for_client(relay_port, "go-robot");
    assert_eq!(
        curl_text(&[&format!("http://127.0.0.1:{relay_port}/client/go-robot/")]),
        "Hello"
    );
    let metrics = curl_text(&[
        "-H",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        &format!("http://127.0.0.1:{relay_port}/metrics"),
    ]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("broker_requests{method=\"client\",backend=\"go-robot\"} ")),
        "{metrics}"
    );
}
