//! The physical floor: a direct TCP echo (run as a child process on the server's core, like
//! the relays) for round-trip times, and a direct loopback TCP stream for throughput.

use crate::report::Latency;
use crate::wire;
use anyhow::Result;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Echo every byte back on every connection, until the process is stopped.
pub async fn serve_echo(port: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.read(&mut buf).await {
                let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
                    break;
                };
                if socket.write_all(data).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// `count` sequential round trips of `size` bytes through the echo on `port` (at most 5 s).
pub async fn round_trips(port: u16, size: usize, count: usize) -> Result<Latency> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket.set_nodelay(true)?;
    let out = vec![0x47u8; size];
    let mut back = vec![0u8; size];
    let mut hist = Latency::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for i in 0..count + 100 {
        let t0 = wire::now_ns();
        socket.write_all(&out).await?;
        socket.read_exact(&mut back).await?;
        if i >= 100 {
            hist.record(wire::now_ns() - t0); // the first 100 warm up
        }
        if Instant::now() > deadline {
            break;
        }
    }
    Ok(hist)
}

/// Bytes per second of one loopback TCP stream written in `size`-byte writes for `seconds`.
pub async fn stream_throughput(size: usize, seconds: f64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(total);
            }
            total += n as u64;
        }
    });
    let mut socket = TcpStream::connect(addr).await?;
    let chunk = vec![0x47u8; size];
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    while Instant::now() < stop {
        socket.write_all(&chunk).await?;
    }
    socket.shutdown().await?;
    let total = reader.await??;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
