//! Property test of the fan-out over real sockets (issue 17, "Correctness"): one writer
//! publishes a drawn sequence of text and binary messages (8 bytes to just over 64 KiB,
//! the 16-bit length boundary included) through a real relay to readers that stop reading
//! at drawn points and resume at others (a reader never paused is a fast one). The relay's
//! queues are small (4 messages), so bursts and pauses make it drop. For every reader, once
//! everything is published:
//!
//! - it gets every message it was not counted as dropping (`/status` drops): received +
//!   dropped = published;
//! - in publish order, with no duplicates, each one intact (sequence number and padding
//!   checked byte for byte, so a frame cut short or a partial write finished wrongly fails).
//!
//! This is the guard for the write path itself (direct writes, partial writes finished by
//! the reader's task); `fanout_property.rs` checks the same rules on the hub's types alone.
//! One server serves every case (a topic each); cases are bounded to keep it to seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use common::{access_uri, claims, get, round_trip, token, Ws};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use relay_auth::Claims;
use relay_server::RunningServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, USER_AGENT};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// How long a case waits for anything.
const WAIT: Duration = Duration::from_secs(10);

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// The writer publishes a message of `len` bytes (at least 8).
    Publish { len: usize, text: bool },
    /// Reader `reader % readers` stops reading.
    Pause { reader: usize },
    /// Reader `reader % readers` reads again.
    Resume { reader: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        3 => 8usize..300,
        2 => 300usize..70_000,
        1 => Just(65_535usize),
        1 => Just(65_536usize),
    ];
    prop_oneof![
        8 => (len, any::<bool>()).prop_map(|(len, text)| Op::Publish { len, text }),
        1 => (0usize..8).prop_map(|reader| Op::Pause { reader }),
        1 => (0usize..8).prop_map(|reader| Op::Resume { reader }),
    ]
}

/// The runtime and the relay every case uses: small queues (4 messages or 256 KiB, bursts
/// of small messages up to 16 KiB), and never "too slow" (a paused reader only drops).
fn server() -> &'static (tokio::runtime::Runtime, RunningServer) {
    static SERVER: OnceLock<(tokio::runtime::Runtime, RunningServer)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(common::start(|cfg| {
            cfg.queue_messages = 4;
            cfg.queue_bytes = 256 * 1024;
            cfg.queue_burst_bytes = 16 * 1024;
            cfg.slow_reader_timeout = Duration::from_secs(3600);
        }));
        (runtime, server)
    })
}

/// The message with sequence number `seq`: `len` bytes starting with `seq` (8 hex digits in
/// text, 8 little-endian bytes in binary), padded with bytes that depend on `seq` and the
/// position.
fn message(seq: u64, len: usize, text: bool) -> Message {
    if text {
        let mut s = format!("{seq:08x}");
        s.extend((8..len).map(|i| text_pad(seq, i)));
        Message::text(s)
    } else {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend((8..len).map(|i| binary_pad(seq, i)));
        Message::Binary(Bytes::from(b))
    }
}

fn text_pad(seq: u64, i: usize) -> char {
    char::from(b'a' + ((seq as usize + i) % 26) as u8)
}

fn binary_pad(seq: u64, i: usize) -> u8 {
    (seq as usize)
        .wrapping_mul(7)
        .wrapping_add(i.wrapping_mul(131)) as u8
}

/// The sequence number of a received message, or why it is not one the writer sent.
fn check(message: &Message) -> Result<u64, String> {
    match message {
        Message::Text(t) => {
            let t = t.as_str();
            let seq = t
                .get(..8)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "text without a sequence number: {:?}",
                        &t[..t.len().min(16)]
                    )
                })?;
            if t.char_indices().skip(8).all(|(i, c)| c == text_pad(seq, i)) {
                Ok(seq)
            } else {
                Err(format!("text {seq} ({} bytes) is corrupt", t.len()))
            }
        }
        Message::Binary(b) => {
            let seq = u64::from_le_bytes(
                b.get(..8)
                    .ok_or_else(|| format!("binary of {} bytes", b.len()))?
                    .try_into()
                    .unwrap(),
            );
            if b.iter()
                .enumerate()
                .skip(8)
                .all(|(i, &c)| c == binary_pad(seq, i))
            {
                Ok(seq)
            } else {
                Err(format!("binary {seq} ({} bytes) is corrupt", b.len()))
            }
        }
        other => Err(format!("unexpected frame {other:?}")),
    }
}

/// A websocket to `uri` introducing itself as `agent` (to find it in `/status`).
async fn dial_as(uri: &str, agent: &str) -> Ws {
    let mut request = uri.into_client_request().unwrap();
    request
        .headers_mut()
        .insert(USER_AGENT, HeaderValue::from_str(agent).unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// What one reader has received so far: sequence numbers in order, or the first problem.
#[derive(Default)]
struct Received {
    seqs: Vec<u64>,
    problem: Option<String>,
}

/// A reader task: reads while not paused, records what it gets.
fn spawn_reader(
    mut ws: Ws,
    mut paused: watch::Receiver<bool>,
    received: Arc<Mutex<Received>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if paused.wait_for(|p| !*p).await.is_err() {
                return; // the case is over
            }
            let frame = tokio::select! {
                frame = ws.next() => frame,
                pause = paused.wait_for(|p| *p) => match pause {
                    Ok(_) => continue,
                    Err(_) => return, // the case is over
                },
            };
            let problem = match frame {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(m)) => match check(&m) {
                    Ok(seq) => {
                        received.lock().unwrap().seqs.push(seq);
                        continue;
                    }
                    Err(problem) => problem,
                },
                Some(Err(e)) => format!("read error: {e}"),
                None => "closed by the relay".to_owned(),
            };
            received.lock().unwrap().problem.get_or_insert(problem);
            return;
        }
    })
}

/// `/status` entries of `topic`: (user agent, drops).
async fn status(server: &RunningServer, topic: &str) -> Vec<(String, u64)> {
    let stats = token(&Claims {
        topic: String::new(),
        ..claims(server, "", &["relay:stats"])
    });
    let (code, body) = get(&format!("{}/status", server.access_url()), Some(&stats)).await;
    assert_eq!(code, 200, "{body}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    entries
        .iter()
        .filter(|e| e["topic"] == topic)
        .map(|e| {
            (
                e["user_agent"].as_str().unwrap_or_default().to_owned(),
                e["drops"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn run_case(server: &RunningServer, readers: usize, ops: Vec<Op>) {
    static CASE: AtomicUsize = AtomicUsize::new(0);
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let topic = format!("fanout-{case}");
    let agent = |i: usize| format!("fanout-{case}-reader-{i}");

    let mut pauses = Vec::new();
    let mut received = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..readers {
        let uri = access_uri(server, &claims(server, &topic, &["read"])).await;
        let ws = dial_as(&uri, &agent(i)).await;
        let (pause, paused) = watch::channel(false);
        let got = Arc::new(Mutex::new(Received::default()));
        tasks.push(spawn_reader(ws, paused, got.clone()));
        pauses.push(pause);
        received.push(got);
    }
    let mut writer: Ws = common::join(server, &topic, &["write"]).await;
    relay_testkit::wait_until_async("the case's connections to join", WAIT, || async {
        status(server, &topic).await.len() == readers + 1
    })
    .await;

    let mut published = 0u64;
    for op in ops {
        match op {
            Op::Publish { len, text } => {
                writer.send(message(published, len, text)).await.unwrap();
                published += 1;
            }
            // The relay has published everything sent so far before the reader pauses or
            // resumes.
            Op::Pause { reader } => {
                round_trip(&mut writer).await;
                pauses[reader % readers].send_replace(true);
            }
            Op::Resume { reader } => {
                round_trip(&mut writer).await;
                pauses[reader % readers].send_replace(false);
            }
        }
    }
    for pause in &pauses {
        pause.send_replace(false);
    }
    // Once the pong is back, every message is published: the drop counts are final.
    round_trip(&mut writer).await;
    let drops = status(server, &topic).await;
    let drops: Vec<u64> = (0..readers)
        .map(|i| {
            drops
                .iter()
                .find(|(a, _)| *a == agent(i))
                .unwrap_or_else(|| panic!("reader {i} is not in /status: {drops:?}"))
                .1
        })
        .collect();

    relay_testkit::wait_until("every reader to get what it did not drop", WAIT, || {
        received.iter().zip(&drops).all(|(r, &d)| {
            let r = r.lock().unwrap();
            r.problem.is_some() || r.seqs.len() as u64 + d >= published
        })
    })
    .await;
    for (i, (r, &dropped)) in received.iter().zip(&drops).enumerate() {
        let r = r.lock().unwrap();
        assert_eq!(r.problem, None, "reader {i}");
        assert!(
            r.seqs.windows(2).all(|w| w[0] < w[1]),
            "reader {i}: out of order or twice: {:?}",
            r.seqs
        );
        assert!(
            r.seqs.iter().all(|&s| s < published),
            "reader {i}: {:?}",
            r.seqs
        );
        assert_eq!(
            r.seqs.len() as u64 + dropped,
            published,
            "reader {i}: received {} + dropped {dropped} != published {published}",
            r.seqs.len()
        );
    }

    let _ = writer.close(None).await;
    for pause in pauses {
        drop(pause); // ends the reader tasks, which drop their sockets
    }
    for task in tasks {
        task.await.unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_reader_gets_what_it_did_not_drop_over_real_sockets(
        readers in 2usize..5,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let (runtime, server) = server();
        runtime.block_on(run_case(server, readers, ops));
    }
}
