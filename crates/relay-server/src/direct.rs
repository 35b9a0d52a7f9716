//! Direct frame writes (`RELAY_DIRECT_WRITES`, on by default).
//!
//! With the setting on, the relay port's plain (non-TLS) connections are accepted through
//! [`DirectAcceptor`]: the `TcpStream` is shared ([`SocketShare`]) between hyper (which
//! reads the request, writes the `101` and then hands the upgraded stream to axum and
//! tungstenite for reading) and a [`DirectWriter`] that writes frames itself. A request
//! carries a weak handle to its socket ([`DirectSocket`], a request extension), so the
//! crossbar can find the socket of the connection it upgrades.
//!
//! Why not `hyper::upgrade::Upgraded::downcast`: axum-server serves through hyper-util's
//! `auto` builder, which wraps the stream in its private `Rewind` type, so the upgraded
//! stream never downcasts to `TokioIo<TcpStream>`. Sharing the socket from the acceptor
//! keeps axum's upgrade (handshake, sub-protocol, size limits) and tungstenite's reader
//! (framing, masking, pings, close) unchanged.
//!
//! Once a connection is *claimed* by its writer, every write that tungstenite's reading
//! side makes through the shared stream (automatic pong and close replies) is discarded:
//! only the [`DirectWriter`] writes to the socket, so frames never interleave. The
//! connection answers pings and echoes the peer's close itself.
//!
//! Ordering: a [`DirectWriter`] is *busy* while its connection's task owns the write side
//! (a frame is queued, half written, or the task is writing). A publisher writes directly
//! only when it is not busy, and queues under the same lock otherwise, so once anything is
//! queued every later frame goes behind it; the task clears *busy* only after finding the
//! queue empty under that lock.
//!
//! Spacing: a publisher writes directly only when nothing was written to the connection in
//! the last [`DIRECT_SPACING`]. Messages that come faster than that (a stream of small
//! messages, or big ones as fast as the socket goes) are queued instead, and the
//! connection's task writes everything that piled up with one vectored write: one system
//! call per burst rather than one per message, as on the queued path. Video at a few dozen
//! messages per second is always written directly.
//!
//! Frames are built and written with [`relay_common::frame`]: the header on the stack and
//! the shared payload in one non-blocking vectored write, never copied per reader.

use crate::hub::{payload_len, ConnInfo};
use crate::metrics::Metrics;
use axum::extract::ws::Message;
use axum_server::accept::Accept;
use bytes::Bytes;
use relay_common::frame::{
    close_payload, frame_slices, try_write_frame, FrameHeader, OpCode, Progress,
};
use relay_common::queue::Offer;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tower_layer::Layer;

/// One accepted TCP connection, shared by hyper's stream and the [`DirectWriter`].
#[derive(Debug)]
pub struct SocketShare {
    tcp: TcpStream,
    /// Set when the connection's writer takes over: writes through [`SharedTcp`] are then
    /// discarded.
    claimed: AtomicBool,
}

/// The stream hyper serves: reads and (until claimed) writes on the shared socket.
///
/// Reads go straight into the caller's buffer while the peer sends little. Once a read
/// fills the caller's buffer (a big message is arriving), the next reads take up to
/// [`READ_AHEAD`] bytes per system call into a buffer of this stream and hand them out
/// from there; that buffer is dropped as soon as it is empty and the socket had no more,
/// so an idle connection holds none. This is what lets the websocket reader keep a small
/// buffer of its own ([`DIRECT_READ_BUFFER`]).
#[derive(Debug)]
pub struct SharedTcp {
    share: Arc<SocketShare>,
    /// Bytes read ahead and not handed out yet.
    ahead: Option<Bytes>,
    /// The last read filled the buffer it read into: more is probably waiting.
    streaming: bool,
}

/// Most bytes one read of a busy connection takes from the socket.
pub const READ_AHEAD: usize = 64 * 1024;

/// The websocket reader's own buffer on connections read through [`SharedTcp`].
pub const DIRECT_READ_BUFFER: usize = 1024;

impl SharedTcp {
    fn new(share: Arc<SocketShare>) -> Self {
        SharedTcp {
            share,
            ahead: None,
            streaming: false,
        }
    }

    /// Hands out read-ahead bytes; true if there were any.
    fn hand_out(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some(ahead) = &mut self.ahead else {
            return false;
        };
        let n = ahead.len().min(buf.remaining());
        buf.put_slice(&ahead.split_to(n));
        if ahead.is_empty() {
            self.ahead = None;
        }
        true
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hand_out(buf) {
            return Poll::Ready(Ok(()));
        }
        let read_ahead = this.streaming && buf.remaining() < READ_AHEAD;
        let tcp = &this.share.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let result = if read_ahead {
                let mut ahead = Vec::with_capacity(READ_AHEAD);
                tcp.try_read_buf(&mut ahead).map(|n| {
                    this.ahead = (n > 0).then(|| Bytes::from(ahead));
                    (n, READ_AHEAD)
                })
            } else {
                let room = buf.remaining();
                tcp.try_read(buf.initialize_unfilled()).map(|n| {
                    buf.advance(n);
                    (n, room)
                })
            };
            match result {
                Ok((n, room)) => {
                    this.streaming = n == room && n > 0;
                    this.hand_out(buf);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let share = &self.share;
        if share.claimed.load(Ordering::Acquire) {
            // The connection's writer owns the socket now (see the module docs).
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        loop {
            ready!(share.tcp.poll_write_ready(cx))?;
            match share.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the last handle to it is dropped.
        Poll::Ready(Ok(()))
    }
}

/// The request extension naming the socket a request arrived on (weak: it never keeps a
/// connection open).
#[derive(Debug, Clone)]
pub struct DirectSocket(Weak<SocketShare>);

impl DirectSocket {
    /// The socket, if the connection is still open.
    pub fn socket(&self) -> Option<Arc<SocketShare>> {
        self.0.upgrade()
    }
}

/// An acceptor wrapper that shares each accepted `TcpStream` ([`SharedTcp`]) and adds a
/// [`DirectSocket`] to every request on it.
#[derive(Debug, Clone)]
pub struct DirectAcceptor<A> {
    inner: A,
}

impl<A> DirectAcceptor<A> {
    /// Wrap `inner`, whose stream must be a `TcpStream`.
    pub fn new(inner: A) -> Self {
        DirectAcceptor { inner }
    }
}

type AcceptFuture<T, S> = Pin<Box<dyn Future<Output = io::Result<(T, S)>> + Send>>;

impl<S, A> Accept<TcpStream, S> for DirectAcceptor<A>
where
    A: Accept<TcpStream, S, Stream = TcpStream>,
    A::Future: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = SharedTcp;
    type Service = axum::middleware::AddExtension<A::Service, DirectSocket>;
    type Future = AcceptFuture<Self::Stream, Self::Service>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let accept = self.inner.accept(stream, service);
        Box::pin(async move {
            let (tcp, service) = accept.await?;
            let share = Arc::new(SocketShare {
                tcp,
                claimed: AtomicBool::new(false),
            });
            let service = axum::Extension(DirectSocket(Arc::downgrade(&share))).layer(service);
            Ok((SharedTcp::new(share), service))
        })
    }
}

/// One unmasked server frame ([`FrameHeader`] plus the shared payload, never copied) and
/// how much of it is on the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    header: FrameHeader,
    payload: Bytes,
    written: usize,
    /// A data frame: counted in the connection's traffic once written.
    data: bool,
}

impl Frame {
    /// A frame with `opcode` and `payload` (RFC 6455 §5.2).
    pub fn new(opcode: OpCode, payload: Bytes) -> Self {
        Frame {
            header: FrameHeader::for_payload(opcode, &payload),
            payload,
            written: 0,
            data: matches!(opcode, OpCode::Text | OpCode::Binary),
        }
    }

    /// The frame of a data message; `None` for control messages.
    pub fn of_message(message: &Message) -> Option<Self> {
        match message {
            Message::Text(t) => Some(Frame::new(OpCode::Text, Bytes::from(t.clone()))),
            Message::Binary(b) => Some(Frame::new(OpCode::Binary, b.clone())),
            _ => None,
        }
    }

    /// A close frame with `code` and `reason`.
    pub fn close(code: u16, reason: &str) -> Self {
        Frame::new(OpCode::Close, close_payload(code, reason))
    }

    /// Payload bytes, for the traffic counters.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// A data frame (counted once written).
    pub fn is_data(&self) -> bool {
        self.data
    }

    /// One non-blocking vectored write of what is left; `Ok(true)` when the frame is done.
    pub fn try_write(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        match try_write_frame(tcp, &self.header, &self.payload, self.written)? {
            Progress::Done => {
                self.written = self.header.frame_len() as usize;
                Ok(true)
            }
            Progress::Partial(n) => {
                self.written = n;
                Ok(false)
            }
            Progress::WouldBlock => Ok(false),
        }
    }
}

/// A publisher writes directly only if nothing was written to the connection for this long
/// (see the module docs). Half a millisecond is about ten loopback round trips: a message
/// queued instead waits for one task wake-up, which is far less.
pub const DIRECT_SPACING: Duration = Duration::from_micros(500);

/// Most frames one vectored write of the connection's task carries (two slices each, far
/// below the kernel's 1,024-slice limit).
pub const FRAMES_PER_WRITE: usize = 64;

/// Frames slots a connection's task keeps once it has drained; a bigger buffer is given
/// back, so a burst does not stay in an idle connection's memory.
const KEPT_FRAME_SLOTS: usize = 16;

/// The frames the connection's task is writing, oldest first: written together with one
/// vectored write per [`Outgoing::try_write`], the first possibly already begun.
#[derive(Debug, Default)]
pub struct Outgoing {
    frames: std::collections::VecDeque<Frame>,
}

impl Outgoing {
    /// Add `frame` behind the others.
    pub fn push(&mut self, frame: Frame) {
        self.frames.push_back(frame);
    }

    /// How many frames are waiting (up to [`FRAMES_PER_WRITE`] go in one write).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drop every frame not begun yet: before a close frame, only one already partly on the
    /// wire must be finished.
    pub fn keep_begun(&mut self) {
        let begun = self.frames.front().is_some_and(|f| f.written > 0);
        self.frames.truncate(usize::from(begun));
    }

    /// Forget what is left, and give back a burst's buffer.
    pub fn clear(&mut self) {
        self.frames.clear();
        if self.frames.capacity() > KEPT_FRAME_SLOTS {
            self.frames = Default::default();
        }
    }

    /// Non-blocking vectored writes of the frames, up to [`FRAMES_PER_WRITE`] per system
    /// call, until all are written (`Ok(true)`) or the socket would block (`Ok(false)`:
    /// the rest stays, progress kept). `written` is called with each frame once it is
    /// whole on the wire.
    pub fn try_write(
        &mut self,
        tcp: &TcpStream,
        mut written: impl FnMut(&Frame),
    ) -> io::Result<bool> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let mut used = 0;
            for frame in self.frames.iter().take(FRAMES_PER_WRITE) {
                let [head, payload] = frame_slices(&frame.header, &frame.payload, frame.written);
                slices[used] = head;
                slices[used + 1] = payload;
                used += 2;
            }
            let mut n = match tcp.try_write_vectored(&slices[..used]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while let Some(front) = self.frames.front_mut() {
                let left = front.header.frame_len() as usize - front.written;
                if n < left {
                    front.written += n;
                    break;
                }
                n -= left;
                if let Some(done) = self.frames.pop_front() {
                    written(&done);
                }
            }
        }
        self.clear();
        Ok(true)
    }

    /// Write everything, waiting for the socket whenever it would block. Cancel safe:
    /// progress is kept.
    pub async fn write(
        &mut self,
        tcp: &TcpStream,
        mut written: impl FnMut(&Frame),
    ) -> io::Result<()> {
        while !self.try_write(tcp, &mut written)? {
            tcp.writable().await?;
        }
        Ok(())
    }
}

/// What the connection's task must do besides draining the queue.
#[derive(Debug, Default)]
struct WriteState {
    /// The connection's task owns the write side (see the module docs).
    busy: bool,
    /// The connection is closing: nobody writes directly any more.
    closed: bool,
    /// A frame a publisher started but could not finish.
    partial: Option<Frame>,
    /// The payload of the latest ping from the peer, to answer.
    pong: Option<Bytes>,
    /// The peer's close code (`Some(None)`: a close frame without one), to echo.
    peer_close: Option<Option<u16>>,
    /// When a frame was last written whole, by a publisher or the task.
    last_write: Option<Instant>,
}

/// What the connection's task writes next ([`DirectWriter::next_or_release`]).
pub enum Next<T> {
    /// A queued message.
    Message(T),
    /// A control frame (a pong).
    Control(Frame),
}

/// What [`DirectWriter::offer`] did with a message.
pub enum Direct {
    /// Written whole to the socket: `len` payload bytes.
    Written(usize),
    /// Handed to the connection's task: queued (with this outcome) or half written.
    Handed(Offer),
}

/// The write side of one directly written connection (see the module docs).
#[derive(Debug)]
pub struct DirectWriter {
    share: Arc<SocketShare>,
    state: Mutex<WriteState>,
    /// Wakes the connection's task: something to write or answer.
    pub wake: Notify,
    /// For a connection that holds back what it sends until something is written to it
    /// (the shell's server-speaks-first gate): set once a data frame is written.
    written: Option<watch::Sender<bool>>,
}

impl DirectWriter {
    /// Take over the write side of `share`. Starts busy, so that nothing is written
    /// directly before the connection's task has drained what was queued before it ran.
    /// With `gated`, [`DirectWriter::first_write`] tells when a data frame was written.
    pub fn claim(share: Arc<SocketShare>, gated: bool) -> Arc<Self> {
        share.claimed.store(true, Ordering::Release);
        let writer = Arc::new(DirectWriter {
            share,
            state: Mutex::new(WriteState {
                busy: true,
                ..WriteState::default()
            }),
            wake: Notify::new(),
            written: gated.then(|| watch::channel(false).0),
        });
        writer.wake.notify_one();
        writer
    }

    /// For a gated connection: becomes true once a data frame has been written to it.
    pub fn first_write(&self) -> Option<watch::Receiver<bool>> {
        self.written.as_ref().map(watch::Sender::subscribe)
    }

    /// A data frame went out whole: open the gate, if there is one and it is still shut.
    pub fn wrote_data(&self) {
        // Checked first: after the first frame this is a read, not a write lock per frame.
        if let Some(written) = self.written.as_ref().filter(|w| !*w.borrow()) {
            written.send_replace(true);
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.share.tcp
    }

    /// Publish `message` (at `now`) to this connection: write it now when nothing is queued
    /// or being written and nothing was written in the last [`DIRECT_SPACING`], else queue
    /// it behind with `enqueue` (the queue's `offer`, with its limits and drop rules, or
    /// `push` for a stream that must lose nothing).
    pub fn offer(
        &self,
        message: &Message,
        enqueue: impl FnOnce() -> Offer,
        now: Instant,
    ) -> Direct {
        let mut state = self.lock();
        if state.busy {
            return Direct::Handed(enqueue());
        }
        let Some(mut frame) = Frame::of_message(message) else {
            return Direct::Handed(enqueue());
        };
        let close_behind = state
            .last_write
            .is_some_and(|last| now.saturating_duration_since(last) < DIRECT_SPACING);
        if close_behind {
            // Coming fast: the task writes this and whatever follows it in one go.
            state.busy = true;
            let offer = enqueue();
            drop(state);
            self.wake.notify_one();
            return Direct::Handed(offer);
        }
        match frame.try_write(&self.share.tcp) {
            Ok(true) => {
                state.last_write = Some(now);
                drop(state);
                self.wrote_data();
                return Direct::Written(payload_len(message));
            }
            Ok(false) if frame.written > 0 => {
                state.busy = true;
                state.partial = Some(frame);
                drop(state);
                self.wake.notify_one();
                return Direct::Handed(Offer::Queued);
            }
            // Would block, or failed: the task writes it (and meets the error itself).
            Ok(false) | Err(_) => {}
        }
        state.busy = true;
        let offer = enqueue();
        drop(state);
        self.wake.notify_one();
        Direct::Handed(offer)
    }

    /// Answer the peer's ping (the latest one wins, as RFC 6455 §5.5.3 allows).
    pub fn pong(&self, payload: Bytes) {
        self.lock().pong = Some(payload);
        self.wake.notify_one();
    }

    /// The peer sent a close frame with `code`: it is echoed when the connection closes.
    pub fn peer_closed(&self, code: Option<u16>) {
        self.lock().peer_close = Some(code);
    }

    /// Start a drain: the task owns the write side. Returns the half-written frame, if any.
    pub fn begin(&self) -> Option<Frame> {
        let mut state = self.lock();
        state.busy = true;
        state.partial.take()
    }

    /// The next thing to write: a pong owed to the peer, else the next queued message
    /// (`take` takes it from the queue, under the lock so no publisher queues in between).
    /// When there is neither, the write side goes back to the publishers (unless closing)
    /// and the answer is `None`.
    pub fn next_or_release<T>(&self, take: impl FnOnce() -> Option<T>) -> Option<Next<T>> {
        let mut state = self.lock();
        if let Some(payload) = state.pong.take() {
            return Some(Next::Control(Frame::new(OpCode::Pong, payload)));
        }
        match take() {
            Some(message) => Some(Next::Message(message)),
            None => {
                if !state.closed {
                    state.busy = false;
                    state.last_write = Some(Instant::now());
                }
                None
            }
        }
    }

    /// Stop direct writes for good; returns a half-written frame and the peer's close
    /// code, if any.
    pub fn close(&self) -> (Option<Frame>, Option<Option<u16>>) {
        let mut state = self.lock();
        state.busy = true;
        state.closed = true;
        (state.partial.take(), state.peer_close)
    }
}

/// Count a data frame written to the connection `info` in its traffic and the metrics.
pub fn record_written(info: &ConnInfo, metrics: &Metrics, len: usize) {
    info.rx.record(len, info.connected_instant.elapsed());
    metrics.messages_out.inc();
    metrics.bytes_out.inc_by(len as u64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_common::queue::QueueLimits;
    use tokio::io::AsyncReadExt;

    /// Write the rest of `frame`, waiting for the socket, as the connection's task does.
    async fn finish(frame: &Frame, tcp: &TcpStream) {
        relay_common::frame::finish_frame(tcp, &frame.header, &frame.payload, frame.written)
            .await
            .unwrap();
    }

    fn message(i: u8) -> Message {
        Message::Binary(Bytes::from(vec![i; 100_000]))
    }

    /// The ids (first payload byte) of the binary frames read from `client` until one with
    /// `last` arrives.
    async fn frame_ids(mut client: TcpStream, last: u8) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut ids = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let mut parsed = 0;
            while raw.len() - parsed >= 10 {
                let rest = &raw[parsed..];
                assert_eq!(rest[0], 0x82, "a whole binary frame: {:?}", &rest[..4]);
                assert_eq!(rest[1], 127, "100,000 bytes take the 8-byte length form");
                let len = usize::try_from(u64::from_be_bytes(rest[2..10].try_into().unwrap()));
                let len = len.unwrap();
                if rest.len() < 10 + len {
                    break;
                }
                let payload = &rest[10..10 + len];
                assert!(payload.iter().all(|b| *b == payload[0]), "payload intact");
                ids.push(payload[0]);
                parsed += 10 + len;
            }
            raw.drain(..parsed);
            if ids.last() == Some(&last) {
                return ids;
            }
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended early");
            raw.extend_from_slice(&buf[..n]);
        }
    }

    /// The ordering protocol step by step, with this test playing the connection's task:
    /// nothing a publisher offers overtakes a frame that is half written, queued, or being
    /// written by the task, and once the task has drained, frames go direct again.
    #[tokio::test]
    async fn nothing_overtakes_what_is_queued_or_being_written() {
        let (share, client) = socket_pair().await;
        let writer = DirectWriter::claim(share, false);
        let limits = QueueLimits {
            messages: 1000,
            bytes: 1 << 30,
            burst_bytes: 0,
            slow_reader_timeout: std::time::Duration::MAX,
        };
        let (queue, mut reader) = relay_common::queue::bounded(limits, payload_len);
        let is_queued = |d: Direct| matches!(d, Direct::Handed(Offer::Queued));
        // Offers spaced far apart, so that spacing never decides here (it has its own test).
        let start = Instant::now() + Duration::from_secs(3600);
        let at = |id: u8| start + DIRECT_SPACING * 2 * u32::from(id);

        // It starts busy: offered before the task ran, a message is queued.
        assert!(is_queued(writer.offer(
            &message(0),
            || queue.offer(&message(0)),
            at(0)
        )));
        assert!(writer.begin().is_none());
        let Some(Next::Message(first)) = writer.next_or_release(|| reader.try_recv()) else {
            panic!("the early message is drained first");
        };
        let frame = Frame::of_message(&first).unwrap();
        finish(&frame, writer.tcp()).await;
        assert!(writer.next_or_release(|| reader.try_recv()).is_none());

        // Nobody reads: direct writes until the socket is full, then handed over.
        let mut id = 1u8;
        loop {
            let direct = writer.offer(&message(id), || queue.offer(&message(id)), at(id));
            id += 1;
            if let Direct::Handed(offer) = direct {
                assert_eq!(offer, Offer::Queued);
                break;
            }
            assert!(id < 200, "the socket never filled");
        }
        for _ in 0..2 {
            assert!(is_queued(writer.offer(
                &message(id),
                || queue.offer(&message(id)),
                at(id)
            )));
            id += 1;
        }
        // The client reads from now on; the task finishes the half-written frame.
        let ids = tokio::spawn(frame_ids(client, 254));
        if let Some(partial) = writer.begin() {
            finish(&partial, writer.tcp()).await;
        }
        // The socket has room again, but there is a queue: behind it.
        writer.tcp().writable().await.unwrap();
        assert!(is_queued(writer.offer(
            &message(id),
            || queue.offer(&message(id)),
            at(id)
        )));
        id += 1;
        // While the task writes a queued frame, newcomers still queue behind.
        while let Some(next) = writer.next_or_release(|| reader.try_recv()) {
            let Next::Message(m) = next else {
                panic!("no pong was asked for")
            };
            if id < 250 {
                assert!(is_queued(writer.offer(
                    &message(id),
                    || queue.offer(&message(id)),
                    at(id)
                )));
                id += 1;
            }
            finish(&Frame::of_message(&m).unwrap(), writer.tcp()).await;
        }
        // Drained: direct again (the client is reading, so the socket takes it).
        writer.tcp().writable().await.unwrap();
        let last = writer.offer(&message(254), || queue.offer(&message(254)), at(254));
        if let Direct::Handed(_) = last {
            // The socket was full after all: the task finishes it.
            if let Some(partial) = writer.begin() {
                finish(&partial, writer.tcp()).await;
            }
            while let Some(Next::Message(m)) = writer.next_or_release(|| reader.try_recv()) {
                finish(&Frame::of_message(&m).unwrap(), writer.tcp()).await;
            }
        }
        let mut expected: Vec<u8> = (0..id).collect();
        expected.push(254);
        assert_eq!(ids.await.unwrap(), expected);
    }

    async fn socket_pair() -> (Arc<SocketShare>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let share = Arc::new(SocketShare {
            tcp: server,
            claimed: AtomicBool::new(false),
        });
        (share, client)
    }

    /// A message that comes within [`DIRECT_SPACING`] of the last write is queued for the
    /// task, and so is everything behind it until the task has drained.
    #[tokio::test]
    async fn messages_close_behind_each_other_are_queued() {
        let (share, _client) = socket_pair().await;
        let writer = DirectWriter::claim(share, false);
        let (queue, mut reader) = relay_common::queue::bounded(
            QueueLimits {
                messages: 10,
                bytes: 1 << 20,
                burst_bytes: 0,
                slow_reader_timeout: Duration::MAX,
            },
            payload_len,
        );
        let small = |i: u8| Message::Binary(Bytes::from(vec![i; 10]));
        assert!(writer.begin().is_none());
        assert!(writer.next_or_release(|| reader.try_recv()).is_none());
        let later = Instant::now() + DIRECT_SPACING * 4;
        assert!(matches!(
            writer.offer(&small(1), || queue.offer(&small(1)), later),
            Direct::Written(10)
        ));
        let soon = later + DIRECT_SPACING / 2;
        assert!(matches!(
            writer.offer(&small(2), || queue.offer(&small(2)), soon),
            Direct::Handed(Offer::Queued)
        ));
        let much_later = later + DIRECT_SPACING * 10;
        assert!(
            matches!(
                writer.offer(&small(3), || queue.offer(&small(3)), much_later),
                Direct::Handed(Offer::Queued)
            ),
            "behind a queued message even when spaced"
        );
        let mut queued = Vec::new();
        reader.try_recv_batch(&mut queued, 10);
        assert_eq!(queued, vec![small(2), small(3)]);
    }

    /// Many frames written together arrive whole and in order, however the socket splits
    /// them (mid-header, mid-payload), and each is reported once written.
    #[tokio::test]
    async fn a_batch_arrives_whole_and_in_order() {
        let (share, client) = socket_pair().await;
        let ids = tokio::spawn(frame_ids(client, 199));
        let mut outgoing = Outgoing::default();
        for id in 0..200u8 {
            outgoing.push(Frame::of_message(&message(id)).unwrap());
        }
        assert_eq!(outgoing.len(), 200);
        let mut reported = Vec::new();
        outgoing
            .write(&share.tcp, |f| reported.push(f.payload[0]))
            .await
            .unwrap();
        assert!(outgoing.is_empty());
        let expected: Vec<u8> = (0..200).collect();
        assert_eq!(reported, expected);
        assert_eq!(ids.await.unwrap(), expected);
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let close = Frame::close(4008, "x");
        assert_eq!(close.header.as_bytes(), [0x88, 3]);
        assert_eq!(&close.payload[..], &[0x0f, 0xa8, b'x']);
        assert!(!close.is_data());
        assert!(
            Frame::of_message(&Message::Binary(Bytes::from_static(b"a")))
                .is_some_and(|f| f.is_data())
        );
    }
}
