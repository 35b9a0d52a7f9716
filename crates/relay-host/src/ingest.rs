//! `/ts/{feed}` framing: turn a streamed HTTP body (ffmpeg's chunked POST) into one binary
//! message per burst.
//!
//! ffmpeg writes each encoded video frame in one burst, so a gap of at least
//! [`FRAME_GAP`] with no new bytes marks a frame boundary (the reference's rule). Unlike
//! the reference, nothing is discarded: a burst larger than the size cap is sent in
//! cap-sized pieces (with a warning), and the request ends with a reply when the body ends.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// Silence that ends a frame.
pub const FRAME_GAP: Duration = Duration::from_millis(1);

/// Why ingest stopped early.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The client's body stream failed (e.g. the connection dropped mid-request).
    #[error("reading the request body failed: {0}")]
    Body(String),
    /// Shutdown's grace period ended while the body was still arriving.
    #[error("the host is shutting down")]
    ShuttingDown,
}

/// What one ingest request did, for the reply and the logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestSummary {
    /// Messages published to the feed.
    pub frames: u64,
    /// Body bytes read and published.
    pub bytes: u64,
    /// Bursts that exceeded the size cap and were split.
    pub split_bursts: u64,
}

/// Reads `body` until it ends, calling `emit` with each frame (a burst of bytes followed
/// by at least `gap` of silence, or the end of the body). A burst that reaches `max_frame`
/// bytes is emitted at that size and the rest continues as a new frame.
pub async fn frame_bursts<S, E>(
    body: S,
    gap: Duration,
    max_frame: usize,
    mut emit: impl FnMut(Bytes),
) -> Result<IngestSummary, IngestError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let max_frame = max_frame.max(1);
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    let mut summary = IngestSummary::default();
    let mut flush = |buffer: &mut BytesMut, summary: &mut IngestSummary| {
        if !buffer.is_empty() {
            summary.frames += 1;
            summary.bytes += buffer.len() as u64;
            emit(buffer.split().freeze());
        }
    };
    loop {
        let next = if buffer.is_empty() {
            body.next().await
        } else {
            match tokio::time::timeout(gap, body.next()).await {
                Ok(next) => next,
                Err(_silence) => {
                    flush(&mut buffer, &mut summary);
                    continue;
                }
            }
        };
        match next {
            Some(Ok(chunk)) => {
                let mut chunk = chunk;
                while buffer.len() + chunk.len() >= max_frame {
                    let room = max_frame - buffer.len();
                    buffer.extend_from_slice(&chunk.split_to(room));
                    summary.split_bursts += 1;
                    tracing::warn!(
                        max_frame,
                        "burst larger than the frame cap; sending it in pieces"
                    );
                    flush(&mut buffer, &mut summary);
                }
                buffer.extend_from_slice(&chunk);
            }
            Some(Err(e)) => {
                flush(&mut buffer, &mut summary);
                return Err(IngestError::Body(e.to_string()));
            }
            None => {
                flush(&mut buffer, &mut summary);
                return Ok(summary);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio_stream_shim::ReceiverStream;

    /// Minimal stand-in for tokio-stream's wrapper, to keep the dependency list short.
    mod tokio_stream_shim {
        use futures_util::Stream;
        use std::pin::Pin;
        use std::task::{Context, Poll};
        use tokio::sync::mpsc;

        pub struct ReceiverStream<T>(pub mpsc::Receiver<T>);

        impl<T> Stream for ReceiverStream<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }

    type Chunk = Result<Bytes, String>;

    async fn run(
        gap: Duration,
        max: usize,
        script: Vec<(u64, &'static [u8])>,
    ) -> (Vec<Vec<u8>>, IngestSummary) {
        let (tx, rx) = mpsc::channel::<Chunk>(16);
        tokio::spawn(async move {
            for (pause_us, data) in script {
                tokio::time::sleep(Duration::from_micros(pause_us)).await;
                let _ = tx.send(Ok(Bytes::from_static(data))).await;
            }
        });
        let mut frames = Vec::new();
        let summary = frame_bursts(ReceiverStream(rx), gap, max, |f| frames.push(f.to_vec()))
            .await
            .unwrap();
        (frames, summary)
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_closer_than_the_gap_join_and_a_gap_splits() {
        // Tokio timers tick in whole milliseconds, so the gap here is 5 ms, with pauses well
        // below and well above it.
        let (frames, summary) = run(
            Duration::from_millis(5),
            1024,
            vec![
                (0, b"ab"),
                (1_000, b"cd"),
                (20_000, b"ef"),
                (2_000, b"g"),
                (30_000, b"h"),
            ],
        )
        .await;
        assert_eq!(
            frames,
            vec![b"abcd".to_vec(), b"efg".to_vec(), b"h".to_vec()]
        );
        assert_eq!(
            summary,
            IngestSummary {
                frames: 3,
                bytes: 8,
                split_bursts: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_burst_is_split_not_truncated() {
        let (frames, summary) = run(FRAME_GAP, 4, vec![(0, b"0123456789"), (0, b"ab")]).await;
        assert_eq!(frames.concat(), b"0123456789ab".to_vec());
        assert_eq!(
            frames,
            vec![b"0123".to_vec(), b"4567".to_vec(), b"89ab".to_vec()]
        );
        assert_eq!(summary.split_bursts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_body_ends_and_flushes_the_tail() {
        let (frames, summary) = run(FRAME_GAP, 1024, vec![(0, b"tail")]).await;
        assert_eq!(frames, vec![b"tail".to_vec()]);
        assert_eq!(summary.frames, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_error_flushes_what_arrived_and_reports() {
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        tx.send(Ok(Bytes::from_static(b"part"))).await.unwrap();
        tx.send(Err("reset by peer".into())).await.unwrap();
        let mut frames = Vec::new();
        let result = frame_bursts(ReceiverStream(rx), FRAME_GAP, 1024, |f| frames.push(f)).await;
        assert!(matches!(result, Err(IngestError::Body(m)) if m.contains("reset")));
        assert_eq!(frames, vec![Bytes::from_static(b"part")]);
    }
}
