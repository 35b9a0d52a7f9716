//! In-process integration (the reference's `src/go/tests/relay`): the real server and the
//! real relay-client on 127.0.0.1:0 in front of real backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::routing::{any, get as get_route, post};
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use http_relay::{ClientConfig, ClientError, RunningServer};
use relay_auth::{mint, Audience, Claims};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const NAME: &str = "server_name";

struct Relay {
    server: RunningServer,
    client_stop: CancellationToken,
    client: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl Relay {
    async fn start(backend: SocketAddr, tweak: impl FnOnce(&mut ClientConfig)) -> Relay {
        let server = start_server(|_| {}).await;
        let mut config = client_config(&server, backend, NAME);
        tweak(&mut config);
        let client_stop = CancellationToken::new();
        let client = tokio::spawn(http_relay::client::run(config, client_stop.clone()));
        wait_for_client(&server.url(), NAME).await;
        Relay {
            server,
            client_stop,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/client/{NAME}{path}", self.server.url())
    }

    async fn stop(self) {
        self.client_stop.cancel();
        self.server.shutdown().await;
        let _ = self.client.await;
    }
}

fn backend_app() -> axum::Router {
    axum::Router::new()
        .route("/", get_route(|| async { "Hello" }))
        .route(
            "/status/{code}",
            any(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    (
                        StatusCode::from_u16(code).unwrap(),
                        format!("status {code}"),
                    )
                },
            ),
        )
        .route(
            "/slow",
            get_route(|| async {
                // The backend's own timeout answer, as Go's TimeoutHandler would give.
                tokio::time::sleep(Duration::from_millis(200)).await;
                (StatusCode::SERVICE_UNAVAILABLE, "backend timeout")
            }),
        )
        .route(
            "/sum",
            post(|body: Bytes| async move {
                let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
                format!("{} {}", body.len(), sum)
            }),
        )
        .route("/big", get_route(|| async { big_payload() }))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn big_payload() -> Vec<u8> {
    (0..5 * (1u32 << 20)).map(|i| (i % 253) as u8).collect()
}

#[tokio::test]
async fn http_response_passes_through() {
    let relay = Relay::start(start_backend(backend_app()).await, |_| {}).await;
    let answer = get(&relay.url("/")).await;
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "Hello".into())
    );
    assert_eq!(
        get(&relay.url("/bad-path")).await.status,
        StatusCode::NOT_FOUND
    );
    let wrong = get(&format!("{}/client/wrong/", relay.server.url())).await;
    assert_eq!(wrong.status, StatusCode::SERVICE_UNAVAILABLE);
    relay.stop().await;
}

#[tokio::test]
async fn error_statuses_propagate_unchanged() {
    let relay = Relay::start(start_backend(backend_app()).await, |_| {}).await;
    for code in [400, 401, 402, 403, 404, 405, 500, 501, 502, 503, 504, 505] {
        let answer = get(&relay.url(&format!("/status/{code}"))).await;
        assert_eq!(answer.status.as_u16(), code);
    }
    let slow = get(&relay.url("/slow")).await;
    assert_eq!(
        (slow.status, slow.text()),
        (StatusCode::SERVICE_UNAVAILABLE, "backend timeout".into())
    );
    relay.stop().await;
}

#[tokio::test]
async fn large_response_arrives_byte_identical() {
    let relay = Relay::start(start_backend(backend_app()).await, |c| {
        c.max_chunk_size = 1 << 20
    })
    .await;
    let answer = get(&relay.url("/big")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body == big_payload(), "5 MiB payload differs");
    relay.stop().await;
}

/// POST 10 MB through a relay whose client is tweaked by `tweak`; the backend answers
/// with the length and byte sum it received.
async fn post_ten_megabytes(tweak: impl FnOnce(&mut ClientConfig)) {
    let relay = Relay::start(start_backend(backend_app()).await, tweak).await;
    let body: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = format!(
        "{} {}",
        body.len(),
        body.iter().map(|b| u64::from(*b)).sum::<u64>()
    );
    let answer = call(Method::POST, &relay.url("/sum"), &[], body).await;
    assert_eq!((answer.status, answer.text()), (StatusCode::OK, expected));
    relay.stop().await;
}

/// A 10 MB upload, pulled in pieces through /server/requeststream (our extension).
#[tokio::test]
async fn ten_megabyte_post_is_streamed_to_the_backend() {
    post_ten_megabytes(|_| {}).await;
}

/// A relay-client that does not offer body streaming (like the Go client) still gets the
/// whole body in one message.
#[tokio::test]
async fn ten_megabyte_post_to_a_legacy_client_is_buffered() {
    post_ten_megabytes(|c| c.stream_request_bodies = false).await;
}

/// Chunks reach the user as the backend produces them: the backend sends its second chunk
/// only after the user has received the first.
#[tokio::test]
async fn streamed_chunks_arrive_as_they_are_produced() {
    let first_seen = Arc::new(Notify::new());
    let release = Arc::clone(&first_seen);
    let app = axum::Router::new().route(
        "/stream",
        get_route(move || {
            let release = Arc::clone(&release);
            async move {
                let chunks = futures_util::stream::unfold(0, move |n| {
                    let release = Arc::clone(&release);
                    async move {
                        match n {
                            0 => Some((Ok::<_, std::io::Error>(Bytes::from("chunk1\n")), 1)),
                            1 => {
                                release.notified().await;
                                Some((Ok(Bytes::from("chunk2\n")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                axum::body::Body::from_stream(chunks)
            }
        }),
    );
    let relay = Relay::start(start_backend(app).await, |_| {}).await;
    let response = http()
        .request(
            http::Request::get(relay.url("/stream"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk1\n");
    first_seen.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "chunk2\n");
    relay.stop().await;
}

fn echo_app(closed: Arc<Notify>) -> axum::Router {
    axum::Router::new().route(
        "/",
        any(move |ws: WebSocketUpgrade| {
            let closed = Arc::clone(&closed);
            async move {
                ws.on_upgrade(move |mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        let echo = matches!(msg, WsMessage::Text(_) | WsMessage::Binary(_));
                        if matches!(msg, WsMessage::Close(_))
                            || (echo && socket.send(msg).await.is_err())
                        {
                            break;
                        }
                    }
                    closed.notify_one();
                })
            }
        }),
    )
}

/// A websocket echo through a 101 upgrade; closing the user side reaches the backend
/// (the reference's TestDroppedBidiStreamFreesRelayChannel).
#[tokio::test]
async fn websocket_echo_through_upgrade() {
    let closed = Arc::new(Notify::new());
    let relay = Relay::start(start_backend(echo_app(Arc::clone(&closed))).await, |_| {}).await;
    let ws_url = relay.url("/").replace("http://", "ws://");
    let (mut ws, response) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "second message", "third"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), closed.notified())
        .await
        .expect("backend saw the close");
    // The backend's close ends the relayed connection for the user too.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "user connection stayed open after the backend closed"
    );
    relay.stop().await;
    drop(ws);
}

/// The reference's TestDroppedUserClientFreesRelayChannel: a user that stops reading an
/// endless stream makes the backend's writes fail.
#[tokio::test]
async fn dropped_user_frees_the_backend_stream() {
    let backend_done = Arc::new(Notify::new());
    let done = Arc::clone(&backend_done);
    struct SignalOnDrop(Arc<Notify>);
    impl Drop for SignalOnDrop {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }
    let app = axum::Router::new().route(
        "/forever",
        get_route(move || {
            let guard = SignalOnDrop(Arc::clone(&done));
            async move {
                let lines = futures_util::stream::unfold(guard, |guard| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok::<_, std::io::Error>(Bytes::from("DEADBEEF\n")), guard))
                });
                axum::body::Body::from_stream(lines)
            }
        }),
    );
    let relay = Relay::start(start_backend(app).await, |_| {}).await;
    let response = http()
        .request(
            http::Request::get(relay.url("/forever"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let line = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(line.starts_with(b"DEADBEEF"));
    drop(body);
    tokio::time::timeout(Duration::from_secs(30), backend_done.notified())
        .await
        .expect("backend stream was not dropped");
    relay.stop().await;
}

fn robot_token(secret: &[u8], name: &str) -> String {
    let claims = Claims {
        scopes: vec![http_relay::auth::server_scope(name)],
        aud: Audience::single("http-relay"),
        exp: Some(4_000_000_000),
        ..Claims::default()
    };
    mint(&claims, secret)
}

/// Fix for §14.10: with a secret configured, a token for robot A cannot poll robot B, and
/// cannot answer or pull B's requests either.
#[tokio::test]
async fn token_for_robot_a_cannot_serve_robot_b() {
    let secret = b"relay-secret";
    let server = start_server(|c| {
        c.auth = Some(http_relay::auth::PollerAuth::new(
            secret,
            Some("http-relay".into()),
        ))
    })
    .await;
    let url = server.url();
    let token_a = robot_token(secret, "robot-a");
    let bearer_a = format!("Bearer {token_a}");
    let as_a = |path: String| {
        let bearer = bearer_a.clone();
        async move {
            call(
                Method::GET,
                &path,
                &[("Authorization", bearer.as_str())],
                "",
            )
            .await
        }
    };
    let stolen = as_a(format!("{url}/server/request?server=robot-b")).await;
    assert_eq!(stolen.status, StatusCode::FORBIDDEN);
    assert!(
        !server.broker().is_known_backend("robot-b"),
        "a refused poll must not register the name"
    );
    assert_eq!(
        get(&format!("{url}/server/request?server=robot-a"))
            .await
            .status,
        StatusCode::FORBIDDEN,
        "no token"
    );
    let pull = as_a(format!("{url}/server/requeststream?id=robot-b:00")).await;
    assert_eq!(pull.status, StatusCode::FORBIDDEN);

    // The real client with A's token, configured for B, exits with an error.
    let backend = start_backend(backend_app()).await;
    let mut config = client_config(&server, backend, "robot-b");
    config.relay_token = Some(token_a.clone());
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        http_relay::client::run(config, CancellationToken::new()),
    )
    .await
    .unwrap();
    assert!(
        matches!(result, Err(ClientError::Forbidden(_))),
        "{result:?}"
    );

    // …while serving its own name works end to end.
    let mut config = client_config(&server, backend, "robot-a");
    config.relay_token = Some(token_a);
    let stop = CancellationToken::new();
    let client = tokio::spawn(http_relay::client::run(config, stop.clone()));
    wait_for_client(&url, "robot-a").await;
    let answer = get(&format!("{url}/client/robot-a/")).await;
    assert_eq!(
        (answer.status, answer.text()),
        (StatusCode::OK, "Hello".into())
    );
    stop.cancel();
    server.shutdown().await;
    let _ = client.await;
}

/// The gRPC path without a gRPC stack: the user speaks h2c with `x-server-name`, the
/// client reaches an h2c backend with `force_http2`, and the backend's trailers (where
/// gRPC keeps its status) arrive at the user across several response messages.
#[tokio::test]
async fn h2c_with_x_server_name_and_trailers_across_chunks() {
    let app = axum::Router::new().route(
        "/pkg.Service/Method",
        post(|| async {
            let payload = Bytes::from(vec![7u8; 3 << 20]);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames = futures_util::stream::iter([
                Ok::<_, std::io::Error>(hyper::body::Frame::data(payload)),
                Ok(hyper::body::Frame::trailers(trailers)),
            ]);
            let mut response = http::Response::new(axum::body::Body::new(
                http_body_util::StreamBody::new(frames),
            ));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        }),
    );
    let relay = Relay::start(start_backend(app).await, |c| {
        c.force_http2 = true;
        c.max_chunk_size = 1 << 20;
    })
    .await;
    let request = http::Request::post(format!("{}/pkg.Service/Method", relay.server.url()))
        .header("x-server-name", NAME)
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let response = h2c().request(request).await.unwrap();
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, http::Version::HTTP_2)
    );
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(collected.to_bytes().len(), 3 << 20);
    relay.stop().await;
}
