//! Copy bytes between a TCP stream and a websocket, both ways, as binary messages.
//!
//! A plain copy loop: each TCP read becomes one message, each binary message is written in
//! full (the reference coalesced reads for 1 ms into a 1 MiB buffer that truncated and
//! raced). When either side ends, the other is closed: TCP EOF sends a websocket close
//! frame; a websocket close (or error) shuts the TCP stream down.
//!
//! A link cut without a FIN (Wi-Fi gone, power lost) closes nothing by itself, so the pipe
//! also watches the websocket ([`PipeTimeouts`]): it pings every `ping_interval`, gives up
//! on a websocket from which nothing (data, ping or pong) has arrived for `idle_timeout`,
//! and on a websocket write that blocks for `write_timeout`. Either way both halves close:
//! the admin's ssh sees its connection end instead of hanging for ever.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Size of one TCP read, and so the largest message the pipe sends.
const READ_CHUNK: usize = 64 * 1024;

/// How a pipe watches its websocket. The defaults are `relay_client`'s session defaults
/// (ping every 20 s, idle 60 s, write 10 s), which fit the relay's own 54 s ping and 60 s
/// pong timeout: the relay's pings alone keep a healthy tunnel from going idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeTimeouts {
    /// How often the pipe pings the relay. Keeps NAT and proxies from closing a quiet
    /// tunnel and makes the relay answer, so silence means a dead path.
    pub ping_interval: Duration,
    /// A websocket from which nothing has arrived for this long is closed, and its TCP
    /// side with it. Protects against a link cut without a FIN leaving both halves open.
    pub idle_timeout: Duration,
    /// Deadline for one websocket write (data, ping or close). Protects against a send
    /// that never completes once the path's buffers are full.
    pub write_timeout: Duration,
}

impl PipeTimeouts {
    /// `session` with these ping, idle and write timings, so a shell's management
    /// connection watches its link the way its tunnels do.
    pub fn apply(
        &self,
        mut session: relay_client::session::SessionConfig,
    ) -> relay_client::session::SessionConfig {
        session.ping_interval = self.ping_interval;
        session.idle_timeout = self.idle_timeout;
        session.write_timeout = self.write_timeout;
        session
    }
}

impl Default for PipeTimeouts {
    fn default() -> Self {
        PipeTimeouts {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// The TCP side closed (or failed).
    Tcp,
    /// The websocket side closed (or failed).
    Websocket,
    /// Nothing arrived on the websocket for the idle timeout, or a websocket write
    /// stalled past the write timeout: the path is presumed dead.
    Silent,
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

/// Why one direction of the pipe stopped.
enum Stop {
    /// Its source ended (EOF, close frame or error).
    Ended,
    /// The websocket was silent or a write to it stalled.
    Silent,
}

/// Pipe `tcp` and `ws` until one side ends, the websocket goes silent (see
/// [`PipeTimeouts`]) or `cancel` resolves.
pub async fn pipe<S>(
    ws: WebSocketStream<S>,
    tcp: TcpStream,
    timeouts: PipeTimeouts,
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
        let mut next_ping = Instant::now() + timeouts.ping_interval;
        loop {
            let (message, len) = tokio::select! {
                read = tcp_rx.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        (Message::Binary(chunk), n as u64)
                    }
                },
                () = sleep_until(next_ping) => {
                    // From now, not from the missed tick: a stalled task sends one ping.
                    next_ping = Instant::now() + timeouts.ping_interval;
                    (Message::Ping(Bytes::new()), 0)
                }
            };
            match timeout(timeouts.write_timeout, ws_tx.send(message)).await {
                Ok(Ok(())) => up += len,
                Ok(Err(_)) => return Stop::Ended,
                Err(_) => return Stop::Silent,
            }
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "tcp connection closed".into(),
        };
        let _ = timeout(
            timeouts.write_timeout,
            ws_tx.send(Message::Close(Some(frame))),
        )
        .await;
        Stop::Ended
    };
    let downstream = async {
        let mut last_heard = Instant::now();
        let stop = loop {
            let frame = tokio::select! {
                frame = ws_rx.next() => frame,
                () = sleep_until(last_heard + timeouts.idle_timeout) => break Stop::Silent,
            };
            last_heard = Instant::now();
            match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    if tcp_tx.write_all(&bytes).await.is_err() {
                        break Stop::Ended;
                    }
                    down += bytes.len() as u64;
                    // The idle clock does not run while the local side is slow to read.
                    last_heard = Instant::now();
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => break Stop::Ended,
                // Text is not part of the byte stream (the reference host ignored it too).
                Some(Ok(
                    Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
                )) => {}
            }
        };
        let _ = tcp_tx.shutdown().await;
        stop
    };
    let end = tokio::select! {
        stop = upstream => match stop {
            Stop::Ended => PipeEnd::Tcp,
            Stop::Silent => PipeEnd::Silent,
        },
        stop = downstream => match stop {
            Stop::Ended => PipeEnd::Websocket,
            Stop::Silent => PipeEnd::Silent,
        },
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A connected loopback TCP pair: (the pipe's side, the local program's side).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    const TIMEOUTS: PipeTimeouts = PipeTimeouts {
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(45),
        write_timeout: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_websocket_closes_both_halves_after_the_idle_timeout() {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let ws = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
        // The relay side is kept but never read or answered: a path cut without a FIN.
        let _relay = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
        let (tcp, mut program) = tcp_pair().await;
        let start = Instant::now();
        let (end, _) = pipe(ws, tcp, TIMEOUTS, std::future::pending()).await;
        assert_eq!(end, PipeEnd::Silent);
        assert_eq!(start.elapsed(), TIMEOUTS.idle_timeout);
        // The local program sees its connection end.
        let mut rest = Vec::new();
        assert_eq!(program.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_and_pongs_keep_a_quiet_tunnel_open() {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let ws = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
        let mut relay = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
        let (tcp, _program) = tcp_pair().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let piped = tokio::spawn(async move {
            pipe(ws, tcp, TIMEOUTS, async {
                let _ = stopped.await;
            })
            .await
        });
        let start = Instant::now();
        let mut pings = Vec::new();
        // Reading answers each ping with a pong (tungstenite does it): three pings span
        // more than the idle timeout, and the tunnel stays open.
        while pings.len() < 3 {
            if let Some(Ok(Message::Ping(_))) = relay.next().await {
                pings.push(start.elapsed().as_secs());
            }
        }
        assert_eq!(pings, [20, 40, 60]);
        assert!(!piped.is_finished());
        stop.send(()).unwrap();
        assert_eq!(piped.await.unwrap().0, PipeEnd::Cancelled);
    }
}
