//! Criterion micro-benchmarks of the relay's hot path: fan-out of one message to 1,000
//! subscriber queues through `relay_server::hub`, websocket frame writing (tungstenite, as
//! the relay's writer tasks do), and token verification with `relay_auth::Verifier`.
//! Run: `cargo bench -p relay-bench --bench hot_path`.

#![allow(clippy::unwrap_used)] // test and bench set-up: a failure should stop loudly
mod common;

use axum::extract::ws::Message;
use bytes::Bytes;
use common::Discard;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_server::hub::{Hub, JoinRequest, QueueLimits};
use relay_server::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, WebSocket};

fn member(can_write: bool) -> JoinRequest {
    JoinRequest {
        topic: "video".into(),
        key: "video".into(),
        paired: false,
        booking_id: String::new(),
        scopes: vec![],
        can_read: true,
        can_write,
        expires_at: None,
        user_agent: String::new(),
        remote_addr: String::new(),
    }
}

fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let limits = QueueLimits {
        messages: 128,
        bytes: 16 << 20,
        burst_bytes: 1 << 20,
        slow_reader_timeout: Duration::from_secs(10),
    };
    let hub = Hub::new(limits, Arc::new(Metrics::new()));
    let (writer, _writer_inbox) = hub.join(member(true));
    let mut inboxes: Vec<_> = (0..1000).map(|_| hub.join(member(false))).collect();
    let message = Message::Binary(Bytes::from(vec![0x47u8; 1316 * 7]));
    let mut group = c.benchmark_group("fan_out");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("publish_9212B_to_1000_queues_and_drain", |b| {
        b.iter(|| {
            writer.topic.publish(writer.info.id, &message);
            for (_, inbox) in inboxes.iter_mut() {
                let _ = inbox.queue.try_recv();
            }
        })
    });
    group.finish();
}

fn frame_writing(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_write");
    for size in [64usize, 1316 * 7, 64 * 1024] {
        let payload = Bytes::from(vec![0x47u8; size]);
        let mut ws = WebSocket::from_raw_socket(Discard, Role::Server, None);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("server_binary", size), &size, |b, _| {
            b.iter(|| {
                ws.write(tungstenite::Message::Binary(payload.clone()))
                    .unwrap();
                ws.flush().unwrap();
            })
        });
    }
    group.finish();
}

fn token_verification(c: &mut Criterion) {
    let secret = b"bench-secret";
    let now = 1_700_000_000;
    let claims = relay_auth::Claims {
        topic: "expt00-video".into(),
        prefix: relay_common::connection::ConnectionType::Session
            .as_str()
            .into(),
        scopes: vec!["read".into(), "write".into()],
        aud: relay_auth::Audience::single("https://relay.example.org"),
        exp: Some(now + 3600),
        nbf: Some(now),
        iat: Some(now),
        booking_id: "b-123".into(),
        ..Default::default()
    };
    let token = relay_auth::mint(&claims, secret);
    let verifier = relay_auth::Verifier::new(secret, 0);
    c.bench_function("verify_hs256_session_token", |b| {
        b.iter(|| verifier.verify(&token, now).unwrap())
    });
}

criterion_group!(benches, fan_out, frame_writing, token_verification);
criterion_main!(benches);
