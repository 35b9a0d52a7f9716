//! MPEG-TS ingest framing (relay-host `ingest::frame_bursts`): a chunked body with pauses
//! between chunks, cut into frames at silences and at the size cap.
//!
//! The first byte is the frame cap (1 to 256 bytes); the rest is a script of chunks, each
//! a header byte (low 6 bits: length, top 2 bits: a pause of 0, 0.5, 1 or 3 ms before it,
//! against a 1 ms frame gap) followed by that many body bytes. Time is tokio's paused clock,
//! so a run is repeatable.

use std::time::Duration;

use bytes::Bytes;
use relay_host::ingest::{frame_bursts, IngestSummary};

use super::runtime;

const GAP: Duration = Duration::from_millis(1);

/// Runs the framer over the scripted body. Frames must be non-empty, within the cap,
/// and together exactly the body; the summary must count them.
pub fn run(data: &[u8]) {
    let Some((&cap, mut script)) = data.split_first() else {
        return;
    };
    let max_frame = usize::from(cap) + 1;
    let mut chunks = Vec::new();
    while let Some((&header, rest)) = script.split_first() {
        let len = usize::from(header & 0x3f).min(rest.len());
        let pause = match header >> 6 {
            0 => Duration::ZERO,
            1 => Duration::from_micros(500),
            2 => Duration::from_millis(1),
            _ => Duration::from_millis(3),
        };
        chunks.push((pause, Bytes::copy_from_slice(&rest[..len])));
        script = &rest[len..];
    }
    let body: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let Some(rt) = runtime() else {
        return;
    };
    let mut frames: Vec<Bytes> = Vec::new();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
        let (pause, chunk) = chunks.next()?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Some((Ok::<Bytes, String>(chunk), chunks))
    });
    let summary: IngestSummary =
        match rt.block_on(frame_bursts(stream, GAP, max_frame, |f| frames.push(f))) {
            Ok(summary) => summary,
            Err(e) => panic!("a body without errors failed: {e}"),
        };
    assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= max_frame));
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    assert_eq!(joined, body, "the frames are not the body");
    assert_eq!(summary.frames, frames.len() as u64);
    assert_eq!(summary.bytes, body.len() as u64);
}
