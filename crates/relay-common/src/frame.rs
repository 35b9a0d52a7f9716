//! Server-side websocket frames written without copying the payload: the header bytes and
//! the shared [`Bytes`] payload go to the socket together in one vectored write.
//!
//! Used by the relay's direct write path (`relay-server/src/direct.rs`, on by default);
//! the queued path (`RELAY_DIRECT_WRITES=false`, TLS) still goes through axum /
//! tungstenite, which copies every payload into its write buffer once per reader.
//!
//! - [`FrameHeader`]: the 2–10 header bytes of one unfragmented, unmasked frame
//!   (RFC 6455 §5.2), built on the stack.
//! - [`close_payload`]: the payload of a close frame (code and reason, truncated to fit).
//! - [`frame_slices`]: the `[header, payload]` pair of [`IoSlice`]s, from any offset.
//! - [`write_frame_vectored`]: write one frame to any [`AsyncWrite`], finishing partial
//!   writes.
//! - [`try_write_frame`]: write as much of one frame as a [`TcpStream`] takes now, never
//!   waiting, and say how far it got ([`Progress`]), so that a publisher can write directly
//!   and leave a partial frame for the reader's task to finish ([`finish_frame`], or
//!   together with the frames queued behind it: `relay-server`'s `direct::Outgoing`).
//!
//! It lives in `relay-common`, next to the bounded queue, so that both halves of the write
//! path share one encoder: the publisher in `relay-server`'s hub writing directly, and the
//! reader's task draining its queue and finishing partial writes. `relay-bench` measures it
//! (against tungstenite, tokio-websockets and fastwebsockets) without depending on the
//! server.
//! Server frames only: a client (which must mask) keeps using tungstenite.

use bytes::Bytes;
use std::io::{self, IoSlice};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest header: 2 bytes plus a 64-bit extended length (a server never masks).
pub const MAX_HEADER_LEN: usize = 10;

/// The longest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest close reason: a close payload is the 2-byte code plus at most this many
/// bytes of UTF-8.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The opcodes a server writes (RFC 6455 §5.2); frames are never fragmented, so there is
/// no continuation opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A UTF-8 text message.
    Text = 0x1,
    /// A binary message.
    Binary = 0x2,
    /// A close frame; its payload comes from [`close_payload`].
    Close = 0x8,
    /// A ping (at most [`MAX_CONTROL_PAYLOAD`] bytes of payload).
    Ping = 0x9,
    /// A pong (at most [`MAX_CONTROL_PAYLOAD`] bytes of payload).
    Pong = 0xA,
}

impl OpCode {
    /// Whether this is a control frame, whose payload must fit in
    /// [`MAX_CONTROL_PAYLOAD`] bytes.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// The header of one final (FIN set), unmasked frame, as the bytes that go on the wire.
/// Plain data on the stack: building one never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
    payload_len: u64,
}

impl FrameHeader {
    /// The header of a frame of `opcode` carrying `payload_len` bytes: FIN set, no mask,
    /// and the shortest length encoding (7 bits up to 125, then 16, then 64 bits).
    ///
    /// A control frame's payload must not exceed [`MAX_CONTROL_PAYLOAD`] bytes (checked in
    /// debug builds; [`close_payload`] always fits).
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        debug_assert!(
            !opcode.is_control() || payload_len <= MAX_CONTROL_PAYLOAD as u64,
            "a control frame carries at most 125 bytes"
        );
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0] = 0x80 | opcode as u8;
        let len = if payload_len <= 125 {
            bytes[1] = payload_len as u8;
            2
        } else if let Ok(short) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        };
        FrameHeader {
            bytes,
            len,
            payload_len,
        }
    }

    /// The header for `payload` with `opcode`.
    pub fn for_payload(opcode: OpCode, payload: &[u8]) -> Self {
        Self::new(opcode, payload.len() as u64)
    }

    /// The header as it goes on the wire: 2, 4 or 10 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The payload length this header announces.
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// Header plus payload: the bytes the whole frame takes on the wire.
    pub fn frame_len(&self) -> u64 {
        u64::from(self.len) + self.payload_len
    }
}

/// The payload of a close frame: the code (big-endian) and `reason`, cut to at most
/// [`MAX_CLOSE_REASON`] bytes on a character boundary so that it stays valid UTF-8.
pub fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    Bytes::from(payload)
}

/// The rest of a frame after its first `already_written` bytes, as the `[header, payload]`
/// pair for one vectored write. Either slice may be empty; both are once the frame is done.
pub fn frame_slices<'a>(
    header: &'a FrameHeader,
    payload: &'a [u8],
    already_written: usize,
) -> [IoSlice<'a>; 2] {
    let head = header.as_bytes();
    let in_head = already_written.min(head.len());
    let in_payload = (already_written - in_head).min(payload.len());
    [
        IoSlice::new(&head[in_head..]),
        IoSlice::new(&payload[in_payload..]),
    ]
}

/// Bytes of the whole frame, header plus `payload`, for a caller counting progress.
fn total_len(header: &FrameHeader, payload: &[u8]) -> usize {
    debug_assert_eq!(
        header.payload_len(),
        payload.len() as u64,
        "the header must announce this payload's length"
    );
    header.as_bytes().len() + payload.len()
}

/// Write one whole frame to `writer` with vectored writes, however few bytes each write
/// takes (it resumes inside the header or the payload as needed). Does not flush: a caller
/// writing a batch flushes once after it.
///
/// `header` must announce `payload.len()` bytes. A write that takes no bytes fails with
/// [`io::ErrorKind::WriteZero`].
pub async fn write_frame_vectored<W>(
    writer: &mut W,
    header: &FrameHeader,
    payload: &Bytes,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let total = total_len(header, payload);
    let mut written = 0;
    while written < total {
        let slices = frame_slices(header, payload, written);
        let n = writer.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

/// How far [`try_write_frame`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The whole frame is written.
    Done,
    /// The socket took some bytes and then would block: this many bytes of the frame
    /// (header included, counting those written before this call) are written. Pass it back
    /// as `already_written` to finish the frame once the socket is writable again.
    Partial(usize),
    /// The socket took nothing: it would block. The frame is where it was.
    WouldBlock,
}

/// Write as much of one frame as `stream` takes right now, without waiting, starting after
/// its first `already_written` bytes: non-blocking vectored writes of the rest of the
/// header and the payload, repeated until the frame is done or the socket would block.
///
/// Never copies the payload. A [`Progress::Partial`] or [`Progress::WouldBlock`] leaves the
/// rest to be finished later (after [`TcpStream::writable`]) by calling again with the
/// returned offset; nothing else may be written to the socket in between. A write that
/// takes no bytes fails with [`io::ErrorKind::WriteZero`].
pub fn try_write_frame(
    stream: &TcpStream,
    header: &FrameHeader,
    payload: &[u8],
    already_written: usize,
) -> io::Result<Progress> {
    let total = total_len(header, payload);
    let mut written = already_written.min(total);
    while written < total {
        let slices = frame_slices(header, payload, written);
        match stream.try_write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(if written == already_written {
                    Progress::WouldBlock
                } else {
                    Progress::Partial(written)
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Progress::Done)
}

/// Write the whole frame with [`try_write_frame`], waiting for the socket to become
/// writable whenever it would block: what a reader's task does to finish a frame the
/// publisher left partly written (`already_written` bytes of it are on the wire).
pub async fn finish_frame(
    stream: &TcpStream,
    header: &FrameHeader,
    payload: &[u8],
    mut already_written: usize,
) -> io::Result<()> {
    loop {
        match try_write_frame(stream, header, payload, already_written)? {
            Progress::Done => return Ok(()),
            Progress::Partial(n) => already_written = n,
            Progress::WouldBlock => {}
        }
        stream.writable().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header bytes for a binary frame of `len` bytes.
    fn binary(len: u64) -> Vec<u8> {
        FrameHeader::new(OpCode::Binary, len).as_bytes().to_vec()
    }

    #[test]
    fn seven_bit_lengths() {
        assert_eq!(binary(0), [0x82, 0]);
        assert_eq!(binary(1), [0x82, 1]);
        assert_eq!(binary(125), [0x82, 125]);
        assert_eq!(FrameHeader::new(OpCode::Text, 125).as_bytes(), [0x81, 125]);
    }

    #[test]
    fn sixteen_bit_lengths() {
        assert_eq!(binary(126), [0x82, 126, 0x00, 0x7E]);
        assert_eq!(binary(65_535), [0x82, 126, 0xFF, 0xFF]);
    }

    #[test]
    fn sixty_four_bit_lengths() {
        assert_eq!(binary(65_536), [0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        // 10 MiB = 0x00A0_0000.
        assert_eq!(
            binary(10 << 20),
            [0x82, 127, 0, 0, 0, 0, 0x00, 0xA0, 0x00, 0x00]
        );
        assert_eq!(
            FrameHeader::new(OpCode::Text, u64::MAX).as_bytes(),
            [0x81, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
    }

    #[test]
    fn opcodes_and_lengths_reported() {
        for (op, byte) in [
            (OpCode::Text, 0x81),
            (OpCode::Binary, 0x82),
            (OpCode::Close, 0x88),
            (OpCode::Ping, 0x89),
            (OpCode::Pong, 0x8A),
        ] {
            let header = FrameHeader::new(op, 3);
            assert_eq!(header.as_bytes(), [byte, 3]);
            assert_eq!(header.payload_len(), 3);
            assert_eq!(header.frame_len(), 5);
        }
        assert_eq!(FrameHeader::new(OpCode::Binary, 70_000).frame_len(), 70_010);
    }

    #[test]
    fn close_payload_carries_code_and_reason() {
        assert_eq!(&close_payload(4008, "slow")[..], b"\x0f\xa8slow");
        assert_eq!(&close_payload(1001, "")[..], b"\x03\xe9");
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let ascii = "x".repeat(200);
        let payload = close_payload(4001, &ascii);
        assert_eq!(payload.len(), MAX_CONTROL_PAYLOAD);
        assert_eq!(&payload[2..], &ascii.as_bytes()[..MAX_CLOSE_REASON]);

        // "é" is 2 bytes: 61 of them are 122 bytes, and the 62nd would end at byte 124.
        let accents = "é".repeat(80);
        let payload = close_payload(4003, &accents);
        assert_eq!(payload.len(), 2 + 122);
        assert_eq!(std::str::from_utf8(&payload[2..]).unwrap(), "é".repeat(61));

        // A 4-byte char straddling the limit is left out whole.
        let reason = format!("{}🦀", "a".repeat(121));
        let payload = close_payload(4009, &reason);
        assert_eq!(&payload[2..], "a".repeat(121).as_bytes());

        // Exactly 123 bytes stays whole.
        let exact = "b".repeat(MAX_CLOSE_REASON);
        assert_eq!(&close_payload(1001, &exact)[2..], exact.as_bytes());
    }

    #[test]
    fn slices_resume_inside_header_and_payload() {
        let payload = b"hello".to_vec();
        let header = FrameHeader::for_payload(OpCode::Text, &payload);
        let whole: Vec<u8> = [header.as_bytes(), &payload].concat();
        for skip in 0..=whole.len() + 2 {
            let [a, b] = frame_slices(&header, &payload, skip);
            let rest: Vec<u8> = [&a[..], &b[..]].concat();
            assert_eq!(rest, whole[skip.min(whole.len())..], "skip {skip}");
        }
    }
}
