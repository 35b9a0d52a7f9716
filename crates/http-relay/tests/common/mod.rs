//! Helpers shared by the integration tests: a relay server on 127.0.0.1:0, a plain HTTP
//! client, a fake relay-client speaking the wire protocol by hand, and backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use http_relay::proto::{HttpRequest, HttpResponse};
use http_relay::{ClientConfig, RunningServer, ServerConfig};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use relay_testkit::wait_until_async;
use std::net::SocketAddr;
use std::time::Duration;

pub async fn start_server(tweak: impl FnOnce(&mut ServerConfig)) -> RunningServer {
    let mut config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        block_size: 10240,
        ..ServerConfig::default()
    };
    tweak(&mut config);
    RunningServer::start(config).await.unwrap()
}

pub fn http() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c), as gRPC clients talk to the relay.
pub fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished exchange.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn call(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = http()
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Answer {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

pub async fn get(url: &str) -> Answer {
    call(Method::GET, url, &[], Bytes::new()).await
}

/// A fake relay-client poll: the request handed over, if any.
pub async fn poll(server: &str, name: &str) -> (StatusCode, Option<HttpRequest>) {
    let answer = get(&format!("{server}/server/request?server={name}")).await;
    let request = (answer.status == StatusCode::OK)
        .then(|| HttpRequest::decode(answer.body.clone()).unwrap());
    (answer.status, request)
}

pub async fn post_response(server: &str, msg: &HttpResponse) -> Answer {
    call(
        Method::POST,
        &format!("{server}/server/response"),
        &[],
        msg.encode_to_vec(),
    )
    .await
}

/// Keep polling until a user request arrives (polls time out after the server's poll
/// wait, 30 s by default), for at most two default poll waits.
pub async fn poll_until_request(server: &str, name: &str) -> HttpRequest {
    let arrived = std::cell::RefCell::new(None);
    wait_until_async(
        &format!("a user request for {name}"),
        Duration::from_secs(60),
        || {
            let arrived = &arrived;
            async move {
                let (_, request) = poll(server, name).await;
                let got = request.is_some();
                *arrived.borrow_mut() = request;
                got
            }
        },
    )
    .await;
    arrived.into_inner().expect("the wait ended with a request")
}

/// Serve `router` on 127.0.0.1:0.
pub async fn start_backend(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

pub fn client_config(server: &RunningServer, backend: SocketAddr, name: &str) -> ClientConfig {
    ClientConfig {
        backend_scheme: "http".into(),
        backend_address: backend.to_string(),
        relay_scheme: "http".into(),
        relay_address: server.addr().to_string(),
        server_name: name.into(),
        ..ClientConfig::default()
    }
}

/// The reference's WaitForClient: retry `/client/{name}/` while it is 503 "unknown client".
pub async fn wait_for_client(server: &str, name: &str) {
    let url = format!("{server}/client/{name}/");
    wait_until_async(
        &format!("relay client {name} to register"),
        Duration::from_secs(10),
        || async {
            let answer = get(&url).await;
            !(answer.status == StatusCode::SERVICE_UNAVAILABLE
                && answer.text().contains("unknown client"))
        },
    )
    .await;
}
