//! Copy bytes between a TCP stream and a websocket, both ways, as binary messages.
//!
//! A plain copy loop: each TCP read becomes one message, each binary message is written in
//! full (the reference coalesced reads for 1 ms into a 1 MiB buffer that truncated and
//! raced). When either side ends, the other is closed: TCP EOF sends a websocket close
//! frame; a websocket close (or error) shuts the TCP stream down.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Size of one TCP read, and so the largest message the pipe sends.
const READ_CHUNK: usize = 64 * 1024;

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// The TCP side closed (or failed).
    Tcp,
    /// The websocket side closed (or failed).
    Websocket,
    /// Cancelled from outside (a `disconnect` action, shutdown).
    Cancelled,
}

/// Byte counts of a finished pipe, for logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Bytes read from the TCP stream and sent to the websocket.
    pub tcp_to_websocket: u64,
    /// Bytes received from the websocket and written to the TCP stream.
    pub websocket_to_tcp: u64,
}

/// Pipe `tcp` and `ws` until one side ends or `cancel` resolves.
pub async fn pipe<S>(
    ws: WebSocketStream<S>,
    tcp: TcpStream,
    cancel: impl Future<Output = ()>,
) -> (PipeEnd, PipeStats)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let mut up = 0u64;
    let mut down = 0u64;

    let upstream = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    if ws_tx.send(Message::Binary(chunk)).await.is_err() {
                        return;
                    }
                    up += n as u64;
                }
            }
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "tcp connection closed".into(),
        };
        let _ = ws_tx.send(Message::Close(Some(frame))).await;
    };
    let downstream = async {
        while let Some(Ok(message)) = ws_rx.next().await {
            match message {
                Message::Binary(bytes) => {
                    if tcp_tx.write_all(&bytes).await.is_err() {
                        break;
                    }
                    down += bytes.len() as u64;
                }
                Message::Close(_) => break,
                // Text is not part of the byte stream (the reference host ignored it too).
                Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let end = tokio::select! {
        () = upstream => PipeEnd::Tcp,
        () = downstream => PipeEnd::Websocket,
        () = cancel => PipeEnd::Cancelled,
    };
    (
        end,
        PipeStats {
            tcp_to_websocket: up,
            websocket_to_tcp: down,
        },
    )
}
