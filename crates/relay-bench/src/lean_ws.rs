//! A lean websocket client for the load generator's plain `ws://` connections.
//!
//! B1 holds a thousand readers in this one process on one core, and with tokio-tungstenite
//! the generator, not the server, ran out of CPU first: tungstenite zero-fills its read
//! buffer before every read, `StreamExt::split` puts a lock between the halves, and every
//! message is copied more than once. This client does only what the bench needs:
//!
//! - the HTTP/1.1 upgrade by hand over a `TcpStream` (no TLS: `wss://` stays on tungstenite);
//! - [`Reader`]: one reusable read buffer, frames parsed in place, each payload handed out
//!   as a [`Bytes`] split off that buffer (no copy);
//! - [`Writer`]: client frames masked as RFC 6455 requires, with a per-connection xorshift
//!   for the masks, written through a reusable buffer;
//! - the two halves own the two halves of the socket (`into_split`), so neither locks.
//!
//! The codec ([`encode_frame`], [`Decoder`]) is sans-io so it can be tested on its own.

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Opcodes of RFC 6455 section 5.2.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest message (after reassembly) a [`Reader`] accepts, as the tungstenite set-up did.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Free space the read buffer offers each read; it grows past this only for a frame that
/// is bigger. Allocated on the first read, so idle connections (B4 holds 10k) cost nothing.
const READ_CHUNK: usize = 64 * 1024;
/// Bound on the upgrade response's header.
const MAX_RESPONSE_HEADER: usize = 16 * 1024;
/// How much queued output [`Writer::feed`] lets pile up before it writes (back-pressure).
const FEED_LIMIT: usize = 256 * 1024;

/// Dial a `ws://` URL and complete the upgrade. Refusals (the relay answers them with an
/// HTTP error and a JSON reason) become an error carrying the status line and body start.
pub async fn connect(url: &str) -> Result<(Writer, Reader)> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("not a ws:// URL: {url}"))?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        bail!("no host in {url}");
    }
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    // A port-less authority means port 80; "[::1]" style hosts keep their brackets.
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    // Small frames (B2) must leave at once, not wait for Nagle.
    stream.set_nodelay(true)?;

    let key = generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buf = BytesMut::with_capacity(4096);
    let header_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() >= MAX_RESPONSE_HEADER {
            bail!("upgrade response header from {addr} exceeds {MAX_RESPONSE_HEADER} bytes");
        }
        buf.reserve(4096);
        if stream.read_buf(&mut buf).await? == 0 {
            bail!(
                "{addr} closed the connection during the websocket upgrade ({} bytes of response)",
                buf.len()
            );
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    buf.advance(header_end);

    if status != "101" {
        // Wait briefly for the start of the body: it says why (e.g. a used code).
        let want = header("content-length")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
            .min(512);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while buf.len() < want {
                buf.reserve(want - buf.len());
                if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
        let body = String::from_utf8_lossy(&buf[..buf.len().min(512)]).into_owned();
        bail!("websocket upgrade refused by {addr}: {status_line}: {body}");
    }
    let accept = header("sec-websocket-accept").unwrap_or_default();
    if accept != derive_accept_key(key.as_bytes()) {
        bail!("{addr} answered 101 with a wrong Sec-WebSocket-Accept {accept:?}");
    }

    let (read, write) = stream.into_split();
    // Bytes after the header are already the server's first frames.
    let reader = Reader {
        io: read,
        buf,
        decoder: Decoder::default(),
        close_code: None,
        done: false,
    };
    let writer = Writer {
        io: write,
        out: BytesMut::new(),
        rng: seed(),
        closed: false,
    };
    Ok((writer, reader))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A non-zero per-connection seed for the mask generator. Masks only have to be
/// unpredictable to intermediaries (RFC 6455 10.3), not secret: a xorshift suffices.
fn seed() -> u64 {
    rand::random::<u64>() | 1
}

/// One step of xorshift64.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// XOR `data` with the repeating 4-byte `key`, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so key index = position mod 4.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Append one frame whose payload is the concatenation of `parts` (so a NATS `PUB` line,
/// its payload and the trailing CRLF go out as one frame without being joined first).
/// `mask` is `Some` for client-to-server frames, which RFC 6455 requires to be masked.
pub fn encode_frame(
    out: &mut BytesMut,
    fin: bool,
    opcode: u8,
    parts: &[&[u8]],
    mask: Option<[u8; 4]>,
) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(14 + len);
    out.extend_from_slice(&[if fin { 0x80 } else { 0 } | opcode]);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.extend_from_slice(&[mask_bit | len as u8]);
    } else if len <= 0xFFFF {
        out.extend_from_slice(&[mask_bit | 126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[mask_bit | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let start = out.len();
    for part in parts {
        out.extend_from_slice(part);
    }
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// What a [`Decoder`] takes out of the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete (reassembled) text or binary message.
    Data(Bytes),
    /// The peer's close frame and its status code, if it had one.
    Close(Option<u16>),
    Ping(Bytes),
    Pong(Bytes),
}

/// Parses server frames out of a buffer; keeps fragment reassembly state between calls.
#[derive(Debug)]
pub struct Decoder {
    /// Fragments of a message whose final frame has not come yet.
    partial: Option<BytesMut>,
    max_message: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            partial: None,
            max_message: MAX_MESSAGE,
        }
    }
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes.
    pub fn with_max_message(max_message: usize) -> Self {
        Decoder {
            partial: None,
            max_message,
        }
    }

    /// Take the next item from the front of `buf`. `Ok(Err(n))` means the frame at the
    /// front is incomplete and at least `n` more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<std::result::Result<Incoming, usize>> {
        loop {
            if buf.len() < 2 {
                return Ok(Err(2 - buf.len()));
            }
            let (b0, b1) = (buf[0], buf[1]);
            let fin = b0 & 0x80 != 0;
            let opcode = b0 & 0x0F;
            if b0 & 0x70 != 0 {
                bail!("websocket frame with reserved bits set (no extension was negotiated)");
            }
            let masked = b1 & 0x80 != 0;
            let (len, mut header) = match b1 & 0x7F {
                126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                127 if buf.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(n), 10)
                }
                126 => return Ok(Err(4 - buf.len())),
                127 => return Ok(Err(10 - buf.len())),
                n => (u64::from(n), 2),
            };
            let so_far = match (&self.partial, opcode) {
                (Some(p), OP_CONTINUATION) => p.len() as u64,
                _ => 0,
            };
            if len.saturating_add(so_far) > self.max_message as u64 {
                bail!(
                    "websocket message of over {} bytes exceeds the {} byte limit",
                    len + so_far,
                    self.max_message
                );
            }
            let len = len as usize;
            if opcode >= 0x8 && (len > 125 || !fin) {
                bail!("malformed websocket control frame (opcode {opcode:#x}, {len} bytes, fin {fin})");
            }
            // Servers must not mask, but unmasking costs little and keeps us lenient.
            let key = if masked {
                if buf.len() < header + 4 {
                    return Ok(Err(header + 4 - buf.len()));
                }
                let k = [
                    buf[header],
                    buf[header + 1],
                    buf[header + 2],
                    buf[header + 3],
                ];
                header += 4;
                Some(k)
            } else {
                None
            };
            if buf.len() < header + len {
                return Ok(Err(header + len - buf.len()));
            }
            buf.advance(header);
            let mut payload = buf.split_to(len);
            if let Some(k) = key {
                apply_mask(&mut payload, k);
            }
            match opcode {
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        bail!("new websocket message started inside a fragmented one");
                    }
                    if fin {
                        return Ok(Ok(Incoming::Data(payload.freeze())));
                    }
                    self.partial = Some(payload);
                }
                OP_CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        bail!("websocket continuation frame without a message to continue");
                    };
                    partial.extend_from_slice(&payload);
                    if fin {
                        let whole = self.partial.take().unwrap_or_default();
                        return Ok(Ok(Incoming::Data(whole.freeze())));
                    }
                }
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Ok(Incoming::Close(code)));
                }
                OP_PING => return Ok(Ok(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Ok(Incoming::Pong(payload.freeze()))),
                other => bail!("unknown websocket opcode {other:#x}"),
            }
        }
    }
}

/// Receiving half of a lean connection.
#[derive(Debug)]
pub struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
    /// Close code the server sent, if it closed with one.
    pub close_code: Option<u16>,
    done: bool,
}

impl Reader {
    /// The next text or binary message; `None` once the server closed (see
    /// [`Reader::close_code`]) or the connection ended. Cancel-safe: all progress lives in
    /// `self`, so a timed-out call loses nothing.
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let needed = match self.decoder.decode(&mut self.buf)? {
                Ok(Incoming::Data(payload)) => return Ok(Some(payload)),
                Ok(Incoming::Close(code)) => {
                    self.close_code = code;
                    self.done = true;
                    return Ok(None);
                }
                // The servers here ping every 54 s or more, longer than any bench run, and
                // none requires the pong; the read half cannot write, so pings are dropped.
                Ok(Incoming::Ping(_) | Incoming::Pong(_)) => continue,
                Err(needed) => needed,
            };
            // `reserve` reclaims the buffer's front in place once the payloads split off
            // it are dropped, so steady state allocates nothing and never zero-fills.
            self.buf.reserve(needed.max(READ_CHUNK));
            if self.io.read_buf(&mut self.buf).await? == 0 {
                self.done = true;
                return Ok(None);
            }
        }
    }
}

/// Sending half of a lean connection.
#[derive(Debug)]
pub struct Writer {
    io: OwnedWriteHalf,
    /// Encoded frames not yet written.
    out: BytesMut,
    rng: u64,
    closed: bool,
}

impl Writer {
    fn mask(&mut self) -> [u8; 4] {
        (xorshift(&mut self.rng) as u32).to_ne_bytes()
    }

    /// Queue one binary message made of `parts`, writing first if much is queued already.
    pub async fn feed(&mut self, parts: &[&[u8]]) -> Result<()> {
        if self.out.len() >= FEED_LIMIT {
            self.flush().await?;
        }
        let mask = self.mask();
        encode_frame(&mut self.out, true, OP_BINARY, parts, Some(mask));
        Ok(())
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        while !self.out.is_empty() {
            self.io.write_buf(&mut self.out).await?;
        }
        Ok(())
    }

    /// Queue and write one binary message.
    pub async fn send(&mut self, parts: &[&[u8]]) -> Result<()> {
        self.feed(parts).await?;
        self.flush().await
    }

    /// Send a close frame with `code`, then shut the socket's write side.
    pub async fn close(&mut self, code: u16) -> Result<()> {
        if !self.closed {
            self.closed = true;
            let mask = self.mask();
            encode_frame(
                &mut self.out,
                true,
                OP_CLOSE,
                &[&code.to_be_bytes()],
                Some(mask),
            );
            self.flush().await?;
        }
        self.io.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn masked_frames_round_trip_at_every_length_boundary() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70_001] {
            let data = payload(len);
            let mut buf = BytesMut::new();
            let key = (xorshift(&mut rng) as u32).to_ne_bytes();
            encode_frame(&mut buf, true, OP_BINARY, &[&data], Some(key));
            let header = if len < 126 {
                2
            } else if len <= 0xFFFF {
                4
            } else {
                10
            };
            assert_eq!(buf.len(), header + 4 + len, "frame size for {len}");
            assert_eq!(buf[1] & 0x80, 0x80, "client frames are masked");
            if len > 8 {
                assert_ne!(
                    &buf[header + 4..],
                    &data[..],
                    "payload of {len} is masked on the wire"
                );
            }
            let mut dec = Decoder::default();
            assert_eq!(
                dec.decode(&mut buf).unwrap(),
                Ok(Incoming::Data(Bytes::from(data))),
                "len {len}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn unmasked_server_frames_decode_and_split_without_copy() {
        let data = payload(9212);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, OP_BINARY, &[&data], None);
        encode_frame(&mut buf, true, OP_TEXT, &[b"hi"], None);
        let base = buf.as_ptr();
        let mut dec = Decoder::default();
        let Ok(Incoming::Data(first)) = dec.decode(&mut buf).unwrap() else {
            panic!("no data")
        };
        assert_eq!(first, data);
        assert_eq!(
            first.as_ptr(),
            base.wrapping_add(4),
            "payload points into the read buffer"
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Data(Bytes::from_static(b"hi")))
        );
    }

    #[test]
    fn partial_frames_ask_for_the_missing_bytes_and_then_decode() {
        let data = payload(300);
        let mut whole = BytesMut::new();
        encode_frame(&mut whole, true, OP_BINARY, &[&data], None);
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            let got = dec.decode(&mut buf).unwrap();
            let missing = got.expect_err("incomplete until the last byte");
            assert!(
                missing >= 1 && missing <= whole.len() - i,
                "byte {i}: asks for {missing}"
            );
            buf.extend_from_slice(&[b]);
        }
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Data(Bytes::from(data)))
        );
    }

    #[test]
    fn fragmented_messages_are_reassembled_around_control_frames() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, false, OP_BINARY, &[b"hel"], None);
        encode_frame(&mut buf, true, OP_PING, &[b"p"], None);
        encode_frame(&mut buf, false, OP_CONTINUATION, &[b"lo ", b"wo"], None);
        encode_frame(
            &mut buf,
            true,
            OP_CONTINUATION,
            &[b"rld"],
            Some([1, 2, 3, 4]),
        );
        let mut dec = Decoder::default();
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Data(Bytes::from_static(b"hello world")))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), Err(2));
    }

    #[test]
    fn protocol_errors_are_reported() {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, OP_CONTINUATION, &[b"x"], None);
        assert!(
            dec.decode(&mut buf).is_err(),
            "continuation without a start"
        );

        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, false, OP_BINARY, &[b"a"], None);
        encode_frame(&mut buf, true, OP_BINARY, &[b"b"], None);
        assert!(
            dec.decode(&mut buf).is_err(),
            "new message inside a fragmented one"
        );

        let mut dec = Decoder::default();
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, true, 0x3, &[b"a"], None);
        assert!(dec.decode(&mut buf).is_err(), "reserved opcode");
    }

    #[test]
    fn messages_over_the_limit_fail_before_they_are_buffered() {
        let mut dec = Decoder::with_max_message(1000);
        // Only the header of a 64 MiB + 1 frame: refused without waiting for its payload.
        let mut buf = BytesMut::from(&[0x82u8, 127, 0, 0, 0, 0, 4, 0, 0, 1][..]);
        assert!(Decoder::default().decode(&mut buf.clone()).is_err());
        assert!(dec.decode(&mut buf).is_err());
        // The limit applies to the reassembled message too.
        let mut dec = Decoder::with_max_message(1000);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, false, OP_BINARY, &[&payload(600)], None);
        encode_frame(&mut buf, true, OP_CONTINUATION, &[&payload(600)], None);
        assert!(dec.decode(&mut buf).is_err());
    }

    #[test]
    fn close_frames_carry_their_code() {
        let mut buf = BytesMut::new();
        encode_frame(
            &mut buf,
            true,
            OP_CLOSE,
            &[&4008u16.to_be_bytes(), b"too slow"],
            None,
        );
        encode_frame(&mut buf, true, OP_CLOSE, &[], Some([9, 9, 9, 9]));
        encode_frame(
            &mut buf,
            true,
            OP_CLOSE,
            &[&1000u16.to_be_bytes()],
            Some([9, 8, 7, 6]),
        );
        let mut dec = Decoder::default();
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Close(Some(4008)))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), Ok(Incoming::Close(None)));
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Ok(Incoming::Close(Some(1000)))
        );
    }

    #[test]
    fn mask_matches_the_bytewise_definition() {
        for len in 0..40 {
            let data = payload(len);
            let key = [0xA1, 0x02, 0xF3, 0x44];
            let mut fast = data.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }
}
