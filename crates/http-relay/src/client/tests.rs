//! Ports of the reference's `client/client_test.go` with a fake relay server and a real
//! backend on 127.0.0.1:0, plus tests of the chunking algorithm under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use axum::routing::any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A fake relay server: hands out `request` once, then answers polls with `poll_status`;
/// records posted response messages.
struct FakeRelay {
    addr: SocketAddr,
    polls: Arc<AtomicUsize>,
    posted: Arc<Mutex<Vec<HttpResponse>>>,
}

async fn fake_relay(request: Option<HttpRequest>, poll_status: StatusCode) -> FakeRelay {
    let polls = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(Mutex::new(Vec::new()));
    let pending = Arc::new(Mutex::new(request));
    let (p, r) = (Arc::clone(&polls), Arc::clone(&pending));
    let posted_by_handler = Arc::clone(&posted);
    let app = axum::Router::new()
        .route(
            "/server/request",
            any(move || {
                let (p, r) = (Arc::clone(&p), Arc::clone(&r));
                async move {
                    p.fetch_add(1, Ordering::SeqCst);
                    match r.lock().unwrap().take() {
                        Some(req) => (StatusCode::OK, req.encode_to_vec()),
                        None => (poll_status, b"no request".to_vec()),
                    }
                }
            }),
        )
        .route(
            "/server/response",
            any(move |body: Bytes| {
                let posted = Arc::clone(&posted_by_handler);
                async move {
                    posted
                        .lock()
                        .unwrap()
                        .push(HttpResponse::decode(body).unwrap());
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeRelay {
        addr,
        polls,
        posted,
    }
}

async fn backend(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn relay_for(fake: &FakeRelay, backend: SocketAddr) -> Arc<Relay> {
    Arc::new(
        Relay::new(ClientConfig {
            backend_scheme: "http".into(),
            backend_address: backend.to_string(),
            relay_scheme: "http".into(),
            relay_address: fake.addr.to_string(),
            server_name: "foo".into(),
            ..ClientConfig::default()
        })
        .unwrap(),
    )
}

fn request_15() -> HttpRequest {
    HttpRequest {
        id: Some("15".into()),
        method: Some("GET".into()),
        url: Some("http://invalid/foo/bar?a=b".into()),
        header: vec![proto::HttpHeader {
            name: Some("X-GFE".into()),
            value: Some("google.com".into()),
        }],
        body: Some(Bytes::from("thebody")),
        ..Default::default()
    }
}

fn header_value(msg: &HttpResponse, name: &str) -> Option<String> {
    msg.header
        .iter()
        .find(|h| h.name.as_deref() == Some(name))
        .and_then(|h| h.value.clone())
}

#[tokio::test]
async fn local_proxy_posts_exactly_one_message() {
    let seen = Arc::new(Mutex::new(None));
    let seen_by_backend = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/foo/bar",
        any(move |req: axum::extract::Request| {
            let seen = Arc::clone(&seen_by_backend);
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                *seen.lock().unwrap() =
                    Some((parts.method, parts.uri.to_string(), parts.headers, body));
                (
                    StatusCode::CREATED,
                    [("Priority", "High")],
                    "theresponsebody",
                )
            }
        }),
    );
    let backend = backend(app).await;
    let fake = fake_relay(Some(request_15()), StatusCode::REQUEST_TIMEOUT).await;
    let relay = relay_for(&fake, backend);
    let request = relay.poll_once(&CancellationToken::new()).await.unwrap();
    relay.handle_request(request).await;

    let (method, uri, headers, body) = seen.lock().unwrap().take().unwrap();
    assert_eq!((method, uri.as_str()), (Method::GET, "/foo/bar?a=b"));
    assert_eq!(headers.get("x-gfe").unwrap(), "google.com");
    assert_eq!(body, "thebody");
    let posted = fake.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    let msg = &posted[0];
    assert_eq!(msg.id.as_deref(), Some("15"));
    assert_eq!(msg.status_code, Some(201));
    assert_eq!(header_value(msg, "Priority").as_deref(), Some("High"));
    assert_eq!(msg.body.as_deref(), Some(&b"theresponsebody"[..]));
    assert_eq!(msg.eof, Some(true));
    assert!(msg.backend_duration_ms.is_some());
    assert_eq!(msg.sequence, Some(0));
    assert_eq!(fake.polls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn backend_error_status_is_relayed() {
    let app =
        axum::Router::new().fallback(|| async { (StatusCode::BAD_REQUEST, "theresponsebody") });
    let backend = backend(app).await;
    let fake = fake_relay(None, StatusCode::REQUEST_TIMEOUT).await;
    relay_for(&fake, backend).handle_request(request_15()).await;
    let posted = fake.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(
        (posted[0].status_code, posted[0].eof),
        (Some(400), Some(true))
    );
    assert_eq!(posted[0].body.as_deref(), Some(&b"theresponsebody"[..]));
}

#[tokio::test]
async fn poll_408_is_timeout_after_one_request() {
    let fake = fake_relay(None, StatusCode::REQUEST_TIMEOUT).await;
    let relay = relay_for(&fake, "127.0.0.1:1".parse().unwrap());
    assert!(matches!(
        relay.poll_once(&CancellationToken::new()).await,
        Err(PollError::Timeout)
    ));
    assert_eq!(fake.polls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn poll_403_makes_the_client_exit_with_an_error() {
    let fake = fake_relay(None, StatusCode::FORBIDDEN).await;
    let config = ClientConfig {
        relay_scheme: "http".into(),
        relay_address: fake.addr.to_string(),
        ..ClientConfig::default()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        run(config, CancellationToken::new()),
    )
    .await
    .unwrap();
    assert!(matches!(result, Err(ClientError::Forbidden(_))));
}

#[tokio::test]
async fn unreachable_backend_gets_a_synthetic_500() {
    let fake = fake_relay(None, StatusCode::REQUEST_TIMEOUT).await;
    // Bind then drop to get a port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    relay_for(&fake, closed).handle_request(request_15()).await;
    let posted = fake.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].status_code, Some(500));
    let body = String::from_utf8_lossy(posted[0].body.as_deref().unwrap()).into_owned();
    assert!(
        body.starts_with("Backend request failed with error:"),
        "{body}"
    );
}

/// Fix for §14.8: a backend that never answers gets a 504 after the backend timeout.
#[tokio::test]
async fn hung_backend_times_out_with_504() {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "late"
    });
    let backend = backend(app).await;
    let fake = fake_relay(None, StatusCode::REQUEST_TIMEOUT).await;
    let relay = Arc::new(
        Relay::new(ClientConfig {
            backend_timeout: Duration::from_millis(200),
            ..relay_for(&fake, backend).config.clone()
        })
        .unwrap(),
    );
    relay.handle_request(request_15()).await;
    let posted = fake.posted.lock().unwrap().clone();
    assert_eq!(posted[0].status_code, Some(504));
}

/// Fix for §14.6: a backend that dies mid-body is reported with `abort_reason`, not as a
/// clean end.
#[tokio::test]
async fn backend_dying_mid_body_sets_abort_reason() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            .await
            .unwrap();
        // Dropping the socket cuts the body 90 bytes short.
    });
    let fake = fake_relay(None, StatusCode::REQUEST_TIMEOUT).await;
    relay_for(&fake, addr).handle_request(request_15()).await;
    let posted = fake.posted.lock().unwrap().clone();
    let last = posted.last().unwrap();
    assert_eq!(last.eof, Some(true));
    assert!(last.abort_reason.is_some(), "{posted:?}");
}

fn first_message() -> HttpResponse {
    HttpResponse {
        status_code: Some(200),
        ..HttpResponse::for_id("id")
    }
}

/// The reference's TestBuildResponsesTimesOut, on paused time.
#[tokio::test(start_paused = true)]
async fn build_responses_flushes_on_ticks_and_ends_with_eof() {
    let (events_tx, events_rx) = mpsc::channel(1);
    let (out_tx, mut out_rx) = mpsc::channel(1);
    tokio::spawn(build_responses(
        first_message(),
        events_rx,
        out_tx,
        1 << 20,
        Duration::from_millis(10),
    ));
    events_tx
        .send(BodyEvent::Data(Bytes::from("foo")))
        .await
        .unwrap();
    let m = out_rx.recv().await.unwrap();
    assert_eq!(
        (m.id.as_deref(), m.status_code, m.body.as_deref(), m.eof),
        (Some("id"), Some(200), Some(&b"foo"[..]), None)
    );
    events_tx
        .send(BodyEvent::Data(Bytes::from("bar")))
        .await
        .unwrap();
    let m = out_rx.recv().await.unwrap();
    assert_eq!(
        (m.status_code, m.body.as_deref(), m.eof),
        (None, Some(&b"bar"[..]), None)
    );
    drop(events_tx);
    let m = out_rx.recv().await.unwrap();
    assert_eq!(
        (m.status_code, m.body_bytes().len(), m.eof),
        (None, 0, Some(true))
    );
}

#[tokio::test(start_paused = true)]
async fn build_responses_sends_headers_on_first_tick_and_keepalive_after_31_idle_ticks() {
    let (events_tx, events_rx) = mpsc::channel(1);
    let (out_tx, mut out_rx) = mpsc::channel(1);
    let start = Instant::now();
    tokio::spawn(build_responses(
        first_message(),
        events_rx,
        out_tx,
        1 << 20,
        Duration::from_millis(100),
    ));
    let headers = out_rx.recv().await.unwrap();
    assert_eq!(headers.status_code, Some(200));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let keepalive = out_rx.recv().await.unwrap();
    assert_eq!(
        (
            keepalive.status_code,
            keepalive.body_bytes().len(),
            keepalive.eof
        ),
        (None, 0, None)
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100 + 31 * 100));
    drop(events_tx);
}

#[tokio::test(start_paused = true)]
async fn build_responses_splits_past_max_chunk_size_and_single_message_when_fast() {
    let (events_tx, events_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(8);
    tokio::spawn(build_responses(
        first_message(),
        events_rx,
        out_tx,
        4,
        Duration::from_millis(100),
    ));
    events_tx
        .send(BodyEvent::Data(Bytes::from("abc")))
        .await
        .unwrap();
    events_tx
        .send(BodyEvent::Data(Bytes::from("de")))
        .await
        .unwrap();
    events_tx
        .send(BodyEvent::Trailers(vec![proto::HttpHeader {
            name: Some("T".into()),
            value: Some("v".into()),
        }]))
        .await
        .unwrap();
    drop(events_tx);
    let first = out_rx.recv().await.unwrap();
    assert_eq!(
        (first.status_code, first.body.as_deref(), first.eof),
        (Some(200), Some(&b"abcde"[..]), None)
    );
    let last = out_rx.recv().await.unwrap();
    assert_eq!(
        (last.body_bytes().len(), last.eof, last.trailer.len()),
        (0, Some(true), 1)
    );

    // Everything before the first tick becomes one message.
    let (events_tx, events_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(8);
    tokio::spawn(build_responses(
        first_message(),
        events_rx,
        out_tx,
        1 << 20,
        Duration::from_millis(100),
    ));
    events_tx
        .send(BodyEvent::Data(Bytes::from("all")))
        .await
        .unwrap();
    drop(events_tx);
    let only = out_rx.recv().await.unwrap();
    assert_eq!(
        (only.status_code, only.body.as_deref(), only.eof),
        (Some(200), Some(&b"all"[..]), Some(true))
    );
    assert!(out_rx.recv().await.is_none());
}

#[test]
fn backoff_schedules_match_the_reference() {
    let post: Vec<_> = Backoff::new(
        Duration::from_secs(1),
        2.0,
        Duration::from_secs(10),
        Some(10),
        None,
    )
    .collect();
    let secs: Vec<_> = post.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10, 10, 10, 10]);
    let poll: Vec<_> = Backoff::new(
        Duration::from_millis(100),
        1.5,
        Duration::from_secs(10),
        None,
        Some(Duration::from_secs(60)),
    )
    .collect();
    assert_eq!(
        poll[..3],
        [
            Duration::from_millis(100),
            Duration::from_millis(150),
            Duration::from_millis(225)
        ]
    );
    assert!(poll.iter().sum::<Duration>() <= Duration::from_secs(60));
    assert!(poll.iter().all(|d| *d <= Duration::from_secs(10)));
}

#[test]
fn conflicting_http2_flags_are_refused() {
    let config = ClientConfig {
        force_http2: true,
        disable_http2: true,
        ..ClientConfig::default()
    };
    assert!(matches!(Relay::new(config), Err(ClientError::Config(_))));
}
