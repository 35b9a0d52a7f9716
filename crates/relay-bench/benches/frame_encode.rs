//! Criterion micro-benchmark of what it costs, per reader per message, to get one binary
//! message ready for a reader's socket (issue 17):
//!
//! - `tungstenite_frame_copy`: today's cost: tungstenite encodes the frame into its write
//!   buffer, copying the payload (`Frame::format` into a reused `Vec`).
//! - `tungstenite_ws_write`: the same through `WebSocket::write` + `flush` to a socket that
//!   takes everything, as the relay's writer tasks do today (the buffer copy plus
//!   tungstenite's bookkeeping).
//! - `own_header_and_slices`: `relay_common::frame`: encode the 2–10 header bytes and build
//!   the `[header, payload]` `IoSlice` pair for one vectored write, with no copy.
//! - `tokio_websockets_send`: `tokio-websockets` (a server stream, payload shared as
//!   `Bytes`): `send` + `flush` to a socket that takes everything.
//! - `fastwebsockets_write`: `fastwebsockets` (server role, vectored writes on, payload
//!   borrowed): `write_frame` to the same socket.
//! - `own_write_to_socket`: our frame through `write_frame_vectored` to that socket, so
//!   the three writers are compared doing the same thing.
//!
//! Sizes: 1 KiB, 9,212 B (B1's video message) and 64 KiB (B3). The syscall itself is not
//! measured (it is the same for all three).
//! Run: `cargo bench -p relay-bench --bench frame_encode`.

#![allow(clippy::unwrap_used)] // bench set-up: a failure should stop loudly
mod common;

use bytes::Bytes;
use common::{AsyncDiscard, Discard};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::SinkExt;
use relay_common::frame::{frame_slices, write_frame_vectored, FrameHeader, OpCode};
use std::hint::black_box;
use std::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode as TOp};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, WebSocket};

/// Bench `$write` (a future made from the payload `$p`) awaited once per iteration, with
/// all of a sample's iterations inside one runtime entry.
macro_rules! bench_async_writer {
    ($group:expr, $runtime:expr, $name:literal, $size:expr, $payload:expr, |$p:ident| $write:expr) => {
        $group.bench_with_input(BenchmarkId::new($name, $size), $payload, |b, $p| {
            b.iter_custom(|iters| {
                $runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        $write.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    };
}

fn frame_encode(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("frame_encode");
    for size in [1024usize, 1316 * 7, 64 * 1024] {
        let payload = Bytes::from(vec![0x47u8; size]);
        group.throughput(Throughput::Bytes(size as u64));

        let mut out: Vec<u8> = Vec::with_capacity(size + 16);
        group.bench_with_input(
            BenchmarkId::new("tungstenite_frame_copy", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    out.clear();
                    Frame::message(payload.clone(), TOp::Data(Data::Binary), true)
                        .format(&mut out)
                        .unwrap();
                    black_box(&out);
                })
            },
        );

        let mut ws = WebSocket::from_raw_socket(Discard, Role::Server, None);
        group.bench_with_input(
            BenchmarkId::new("tungstenite_ws_write", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    ws.write(tungstenite::Message::Binary(payload.clone()))
                        .unwrap();
                    ws.flush().unwrap();
                })
            },
        );

        group.bench_with_input(
            BenchmarkId::new("own_header_and_slices", size),
            &payload,
            |b, payload| {
                b.iter(|| {
                    let payload = black_box(payload);
                    let header = FrameHeader::for_payload(OpCode::Binary, payload);
                    let slices = frame_slices(&header, payload, 0);
                    black_box(&slices);
                })
            },
        );

        // The async writers, each write awaited to the end (the socket takes it at once).
        let mut tws = tokio_websockets::ServerBuilder::new().serve(AsyncDiscard);
        bench_async_writer!(
            group,
            runtime,
            "tokio_websockets_send",
            size,
            &payload,
            |p| tws.send(tokio_websockets::Message::binary(p.clone()))
        );

        let mut fws =
            fastwebsockets::WebSocket::after_handshake(AsyncDiscard, fastwebsockets::Role::Server);
        fws.set_writev(true);
        bench_async_writer!(
            group,
            runtime,
            "fastwebsockets_write",
            size,
            &payload,
            |p| fws.write_frame(fastwebsockets::Frame::binary(
                fastwebsockets::Payload::Borrowed(p)
            ))
        );

        let mut sink = AsyncDiscard;
        bench_async_writer!(
            group,
            runtime,
            "own_write_to_socket",
            size,
            &payload,
            |p| async {
                let header = FrameHeader::for_payload(OpCode::Binary, p);
                write_frame_vectored(&mut sink, &header, p).await
            }
        );
    }
    group.finish();
}

criterion_group!(benches, frame_encode);
criterion_main!(benches);
