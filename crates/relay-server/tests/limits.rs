//! Timeouts, caps and rate limits against a real server (issue 13, item 4): a slowloris
//! client is dropped at the header-read timeout while others are served, access floods get
//! 429 with `Retry-After` keyed per booking and per client address, and the connection caps
//! refuse with 503.
//!
//! The rates here replenish one request per hour, so that "the bucket is empty" does not
//! depend on how fast the test runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use relay_auth::Claims;
use relay_server::config::{Limits, Rate};
use relay_server::RunningServer;
use relay_testkit::wait_until_async;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn rate(text: &str) -> Option<Rate> {
    Rate::parse_setting(text).unwrap()
}

/// Wait (at most `bound` reads of one second each) until the server closes `stream`;
/// while waiting, `each_second` runs once per second. Panics if it stays open.
async fn wait_closed(stream: &mut TcpStream, bound: usize, mut each_second: impl FnMut(usize)) {
    let mut buf = [0u8; 1024];
    for i in 0..bound {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue, // an answer; the close comes next
            Err(_) => each_second(i),
        }
    }
    panic!("the server kept the connection open for {bound} s");
}

/// A client that sends a request head one byte per second, never finishing it.
async fn slowloris(addr: SocketAddr, served: impl Fn() -> tokio::task::JoinHandle<()>) -> usize {
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "a".repeat(100)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    for byte in head.bytes() {
        if stream.write_all(&[byte]).await.is_err() {
            return sent;
        }
        sent += 1;
        // Real clients are served while this one dribbles.
        served().await.unwrap();
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return sent,
            Ok(Ok(n)) => panic!("answered an unfinished head: {:?}", &buf[..n]),
            Err(_) => {}
        }
    }
    panic!("the slow client sent {sent} bytes and was never dropped");
}

fn healthz(url: String) -> impl Fn() -> tokio::task::JoinHandle<()> {
    move || {
        let url = url.clone();
        tokio::spawn(async move {
            let (status, body) = get(&url, None).await;
            assert_eq!((status, body.as_str()), (200, "ok\n"));
        })
    }
}

#[tokio::test]
async fn a_slowloris_client_is_dropped_at_the_header_timeout_while_others_are_served() {
    let s = start(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let access = healthz(format!("{}/healthz", s.access_url()));
    let relay = healthz(format!("http://{}/healthz", s.relay_addr()));
    let (on_access, on_relay) = tokio::join!(
        slowloris(s.access_addr(), access),
        slowloris(s.relay_addr(), relay)
    );
    // One byte a second against a one-second timeout: dropped after a few bytes, long
    // before the head (over 100 bytes) could be complete.
    assert!(on_access < 20, "access port took {on_access} bytes");
    assert!(on_relay < 20, "relay port took {on_relay} bytes");
    let (status, _) = get(&format!("{}/healthz", s.access_url()), None).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn silent_and_idle_keep_alive_connections_are_closed_at_the_header_timeout() {
    let s = start(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    for addr in [s.access_addr(), s.relay_addr()] {
        // Connects and never says anything.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        wait_closed(&mut silent, 20, |_| {}).await;
        // One request answered, then idle on a keep-alive connection.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        idle.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        wait_closed(&mut idle, 20, |_| {}).await;
    }
    s.shutdown().await;
}

/// POST `/session/{topic}` with `token` and extra headers; status, `Retry-After`, body.
async fn session_post(
    s: &RunningServer,
    topic: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<u64>, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/session/{topic}", s.access_url()))
        .header("Authorization", token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry, resp.text().await.unwrap())
}

fn booking_claims(s: &RunningServer, booking: &str) -> Claims {
    Claims {
        booking_id: booking.into(),
        ..claims(s, "t", &["read", "write"])
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_session_flood_for_one_booking_gets_429_and_other_bookings_are_unaffected() {
    let s = start(|c| {
        c.limits = Limits {
            rate_per_booking: rate("1/h burst 3"),
            ..Limits::defaults()
        }
    })
    .await;
    let flood = token(&booking_claims(&s, "flood"));
    for _ in 0..3 {
        assert_eq!(session_post(&s, "t", &flood, &[]).await.0, 200);
    }
    for _ in 0..5 {
        let (status, retry, body) = session_post(&s, "t", &flood, &[]).await;
        assert_eq!(status, 429, "{body}");
        let retry = retry.expect("Retry-After");
        assert!((1..=3600).contains(&retry), "Retry-After {retry}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], 429);
        assert!(v["message"].as_str().unwrap().contains("booking"), "{body}");
    }
    // Another booking, same address (one campus NAT): served.
    let other = token(&booking_claims(&s, "other"));
    for _ in 0..3 {
        assert_eq!(session_post(&s, "t", &other, &[]).await.0, 200);
    }
    // The shell route shares the booking's bucket.
    let (status, _) = post(
        &format!("{}/shell/t", s.access_url()),
        Some(&format!("Bearer {flood}")),
    )
    .await;
    assert_eq!(status, 429);
    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    assert_eq!(
        metric(
            &metrics,
            "relay_access_requests_total{result=\"rate_limited_booking\"}"
        ),
        6
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_bad_token_flood_from_one_address_gets_429_and_other_addresses_are_unaffected() {
    let s = start(|c| {
        c.limits = Limits {
            rate_bad_auth_per_ip: rate("1/h burst 3"),
            ..Limits::defaults()
        };
        c.trusted_proxies = relay_server::client_addr::parse_trusted_proxies("127.0.0.1").unwrap();
    })
    .await;
    let attacker = [("X-Forwarded-For", "198.51.100.7")];
    for _ in 0..3 {
        assert_eq!(session_post(&s, "t", "garbage", &attacker).await.0, 401);
    }
    for _ in 0..5 {
        let (status, retry, body) = session_post(&s, "t", "garbage", &attacker).await;
        assert_eq!(status, 429, "{body}");
        assert!(retry.is_some_and(|r| r >= 1), "Retry-After {retry:?}");
    }
    // Another client behind the same proxy still gets the ordinary answer...
    let neighbour = [("Forwarded", "for=198.51.100.8")];
    assert_eq!(session_post(&s, "t", "garbage", &neighbour).await.0, 401);
    // ...and a valid token from the throttled address is served: only failures count.
    let valid = token(&booking_claims(&s, "b"));
    assert_eq!(session_post(&s, "t", &valid, &attacker).await.0, 200);
    // The rightmost address not of a trusted proxy is the client: a spoofed left entry
    // does not get the attacker a fresh bucket.
    let spoofed = [("X-Forwarded-For", "203.0.113.1, 198.51.100.7")];
    assert_eq!(session_post(&s, "t", "garbage", &spoofed).await.0, 429);
    s.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // No trusted proxy (the default): 127.0.0.1 is the client, whatever the headers say,
    // and loopback is not exempt.
    let s = start(|c| {
        c.limits = Limits {
            rate_bad_auth_per_ip: rate("1/h burst 2"),
            ..Limits::defaults()
        }
    })
    .await;
    let a = [("X-Forwarded-For", "198.51.100.7")];
    let b = [("X-Forwarded-For", "198.51.100.8")];
    assert_eq!(session_post(&s, "t", "garbage", &a).await.0, 401);
    assert_eq!(session_post(&s, "t", "garbage", &a).await.0, 401);
    assert_eq!(session_post(&s, "t", "garbage", &b).await.0, 429);
    let fwd = [("Forwarded", "for=198.51.100.9")];
    assert_eq!(session_post(&s, "t", "garbage", &fwd).await.0, 429);
    s.shutdown().await;
}

/// Dial `uri` expecting an HTTP refusal; returns its status and JSON body.
async fn refused(uri: &str) -> (u16, serde_json::Value) {
    match tokio_tungstenite::connect_async(uri).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not json: {body}"));
            (resp.status().as_u16(), v)
        }
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn the_connection_caps_refuse_with_503_before_the_upgrade() {
    let s = start(|c| {
        c.limits = Limits {
            max_connections: 3,
            max_connections_per_booking: 2,
            ..Limits::defaults()
        }
    })
    .await;
    let a = booking_claims(&s, "a");
    let b = booking_claims(&s, "b");
    let a1 = dial(&access_uri(&s, &a).await).await;
    let _a2 = dial(&access_uri(&s, &a).await).await;
    let (status, body) = refused(&access_uri(&s, &a).await).await;
    assert_eq!(status, 503);
    assert!(
        body["message"].as_str().unwrap().contains("booking"),
        "{body}"
    );
    let _b1 = dial(&access_uri(&s, &b).await).await;
    // Three open: the relay is full for every booking, and the code is not burnt.
    let uri = access_uri(&s, &b).await;
    let (status, body) = refused(&uri).await;
    assert_eq!(status, 503);
    assert!(
        body["message"].as_str().unwrap().contains("relay"),
        "{body}"
    );
    // One leaves: its place is free again, and the same code now works.
    drop(a1);
    let retry = uri.clone();
    wait_until_async("a place frees up", WAIT, move || {
        let uri = retry.clone();
        async move { tokio_tungstenite::connect_async(uri.as_str()).await.is_ok() }
    })
    .await;
    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    assert!(
        metric(
            &metrics,
            "relay_handshakes_total{result=\"too_many_booking_connections\"}"
        ) == 1
            && metric(
                &metrics,
                "relay_handshakes_total{result=\"too_many_connections\"}"
            ) >= 1,
        "{metrics}"
    );
    s.shutdown().await;
}
