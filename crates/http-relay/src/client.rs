//! `relay http client`: runs next to a backend, long-polls the relay server for user
//! requests, replays each against the backend and streams the answer back as response
//! messages, chunked exactly as the reference does (spec §8.5) so latency and keep-alive
//! timing match what Go servers expect.
//!
//! Fixes over the reference: a header timeout on backend calls, a cap on concurrent
//! requests (a poller only polls when it could serve), no duplicated trailers on retries,
//! sequence numbers so a retried message is never delivered twice, an explicit abort flag
//! when the backend dies mid-body, and request bodies pulled in pieces from servers that
//! offer it.

use crate::proto::{self, HttpRequest, HttpResponse};
use crate::server::BODY_STREAM_PARAM;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use prost::Message as _;
use relay_common::errors::error_chain;
use relay_common::shutdown::{CancellationToken, TaskTracker};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type OutBody = BoxBody<Bytes, BoxError>;
type HttpClient = HyperClient<HttpsConnector<HttpConnector>, OutBody>;

/// Configuration of a relay-client (the reference's flags of spec §8.1 plus our extras).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme of backend requests, `http` or `https` (`--backend_scheme`, default
    /// `https`); anything else is a [`ClientError::Config`].
    pub backend_scheme: String,
    /// `host:port` of the backend (`--backend_address`, default `localhost:8080`).
    pub backend_address: String,
    /// Prefix put before every forwarded path (`--backend_path`, default empty).
    pub backend_path: String,
    /// Send the user's original `Host` to the backend rather than `backend_address`
    /// (`--preserve_host`, default true).
    pub preserve_host: bool,
    /// Scheme towards the relay server, `http` or `https` (`--relay_scheme`, default
    /// `https`).
    pub relay_scheme: String,
    /// `host:port` of the relay server (`--relay_address`, default `localhost:8081`).
    pub relay_address: String,
    /// Path put before `/server/…` on relay calls, e.g. `/apis/core.kubernetes-relay`
    /// (`--relay_prefix`, default empty).
    pub relay_prefix: String,
    /// The name this client serves; users reach it as `/client/{server_name}/`
    /// (`--server_name` or `RELAY_HTTP_SERVER_NAME`, default `server_name`).
    pub server_name: String,
    /// Re-read for every backend request and sent as `Authorization: Bearer {contents}`
    /// (default none: no such header is added).
    pub authentication_token_file: Option<PathBuf>,
    /// PEM roots for the backend connection only (default none: the built-in webpki
    /// roots).
    pub root_ca_file: Option<PathBuf>,
    /// A response message is sent as soon as its body passes this many bytes
    /// (`--max_chunk_size`, default 1 MiB).
    pub max_chunk_size: usize,
    /// Read size in bytes for the backend's response body and upgraded connections
    /// (`--block_size`, default 64 KiB).
    pub block_size: usize,
    /// Number of workers long-polling the relay at once (`--num_pending_requests`,
    /// default 1; 0 counts as 1).
    pub num_pending_requests: usize,
    /// Idle connections kept per host, in both the relay and the backend pools
    /// (`--max_idle_conns_per_host`, default 100).
    pub max_idle_conns_per_host: usize,
    /// Talk to the backend over HTTP/1.1 only, as upgrades to HTTPS backends need
    /// (`--disable_http2`, default false); cannot be combined with `force_http2`.
    pub disable_http2: bool,
    /// Talk to the backend over HTTP/2 only (prior knowledge over `http`), for gRPC
    /// backends (`--force_http2`, default false).
    pub force_http2: bool,
    /// Relay JWT sent as `Authorization: Bearer` on every relay call (ours; the reference
    /// used Google credentials). The file is re-read per call so it can be rotated
    /// (`RELAY_HTTP_TOKEN_FILE`; default none).
    pub relay_token_file: Option<PathBuf>,
    /// Inline relay JWT, used when no token file is set (`RELAY_HTTP_TOKEN`; default
    /// none: relay calls carry no token).
    pub relay_token: Option<String>,
    /// Longest wait for the backend's response headers (default 60 s; 0: none, as the
    /// reference).
    pub backend_timeout: Duration,
    /// Most requests handled at once; pollers stop polling while it is reached (default
    /// 1000).
    pub max_concurrent_requests: usize,
    /// The flush tick of the chunking algorithm (default and reference: 100 ms).
    pub flush_interval: Duration,
    /// Timeout of every relay call (default and reference: 60 s).
    pub relay_call_timeout: Duration,
    /// Offer to pull large request bodies in pieces (`&body_stream=1` on polls; default
    /// true).
    pub stream_request_bodies: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            backend_scheme: "https".into(),
            backend_address: "localhost:8080".into(),
            backend_path: String::new(),
            preserve_host: true,
            relay_scheme: "https".into(),
            relay_address: "localhost:8081".into(),
            relay_prefix: String::new(),
            server_name: "server_name".into(),
            authentication_token_file: None,
            root_ca_file: None,
            max_chunk_size: 1 << 20,
            block_size: 64 * 1024,
            num_pending_requests: 1,
            max_idle_conns_per_host: 100,
            disable_http2: false,
            force_http2: false,
            relay_token_file: None,
            relay_token: None,
            backend_timeout: Duration::from_secs(60),
            max_concurrent_requests: 1000,
            flush_interval: Duration::from_millis(100),
            relay_call_timeout: Duration::from_secs(60),
            stream_request_bodies: true,
        }
    }
}

/// Why the relay-client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot work (conflicting HTTP/2 switches, a scheme other than
    /// `http`/`https`, an unreadable or empty `root_ca_file`); returned before any poll.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The relay answered a poll with 403: credentials are wrong or stale. The reference
    /// exits so that its supervisor restarts it with fresh credentials; so do we.
    #[error("failed to authenticate to the relay (403): {0}")]
    Forbidden(String),
}

/// One piece of a backend response body, from the reader to the accumulator.
#[derive(Debug)]
pub enum BodyEvent {
    /// The next bytes of the backend's body (at most `block_size`), or of the backend's
    /// side of an upgraded connection.
    Data(Bytes),
    /// The backend's response trailers, as wire entries.
    Trailers(Vec<proto::HttpHeader>),
    /// The body failed mid-way; ends the stream with an abort flag.
    Failed(String),
}

#[derive(Debug)]
enum PollError {
    /// 408: nothing to do yet; poll again at once.
    Timeout,
    Forbidden(String),
    Cancelled,
    Other(String),
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("relay call timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
}

/// The running relay-client.
struct Relay {
    config: ClientConfig,
    relay: HttpClient,
    backend: HttpClient,
    permits: Arc<Semaphore>,
}

/// Run the relay-client until `cancel` fires (Ok) or the relay refuses us (Err).
pub async fn run(config: ClientConfig, cancel: CancellationToken) -> Result<(), ClientError> {
    let relay = Arc::new(Relay::new(config)?);
    let fatal = CancellationToken::new();
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<String>(1);
    let workers = TaskTracker::new();
    for _ in 0..relay.config.num_pending_requests.max(1) {
        let relay = Arc::clone(&relay);
        let cancel = cancel.clone();
        let fatal = fatal.clone();
        let fatal_tx = fatal_tx.clone();
        workers.spawn(async move {
            if let Err(reason) = relay.worker(cancel, fatal.clone()).await {
                fatal.cancel();
                let _ = fatal_tx.send(reason).await;
            }
        });
    }
    drop(fatal_tx);
    workers.close();
    workers.wait().await;
    match fatal_rx.try_recv() {
        Ok(reason) => Err(ClientError::Forbidden(reason)),
        Err(_) => Ok(()),
    }
}

fn rustls_config(root_ca_file: Option<&PathBuf>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    match root_ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                ClientError::Config(format!("reading --root_ca_file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    ClientError::Config(format!("parsing --root_ca_file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    ClientError::Config(format!("--root_ca_file {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(ClientError::Config(format!(
                    "--root_ca_file {} holds no certificates",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots_certs()),
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn webpki_roots_certs() -> impl Iterator<Item = rustls::pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}

fn http_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}

impl Relay {
    fn new(config: ClientConfig) -> Result<Self, ClientError> {
        if config.force_http2 && config.disable_http2 {
            return Err(ClientError::Config(
                "--force_http2 and --disable_http2 are mutually exclusive".into(),
            ));
        }
        for (flag, scheme) in [
            ("--backend_scheme", &config.backend_scheme),
            ("--relay_scheme", &config.relay_scheme),
        ] {
            if scheme != "http" && scheme != "https" {
                return Err(ClientError::Config(format!(
                    "{flag} must be http or https, not {scheme:?}"
                )));
            }
        }
        let relay_connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls_config(None)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http_connector());
        let idle = config.max_idle_conns_per_host;
        let relay = HyperClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle)
            .pool_idle_timeout(Duration::from_secs(120))
            .build(relay_connector);

        let tls = rustls_config(config.root_ca_file.as_ref())?;
        let backend_builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let backend_connector = if config.force_http2 {
            backend_builder
                .enable_http2()
                .wrap_connector(http_connector())
        } else if config.disable_http2 {
            backend_builder
                .enable_http1()
                .wrap_connector(http_connector())
        } else {
            backend_builder
                .enable_http1()
                .enable_http2()
                .wrap_connector(http_connector())
        };
        let mut backend = HyperClient::builder(TokioExecutor::new());
        backend
            .pool_max_idle_per_host(idle)
            .pool_idle_timeout(Duration::from_secs(120));
        if config.force_http2 {
            backend.http2_only(true);
        }
        let backend = backend.build(backend_connector);
        let permits = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
        Ok(Relay {
            config,
            relay,
            backend,
            permits,
        })
    }

    fn relay_url(&self, path_and_query: &str) -> String {
        let c = &self.config;
        format!(
            "{}://{}{}{}",
            c.relay_scheme, c.relay_address, c.relay_prefix, path_and_query
        )
    }

    fn relay_token(&self) -> Option<String> {
        if let Some(path) = &self.config.relay_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) => return Some(token.trim().to_owned()),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read --relay_token_file")
                }
            }
        }
        self.config.relay_token.clone()
    }

    /// One call to the relay server, body read completely, under the relay call timeout.
    async fn relay_call(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.relay_url(path_and_query))
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = self.relay_token() {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(full_body(body))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let exchange = async {
            let response = self
                .relay
                .request(request)
                .await
                .map_err(|e| CallError::Transport(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.config.relay_call_timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(self.config.relay_call_timeout)))
    }

    async fn worker(
        self: &Arc<Self>,
        cancel: CancellationToken,
        fatal: CancellationToken,
    ) -> Result<(), String> {
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
                _ = cancel.cancelled() => return Ok(()),
                _ = fatal.cancelled() => return Ok(()),
            };
            let polled = tokio::select! {
                polled = self.poll_once(&cancel) => polled,
                _ = fatal.cancelled() => return Ok(()),
            };
            match polled {
                Ok(request) => {
                    let relay = Arc::clone(self);
                    tokio::spawn(async move {
                        relay.handle_request(request).await;
                        drop(permit);
                    });
                }
                Err(PollError::Timeout) => {}
                Err(PollError::Cancelled) => return Ok(()),
                Err(PollError::Forbidden(body)) => {
                    tracing::error!(body = %body, "failed to authenticate to cloud-api, restarting");
                    return Err(body);
                }
                Err(PollError::Other(e)) => {
                    tracing::warn!(error = %e, "polling the relay failed; pausing 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = cancel.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    /// `GET /server/request` with the reference's backoff: 100 ms ×1.5 up to 10 s, giving
    /// up after 60 s.
    async fn poll_once(&self, cancel: &CancellationToken) -> Result<HttpRequest, PollError> {
        let mut path = format!(
            "/server/request?server={}",
            utf8_percent_encode(&self.config.server_name, NON_ALPHANUMERIC)
        );
        if self.config.stream_request_bodies {
            path.push_str(&format!("&{BODY_STREAM_PARAM}=1"));
        }
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            1.5,
            Duration::from_secs(10),
            None,
            Some(Duration::from_secs(60)),
        );
        loop {
            let result = tokio::select! {
                r = self.relay_call(Method::GET, &path, "text/plain", Bytes::new()) => r,
                _ = cancel.cancelled() => return Err(PollError::Cancelled),
            };
            let error = match result {
                Ok((StatusCode::OK, body)) => match HttpRequest::decode(body) {
                    Ok(request) => return Ok(request),
                    Err(e) => format!("cannot decode HttpRequest: {e}"),
                },
                Ok((StatusCode::REQUEST_TIMEOUT, _)) => return Err(PollError::Timeout),
                Ok((StatusCode::FORBIDDEN, body)) => {
                    return Err(PollError::Forbidden(
                        String::from_utf8_lossy(&body).into_owned(),
                    ))
                }
                Ok((status, body)) => format!(
                    "server status {status}: {}",
                    String::from_utf8_lossy(&body).trim_end()
                ),
                Err(e) => e.to_string(),
            };
            let Some(wait) = backoff.next() else {
                return Err(PollError::Other(error));
            };
            tracing::debug!(error = %error, retry_in = ?wait, "poll failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(PollError::Cancelled),
            }
        }
    }

    /// Answer one relayed request: call the backend, then relay its response (or its
    /// upgraded connection) back as response messages.
    async fn handle_request(self: Arc<Self>, request: HttpRequest) {
        let start = Instant::now();
        let Some(id) = request.id.clone().filter(|id| !id.is_empty()) else {
            tracing::warn!("relay sent a request without id; dropped");
            return;
        };
        let done = CancellationToken::new();
        let backend_request = match self.build_backend_request(&id, &request, &done) {
            Ok(r) => r,
            Err(e) => {
                self.post_error(
                    &id,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Failed to create request for backend: {e}"),
                )
                .await;
                return;
            }
        };
        let response = match self.send_to_backend(backend_request).await {
            Ok(response) => response,
            Err((status, message)) => {
                done.cancel();
                tracing::warn!(ID = %id, error = %message, "backend request failed");
                self.post_error(&id, status, &message).await;
                return;
            }
        };
        let first = HttpResponse {
            status_code: Some(i32::from(response.status().as_u16())),
            header: proto::headers_to_proto(response.headers(), &["transfer-encoding"]),
            ..HttpResponse::for_id(&id)
        };
        let (events_tx, events_rx) = mpsc::channel(1);
        if self
            .start_reading_response(&id, response, events_tx, &done)
            .await
        {
            self.relay_response(&id, first, events_rx, start).await;
        }
        // Ends the upgraded upstream pump and any body pull; `relay_response` dropping its
        // messages receiver already closed the backend body (reader and accumulator stop
        // on send failure).
        done.cancel();
    }

    /// Send the request to the backend and wait for its response headers, at most
    /// `backend_timeout` (0: no limit). A failure is the status and message for the user.
    async fn send_to_backend(
        &self,
        request: Request<OutBody>,
    ) -> Result<http::Response<Incoming>, (StatusCode, String)> {
        let failed = |e: hyper_util::client::legacy::Error| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Backend request failed with error: {}", error_chain(&e)),
            )
        };
        let sent = self.backend.request(request);
        if self.config.backend_timeout.is_zero() {
            return sent.await.map_err(failed);
        }
        match tokio::time::timeout(self.config.backend_timeout, sent).await {
            Ok(response) => response.map_err(failed),
            Err(_) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "Backend request failed with error: no response headers within {:?}",
                    self.config.backend_timeout
                ),
            )),
        }
    }

    /// Start the tasks that turn the backend's response into body events: the body reader,
    /// or for a 101 both directions of the upgraded connection. False when a 101 cannot be
    /// taken over; the user has then been answered with a 500.
    async fn start_reading_response(
        self: &Arc<Self>,
        id: &str,
        mut response: http::Response<Incoming>,
        events: mpsc::Sender<BodyEvent>,
        done: &CancellationToken,
    ) -> bool {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            tokio::spawn(read_body(
                response.into_body(),
                events,
                self.config.block_size,
            ));
            return true;
        }
        match hyper::upgrade::on(&mut response).await {
            Ok(upgraded) => {
                self.spawn_upgraded_pumps(id, upgraded, events, done);
                true
            }
            Err(e) => {
                done.cancel();
                tracing::warn!(ID = %id, error = %e, "backend 101 body is not writable");
                self.post_error(
                    id,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Backend returned 101 Switching Protocols, which is not supported.",
                )
                .await;
                false
            }
        }
    }

    /// Pump both directions of an upgraded backend connection: its bytes become body
    /// events, and the user's bytes pulled from `/server/requeststream` are written to it.
    fn spawn_upgraded_pumps(
        self: &Arc<Self>,
        id: &str,
        upgraded: hyper::upgrade::Upgraded,
        events: mpsc::Sender<BodyEvent>,
        done: &CancellationToken,
    ) {
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        tokio::spawn(read_upgraded(
            read,
            events,
            self.config.block_size,
            done.clone(),
        ));
        let relay = Arc::clone(self);
        let upstream_id = id.to_owned();
        let upstream_done = done.clone();
        tokio::spawn(async move {
            relay
                .pump_upgraded_upstream(&upstream_id, write, upstream_done)
                .await
        });
    }

    /// Cut the body events into response messages after `first` and post them to the
    /// relay in order, until the last one or the first that cannot be delivered.
    async fn relay_response(
        &self,
        id: &str,
        first: HttpResponse,
        events: mpsc::Receiver<BodyEvent>,
        start: Instant,
    ) {
        let (messages_tx, messages_rx) = mpsc::channel(1);
        tokio::spawn(build_responses(
            first,
            events,
            messages_tx,
            self.config.max_chunk_size,
            self.config.flush_interval,
        ));
        if let Err(e) = self.post_messages(messages_rx, start).await {
            tracing::info!(ID = %id, error = %e, "Closing backend connection");
        }
    }

    fn build_backend_request(
        &self,
        id: &str,
        request: &HttpRequest,
        done: &CancellationToken,
    ) -> Result<Request<OutBody>, String> {
        let c = &self.config;
        let url = request.url.as_deref().unwrap_or_default();
        let without_fragment = url.split_once('#').map_or(url, |(u, _)| u);
        let parsed =
            http::Uri::try_from(without_fragment).map_err(|e| format!("parse {url:?}: {e}"))?;
        let path_and_query = parsed.path_and_query().map_or("/", |p| p.as_str());
        let uri = format!(
            "{}://{}{}{}",
            c.backend_scheme, c.backend_address, c.backend_path, path_and_query
        );
        let method = Method::from_bytes(request.method.as_deref().unwrap_or("GET").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        proto::append_proto_headers(
            &mut headers,
            &request.header,
            &["host", "transfer-encoding"],
        );
        if c.preserve_host {
            if let Some(host) = request.host.as_deref().filter(|h| !h.is_empty()) {
                headers.insert(
                    header::HOST,
                    HeaderValue::from_str(host).map_err(|e| format!("host {host:?}: {e}"))?,
                );
            }
        }
        if let Some(path) = &c.authentication_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| format!("token in {}: {e}", path.display()))?;
            headers.insert(header::AUTHORIZATION, value);
        }
        let prefix = request.body.clone().unwrap_or_default();
        let body = if request.body_continues == Some(true) {
            self.pulled_body(id, prefix, done.clone())
        } else {
            full_body(prefix)
        };
        let mut out = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| e.to_string())?;
        *out.headers_mut() = headers;
        Ok(out)
    }

    /// A request body made of `prefix` and then whatever `/server/requeststream` yields
    /// until 410. Any other end makes the body fail, so the backend never mistakes a cut
    /// upload for a complete one.
    fn pulled_body(&self, id: &str, prefix: Bytes, done: CancellationToken) -> OutBody {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
        let path = format!(
            "/server/requeststream?id={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        );
        let relay = self.clone_handle();
        tokio::spawn(async move {
            if !prefix.is_empty() && tx.send(Ok(Frame::data(prefix))).await.is_err() {
                return;
            }
            loop {
                let pulled = tokio::select! {
                    r = relay.relay_call(Method::POST, &path, "text/plain", Bytes::new()) => r,
                    _ = done.cancelled() => return,
                };
                match pulled {
                    Ok((StatusCode::OK, bytes)) if bytes.is_empty() => {}
                    Ok((StatusCode::OK, bytes)) => {
                        if tx.send(Ok(Frame::data(bytes))).await.is_err() {
                            return;
                        }
                    }
                    Ok((StatusCode::GONE, _)) => return,
                    Ok((status, _)) => {
                        let _ = tx
                            .send(Err(format!(
                                "request body stream failed: relay answered {status}"
                            )
                            .into()))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(format!("request body stream failed: {e}").into()))
                            .await;
                        return;
                    }
                }
            }
        });
        BoxBody::new(StreamBody::new(tokio_stream_from(rx)))
    }

    fn clone_handle(&self) -> Relay {
        Relay {
            config: self.config.clone(),
            relay: self.relay.clone(),
            backend: self.backend.clone(),
            permits: Arc::clone(&self.permits),
        }
    }

    /// Copy user bytes of an upgraded connection from `/server/requeststream` into the
    /// backend, until 410, an error, or the response side ends. No retries: a lost or
    /// repeated block would corrupt the stream.
    async fn pump_upgraded_upstream<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        id: &str,
        mut backend: W,
        done: CancellationToken,
    ) {
        let path = format!(
            "/server/requeststream?id={}",
            utf8_percent_encode(id, NON_ALPHANUMERIC)
        );
        loop {
            let pulled = tokio::select! {
                r = self.relay_call(Method::POST, &path, "text/plain", Bytes::new()) => r,
                _ = done.cancelled() => break,
            };
            match pulled {
                Ok((StatusCode::OK, bytes)) => {
                    if !bytes.is_empty() && backend.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok((StatusCode::GONE, _)) => break,
                Ok((status, _)) => {
                    tracing::warn!(ID = %id, %status, "requeststream failed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(ID = %id, error = %e, "requeststream failed");
                    break;
                }
            }
        }
        let _ = backend.shutdown().await;
        // Closing the backend connection ends the downstream read, which sends the eof.
        done.cancel();
    }

    /// Post the messages of one response in order; stops at the first final failure.
    async fn post_messages(
        &self,
        mut messages: mpsc::Receiver<HttpResponse>,
        start: Instant,
    ) -> Result<(), String> {
        let mut sequence = 0u64;
        while let Some(mut msg) = messages.recv().await {
            msg.sequence = Some(sequence);
            sequence += 1;
            if msg.is_eof() {
                msg.backend_duration_ms =
                    Some(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
            }
            self.post_with_retry(&msg).await?;
        }
        Ok(())
    }

    /// POST one message: 1 s ×2 up to 10 s, 10 retries; 400 (and 401/403) are final.
    async fn post_with_retry(&self, msg: &HttpResponse) -> Result<(), String> {
        let body = Bytes::from(msg.encode_to_vec());
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            2.0,
            Duration::from_secs(10),
            Some(10),
            None,
        );
        loop {
            let error = match self
                .relay_call(
                    Method::POST,
                    "/server/response",
                    proto::CONTENT_TYPE_RESPONSE,
                    body.clone(),
                )
                .await
            {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok((
                    status @ (StatusCode::BAD_REQUEST
                    | StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN),
                    body,
                )) => {
                    return Err(format!(
                        "relay refused the response ({status}): {}",
                        String::from_utf8_lossy(&body).trim_end()
                    ));
                }
                Ok((status, body)) => format!(
                    "relay answered {status}: {}",
                    String::from_utf8_lossy(&body).trim_end()
                ),
                Err(e) => e.to_string(),
            };
            match backoff.next() {
                Some(wait) => {
                    tracing::debug!(error = %error, retry_in = ?wait, "posting a response failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(format!("giving up after retries: {error}")),
            }
        }
    }

    /// Resolve the user request ourselves (best effort, one message).
    async fn post_error(&self, id: &str, status: StatusCode, message: &str) {
        let msg = HttpResponse {
            status_code: Some(i32::from(status.as_u16())),
            header: vec![proto::HttpHeader {
                name: Some("Content-Type".into()),
                value: Some("text/plain".into()),
            }],
            body: Some(Bytes::from(message.to_owned())),
            eof: Some(true),
            sequence: Some(0),
            ..HttpResponse::for_id(id)
        };
        if let Err(e) = self.post_with_retry(&msg).await {
            tracing::warn!(ID = %id, error = %e, "could not post the error response");
        }
    }
}

fn full_body(bytes: Bytes) -> OutBody {
    BoxBody::new(Full::new(bytes).map_err(|never| match never {}))
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Read a backend body in blocks of at most `block_size`, trailers included.
async fn read_body(mut body: Incoming, events: mpsc::Sender<BodyEvent>, block_size: usize) {
    let block_size = block_size.max(1);
    while let Some(frame) = body.frame().await {
        let event = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(mut data) => {
                    while data.len() > block_size {
                        if events
                            .send(BodyEvent::Data(data.split_to(block_size)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    BodyEvent::Data(data)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => BodyEvent::Trailers(proto::headers_to_proto(&trailers, &[])),
                    Err(_) => continue,
                },
            },
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "backend body failed mid-stream");
                let _ = events.send(BodyEvent::Failed(error_chain(&e))).await;
                return;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// Read the backend side of an upgraded connection until it closes or `done` fires.
async fn read_upgraded<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    events: mpsc::Sender<BodyEvent>,
    block_size: usize,
    done: CancellationToken,
) {
    loop {
        let mut block = vec![0u8; block_size.max(1)];
        let n = tokio::select! {
            n = read.read(&mut block) => n,
            _ = done.cancelled() => return,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                block.truncate(n);
                if events
                    .send(BodyEvent::Data(Bytes::from(block)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Idle ticks after which an empty keep-alive message is sent (31 ticks ≈ 3.1 s).
const KEEPALIVE_IDLE_TICKS: u32 = 30;

/// The reference's chunking algorithm (spec §8.5): append incoming data to the current
/// message; emit it when it grows past `max_chunk_size`, on every tick that finds body
/// bytes (or the unsent header message), after 31 idle ticks as an empty keep-alive, and
/// at the end with `eof`. A failed body ends with `eof` and `abort_reason`.
pub async fn build_responses(
    first: HttpResponse,
    mut events: mpsc::Receiver<BodyEvent>,
    out: mpsc::Sender<HttpResponse>,
    max_chunk_size: usize,
    tick: Duration,
) {
    let id = first.id.clone().unwrap_or_default();
    let mut msg = first;
    let mut idle_ticks = 0u32;
    let mut ticker = tokio::time::interval_at(Instant::now() + tick, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(BodyEvent::Data(data)) => {
                    append_body(&mut msg, &data);
                    if body_len(&msg) > max_chunk_size {
                        let full = std::mem::replace(&mut msg, HttpResponse::for_id(&id));
                        if out.send(full).await.is_err() {
                            return;
                        }
                        idle_ticks = 0;
                    }
                }
                Some(BodyEvent::Trailers(trailers)) => msg.trailer.extend(trailers),
                Some(BodyEvent::Failed(reason)) => {
                    msg.eof = Some(true);
                    msg.abort_reason = Some(reason);
                    let _ = out.send(msg).await;
                    return;
                }
                None => {
                    msg.eof = Some(true);
                    let _ = out.send(msg).await;
                    return;
                }
            },
            _ = ticker.tick() => {
                idle_ticks += 1;
                if body_len(&msg) > 0 || msg.status_code.is_some() || idle_ticks > KEEPALIVE_IDLE_TICKS {
                    let ready = std::mem::replace(&mut msg, HttpResponse::for_id(&id));
                    if out.send(ready).await.is_err() {
                        return;
                    }
                    idle_ticks = 0;
                }
            }
        }
    }
}

fn body_len(msg: &HttpResponse) -> usize {
    msg.body.as_ref().map_or(0, Bytes::len)
}

fn append_body(msg: &mut HttpResponse, data: &Bytes) {
    msg.body = Some(match msg.body.take() {
        None => data.clone(),
        Some(existing) if existing.is_empty() => data.clone(),
        Some(existing) => {
            let mut joined = bytes::BytesMut::with_capacity(existing.len() + data.len());
            joined.extend_from_slice(&existing);
            joined.extend_from_slice(data);
            joined.freeze()
        }
    });
}

/// Exponential backoff without jitter (the reference's cenkalti settings).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    factor: f64,
    max_interval: Duration,
    max_retries: Option<u32>,
    max_elapsed: Option<Duration>,
    retries: u32,
    elapsed: Duration,
}

impl Backoff {
    /// Waits that start at `initial` and grow by `factor` each time up to `max_interval`;
    /// the iterator ends after `max_retries` waits, or before the waits would add up to
    /// more than `max_elapsed` (`None`: no such limit).
    pub fn new(
        initial: Duration,
        factor: f64,
        max_interval: Duration,
        max_retries: Option<u32>,
        max_elapsed: Option<Duration>,
    ) -> Self {
        Backoff {
            next: initial,
            factor,
            max_interval,
            max_retries,
            max_elapsed,
            retries: 0,
            elapsed: Duration::ZERO,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    /// The next wait, or `None` when the retry or elapsed budget is spent.
    fn next(&mut self) -> Option<Duration> {
        if self.max_retries.is_some_and(|max| self.retries >= max) {
            return None;
        }
        let wait = self.next.min(self.max_interval);
        if self
            .max_elapsed
            .is_some_and(|max| self.elapsed + wait > max)
        {
            return None;
        }
        self.retries += 1;
        self.elapsed += wait;
        self.next = self.next.mul_f64(self.factor).min(self.max_interval);
        Some(wait)
    }
}

#[cfg(test)]
mod tests;
