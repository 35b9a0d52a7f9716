//! The benchmark message format: a sequence number and the send time (nanoseconds since
//! this process's epoch) in the first 16 bytes, padding after. Writers and readers live in
//! the same process, so one monotonic clock timestamps both ends.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;
use std::time::Instant;

/// Bytes taken by the sequence number and the timestamp.
pub const HEADER: usize = 16;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A message of `size` bytes (at least [`HEADER`]) carrying `seq` and `sent_ns`.
pub fn message(seq: u64, sent_ns: u64, size: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(size.max(HEADER));
    buf.put_u64_le(seq);
    buf.put_u64_le(sent_ns);
    buf.resize(size.max(HEADER), 0x47); // 0x47: the MPEG-TS sync byte, for the look of it
    buf.freeze()
}

/// The sequence number and send time of a benchmark message, if it is one.
pub fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = payload.get(0..8)?.try_into().ok().map(u64::from_le_bytes)?;
    let sent = payload
        .get(8..16)?
        .try_into()
        .ok()
        .map(u64::from_le_bytes)?;
    Some((seq, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_has_the_asked_size() {
        let m = message(42, 1234, 1316);
        assert_eq!(m.len(), 1316);
        assert_eq!(parse(&m), Some((42, 1234)));
        assert_eq!(message(1, 2, 3).len(), HEADER);
        assert_eq!(parse(b"short"), None);
    }
}
