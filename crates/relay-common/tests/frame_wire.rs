//! `relay_common::frame` on the wire: frames it writes are byte for byte what tungstenite
//! writes for a server, decode with tungstenite as a client over a real 127.0.0.1 socket,
//! and survive partial writes (a trickling writer, and a peer that stops reading) with no
//! byte lost or duplicated.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should stop loudly

use bytes::Bytes;
use futures_util::StreamExt;
use relay_common::frame::{
    close_payload, finish_frame, try_write_frame, write_frame_vectored, FrameHeader, OpCode,
    Progress,
};
use relay_testkit::wait::try_wait_until;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode as TOp};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The lengths the issue names, from empty to 10 MiB.
const LENGTHS: [usize; 6] = [0, 125, 126, 65_535, 65_536, 10 << 20];

/// Our close codes: expiry, deny, too slow, no pong, shutdown.
const CLOSE_CODES: [(u16, &str); 5] = [
    (4001, "token expired"),
    (4003, "booking denied"),
    (4008, "reader too slow: queue stayed full"),
    (4009, "no pong within timeout"),
    (1001, "server going away"),
];

/// How long any one wait on a socket may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// `len` bytes that are not all alike, so that a shifted or repeated byte shows.
fn binary_payload(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// `len` bytes of ASCII text that are not all alike.
fn text_payload(len: usize) -> Bytes {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Header and payload as one buffer: what must arrive.
fn our_frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    [FrameHeader::for_payload(op, payload).as_bytes(), payload].concat()
}

/// What tungstenite writes for the same frame as a server.
fn tungstenite_frame(frame: Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.format(&mut out).unwrap();
    out
}

#[test]
fn frames_match_tungstenite_byte_for_byte() {
    for len in LENGTHS {
        let text = text_payload(len);
        assert_eq!(
            our_frame(OpCode::Text, &text),
            tungstenite_frame(Frame::message(text.clone(), TOp::Data(Data::Text), true)),
            "text of {len} bytes"
        );
        let binary = binary_payload(len);
        assert_eq!(
            our_frame(OpCode::Binary, &binary),
            tungstenite_frame(Frame::message(
                binary.clone(),
                TOp::Data(Data::Binary),
                true
            )),
            "binary of {len} bytes"
        );
    }
    for (code, reason) in CLOSE_CODES {
        assert_eq!(
            our_frame(OpCode::Close, &close_payload(code, reason)),
            tungstenite_frame(Frame::close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))),
            "close {code}"
        );
    }
}

/// A connected pair on 127.0.0.1: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (accepted.unwrap().0, client.unwrap())
}

/// The client side as a tungstenite websocket client (no handshake: the frames are the
/// point), taking messages up to 64 MiB.
async fn ws_client(stream: TcpStream) -> WebSocketStream<TcpStream> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await
}

/// The next message the client reads, within the deadline.
async fn next_message(client: &mut WebSocketStream<TcpStream>) -> Message {
    tokio::time::timeout(DEADLINE, client.next())
        .await
        .expect("a message before the deadline")
        .expect("the connection stays open")
        .expect("a well-formed frame")
}

#[tokio::test]
async fn text_and_binary_frames_decode_with_tungstenite() {
    let (mut server, client) = tcp_pair().await;
    let mut client = ws_client(client).await;
    let frames: Vec<(OpCode, Bytes)> = LENGTHS
        .iter()
        .flat_map(|&len| {
            [
                (OpCode::Text, text_payload(len)),
                (OpCode::Binary, binary_payload(len)),
            ]
        })
        .collect();
    let to_send = frames.clone();
    let writer = tokio::spawn(async move {
        for (op, payload) in &to_send {
            let header = FrameHeader::for_payload(*op, payload);
            write_frame_vectored(&mut server, &header, payload).await?;
        }
        io::Result::Ok(server)
    });
    for (op, payload) in &frames {
        match (op, next_message(&mut client).await) {
            (OpCode::Text, Message::Text(text)) => assert_eq!(text.as_bytes(), &payload[..]),
            (OpCode::Binary, Message::Binary(data)) => assert_eq!(data, payload),
            (op, other) => panic!("sent {op:?} of {} bytes, got {other:?}", payload.len()),
        }
    }
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn close_frames_with_each_of_our_codes_decode_with_tungstenite() {
    for (code, reason) in CLOSE_CODES {
        let (mut server, client) = tcp_pair().await;
        let mut client = ws_client(client).await;
        let payload = close_payload(code, reason);
        let header = FrameHeader::for_payload(OpCode::Close, &payload);
        write_frame_vectored(&mut server, &header, &payload)
            .await
            .unwrap();
        match next_message(&mut client).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), code);
                assert_eq!(frame.reason.as_str(), reason);
            }
            other => panic!("sent close {code}, got {other:?}"),
        }
    }
}

/// A writer that takes at most `step` bytes per write (across the slices it is given, or
/// only the first non-empty one when `vectored` is off) and says "not now" on every other
/// call, waking itself at once.
struct Trickle {
    out: Vec<u8>,
    step: usize,
    vectored: bool,
    pending_next: bool,
}

impl Trickle {
    fn new(step: usize, vectored: bool) -> Self {
        Trickle {
            out: Vec::new(),
            step,
            vectored,
            pending_next: false,
        }
    }

    /// Not ready on every other call.
    fn not_now(&mut self, cx: &mut Context<'_>) -> bool {
        self.pending_next = !self.pending_next;
        if !self.pending_next {
            cx.waker().wake_by_ref();
        }
        !self.pending_next
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.not_now(cx) {
            return Poll::Pending;
        }
        let n = buf.len().min(self.step);
        self.out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.vectored {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        if self.not_now(cx) {
            return Poll::Pending;
        }
        let mut room = self.step;
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(room);
            self.out.extend_from_slice(&buf[..n]);
            room -= n;
            taken += n;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn partial_writes_lose_and_repeat_nothing() {
    let payloads: Vec<(OpCode, Bytes)> = [0usize, 1, 5, 125, 126, 300, 65_536, 70_001]
        .iter()
        .map(|&len| (OpCode::Binary, binary_payload(len)))
        .chain([(OpCode::Close, close_payload(4008, "slow"))])
        .collect();
    let expected: Vec<u8> = payloads
        .iter()
        .flat_map(|(op, payload)| our_frame(*op, payload))
        .collect();
    for vectored in [true, false] {
        // Steps smaller than, equal to and larger than a header, and not dividing it.
        for step in [1, 2, 3, 7, 10, 11, 4093] {
            let mut writer = Trickle::new(step, vectored);
            for (op, payload) in &payloads {
                let header = FrameHeader::for_payload(*op, payload);
                write_frame_vectored(&mut writer, &header, payload)
                    .await
                    .unwrap();
            }
            assert!(
                writer.out == expected,
                "step {step}, vectored {vectored}: {} bytes written, {} expected",
                writer.out.len(),
                expected.len()
            );
        }
    }
}

/// A pair on 127.0.0.1 with small socket buffers, so that a peer that stops reading fills
/// them quickly: (server side, client side).
async fn small_buffer_pair() -> (TcpStream, TcpStream) {
    let listening = TcpSocket::new_v4().unwrap();
    listening.set_send_buffer_size(16 * 1024).unwrap();
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listening.local_addr().unwrap();
    let listener = listening.listen(8).unwrap();
    let connecting = TcpSocket::new_v4().unwrap();
    connecting.set_recv_buffer_size(16 * 1024).unwrap();
    let (client, accepted) = tokio::join!(connecting.connect(addr), listener.accept());
    (accepted.unwrap().0, client.unwrap())
}

#[tokio::test]
async fn try_write_frame_stops_when_the_peer_stops_reading_and_finishes_later() {
    let (server, client) = small_buffer_pair().await;
    // A small frame goes out whole while the buffers are empty.
    let hello = text_payload(100);
    let hello_header = FrameHeader::for_payload(OpCode::Text, &hello);
    assert_eq!(
        try_write_frame(&server, &hello_header, &hello, 0).unwrap(),
        Progress::Done
    );

    // Far more than both buffers hold: the peer reads nothing yet.
    let big = binary_payload(8 << 20);
    let header = FrameHeader::for_payload(OpCode::Binary, &big);
    let total = header.as_bytes().len() + big.len();
    let mut written = 0;
    let mut partials = 0;
    try_wait_until(
        "the socket to would-block",
        DEADLINE,
        || match try_write_frame(&server, &header, &big, written).unwrap() {
            Progress::Done => panic!("8 MiB fit into a peer that reads nothing"),
            Progress::Partial(n) => {
                assert!(n > written && n < total, "progress {written} -> {n}");
                written = n;
                partials += 1;
                false
            }
            Progress::WouldBlock => true,
        },
    )
    .await
    .unwrap();
    assert!(partials > 0, "some of the frame went out before it blocked");
    // Still blocked, and a blocked call leaves the offset where it was.
    let again = try_write_frame(&server, &header, &big, written).unwrap();
    assert!(
        matches!(again, Progress::WouldBlock | Progress::Partial(_)),
        "{again:?}"
    );
    if let Progress::Partial(n) = again {
        written = n;
    }

    // The peer starts reading; the rest of the frame, then one more, follow.
    let mut client = ws_client(client).await;
    let after = text_payload(7);
    let after_header = FrameHeader::for_payload(OpCode::Text, &after);
    let to_finish = big.clone();
    let finisher = tokio::spawn(async move {
        finish_frame(&server, &header, &to_finish, written).await?;
        finish_frame(&server, &after_header, &after, 0).await?;
        io::Result::Ok(server)
    });
    match next_message(&mut client).await {
        Message::Text(text) => assert_eq!(text.as_bytes(), &hello[..]),
        other => panic!("expected the 100-byte text, got {other:?}"),
    }
    match next_message(&mut client).await {
        Message::Binary(data) => assert!(data == big, "the 8 MiB frame arrived changed"),
        other => panic!("expected the 8 MiB binary, got {other:?}"),
    }
    match next_message(&mut client).await {
        Message::Text(text) => assert_eq!(text.as_str(), "abcdefg"),
        other => panic!("expected the text after it, got {other:?}"),
    }
    tokio::time::timeout(DEADLINE, finisher)
        .await
        .expect("the writer finished")
        .unwrap()
        .unwrap();
}
