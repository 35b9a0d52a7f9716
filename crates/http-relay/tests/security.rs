//! Issue 13: the relay server's defaults are safe to expose (poller tokens need `exp`, a
//! finite body limit, no metric series for names that are not backends, a header-read
//! timeout and a connection cap).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use http::{Method, StatusCode};
use http_relay::proto::HttpResponse;
use relay_auth::{mint, Audience, Claims};
use relay_testkit::wait_until_async;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn short_waits(c: &mut http_relay::ServerConfig) {
    c.timeouts.poll = Duration::from_millis(200);
    c.timeouts.relay = Duration::from_secs(2);
}

/// A poller token that verifies but has no `exp` would be valid for ever: refused (403,
/// which makes a Go relay-client exit), while the same token with `exp` is accepted.
#[tokio::test]
async fn poller_token_without_exp_is_refused() {
    let secret = b"relay-secret-relay-secret-relay-secret";
    let server = start_server(|c| {
        short_waits(c);
        c.auth = Some(http_relay::auth::PollerAuth::new(secret, None));
    })
    .await;
    let url = server.url();
    let token = |exp| {
        mint(
            &Claims {
                scopes: vec![http_relay::auth::server_scope("robot-a")],
                aud: Audience::single("http-relay"),
                exp,
                ..Claims::default()
            },
            secret,
        )
    };
    let poll_with = |token: String| {
        let url = url.clone();
        async move {
            let bearer = format!("Bearer {token}");
            call(
                Method::GET,
                &format!("{url}/server/request?server=robot-a"),
                &[("Authorization", bearer.as_str())],
                "",
            )
            .await
        }
    };
    let refused = poll_with(token(None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert!(refused.text().contains("exp"), "{}", refused.text());
    assert!(!server.broker().is_known_backend("robot-a"));
    let accepted = poll_with(token(Some(4_000_000_000))).await;
    assert_eq!(accepted.status, StatusCode::REQUEST_TIMEOUT);
    server.shutdown().await;
}

/// A response message for an ID whose name is no connected backend is refused (400) and
/// leaves no trace of that name in /metrics.
#[tokio::test]
async fn junk_server_name_in_response_adds_no_metric_series() {
    let server = start_server(|_| {}).await;
    server.broker().register_backend("foo");
    let url = server.url();
    let junk = HttpResponse {
        status_code: Some(200),
        eof: Some(true),
        ..HttpResponse::for_id("attacker-chosen-label-x9:0000")
    };
    let answer = post_response(&url, &junk).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // An unknown ID of a real backend is still counted under that backend (dashboards).
    let stale = HttpResponse {
        status_code: Some(200),
        ..HttpResponse::for_id("foo:0000")
    };
    assert_eq!(
        post_response(&url, &stale).await.status,
        StatusCode::BAD_REQUEST
    );
    let metrics = get(&format!("{url}/metrics")).await.text();
    assert!(
        !metrics.contains("attacker-chosen-label-x9"),
        "junk name became a series:\n{metrics}"
    );
    assert!(metrics.contains("backend=\"foo\""), "{metrics}");
    server.shutdown().await;
}

/// By default a user request body above 10 MiB is refused with 413 and a body that says
/// why, before it reaches a relay-client.
#[tokio::test]
async fn default_body_limit_answers_413() {
    let server = start_server(short_waits).await;
    server.broker().register_backend("foo");
    let url = server.url();
    let too_big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let answer = call(
        Method::POST,
        &format!("{url}/client/foo/upload"),
        &[],
        too_big,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert!(
        answer.text().contains("10485760"),
        "the 413 names the limit: {}",
        answer.text()
    );
    assert_eq!(server.broker().pending_count(), 0);
    server.shutdown().await;
}

/// A chunked body (no Content-Length) above the limit, taken by a legacy relay-client that
/// needs the whole body in the message, also ends in a 413 for the user.
#[tokio::test]
async fn chunked_body_over_limit_for_legacy_poller_answers_413() {
    let server = start_server(|c| {
        short_waits(c);
        c.max_request_body = 400 * 1024;
    })
    .await;
    server.broker().register_backend("foo");
    let url = server.url();
    let user = tokio::spawn({
        let url = url.clone();
        async move {
            let chunks = (0..8).map(|_| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(
                    vec![b'y'; 64 * 1024],
                )))
            });
            let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
            let req = http::Request::post(format!("{url}/client/foo/upload"))
                .body(body)
                .unwrap();
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let response = client.request(req).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    });
    // The legacy poll (no body_stream=1) is dropped with a 408 and the user gets the 413.
    let _ = poll(&url, "foo").await;
    let (status, text) = user.await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("409600"), "{text}");
    server.shutdown().await;
}

/// A slowloris client sending one header byte per second is dropped at the header-read
/// timeout, while a normal client is served throughout.
#[tokio::test]
async fn slowloris_is_dropped_while_normal_requests_are_served() {
    let server = start_server(|c| c.header_read_timeout = Duration::from_secs(2)).await;
    let url = server.url();
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripper = tokio::spawn(async move {
        let drip =
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for byte in drip.iter().cycle().take(120) {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            // A read that ends (0 bytes or an error) means the server dropped us.
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => return true, // the server answered (408) and will close
                Err(_) => {}
            }
        }
        false
    });
    wait_until_async(
        "the slowloris connection is dropped",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let finished = dripper.is_finished();
            async move {
                let answer = get(&format!("{url}/healthz")).await;
                assert_eq!(answer.status, StatusCode::OK, "a normal client is served");
                finished
            }
        },
    )
    .await;
    assert!(
        dripper.await.unwrap(),
        "the slow connection was never closed"
    );
    server.shutdown().await;
}

/// Past the connection cap a new connection gets a clear 503 and is counted; a freed slot
/// is usable again.
#[tokio::test]
async fn connection_cap_refuses_with_503_and_counts() {
    let server = start_server(|c| c.max_connections = 2).await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(conn);
    }
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut reply = Vec::new();
    // Without a cap the connection stays open waiting for a request: bounded wait.
    let _ = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("too many connections"), "{reply}");
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{reply}"
    );
    drop(held);
    let url = server.url();
    wait_until_async("a slot is free again", Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            let text = get(&format!("{url}/metrics")).await.text();
            text.lines()
                .any(|l| l == "http_relay_connections_refused 1")
        }
    })
    .await;
    server.shutdown().await;
}

/// Without a poller secret the server may listen only on loopback, unless the operator
/// says `--insecure`; the refusal says why and how to fix it.
#[test]
fn non_loopback_without_secret_is_refused() {
    use http_relay::server::exposure_refusal;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let why = exposure_refusal(ip("0.0.0.0"), false, false).expect("refused");
    assert!(
        why.contains("--auth_secret") && why.contains("--insecure"),
        "{why}"
    );
    assert!(exposure_refusal(ip("192.0.2.7"), false, false).is_some());
    assert!(exposure_refusal(ip("::"), false, false).is_some());
    for loopback in ["127.0.0.1", "127.4.5.6", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(
            exposure_refusal(ip(loopback), false, false),
            None,
            "{loopback}"
        );
    }
    assert_eq!(exposure_refusal(ip("0.0.0.0"), true, false), None);
    assert_eq!(exposure_refusal(ip("0.0.0.0"), false, true), None);
}
