//! A small TCP probe for the shell relay benchmark (`scripts/bench-shell.sh`), not a test.
//!
//! - `tcp_probe serve PORT`: echoes every byte, except that a connection starting with
//!   `S<n>\n` is a sink: it reads n bytes, then answers one byte.
//! - `tcp_probe rtt ADDR COUNT`: COUNT sequential 1-byte round trips; prints p50/p99/max µs.
//! - `tcp_probe throughput ADDR MIB`: sends MIB MiB to the sink; prints Mbit/s.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn serve(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || handle(stream));
    }
}

fn handle(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let first = reader.fill_buf().map(|b| b.first().copied()).ok().flatten();
    if first == Some(b'S') {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut left: u64 = line[1..].trim().parse().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return;
            }
            left = left.saturating_sub(n as u64);
        }
        let _ = writer.write_all(b"k");
        return;
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if writer.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn rtt(addr: &str, count: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut byte = [0u8; 1];
    for _ in 0..50 {
        s.write_all(b"x").unwrap();
        s.read_exact(&mut byte).unwrap();
    }
    let mut samples: Vec<u128> = (0..count)
        .map(|_| {
            let t = Instant::now();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut byte).unwrap();
            t.elapsed().as_micros()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!("p50_us={} p99_us={} max_us={}", at(0.5), at(0.99), at(1.0));
}

fn throughput(addr: &str, mib: u64) {
    let bytes = mib << 20;
    let mut s = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    s.write_all(format!("S{bytes}\n").as_bytes()).unwrap();
    let chunk = vec![7u8; 1 << 16];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "mbit_s={:.0} seconds={secs:.3}",
        bytes as f64 * 8.0 / secs / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(args[2].parse().unwrap()),
        Some("rtt") => rtt(&args[2], args[3].parse().unwrap()),
        Some("throughput") => throughput(&args[2], args[3].parse().unwrap()),
        _ => eprintln!("usage: tcp_probe serve PORT | rtt ADDR COUNT | throughput ADDR MIB"),
    }
}
