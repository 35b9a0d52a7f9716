//! Ports of the reference's `server/server_test.go`, against a real server on 127.0.0.1:0
//! with the relay-client side driven by hand over the wire protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_relay::proto::{HttpHeader, HttpResponse};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn header(name: &str, value: &str) -> HttpHeader {
    HttpHeader {
        name: Some(name.into()),
        value: Some(value.into()),
    }
}

/// A server on 127.0.0.1:0 with backend `foo` already known (as the reference's helpers
/// pre-register it), and its URL.
async fn server_with_foo(
    tweak: impl FnOnce(&mut http_relay::ServerConfig),
) -> (http_relay::RunningServer, String) {
    let server = start_server(tweak).await;
    server.broker().register_backend("foo");
    let url = server.url();
    (server, url)
}

/// Reap requests idle for 300 ms, checking every 50 ms.
fn fast_reaper(config: &mut http_relay::ServerConfig) {
    config.inactive_request_timeout = Duration::from_millis(300);
    config.reaper_interval = Duration::from_millis(50);
}

/// Send a user request in the background and act as the relay-client for it.
async fn user_and_request(
    server: &str,
    path: &str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> (
    tokio::task::JoinHandle<Answer>,
    http_relay::proto::HttpRequest,
) {
    let url = format!("{server}{path}");
    let user = tokio::spawn(async move { call(Method::GET, &url, headers, body).await });
    let request = poll_until_request(server, "foo").await;
    (user, request)
}

#[tokio::test]
async fn client_handler_single_message() {
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) = user_and_request(
        &url,
        "/client/foo/bar?a=b",
        &[("X-Deadline", "now"), ("TE", "trailers")],
        "body",
    )
    .await;
    assert_eq!(request.method.as_deref(), Some("GET"));
    assert_eq!(request.url.as_deref(), Some("http://invalid/bar?a=b"));
    assert_eq!(request.body.as_deref(), Some(&b"body"[..]));
    assert!(request
        .host
        .as_deref()
        .is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert!(request.header.contains(&header("X-Deadline", "now")));
    let id = request.id.clone().unwrap();
    assert!(id.starts_with("foo:") && id.len() == 4 + 32);
    let reply = HttpResponse {
        status_code: Some(201),
        // HTTP/1.1 trailers must be announced (hyper sends only those); HTTP/2 needs not.
        header: vec![
            header("X-GFE", "google.com"),
            header("Trailer", "Some-Trailer"),
        ],
        body: Some(Bytes::from("thebody")),
        trailer: vec![header("Some-Trailer", "trailer value")],
        eof: Some(true),
        ..HttpResponse::for_id(&id)
    };
    let posted = post_response(&url, &reply).await;
    assert_eq!(
        (posted.status, posted.text()),
        (StatusCode::OK, "ok".into())
    );
    let answer = user.await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.text(), "thebody");
    assert_eq!(answer.headers.get("x-gfe").unwrap(), "google.com");
    let trailers = answer.trailers.expect("trailers");
    assert_eq!(trailers.len(), 1);
    assert_eq!(trailers.get("some-trailer").unwrap(), "trailer value");
    server.shutdown().await;
}

#[tokio::test]
async fn client_handler_chunked_response() {
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) =
        user_and_request(&url, "/client/foo/bar", &[("TE", "trailers")], "").await;
    let id = request.id.unwrap();
    let first = HttpResponse {
        status_code: Some(201),
        header: vec![
            header("X-GFE", "google.com"),
            header("Trailer", "Some-Trailer"),
        ],
        body: Some(Bytes::from("the")),
        ..HttpResponse::for_id(&id)
    };
    let last = HttpResponse {
        body: Some(Bytes::from("body")),
        trailer: vec![header("Some-Trailer", "trailer value")],
        eof: Some(true),
        ..HttpResponse::for_id(&id)
    };
    assert_eq!(post_response(&url, &first).await.status, StatusCode::OK);
    assert_eq!(post_response(&url, &last).await.status, StatusCode::OK);
    let answer = user.await.unwrap();
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::CREATED, "thebody".into())
    );
    assert_eq!(
        answer.trailers.unwrap().get("some-trailer").unwrap(),
        "trailer value"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_400() {
    let server = start_server(|_| {}).await;
    let url = server.url();
    let short = get(&format!("{url}/client/")).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.text().contains("request path too short:"));
    let no_header = get(&format!("{url}/")).await;
    assert_eq!(no_header.status, StatusCode::BAD_REQUEST);
    assert!(no_header.text().contains("missing required header:"));
    assert_eq!(
        no_header.headers.get("x-content-type-options").unwrap(),
        "nosniff"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_backend_is_503_with_relay_id_header() {
    let server = start_server(|_| {}).await;
    let answer = get(&format!("{}/client/test/", server.url())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer
        .text()
        .starts_with("cannot reach the client \"test\""));
    assert!(answer.text().ends_with("(unknown client)"));
    let id = answer
        .headers
        .get("x-cloudrobotics-http-relay")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(id.starts_with("test:"));
    server.shutdown().await;
}

#[tokio::test]
async fn x_server_name_routing_forwards_path_and_header() {
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) =
        user_and_request(&url, "/my.Service/Method", &[("X-Server-Name", "foo")], "").await;
    assert_eq!(
        request.url.as_deref(),
        Some("http://invalid/my.Service/Method")
    );
    assert!(request.header.contains(&header("X-Server-Name", "foo")));
    let reply = HttpResponse {
        status_code: Some(200),
        eof: Some(true),
        ..HttpResponse::for_id(&request.id.unwrap())
    };
    post_response(&url, &reply).await;
    assert_eq!(user.await.unwrap().status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn relay_client_endpoint_errors() {
    let server = start_server(|_| {}).await;
    let url = server.url();
    assert_eq!(
        get(&format!("{url}/server/request")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&format!("{url}/server/request?server=")).await.status,
        StatusCode::BAD_REQUEST
    );
    let missing_id = call(
        Method::POST,
        &format!("{url}/server/requeststream"),
        &[],
        "",
    )
    .await;
    assert_eq!(missing_id.status, StatusCode::BAD_REQUEST);
    let unknown = call(
        Method::POST,
        &format!("{url}/server/requeststream?id=foo:1"),
        &[],
        "",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::GONE);
    assert!(unknown.text().contains("No ongoing request with id foo:1"));
    let invalid_id = post_response(
        &url,
        &HttpResponse {
            status_code: Some(200),
            ..HttpResponse::for_id("foo:x")
        },
    )
    .await;
    assert_eq!(invalid_id.status, StatusCode::BAD_REQUEST);
    let junk = call(
        Method::POST,
        &format!("{url}/server/response"),
        &[],
        "invalid proto",
    )
    .await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
    // The reference panicked on a message without id.
    let no_id = post_response(
        &url,
        &HttpResponse {
            status_code: Some(200),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(no_id.status, StatusCode::BAD_REQUEST);
    let health = get(&format!("{url}/healthz")).await;
    assert_eq!(
        (health.status, health.text()),
        (StatusCode::OK, "ok".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn poll_times_out_with_408() {
    let server = start_server(|c| c.timeouts.poll = Duration::from_millis(200)).await;
    let (status, _) = poll(&server.url(), "foo").await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    server.shutdown().await;
}

/// gRPC Trailers-Only over h2c (prior knowledge), as gRPC clients call the relay.
#[tokio::test]
async fn grpc_headers_are_repeated_as_trailers() {
    let (server, url) = server_with_foo(|_| {}).await;
    let user_url = format!("{url}/client/foo/");
    let user = tokio::spawn(async move {
        let response = h2c()
            .request(
                http::Request::get(user_url)
                    .body(Default::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let collected = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        Answer {
            status: StatusCode::OK,
            headers: Default::default(),
            trailers: collected.trailers().cloned(),
            body: collected.to_bytes(),
        }
    });
    let request = poll_until_request(&url, "foo").await;
    let reply = HttpResponse {
        status_code: Some(200),
        header: vec![header("Grpc-Status", "0")],
        trailer: vec![header("X-Trailer", "t")],
        eof: Some(true),
        ..HttpResponse::for_id(&request.id.unwrap())
    };
    post_response(&url, &reply).await;
    let trailers = user.await.unwrap().trailers.unwrap();
    assert_eq!(trailers.get("x-trailer").unwrap(), "t");
    let grpc: Vec<_> = trailers.get_all("grpc-status").iter().collect();
    assert_eq!(grpc, ["0"]);
    server.shutdown().await;
}

#[tokio::test]
async fn no_header_in_first_message_is_500() {
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) = user_and_request(&url, "/client/foo/", &[], "").await;
    post_response(
        &url,
        &HttpResponse {
            body: Some(Bytes::from("x")),
            ..HttpResponse::for_id(&request.id.unwrap())
        },
    )
    .await;
    let answer = user.await.unwrap();
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer
        .text()
        .contains("Received no header from relay client"));
    server.shutdown().await;
}

#[tokio::test]
async fn no_message_within_inactivity_timeout_is_504() {
    let (server, url) = server_with_foo(fast_reaper).await;
    let (user, _request) = user_and_request(&url, "/client/foo/", &[], "").await;
    let answer = user.await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        answer.text(),
        "Timeout after 300ms, indicating that the backend request took too long\n"
    );
    assert_eq!(server.broker().pending_count(), 0);
    server.shutdown().await;
}

/// A user GET whose body read result is kept (an aborted body is an error).
fn user_reading_body(
    url: String,
) -> tokio::task::JoinHandle<(StatusCode, Result<Bytes, hyper::Error>)> {
    tokio::spawn(async move {
        let request = http::Request::get(url)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = http().request(request).await.unwrap();
        let status = response.status();
        (
            status,
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|c| c.to_bytes()),
        )
    })
}

/// Fix for §14.6: a relay-client that vanishes mid-body makes the user's response fail
/// (connection aborted) instead of ending as a clean, truncated 200.
#[tokio::test]
async fn relay_client_lost_mid_body_aborts_the_user_response() {
    let (server, url) = server_with_foo(fast_reaper).await;
    let user = user_reading_body(format!("{url}/client/foo/"));
    let request = poll_until_request(&url, "foo").await;
    let first = HttpResponse {
        status_code: Some(200),
        body: Some(Bytes::from("partial")),
        ..HttpResponse::for_id(&request.id.unwrap())
    };
    post_response(&url, &first).await;
    let (status, body) = user.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.is_err(),
        "truncated body must be an error, got {body:?}"
    );
    server.shutdown().await;
}

/// Fix for §14.6: a message flagged `abort_reason` (backend died mid-body) aborts too.
#[tokio::test]
async fn abort_flag_aborts_the_user_response() {
    let (server, url) = server_with_foo(|_| {}).await;
    let user = user_reading_body(format!("{url}/client/foo/"));
    let id = poll_until_request(&url, "foo").await.id.unwrap();
    post_response(
        &url,
        &HttpResponse {
            status_code: Some(200),
            body: Some(Bytes::from("part")),
            ..HttpResponse::for_id(&id)
        },
    )
    .await;
    post_response(
        &url,
        &HttpResponse {
            eof: Some(true),
            abort_reason: Some("backend reset".into()),
            ..HttpResponse::for_id(&id)
        },
    )
    .await;
    assert!(user.await.unwrap().1.is_err());
    server.shutdown().await;
}

/// The reference's TestRequestStreamHandler: 101 with a hijacked connection, 192 bytes
/// pulled upstream in blocks of 64, downstream `the` + `body`.
#[tokio::test]
async fn upgrade_moves_bytes_both_ways() {
    let (server, url) = server_with_foo(|c| c.block_size = 64).await;
    let mut user = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let upstream_data: Vec<u8> = (0..192u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut head = b"GET /client/foo/ HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n".to_vec();
    head.extend_from_slice(&upstream_data);
    user.write_all(&head).await.unwrap();
    let id = poll_until_request(&url, "foo").await.id.unwrap();
    let switch = HttpResponse {
        status_code: Some(101),
        header: vec![
            header("Upgrade", "SPDY/3.1"),
            header("Connection", "Upgrade"),
        ],
        body: Some(Bytes::from("the")),
        ..HttpResponse::for_id(&id)
    };
    assert_eq!(post_response(&url, &switch).await.status, StatusCode::OK);
    let mut pulled = Vec::new();
    while pulled.len() < upstream_data.len() {
        let answer = call(
            Method::POST,
            &format!("{url}/server/requeststream?id={id}"),
            &[],
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.headers.get("content-type").unwrap(),
            "application/octet-data"
        );
        pulled.extend_from_slice(&answer.body);
    }
    assert_eq!(pulled, upstream_data);
    let end = HttpResponse {
        body: Some(Bytes::from("body")),
        eof: Some(true),
        ..HttpResponse::for_id(&id)
    };
    assert_eq!(post_response(&url, &end).await.status, StatusCode::OK);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), user.read_to_end(&mut seen))
        .await
        .unwrap()
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{seen}"
    );
    assert!(seen.ends_with("\r\n\r\nthebody"), "{seen}");
    // The request is over: further pulls are 410.
    let after = call(
        Method::POST,
        &format!("{url}/server/requeststream?id={id}"),
        &[],
        "",
    )
    .await;
    assert_eq!(after.status, StatusCode::GONE);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_use_the_reference_names() {
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) = user_and_request(&url, "/client/foo/", &[], "").await;
    let reply = HttpResponse {
        status_code: Some(200),
        eof: Some(true),
        backend_duration_ms: Some(1),
        ..HttpResponse::for_id(&request.id.unwrap())
    };
    post_response(&url, &reply).await;
    user.await.unwrap();
    let text = get(&format!("{url}/metrics")).await.text();
    for name in [
        "broker_requests{method=\"client\",backend=\"foo\"} 1",
        "broker_responses{method=\"server_response\",result=\"ok\",backend=\"foo\"} 1",
        "broker_overhead_durations_count{method=\"server_response\",backend=\"foo\"} 1",
        "broker_backend_responses_durations_count",
        "broker_responses_durations_bucket",
        "broker_backends 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    server.shutdown().await;
}

/// Prometheus' default scrape `Accept` header (it prefers OpenMetrics) still gets the plain
/// text format 0.0.4 with the reference's counter names, as Go's `promhttp.Handler()` serves
/// it: the Cloud Robotics dashboards query `broker_requests` and `broker_responses`.
#[tokio::test]
async fn prometheus_scrape_gets_text_format_with_reference_counter_names() {
    const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (server, url) = server_with_foo(|_| {}).await;
    let (user, request) = user_and_request(&url, "/client/foo/", &[], "").await;
    let reply = HttpResponse {
        status_code: Some(200),
        eof: Some(true),
        ..HttpResponse::for_id(&request.id.unwrap())
    };
    post_response(&url, &reply).await;
    user.await.unwrap();
    let answer = call(
        Method::GET,
        &format!("{url}/metrics"),
        &[("Accept", PROMETHEUS_ACCEPT)],
        Bytes::new(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.text();
    for line in [
        "# TYPE broker_requests counter",
        "broker_requests{method=\"client\",backend=\"foo\"} 1",
        "# TYPE broker_responses counter",
        "broker_responses{method=\"server_response\",result=\"ok\",backend=\"foo\"} 1",
        "# TYPE broker_responses_durations histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line} in\n{text}"
        );
    }
    assert!(!text.contains("_total"), "OpenMetrics names in\n{text}");
    assert!(!text.contains("# EOF"), "OpenMetrics trailer in\n{text}");
    server.shutdown().await;
}
