//! One admitted websocket: a reader that publishes to the topic and a writer that drains
//! the connection's queue, pings, and closes with a reason (expiry, deny, too slow,
//! unresponsive, shutdown).
//!
//! Both halves run inside one task, so when it ends every timer, queue and registration of
//! the connection is freed at once (the reference kept expiry timers alive until `exp`).

use crate::hub::{payload_len, CloseReason, Inbox, Membership, Subscriber};
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};

/// Most messages written per flush, so one busy reader cannot hog its task forever.
const MAX_BATCH: usize = 256;

/// Serve an admitted connection until it closes.
pub async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    membership: Membership,
    inbox: Inbox,
    expires_at: Option<Instant>,
) {
    let (sink, stream) = socket.split();
    let started = Instant::now();
    let subscriber = inbox.subscriber.clone();
    let mut reader = std::pin::pin!(read_loop(stream, &state, &membership, &subscriber));
    let mut writer = std::pin::pin!(write_loop(sink, &state, &membership, inbox, expires_at));
    let reason = tokio::select! {
        _ = &mut reader => (&mut writer).await,
        reason = &mut writer => reason,
    };
    let info = &membership.info;
    tracing::info!(
        reason = ?reason,
        seconds = started.elapsed().as_secs_f64(),
        sent = info.tx.messages.load(std::sync::atomic::Ordering::Relaxed),
        received = info.rx.messages.load(std::sync::atomic::Ordering::Relaxed),
        dropped = info.drops.load(std::sync::atomic::Ordering::Relaxed),
        "connection closed"
    );
}

/// Read frames until the peer goes away or stays silent past the pong timeout; publish
/// data frames when the connection may write. Asks the writer to close when it ends.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    state: &AppState,
    membership: &Membership,
    subscriber: &Subscriber,
) {
    let info = &membership.info;
    let reason = loop {
        // Any frame proves the peer is alive; the reference only counted pongs, which
        // every client also sends, so this is strictly more forgiving.
        let frame = match timeout(state.config.pong_timeout, stream.next()).await {
            Err(_) => break CloseReason::Unresponsive,
            Ok(None | Some(Err(_))) => break CloseReason::PeerGone,
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(_) | Message::Binary(_) => {
                if !info.can_write {
                    continue;
                }
                let len = payload_len(&frame);
                info.tx.record(len, info.connected_instant.elapsed());
                state.metrics.messages_in.inc();
                state.metrics.bytes_in.inc_by(len as u64);
                membership.topic.publish(&state.hub, info.id, &frame);
            }
            Message::Close(_) => break CloseReason::PeerGone,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    };
    subscriber.close(reason);
}

/// Write queued messages (many frames, one flush), ping, and close with a reason.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    state: &AppState,
    membership: &Membership,
    inbox: Inbox,
    expires_at: Option<Instant>,
) -> CloseReason {
    let Inbox { mut messages, mut close, subscriber } = inbox;
    let cfg = &state.config;
    let mut ping = interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Far enough to never fire, but still a valid instant.
    let expiry = sleep_until(expires_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)));
    tokio::pin!(expiry);
    let info = &membership.info;

    let reason = loop {
        tokio::select! {
            biased;
            changed = close.changed() => {
                match (changed, *close.borrow()) {
                    (Ok(()), Some(reason)) => break reason,
                    (Ok(()), None) => continue,
                    (Err(_), _) => break CloseReason::PeerGone,
                }
            }
            () = &mut expiry => break CloseReason::Expired,
            _ = ping.tick() => {
                let sent = timeout(cfg.write_timeout, sink.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break CloseReason::PeerGone;
                }
            }
            first = messages.recv() => {
                let Some(first) = first else { break CloseReason::PeerGone };
                let batch = drain_batch(first, &mut messages, &subscriber, cfg.coalesce_binary);
                let written = timeout(cfg.write_timeout, write_batch(&mut sink, &batch)).await;
                if !matches!(written, Ok(Ok(()))) {
                    break CloseReason::PeerGone;
                }
                let since_connect = info.connected_instant.elapsed();
                for m in &batch {
                    let len = payload_len(m);
                    info.rx.record(len, since_connect);
                    state.metrics.messages_out.inc();
                    state.metrics.bytes_out.inc_by(len as u64);
                }
            }
        }
    };
    if reason != CloseReason::PeerGone {
        let (code, text) = reason.close_frame();
        let frame = Message::Close(Some(CloseFrame { code, reason: text.into() }));
        let _ = timeout(cfg.write_timeout, sink.send(frame)).await;
    }
    let _ = timeout(cfg.write_timeout, sink.close()).await;
    reason
}

/// Take `first` and everything already queued (up to [`MAX_BATCH`]); with coalescing on,
/// runs of binary messages become one frame, as the reference did for video.
fn drain_batch(
    first: Message,
    messages: &mut tokio::sync::mpsc::Receiver<Message>,
    subscriber: &Subscriber,
    coalesce_binary: bool,
) -> Vec<Message> {
    subscriber.taken(&first);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(next) = messages.try_recv() else { break };
        subscriber.taken(&next);
        batch.push(next);
    }
    if !coalesce_binary || batch.len() < 2 {
        return batch;
    }
    let mut merged: Vec<Message> = Vec::with_capacity(batch.len());
    let mut run = BytesMut::new();
    for m in batch {
        match m {
            Message::Binary(b) => run.extend_from_slice(&b),
            other => {
                if !run.is_empty() {
                    merged.push(Message::Binary(run.split().freeze()));
                }
                merged.push(other);
            }
        }
    }
    if !run.is_empty() {
        merged.push(Message::Binary(run.freeze()));
    }
    merged
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    batch: &[Message],
) -> Result<(), axum::Error> {
    for m in batch {
        sink.feed(m.clone()).await?;
    }
    sink.flush().await
}
