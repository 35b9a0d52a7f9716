//! `RELAY_DIRECT_WRITES` (on by default): frames written straight from the publishing
//! task keep every reader's order, a reader that stops reading falls back to its queue
//! (drops counted) without holding anyone up, and it gets the rest in order when it
//! resumes. (Every crossbar test also runs with the setting on:
//! `RELAY_DIRECT_WRITES=true cargo test -p relay-server --test crossbar`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use bytes::Bytes;
use common::*;
use futures_util::SinkExt;
use relay_server::RunningServer;
use relay_testkit::wait_until;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Message `i`: small text, or binary of sizes around the header's length forms and far
/// beyond a socket write, each carrying `i`.
fn message(i: u32) -> Message {
    let size = match i % 4 {
        0 => return Message::text(format!("{i:08}")),
        1 => 70_000,
        2 => 126,
        _ => 200_003,
    };
    let mut payload = vec![(i % 251) as u8; size];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    Message::Binary(Bytes::from(payload))
}

/// The sequence number a frame carries, checking its whole payload.
fn sequence(m: &Message) -> u32 {
    match m {
        Message::Text(t) => {
            let i: u32 = t.as_str().parse().expect("a sequence number");
            assert_eq!(m, &message(i));
            i
        }
        Message::Binary(b) => {
            let i = u32::from_be_bytes(b[..4].try_into().unwrap());
            assert!(m == &message(i), "payload of message {i} intact");
            i
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

/// A relay writing directly whose queues hold 8 messages and that drops, never
/// disconnects, for the life of a test.
async fn start_with_small_queues() -> RunningServer {
    start(|c| {
        c.direct_writes = true;
        c.queue_messages = 8;
        c.queue_burst_bytes = 0;
        c.slow_reader_timeout = Duration::from_secs(3600);
    })
    .await
}

#[tokio::test]
async fn a_stalled_reader_keeps_its_order_and_holds_up_nobody() {
    let s = start_with_small_queues().await;
    let mut writer = join(&s, "mix", &["write"]).await;
    let mut fast = join(&s, "mix", &["read"]).await;
    let mut stalled = join(&s, "mix", &["read"]).await;
    wait_until("members", WAIT, || s.connection_count() == 4).await;
    assert_eq!(
        s.direct_connection_count(),
        3,
        "every relay connection is direct"
    );

    // ~27 MiB: far more than the stalled reader's socket buffers plus its 8-message queue.
    let total: u32 = 400;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u32);
    let reader = tokio::spawn(async move {
        for expected in 0..total {
            let m = next_frame(&mut fast, WAIT).await.expect("a frame");
            assert_eq!(
                sequence(&m),
                expected,
                "the fast reader gets every frame in order"
            );
            progress_tx.send_replace(expected + 1);
        }
        fast
    });
    for i in 0..total {
        // At most 4 frames ahead of the fast reader, so that its queue never fills.
        progress
            .wait_for(|got| got + 4 >= i)
            .await
            .expect("fast reader alive");
        writer.send(message(i)).await.unwrap();
    }
    let _fast = reader.await.unwrap();
    // Everything the writer sent has been published once this returns.
    round_trip(&mut writer).await;

    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    let dropped = metric(&metrics, "relay_drops_total");
    assert!(dropped > 0, "the stalled reader's queue filled: {metrics}");
    assert!(u64::from(total) > dropped, "{metrics}");
    assert_eq!(metric(&metrics, "relay_slow_reader_disconnects_total"), 0);

    // Resumed: a gap-free prefix in order (what was written directly, then what was
    // queued behind it), exactly as many frames as were not dropped.
    let expected = total - u32::try_from(dropped).unwrap();
    for want in 0..expected {
        let m = next_frame(&mut stalled, WAIT).await.expect("a frame");
        assert_eq!(sequence(&m), want, "the stalled reader's order is kept");
    }
    // Caught up: the next message is written directly again, after everything else.
    writer.send(Message::text("after")).await.unwrap();
    assert_eq!(
        next_frame(&mut stalled, WAIT).await,
        Some(Message::text("after"))
    );
    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    assert_eq!(metric(&metrics, "relay_drops_total"), dropped);
}

/// A reader that stalls while the publisher sends far more than its socket holds, then
/// catches up, several times over: whatever mix of direct writes, half-written frames
/// finished by its task and queued frames it got, what it receives is in order, without
/// duplicates, and all but what was counted as dropped; once it has caught up, frames are
/// written directly again.
// Several threads: publishers and the reader's task really run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_reader_that_stalls_and_catches_up_gets_every_undropped_frame_in_order() {
    let s = start_with_small_queues().await;
    let mut writer = join(&s, "stalls", &["write"]).await;
    let uri = access_uri(&s, &claims(&s, "stalls", &["read"])).await;
    let mut reader = dial_with_small_receive_buffer(&uri).await;
    wait_until("members", WAIT, || s.connection_count() == 3).await;
    let metrics_url = format!("{}/metrics", s.access_url());
    let drops = || async {
        let (_, metrics) = get(&metrics_url, None).await;
        u32::try_from(metric(&metrics, "relay_drops_total")).unwrap()
    };

    let per_round = 150u32; // ~10 MiB: more than the socket buffers on both ends
    let mut sent = 0u32;
    let mut received = 0u32;
    let mut last: Option<u32> = None;
    for round in 0..4 {
        for _ in 0..per_round {
            writer.send(message(sent)).await.unwrap();
            sent += 1;
        }
        // Everything sent has been published (written, queued or dropped) from here.
        round_trip(&mut writer).await;
        let mut dropped = drops().await;
        assert!(dropped > 0, "round {round}: the reader's queue filled");
        // Catching up, with a publish every few frames while the relay drains the queue.
        while received + dropped < sent {
            let m = next_frame(&mut reader, WAIT).await.expect("a frame");
            let seq = sequence(&m);
            assert!(
                last.is_none_or(|l| seq > l),
                "in order, no duplicates: {last:?} then {seq}"
            );
            last = Some(seq);
            received += 1;
            if received.is_multiple_of(3) {
                writer.send(message(sent)).await.unwrap();
                sent += 1;
                round_trip(&mut writer).await;
                dropped = drops().await;
            }
        }
    }
    assert!(
        received > 4 * 8,
        "more than the queued frames arrived: {received}"
    );
    writer.send(Message::text("after")).await.unwrap();
    assert_eq!(
        next_frame(&mut reader, WAIT).await,
        Some(Message::text("after")),
        "nothing but the undropped frames came before"
    );
}

/// A websocket client whose socket's receive buffer is small (set before connecting, so
/// the window stays small), so the relay's writes to it block early.
async fn dial_with_small_receive_buffer(uri: &str) -> Ws {
    let url = url_of(uri);
    let addr = tokio::net::lookup_host(url).await.unwrap().next().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(uri, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket opens");
    ws
}

/// `host:port` of a `ws://` URI.
fn url_of(uri: &str) -> &str {
    let rest = uri.strip_prefix("ws://").expect("a ws:// uri");
    rest.split('/').next().unwrap()
}

/// The host's control connection, the admin's end of a shell pair (`/shell/h`) and the uri
/// the host is told to dial for its end; `early` is sent by the admin before that end joins.
async fn shell_pair(s: &RunningServer, early: &str) -> (Ws, Ws, String) {
    let access = |scope: &'static str| {
        let url = format!("{}/shell/h", s.access_url());
        let token = token(&shell_claims(s, "h", scope));
        async move {
            let (status, body) = post(&url, Some(&token)).await;
            assert_eq!(status, 200, "access refused: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["uri"].as_str().unwrap().to_owned()
        }
    };
    let mut host = dial(&access("host").await).await;
    wait_until("the host's connection", WAIT, || s.connection_count() == 2).await;
    let mut admin = dial(&access("client").await).await;
    send_text(&mut admin, early).await;
    let host_end_uri = match next_action(&mut host).await {
        relay_common::action::ConnectionAction::Connect { uri, .. } => uri,
        other => panic!("expected a connect action, got {other:?}"),
    };
    (host, admin, host_end_uri)
}

/// A shell pair is written directly at both ends, the admin's gated end included: what the
/// admin sends before the host's end has joined waits for it and is not lost, and the
/// host's banner reaches the admin.
#[tokio::test]
async fn a_shell_pair_is_written_directly_and_the_admins_early_bytes_wait_for_the_host() {
    let s = start(|_| {}).await;
    let (_host, mut admin, host_end_uri) = shell_pair(&s, "early").await;
    let mut host_end = dial(&host_end_uri).await;
    assert_eq!(
        next_frame(&mut host_end, WAIT).await,
        Some(Message::text("early")),
        "held until the host's end joined, then delivered"
    );
    send_text(&mut host_end, "banner").await;
    assert_eq!(
        next_frame(&mut admin, WAIT).await,
        Some(Message::text("banner"))
    );
    assert_eq!(
        s.direct_connection_count(),
        3,
        "the host's control connection and both ends of the pair are direct"
    );
}

/// A shell tunnel is a byte stream: when the host's end reads slowly, the relay stops
/// reading from the admin (back-pressure through TCP) instead of dropping, so every message
/// arrives, in order, and nothing is counted as dropped, although the queues hold only 8.
#[tokio::test]
async fn a_slow_shell_end_slows_the_sender_down_and_loses_nothing() {
    let s = start_with_small_queues().await;
    let (_host, mut admin, host_end_uri) = shell_pair(&s, "early").await;
    let mut host_end = dial_with_small_receive_buffer(&host_end_uri).await;
    assert_eq!(
        next_frame(&mut host_end, WAIT).await,
        Some(Message::text("early"))
    );
    // ~25 MiB, far more than the socket buffers and the 8-message queue hold.
    let total: u32 = 250;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            admin.send(message(i)).await.unwrap();
        }
        admin
    });
    for want in 0..total {
        let m = next_frame(&mut host_end, WAIT).await.expect("a frame");
        assert_eq!(sequence(&m), want, "every message, in order");
        // A reader far slower than the sender.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _admin = sender.await.unwrap();
    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    assert_eq!(metric(&metrics, "relay_drops_total"), 0, "{metrics}");
}
