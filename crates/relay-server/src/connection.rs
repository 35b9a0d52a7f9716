//! One admitted websocket: a reader that publishes to the topic and a writer that drains
//! the connection's queue, pings, and closes with a reason (expiry, deny, too slow,
//! unresponsive, shutdown).
//!
//! Both halves run inside one task, so when it ends every timer, queue and registration of
//! the connection is freed at once (the reference kept expiry timers alive until `exp`).

use crate::direct::{record_written, DirectWriter, Frame, Next, Outgoing, FRAMES_PER_WRITE};
use crate::hub::{payload_len, CloseReason, Inbox, Membership, Subscriber};
use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::BytesMut;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{interval_at, sleep_until, timeout, Instant, MissedTickBehavior};

/// Most messages written per flush, so one busy reader cannot hog its task forever.
const MAX_BATCH: usize = 256;
/// Batch slots a directly written connection keeps once its queue has drained; a bigger
/// buffer is given back, so a burst does not stay in an idle connection's memory.
const KEPT_BATCH_SLOTS: usize = 16;
/// How long the close frame may take to write.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How an admitted connection behaves beyond its scopes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionOptions {
    /// Close with 4001 at this instant (the token's `exp`).
    pub expires_at: Option<Instant>,
    /// Hold back what this connection sends until the other end of its pair has joined
    /// (or something has been written to it): the admin's early bytes must not be lost
    /// while the host is still dialling in (shell spec §1.6.5). Unlike the reference, a
    /// client-speaks-first protocol does not wait for a first byte that never comes.
    pub gate_until_first_write: bool,
}

/// An upgrade with the server's message, frame and read-buffer sizes: every websocket the
/// server accepts, on any route, gets the same limits.
pub fn with_size_limits(
    upgrade: axum::extract::ws::WebSocketUpgrade,
    cfg: &crate::config::ServerConfig,
) -> axum::extract::ws::WebSocketUpgrade {
    // Plain relay connections with direct writes are read through `SharedTcp`, which
    // reads ahead while a big message arrives: the reader's own buffer can stay small.
    let read_buffer = if cfg.direct_writes && cfg.tls.is_none() {
        cfg.read_buffer_bytes.min(crate::direct::DIRECT_READ_BUFFER)
    } else {
        cfg.read_buffer_bytes
    };
    upgrade
        .max_message_size(cfg.max_message_bytes)
        .max_frame_size(cfg.max_message_bytes)
        .read_buffer_size(read_buffer)
}

/// Serve an admitted connection until it closes.
pub async fn serve(
    socket: WebSocket,
    state: Arc<AppState>,
    membership: Membership,
    inbox: Inbox,
    options: ConnectionOptions,
) {
    let (sink, mut stream) = socket.split();
    let started = Instant::now();
    let subscriber = inbox.subscriber.clone();
    let (gate_open, gate) = watch::channel(!options.gate_until_first_write);
    let mut reader = std::pin::pin!(read_loop(
        &mut stream,
        &state,
        &membership,
        &subscriber,
        gate,
        None
    ));
    let mut writer = std::pin::pin!(write_loop(
        sink,
        &state,
        &membership,
        inbox,
        options.expires_at,
        gate_open
    ));
    let reason = tokio::select! {
        _ = &mut reader => (&mut writer).await,
        reason = &mut writer => reason,
    };
    log_closed(&reason, started, &membership, &subscriber, false);
}

/// Serve an admitted connection whose frames are written directly ([`crate::direct`])
/// until it closes. `socket` is only read from: its writes are discarded.
pub async fn serve_direct(
    socket: &mut WebSocket,
    direct: Arc<DirectWriter>,
    state: Arc<AppState>,
    membership: Membership,
    inbox: Inbox,
    options: ConnectionOptions,
) {
    let started = Instant::now();
    let subscriber = inbox.subscriber.clone();
    subscriber.write_directly(direct.clone());
    // A gated connection's gate opens once something is written to it; the sender of an
    // open gate is kept for as long as the reader runs.
    let (_open_gate, open) = watch::channel(true);
    let gate = direct.first_write().unwrap_or(open);
    let mut reader = std::pin::pin!(read_loop(
        socket,
        &state,
        &membership,
        &subscriber,
        gate,
        Some(&direct)
    ));
    let mut writer = std::pin::pin!(direct_write_loop(
        &direct,
        &state,
        &membership,
        inbox,
        options.expires_at
    ));
    let reason = tokio::select! {
        _ = &mut reader => (&mut writer).await,
        reason = &mut writer => reason,
    };
    log_closed(&reason, started, &membership, &subscriber, true);
}

/// The one line a connection leaves in the log when it closes.
fn log_closed(
    reason: &CloseReason,
    started: Instant,
    membership: &Membership,
    subscriber: &Subscriber,
    direct: bool,
) {
    let info = &membership.info;
    tracing::info!(
        reason = ?reason,
        seconds = started.elapsed().as_secs_f64(),
        sent = info.tx.messages.load(std::sync::atomic::Ordering::Relaxed),
        received = info.rx.messages.load(std::sync::atomic::Ordering::Relaxed),
        dropped = subscriber.drops(),
        direct,
        "connection closed"
    );
}

/// Read frames until the peer goes away or stays silent past the pong timeout; publish
/// data frames when the connection may write. Asks the writer to close when it ends.
async fn read_loop<S>(
    // Borrowed, not moved: a moved stream would take its size twice in this future, and
    // every idle connection keeps one (B4 memory per connection).
    stream: &mut S,
    state: &AppState,
    membership: &Membership,
    subscriber: &Subscriber,
    mut gate: watch::Receiver<bool>,
    direct: Option<&DirectWriter>,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let info = &membership.info;
    let reason = loop {
        // Any frame proves the peer is alive; the reference only counted pongs, which
        // every client also sends, so this is strictly more forgiving.
        let frame = match timeout(state.config.pong_timeout, stream.next()).await {
            Err(_) => break CloseReason::Unresponsive,
            Ok(None) => break CloseReason::PeerGone,
            Ok(Some(Err(e))) => break read_error_reason(e),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Message::Text(_) | Message::Binary(_) => {
                if !info.can_write {
                    continue;
                }
                if !*gate.borrow() {
                    // Open once the other end has joined the pair (so nothing is lost) or
                    // has spoken (sshd's banner).
                    // Boxed: a rare wait, kept out of every connection's future.
                    let opened = Box::pin(timeout(state.config.pong_timeout, async {
                        tokio::select! {
                            _ = gate.wait_for(|open| *open) => {}
                            () = membership.topic.wait_for_members(2) => {}
                        }
                    }))
                    .await;
                    if opened.is_err() {
                        break CloseReason::Unresponsive;
                    }
                }
                let len = payload_len(&frame);
                info.tx.record(len, info.connected_instant.elapsed());
                state.metrics.messages_in.inc();
                state.metrics.bytes_in.inc_by(len as u64);
                membership.topic.publish(info.id, &frame);
                if let Some(cluster) = &state.cluster {
                    cluster.forward(&membership.topic, info.id, &frame);
                }
                // A pair's byte stream: read on only once the other end has room.
                let full = membership.topic.full_readers(info.id);
                if !full.is_empty() {
                    // Boxed: a rare wait, kept out of every connection's future.
                    Box::pin(crate::hub::wait_for_room(full)).await;
                }
            }
            Message::Close(frame) => {
                if let Some(direct) = direct {
                    direct.peer_closed(frame.map(|f| f.code));
                }
                break CloseReason::PeerGone;
            }
            Message::Ping(payload) => {
                // tungstenite's own answer is discarded on a directly written connection.
                if let Some(direct) = direct {
                    direct.pong(payload);
                }
            }
            Message::Pong(_) => {}
        }
    };
    let _ = subscriber.close(reason);
}

/// A message over the size limit gets close code 1009; any other read error means the
/// peer is gone.
fn read_error_reason(error: axum::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    let inner = error.into_inner();
    match inner.downcast_ref::<Error>() {
        Some(Error::Capacity(CapacityError::MessageTooLong { .. })) => CloseReason::TooBig,
        _ => CloseReason::PeerGone,
    }
}

/// Write queued messages (many frames, one flush), ping, and close with a reason.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    state: &AppState,
    membership: &Membership,
    inbox: Inbox,
    expires_at: Option<Instant>,
    gate_open: watch::Sender<bool>,
) -> CloseReason {
    let Inbox {
        mut queue,
        mut close,
        subscriber,
    } = inbox;
    let cfg = &state.config;
    let mut ping = interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Far enough to never fire, but still a valid instant.
    let expiry = sleep_until(
        expires_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    tokio::pin!(expiry);
    let info = &membership.info;
    // One batch buffer per connection, reused: no allocation per message on the hot path.
    let mut batch: Vec<Message> = Vec::new();
    // Created once: a fresh wait on the close signal per message would register and
    // unregister a waiter under the watch channel's lock every time.
    let closed = closing(&mut close);
    tokio::pin!(closed);

    let reason = loop {
        tokio::select! {
            biased;
            reason = &mut closed => break reason,
            () = &mut expiry => break CloseReason::Expired,
            _ = ping.tick() => {
                let sent = timeout(cfg.write_timeout, sink.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break CloseReason::PeerGone;
                }
            }
            taken = queue.recv_batch(&mut batch, MAX_BATCH) => {
                if taken == 0 {
                    break CloseReason::PeerGone;
                }
                if cfg.coalesce_binary {
                    coalesce_binary(&mut batch);
                }
                let written = {
                    let mut write = std::pin::pin!(write_batch(&mut sink, &batch));
                    // Most writes complete at once; only a write that would block arms the
                    // timers (a reader stuck mid-write must still notice deny, expiry or
                    // "too slow").
                    let at_once = tokio::select! {
                        biased;
                        written = &mut write => Some(written),
                        () = std::future::ready(()) => None,
                    };
                    match at_once {
                        Some(written) => Ok(written),
                        None => tokio::select! {
                            written = timeout(cfg.write_timeout, &mut write) => written,
                            reason = &mut closed => break reason,
                            () = &mut expiry => break CloseReason::Expired,
                            () = queue.stays_behind() => {
                                subscriber.close_as_too_slow(&state.metrics);
                                break CloseReason::TooSlow;
                            }
                        },
                    }
                };
                if !matches!(written, Ok(Ok(()))) {
                    break CloseReason::PeerGone;
                }
                gate_open.send_if_modified(|open| !std::mem::replace(open, true));
                let since_connect = info.connected_instant.elapsed();
                for m in batch.drain(..) {
                    let len = payload_len(&m);
                    info.rx.record(len, since_connect);
                    state.metrics.messages_out.inc();
                    state.metrics.bytes_out.inc_by(len as u64);
                }
            }
        }
    };
    // A stuck peer must not hold the connection open for long just to hear why it closes.
    let close_timeout = cfg.write_timeout.min(CLOSE_TIMEOUT);
    if reason == CloseReason::PeerLeft {
        // The other end of a shell pair said everything before it left: deliver it all.
        loop {
            batch.clear();
            if queue.try_recv_batch(&mut batch, MAX_BATCH) == 0 {
                break;
            }
            if !matches!(
                timeout(cfg.write_timeout, write_batch(&mut sink, &batch)).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
    }
    if reason != CloseReason::PeerGone {
        let (code, text) = reason.close_frame();
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: text.into(),
        }));
        let _ = timeout(close_timeout, sink.send(frame)).await;
    }
    let _ = timeout(close_timeout, sink.close()).await;
    reason
}

/// Resolves with the first close reason anyone sets for this connection.
async fn closing(close: &mut watch::Receiver<Option<CloseReason>>) -> CloseReason {
    match close.wait_for(Option::is_some).await {
        Ok(reason) => reason.unwrap_or(CloseReason::PeerGone),
        Err(_) => CloseReason::PeerGone,
    }
}

/// Merge runs of binary messages in `batch` into one frame each, as the reference did for
/// video.
fn coalesce_binary(batch: &mut Vec<Message>) {
    if batch.len() < 2 {
        return;
    }
    let mut merged: Vec<Message> = Vec::with_capacity(batch.len());
    let mut run = BytesMut::new();
    for m in batch.drain(..) {
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
    batch.append(&mut merged);
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

/// The task side of a directly written connection: finishes frames publishers could not,
/// drains what was queued behind them (many frames per system call), answers pings, pings,
/// and closes with a reason.
async fn direct_write_loop(
    direct: &DirectWriter,
    state: &AppState,
    membership: &Membership,
    inbox: Inbox,
    expires_at: Option<Instant>,
) -> CloseReason {
    let Inbox {
        mut queue,
        mut close,
        subscriber,
    } = inbox;
    let cfg = &state.config;
    let metrics = &*state.metrics;
    let info = &*membership.info;
    let tcp = direct.tcp();
    let count = |frame: &Frame| {
        if frame.is_data() {
            record_written(info, metrics, frame.payload_len());
            direct.wrote_data();
        }
    };
    let mut ping = interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expiry = sleep_until(
        expires_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    tokio::pin!(expiry);
    let closed = closing(&mut close);
    tokio::pin!(closed);
    // The frames being written by this task; kept across a cancelled write, so that a
    // close frame is only ever sent after whole frames.
    let mut outgoing = Outgoing::default();
    // Messages taken off the queue and not written yet, last first.
    let mut taken: Vec<Message> = Vec::new();

    macro_rules! finish {
        () => {
            match outgoing.try_write(tcp, count) {
                Ok(true) => Ok(()),
                Err(_) => Err(CloseReason::PeerGone),
                // Boxed: only a write that would block waits here, so idle connections do
                // not carry this future's state.
                Ok(false) => {
                    Box::pin(finish_writing(
                        &mut outgoing,
                        tcp,
                        count,
                        cfg.write_timeout,
                        closed.as_mut(),
                        expiry.as_mut(),
                        &queue,
                        &subscriber,
                        metrics,
                    ))
                    .await
                }
            }
        };
    }

    let reason = loop {
        let mut ping_now = false;
        tokio::select! {
            biased;
            reason = &mut closed => break reason,
            () = &mut expiry => break CloseReason::Expired,
            _ = ping.tick() => ping_now = true,
            () = direct.wake.notified() => {}
        }
        // Own the write side: first what a publisher left half written, then a ping, then
        // the pongs owed and the queue, until nothing is left.
        if let Some(partial) = direct.begin() {
            outgoing.push(partial);
        }
        if ping_now {
            outgoing.push(Frame::new(
                relay_common::frame::OpCode::Ping,
                Default::default(),
            ));
        }
        if let Err(reason) = finish!() {
            break reason;
        }
        let drained = loop {
            // The queue is taken a batch at a time, as the queued path does, so that a
            // reader that cannot keep up stays behind (and is closed as too slow) the same
            // way on both paths.
            let Some(next) = direct.next_or_release(|| {
                if taken.is_empty() {
                    queue.try_recv_batch(&mut taken, MAX_BATCH);
                    taken.reverse();
                }
                taken.pop()
            }) else {
                if taken.capacity() > KEPT_BATCH_SLOTS {
                    taken = Vec::new();
                }
                break Ok(());
            };
            match next {
                Next::Control(frame) => outgoing.push(frame),
                Next::Message(message) => {
                    // What else was taken goes out in the same system call.
                    let mut next = Some(message);
                    while let Some(message) = next {
                        if let Some(frame) = Frame::of_message(&message) {
                            outgoing.push(frame);
                        }
                        next = (outgoing.len() < FRAMES_PER_WRITE)
                            .then(|| taken.pop())
                            .flatten();
                    }
                }
            }
            if let Err(reason) = finish!() {
                break Err(reason);
            }
        };
        if let Err(reason) = drained {
            break reason;
        }
    };
    // From here on nobody writes directly; a frame a publisher left half written is
    // finished first (only then may a close frame follow).
    let (partial, peer_close) = direct.close();
    if outgoing.is_empty() {
        if let Some(partial) = partial {
            outgoing.push(partial);
        }
    }
    if reason != CloseReason::PeerLeft {
        outgoing.keep_begun();
    }
    let close_timeout = cfg.write_timeout.min(CLOSE_TIMEOUT);
    let mut whole = matches!(
        timeout(close_timeout, outgoing.write(tcp, count)).await,
        Ok(Ok(()))
    );
    if whole && reason == CloseReason::PeerLeft {
        // The other end of a shell pair said everything before it left: deliver it all.
        while let Some(message) = taken.pop().or_else(|| queue.try_recv()) {
            if let Some(frame) = Frame::of_message(&message) {
                outgoing.push(frame);
            }
            if !matches!(
                timeout(cfg.write_timeout, outgoing.write(tcp, count)).await,
                Ok(Ok(()))
            ) {
                whole = false;
                break;
            }
        }
    }
    let close_frame = if reason != CloseReason::PeerGone {
        let (code, text) = reason.close_frame();
        Some(Frame::close(code, text))
    } else {
        // Echo the peer's close, as tungstenite does on the queued path.
        peer_close.map(|code| match code {
            Some(code) => Frame::close(code, ""),
            None => Frame::new(relay_common::frame::OpCode::Close, Default::default()),
        })
    };
    if let (true, Some(frame)) = (whole, close_frame) {
        outgoing.push(frame);
        let _ = timeout(close_timeout, outgoing.write(tcp, count)).await;
    }
    reason
}

/// Writes `outgoing` to the end, counting each frame with `count`: a write that would block
/// races the close signal, expiry, the write timeout and the slow-reader clock, as the
/// queued path does. On an error `outgoing` keeps what is left.
#[allow(clippy::too_many_arguments)]
async fn finish_writing<C: std::future::Future<Output = CloseReason>>(
    outgoing: &mut Outgoing,
    tcp: &tokio::net::TcpStream,
    count: impl FnMut(&Frame),
    write_timeout: Duration,
    closed: std::pin::Pin<&mut C>,
    expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    queue: &relay_common::queue::QueueReader<Message>,
    subscriber: &Subscriber,
    metrics: &crate::metrics::Metrics,
) -> Result<(), CloseReason> {
    tokio::select! {
        written = timeout(write_timeout, outgoing.write(tcp, count)) => {
            if matches!(written, Ok(Ok(()))) {
                Ok(())
            } else {
                Err(CloseReason::PeerGone)
            }
        }
        reason = closed => Err(reason),
        () = expiry => Err(CloseReason::Expired),
        () = queue.stays_behind() => {
            subscriber.close_as_too_slow(metrics);
            Err(CloseReason::TooSlow)
        }
    }
}
