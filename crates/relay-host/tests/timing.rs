//! Destination reconnect and heartbeat timings with tokio's paused clock (exact, no sleeps):
//! the reference's retry schedule 0, 1, 2, 4, 8, 10, 10 s (TestRetryTiming), no tight
//! reconnect loop against a relay that drops at once (B19), client pings, and a silent
//! relay dropped after the idle timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use relay_host::{DestinationRule, HostState, SessionConnector};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn host() -> HostState {
    HostState::new(Arc::new(SessionConnector::default()), None, 1024)
}

fn rule(destination: String, token: &str) -> DestinationRule {
    DestinationRule {
        id: "r".into(),
        stream: "data".into(),
        destination,
        token: token.into(),
        file: String::new(),
    }
}

/// Seconds since `start`, rounded to 0.1 s.
fn since(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

async fn collect(rx: &mut mpsc::UnboundedReceiver<f64>, count: usize) -> Vec<f64> {
    let mut times = Vec::new();
    while times.len() < count {
        times.push(rx.recv().await.unwrap());
    }
    times
}

#[tokio::test(start_paused = true)]
async fn refused_access_is_retried_at_0_1_2_4_8_10_10_seconds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/session/expt00", listener.local_addr().unwrap());
    let (tx, mut attempts) = mpsc::unbounded_channel();
    let start = Instant::now();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tx.send(since(start));
            let mut buffer = [0u8; 4096];
            let _ = tcp.read(&mut buffer).await;
            let body = r#"{"code":401,"message":"token invalid"}"#;
            let reply = format!("HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = tcp.write_all(reply.as_bytes()).await;
        }
    });
    let host = host();
    host.destinations.add(rule(url, "expired.token")).unwrap();
    let times = collect(&mut attempts, 8).await;
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 10.0).round() / 10.0)
        .collect();
    assert_eq!(times[0], 0.0);
    assert_eq!(gaps, vec![1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
    assert_eq!(host.destinations.is_connected("r"), Some(false));
}

/// A websocket server that records when each connection arrives and then runs `serve`.
async fn ws_server<F, Fut>(serve: F) -> (String, mpsc::UnboundedReceiver<f64>, Instant)
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, Instant) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/relay", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tx.send(since(start));
            let serve = serve.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    serve(ws, start).await;
                }
            });
        }
    });
    (url, rx, start)
}

#[tokio::test(start_paused = true)]
async fn b19_a_relay_that_drops_every_connection_at_once_is_not_hammered() {
    let (url, mut connects, _) = ws_server(|mut ws, _| async move {
        let _ = ws.close(None).await;
    })
    .await;
    let host = host();
    host.destinations.add(rule(url, "")).unwrap();
    let times = collect(&mut connects, 5).await;
    // The reference reconnected immediately after every established connection.
    assert_eq!(times, vec![0.0, 1.0, 3.0, 7.0, 15.0]);
}

#[tokio::test(start_paused = true)]
async fn the_host_pings_the_relay_and_drops_a_silent_one_after_the_idle_timeout() {
    // First connection: read (so pings are seen and answered) for 70 s, then go silent
    // without closing: the host must notice by itself.
    let (pings_tx, mut pings) = mpsc::unbounded_channel();
    let (url, mut connects, _) = ws_server(move |ws, start| {
        let pings_tx = pings_tx.clone();
        async move {
            let (_sink, mut stream) = ws.split();
            let answering = async {
                while let Some(Ok(frame)) = stream.next().await {
                    if let WsMessage::Ping(_) = frame {
                        let _ = pings_tx.send(since(start));
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(70), answering).await;
            // Hold the socket open, silent, until the client gives up on it.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
    .await;
    let host = host();
    host.destinations.add(rule(url, "")).unwrap();
    assert_eq!(collect(&mut connects, 1).await, vec![0.0]);
    // Client pings every 20 s while the relay answers (pongs come back automatically).
    assert_eq!(collect(&mut pings, 3).await, vec![20.0, 40.0, 60.0]);
    // The relay stops answering at 70 s; the last thing heard was the pong to the 60 s
    // ping, so the idle timeout (60 s) drops the link at 120 s, and it reconnects at once
    // because the connection had been stable.
    assert_eq!(collect(&mut connects, 1).await, vec![120.0]);
}
