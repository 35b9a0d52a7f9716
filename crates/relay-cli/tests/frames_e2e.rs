//! Frames written by the relay decode exactly with an independent client (issue 17,
//! "Correctness"): Python `websockets` (`support/ws_reader.py`, strict about framing) reads
//! what a writer publishes through a real `relay serve`.
//!
//! - Every payload length at a header boundary (0, 125, 126, 65,535, 65,536) and 10 MiB,
//!   as text and as binary: the reader sees the same type, length and SHA-256. 10 MiB is
//!   exactly the default `RELAY_MAX_MESSAGE_BYTES` (the largest message the relay accepts,
//!   left at its default here); one byte more closes the writer and reaches no reader.
//! - The close frames a test can make the relay send a reader, with each code and reason of
//!   `hub::CloseReason`: 4001 (token expired), 4003 (booking denied), 4008 (reader too
//!   slow) and 1001 (shutdown, on SIGTERM). 4009 (no pong) cannot be provoked through a
//!   client that answers pings, and 1009 goes to writers.
//!
//! python3 with `websockets` must be installed (`scripts/test.sh` installs
//! python3-websockets); the tests fail if it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use futures_util::{SinkExt, StreamExt};
use relay_auth::{mint, Claims};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{require, serve, Served, WithoutEnv, INSTALL_HINT, RELAY};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const SECRET: &str = "frames-e2e-secret-of-at-least-32-bytes";
/// The relay's public URLs. It listens on port 0, so they cannot name its real addresses:
/// tokens carry this audience, and the test dials the address the relay printed.
const PUBLIC_ACCESS: &str = "http://relay.test";
const PUBLIC_RELAY: &str = "ws://relay.test";
/// How long the test waits for anything.
const WAIT: Duration = Duration::from_secs(30);
/// The relay's default `RELAY_MAX_MESSAGE_BYTES`: the largest message it accepts.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Every length at a frame-header boundary (7-bit, 16-bit and 64-bit lengths), and the
/// largest message.
const LENGTHS: [usize; 6] = [0, 125, 126, 65_535, 65_536, MAX_MESSAGE];
/// Debian's Python, which python3-websockets installs for (a `python3` earlier on PATH,
/// e.g. pyenv's, may not see it).
const PYTHON: &str = "/usr/bin/python3";
/// The independent reader.
const READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ws_reader.py");

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Fails loudly unless python3 can import `websockets`.
fn require_python_websockets() {
    require(PYTHON, INSTALL_HINT);
    let ok = Command::new(PYTHON)
        .args(["-c", "import websockets"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} cannot import websockets (Debian: python3-websockets); {INSTALL_HINT}"
    );
}

/// `relay serve` on port 0 with the test's secret and public URLs, plus `extra` settings.
fn start_relay(extra: &[(&str, &str)]) -> Served {
    let mut command = Command::new(RELAY);
    command.arg("serve");
    command.without_env(&["RELAY_"]);
    command
        .env("RELAY_AUDIENCE", PUBLIC_ACCESS)
        .env("RELAY_URL", PUBLIC_RELAY)
        .env("RELAY_SECRET", SECRET)
        .env("RELAY_PORT_ACCESS", "0")
        .env("RELAY_PORT_RELAY", "0")
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_LOG_FILE", "stderr")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    serve(&mut command).expect("relay serve starts on port 0")
}

/// A token for `topic` with `scopes`, booking `booking`, valid for `lifetime` seconds.
fn token(topic: &str, scopes: &[&str], booking: &str, lifetime: i64) -> String {
    let claims = Claims {
        booking_id: booking.into(),
        ..Claims::grant(
            "session",
            topic,
            scopes,
            PUBLIC_ACCESS,
            relay_auth::unix_now(),
            lifetime,
        )
    };
    mint(&claims, SECRET.as_bytes())
}

/// The websocket URI the access API hands out for `token`, pointed at the relay's real
/// address.
async fn access_uri(served: &Served, token: &str, topic: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("http://{}/session/{topic}", served.access))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(status.is_success(), "access POST: {status} {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let uri = v["uri"].as_str().unwrap();
    let path = uri
        .strip_prefix(PUBLIC_RELAY)
        .unwrap_or_else(|| panic!("{uri} is not under {PUBLIC_RELAY}"));
    format!("ws://{}{path}", served.relay)
}

/// How many connections `/status` lists on `topic`.
async fn members(served: &Served, topic: &str) -> usize {
    let stats = token("stats", &["read", "relay:stats"], "stats", 300);
    let Ok(response) = reqwest::Client::new()
        .get(format!("http://{}/status", served.access))
        .header("Authorization", stats)
        .send()
        .await
    else {
        return 0;
    };
    let body = response.text().await.unwrap_or_default();
    body.matches(&format!("\"{topic}\"")).count()
}

/// Waits until `/status` lists `n` connections on `topic`, so that nothing is published
/// before its readers have joined.
async fn wait_for_members(served: &Served, topic: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while members(served, topic).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} did not reach {n} connections within {WAIT:?}"
        );
        tokio::time::sleep(relay_testkit::wait::POLL).await;
    }
}

/// The Python reader on `uri`, and its output lines.
struct PyReader {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PyReader {
    async fn start(uri: &str, extra: &[&str]) -> PyReader {
        let mut child = tokio::process::Command::new(PYTHON)
            .arg(READER)
            .arg(uri)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut reader = PyReader {
            _child: child,
            lines,
        };
        assert_eq!(reader.line("the reader to connect").await, "open");
        reader
    }

    /// The reader's next line.
    async fn line(&mut self, what: &str) -> String {
        match tokio::time::timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("{what}: no line from the Python reader ({other:?})"),
        }
    }

    /// Skips data lines until the close line; returns it.
    async fn close_line(&mut self, what: &str) -> String {
        loop {
            let line = self.line(what).await;
            if !line.starts_with("binary ") && !line.starts_with("text ") {
                return line;
            }
        }
    }
}

/// A writer (tokio-tungstenite, any size) on `topic`.
async fn writer(served: &Served, topic: &str, booking: &str) -> Ws {
    let uri = access_uri(served, &token(topic, &["write"], booking, 300), topic).await;
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    tokio_tungstenite::connect_async_with_config(uri, Some(config), false)
        .await
        .unwrap()
        .0
}

/// A reader on `topic` for booking `booking`, whose token lives `lifetime` seconds.
async fn reader(
    served: &Served,
    topic: &str,
    booking: &str,
    lifetime: i64,
    extra: &[&str],
) -> PyReader {
    let uri = access_uri(served, &token(topic, &["read"], booking, lifetime), topic).await;
    PyReader::start(&uri, extra).await
}

/// `len` bytes that are not all alike (so a shifted or truncated copy has another hash).
fn binary_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 8)) as u8)
        .collect()
}

/// Valid UTF-8 of exactly `len` bytes, with 2-, 3- and 4-byte characters in it.
fn text_payload(len: usize) -> String {
    const PIECES: [&str; 4] = ["relay ", "é", "→", "🎥"];
    let mut text = String::with_capacity(len);
    for piece in PIECES.iter().cycle() {
        if text.len() + piece.len() > len {
            break;
        }
        text.push_str(piece);
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_decodes_every_length_and_type_and_the_shutdown_close() {
    require_python_websockets();
    let mut served = start_relay(&[]);
    let topic = "frames-lengths";
    let mut py = reader(&served, topic, "bk-lengths", 300, &[]).await;
    let mut ws = writer(&served, topic, "bk-lengths").await;
    wait_for_members(&served, topic, 2).await;

    for len in LENGTHS {
        // One at a time, each heard before the next is sent: two 10 MiB messages would not
        // fit one reader's queue (16 MiB) together.
        let text = text_payload(len);
        assert_eq!(text.len(), len);
        let expected = format!("text {len} {}", sha256_hex(text.as_bytes()));
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(py.line(&format!("text of {len} bytes")).await, expected);

        let binary = binary_payload(len);
        let expected = format!("binary {len} {}", sha256_hex(&binary));
        ws.send(Message::binary(binary)).await.unwrap();
        assert_eq!(py.line(&format!("binary of {len} bytes")).await, expected);
    }

    // One byte over the limit: the relay refuses it from the frame header and closes the
    // writer (1009, though the close frame may be lost to a reset as the relay hangs up on
    // the unread rest); no reader hears any of it.
    let _ = ws
        .send(Message::binary(binary_payload(MAX_MESSAGE + 1)))
        .await;
    match tokio::time::timeout(WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Close(frame)))) => {
            let frame = frame.expect("a close frame with a code");
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (1009, "message too big")
            );
        }
        Ok(Some(Ok(other))) => panic!("the writer heard {other:?}"),
        Ok(None | Some(Err(_))) => {} // reset before the close frame was read
        Err(_) => panic!("the writer was not closed within {WAIT:?}"),
    }

    // Shutdown: SIGTERM, and the reader hears 1001 (and nothing else before it).
    let pid = served.process.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        py.line("the shutdown close").await,
        "close 1001 server going away"
    );
    let _ = served.process.0.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_sees_the_expiry_and_deny_close_codes() {
    require_python_websockets();
    let served = start_relay(&[]);
    let topic = "frames-closes";
    // Expiry: a token that lives a few seconds (long enough to be exchanged for a code and
    // used); the relay closes at its `exp`.
    let mut expiring = reader(&served, topic, "bk-expiring", 4, &[]).await;
    let mut denied = reader(&served, topic, "bk-denied", 300, &[]).await;
    wait_for_members(&served, topic, 2).await;

    let admin = mint(
        &Claims {
            booking_id: "admin".into(),
            ..Claims::grant(
                "session",
                "",
                &["relay:admin"],
                PUBLIC_ACCESS,
                relay_auth::unix_now(),
                300,
            )
        },
        SECRET.as_bytes(),
    );
    let exp = relay_auth::unix_now() + 300;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/bids/deny?bid=bk-denied&exp={exp}",
            served.access
        ))
        .header("Authorization", admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(
        denied.line("the deny close").await,
        "close 4003 booking denied"
    );
    assert_eq!(
        expiring.line("the expiry close").await,
        "close 4001 token expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_sees_the_too_slow_close_code() {
    require_python_websockets();
    // Behind for 1 s is too slow. The reader takes 64 KiB every 20 ms (3.2 MB/s), so one
    // batch of 128 queued messages (8 MiB) takes seconds to write: the queue stays behind
    // past the limit, well inside the 10 s write timeout, and the reader keeps reading so
    // the close frame gets through.
    let served = start_relay(&[("RELAY_SLOW_READER_TIMEOUT", "1s")]);
    let topic = "frames-slow";
    let mut py = reader(&served, topic, "bk-slow", 300, &["--delay-ms", "20"]).await;
    let mut ws = writer(&served, topic, "bk-slow").await;
    wait_for_members(&served, topic, 2).await;

    // The writer publishes 64 KiB every 2 ms (ten times what the reader takes) until the
    // reader has heard its close.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let publishing = tokio::spawn(async move {
        let payload = Bytes::from(binary_payload(64 * 1024));
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    if ws.send(Message::Binary(payload.clone())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let close = py.close_line("the too-slow close").await;
    let _ = stop.send(());
    publishing.await.unwrap();
    assert_eq!(close, "close 4008 reader too slow: queue stayed full");
}
