//! A reconnecting websocket session to a relay topic.
//!
//! [`Session::spawn`] starts one background task that keeps a websocket open to a relay topic,
//! for as long as the [`Session`] lives:
//!
//! - With a token, each attempt POSTs the **access** URL (e.g.
//!   `https://relay.example.io/session/expt00`) with the raw JWT in `Authorization`, checks that
//!   the answer is 2xx, reads `{"uri": ...}` and dials that uri. Without a token the URL is a
//!   `ws://`/`wss://` URL dialled directly.
//! - Failed attempts back off 1, 2, 4, 8, 10, 10… s ([`Backoff`]). Unlike the reference
//!   (B19), the backoff is reset only by a connection that stayed up for
//!   [`SessionConfig::stable_after`]; a relay that accepts and drops at once is retried with
//!   growing waits rather than in a tight loop.
//! - The client pings every [`SessionConfig::ping_interval`] and drops a link from which
//!   nothing (data, ping or pong) has arrived for [`SessionConfig::idle_timeout`], so a
//!   half-open connection is noticed without waiting for TCP keepalive.
//! - Messages keep their type ([`Message::Text`] / [`Message::Binary`]). Sending goes through a
//!   bounded queue: while the link is down, messages wait in the queue and are sent after the
//!   next connect. Received messages wait in a bounded queue too; a slow consumer slows the
//!   reader (the idle timer does not run while the reader waits for the consumer).
//! - [`Session::state`] is a `watch` of the [`SessionState`] (connected or not, how many
//!   connects so far, the last error), so callers can wait for "connected" or notice a token
//!   the relay refuses.
//!
//! Two sessions on one topic of a relay (here one started in-process, as the tests do):
//!
//! ```
//! use relay_client::session::{Message, Session, SessionConfig};
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = relay_server::RunningServer::start(relay_server::ServerConfig::local(b"secret".to_vec())).await?;
//! # let now = relay_auth::unix_now();
//! # let claims = relay_auth::Claims {
//! #     topic: "expt00-data".into(),
//! #     prefix: relay_common::connection::ConnectionType::Session.as_str().into(),
//! #     scopes: vec!["read".into(), "write".into()],
//! #     aud: relay_auth::Audience::single(server.access_url()),
//! #     exp: Some(now + 60), nbf: Some(now - 1), iat: Some(now - 1), ..Default::default()
//! # };
//! # let token = relay_auth::mint(&claims, b"secret");
//! // e.g. "https://relay.example.io/session/expt00-data", and a JWT for that topic
//! let access_url = format!("{}/session/expt00-data", server.access_url());
//! let config = SessionConfig::new(&access_url).with_token(&token);
//!
//! let experiment = Session::spawn(config.clone());
//! let mut browser = Session::spawn(config);
//! experiment.wait_connected().await?;
//! browser.wait_connected().await?;
//!
//! experiment.send(Message::Text(r#"{"temperature":21.5}"#.into())).await?;
//! match browser.recv().await {
//!     Some(Message::Text(text)) => assert_eq!(text, r#"{"temperature":21.5}"#),
//!     other => panic!("unexpected {other:?}"),
//! }
//! // The state says how the link is doing, e.g. for a health endpoint.
//! assert!(experiment.state().borrow().is_connected());
//!
//! experiment.close().await;
//! browser.close().await;
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use relay_common::shutdown::CancellationToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, error, info, warn};

use crate::tls;
use relay_common::errors::error_chain;

/// One websocket message; the frame type is preserved end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// The payload bytes, whatever the type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    fn into_ws(self) -> WsMessage {
        match self {
            Message::Text(text) => WsMessage::Text(text.into()),
            Message::Binary(bytes) => WsMessage::Binary(bytes),
        }
    }
}

/// Exponential backoff between failed connection attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// First wait after a failure.
    pub min: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Growth factor per consecutive failure.
    pub factor: u32,
    /// Pick each wait uniformly in `[wait/2, wait]`, so a fleet of hosts restarting together
    /// does not hammer the relay in lock-step. Off by default (the reference has none).
    pub jitter: bool,
}

impl Default for Backoff {
    /// 1, 2, 4, 8, 10, 10… s, no jitter: the reference's timings.
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(10),
            factor: 2,
            jitter: false,
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (`failures >= 1`), before jitter.
    pub fn wait(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(32);
        let scaled = self
            .min
            .saturating_mul(self.factor.max(1).saturating_pow(exponent));
        scaled.min(self.max)
    }

    fn jittered(&self, failures: u32) -> Duration {
        let wait = self.wait(failures);
        if !self.jitter || wait.is_zero() {
            return wait;
        }
        let low = wait / 2;
        low + (wait - low).mul_f64(rand::random::<f64>())
    }
}

/// How to reach the relay and how to keep the link alive.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// With a token: the access URL (`http(s)://host/session/<topic>`). Without: the
    /// `ws(s)://` URL to dial (an `http(s)` scheme is mapped to `ws(s)`).
    pub url: String,
    /// Raw JWT sent verbatim in `Authorization` to the access URL.
    pub token: Option<String>,
    /// Waits between failed attempts.
    pub backoff: Backoff,
    /// A connection that stayed up this long resets the backoff (then the next attempt is
    /// immediate, as in the reference); a shorter one counts as a failure.
    pub stable_after: Duration,
    /// Interval of client-side pings.
    pub ping_interval: Duration,
    /// Drop the link when nothing has been received for this long.
    pub idle_timeout: Duration,
    /// Time limit for the access POST, and separately for the websocket handshake.
    pub connect_timeout: Duration,
    /// Time limit for writing one message; a stalled write drops the link.
    pub write_timeout: Duration,
    /// Extra PEM CA certificate(s) trusted for https/wss besides the system roots.
    pub extra_ca_file: Option<PathBuf>,
    /// `User-Agent` of the access POST and of the websocket handshake.
    pub user_agent: String,
    /// Capacity of the outgoing queue, in messages.
    pub send_queue: usize,
    /// Capacity of the incoming queue, in messages.
    pub recv_queue: usize,
    /// Largest incoming message accepted (the relay's own limit is 10 MiB).
    pub max_message_size: usize,
}

impl SessionConfig {
    /// Defaults: reference backoff, pings every 20 s, idle timeout 60 s, stable after 10 s,
    /// 10 s connect and write timeouts, queues of 128, 10 MiB messages.
    pub fn new(url: impl Into<String>) -> Self {
        SessionConfig {
            url: url.into(),
            token: None,
            backoff: Backoff::default(),
            stable_after: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            extra_ca_file: None,
            user_agent: format!("relay-client/{}", env!("CARGO_PKG_VERSION")),
            send_queue: 128,
            recv_queue: 128,
            max_message_size: 10 * 1024 * 1024,
        }
    }

    /// Use the access handshake with this token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trust an extra PEM CA file for https/wss.
    pub fn with_extra_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_ca_file = Some(path.into());
        self
    }

    /// Set the user agent.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }
}

/// Why an attempt failed or a link ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The access API answered with a non-2xx status (e.g. an expired or wrong token).
    #[error("access {url} refused the token: HTTP {status}: {body}")]
    AccessRefused {
        /// The access URL that was POSTed to.
        url: String,
        /// The HTTP status code of the answer.
        status: u16,
        /// The answer body, for the server's reason.
        body: String,
    },
    /// The access API could not be reached or answered something unexpected.
    #[error("access request to {url} failed: {reason}")]
    Access {
        /// The access URL that was POSTed to.
        url: String,
        /// What went wrong (connection error, unreadable or malformed answer).
        reason: String,
    },
    /// The websocket could not be opened.
    #[error("websocket dial failed: {0}")]
    Dial(String),
    /// TLS set-up failed (e.g. an unreadable extra CA file).
    #[error("tls configuration: {0}")]
    Tls(String),
    /// An established link ended.
    #[error("connection lost: {0}")]
    Lost(String),
}

/// Where the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// An attempt is in progress (or about to start).
    Connecting,
    /// The websocket is open.
    Connected,
    /// Waiting for the backoff before the next attempt.
    Waiting,
    /// [`Session::close`] was called or the session was dropped.
    Closed,
}

/// A snapshot of the session, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Whether the link is connecting, connected, waiting to retry or closed.
    pub link: LinkState,
    /// Successful connects so far.
    pub connects: u64,
    /// Consecutive failed attempts (reset by a stable connection).
    pub failures: u32,
    /// The most recent error, kept after a later success for diagnosis.
    pub last_error: Option<SessionError>,
}

impl SessionState {
    /// True while the websocket is open.
    pub fn is_connected(&self) -> bool {
        self.link == LinkState::Connected
    }
}

/// The session has been closed; nothing more can be sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session is closed")]
pub struct SessionClosed;

/// A cloneable handle for sending into a session from other tasks.
#[derive(Debug, Clone)]
pub struct SessionSender {
    outgoing: mpsc::Sender<Message>,
}

impl SessionSender {
    /// Queue a message, waiting while the queue is full.
    pub async fn send(&self, message: Message) -> Result<(), SessionClosed> {
        self.outgoing.send(message).await.map_err(|_| SessionClosed)
    }

    /// Queue a message without waiting; gives it back when the queue is full or closed.
    pub fn try_send(&self, message: Message) -> Result<(), mpsc::error::TrySendError<Message>> {
        self.outgoing.try_send(message)
    }
}

/// A reconnecting websocket session; see the module documentation.
#[derive(Debug)]
pub struct Session {
    sender: SessionSender,
    incoming: mpsc::Receiver<Message>,
    state: watch::Receiver<SessionState>,
    /// Cancelled by [`Session::close`] or on drop; the background task then says goodbye
    /// and ends by itself.
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Session {
    /// Start connecting in the background. Must be called inside a tokio runtime.
    pub fn spawn(config: SessionConfig) -> Session {
        let dialer = RelayDialer::new(&config);
        Session::spawn_with_dialer(config, dialer)
    }

    /// A sender for a bare queue, to drive code that takes a [`SessionSender`] in tests.
    #[cfg(test)]
    pub(crate) fn test_sender(capacity: usize) -> (SessionSender, mpsc::Receiver<Message>) {
        let (outgoing, receiver) = mpsc::channel(capacity.max(1));
        (SessionSender { outgoing }, receiver)
    }

    pub(crate) fn spawn_with_dialer<D: Dial>(config: SessionConfig, dialer: D) -> Session {
        let (out_tx, out_rx) = mpsc::channel(config.send_queue.max(1));
        let (in_tx, in_rx) = mpsc::channel(config.recv_queue.max(1));
        let (state_tx, state_rx) = watch::channel(SessionState {
            link: LinkState::Connecting,
            connects: 0,
            failures: 0,
            last_error: None,
        });
        let stop = CancellationToken::new();
        let runner = Runner {
            config,
            dialer,
            outgoing: out_rx,
            incoming: in_tx,
            state: state_tx,
            stop: stop.clone(),
        };
        let task = tokio::spawn(runner.run());
        Session {
            sender: SessionSender { outgoing: out_tx },
            incoming: in_rx,
            state: state_rx,
            stop,
            task: Some(task),
        }
    }

    /// Queue a message, waiting while the queue is full. Messages queued while the link is
    /// down are sent after the next connect.
    pub async fn send(&self, message: Message) -> Result<(), SessionClosed> {
        self.sender.send(message).await
    }

    /// Queue a message without waiting; gives it back when the queue is full or closed.
    pub fn try_send(&self, message: Message) -> Result<(), mpsc::error::TrySendError<Message>> {
        self.sender.try_send(message)
    }

    /// A cloneable sender for other tasks.
    pub fn sender(&self) -> SessionSender {
        self.sender.clone()
    }

    /// The next received message; `None` once the session is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.incoming.recv().await
    }

    /// A message already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.incoming.try_recv().ok()
    }

    /// A watch of the connection state.
    pub fn state(&self) -> watch::Receiver<SessionState> {
        self.state.clone()
    }

    /// Wait until the link is connected (returns at once if it is).
    pub async fn wait_connected(&self) -> Result<(), SessionClosed> {
        let mut state = self.state.clone();
        let result = state
            .wait_for(|s| s.link == LinkState::Connected || s.link == LinkState::Closed)
            .await
            .map(|s| s.link == LinkState::Connected);
        match result {
            Ok(true) => Ok(()),
            _ => Err(SessionClosed),
        }
    }

    /// Wait until at least `count` connects have happened and the link is up.
    pub async fn wait_connects(&self, count: u64) -> Result<(), SessionClosed> {
        let mut state = self.state.clone();
        let result = state
            .wait_for(|s| (s.connects >= count && s.is_connected()) || s.link == LinkState::Closed)
            .await
            .map(|s| s.link != LinkState::Closed);
        match result {
            Ok(true) => Ok(()),
            _ => Err(SessionClosed),
        }
    }

    /// Stop the session: send a close frame if connected, stop the task and wait for it.
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                warn!(%error, "session task ended abnormally");
            }
        }
    }
}

impl Drop for Session {
    /// A dropped session stops like a closed one, only without waiting: the task sees the
    /// cancellation at its next await and ends (sending a close frame if it is connected).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Opens one websocket. The real one does the access handshake; tests plug in in-memory ones.
pub(crate) trait Dial: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn dial(&self) -> impl Future<Output = Result<WebSocketStream<Self::Io>, SessionError>> + Send;
}

/// Dials a relay: access POST (with a token) then websocket handshake.
struct RelayDialer {
    url: String,
    token: Option<String>,
    user_agent: String,
    connect_timeout: Duration,
    max_message_size: usize,
    extra_ca_file: Option<PathBuf>,
    /// Built on first use (and retried after a failure), so a missing CA file shows up as a
    /// failed attempt in the state rather than a panic at spawn.
    clients: tokio::sync::Mutex<Option<(reqwest::Client, Arc<rustls::ClientConfig>)>>,
}

impl RelayDialer {
    fn new(config: &SessionConfig) -> Self {
        RelayDialer {
            url: config.url.clone(),
            token: config.token.clone(),
            user_agent: config.user_agent.clone(),
            connect_timeout: config.connect_timeout,
            max_message_size: config.max_message_size,
            extra_ca_file: config.extra_ca_file.clone(),
            clients: tokio::sync::Mutex::new(None),
        }
    }

    async fn clients(&self) -> Result<(reqwest::Client, Arc<rustls::ClientConfig>), SessionError> {
        let mut guard = self.clients.lock().await;
        if let Some(clients) = guard.as_ref() {
            return Ok(clients.clone());
        }
        let tls =
            Arc::new(tls::client_config(self.extra_ca_file.as_deref()).map_err(SessionError::Tls)?);
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .user_agent(self.user_agent.clone())
            .timeout(self.connect_timeout)
            .build()
            .map_err(|e| SessionError::Tls(format!("building the HTTP client: {e}")))?;
        *guard = Some((http.clone(), tls.clone()));
        Ok((http, tls))
    }

    async fn access(&self, http: &reqwest::Client, token: &str) -> Result<String, SessionError> {
        let access_error = |reason: String| SessionError::Access {
            url: self.url.clone(),
            reason,
        };
        let response = http
            .post(&self.url)
            .header("Authorization", token)
            .send()
            .await
            .map_err(|e| access_error(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| access_error(format!("reading the reply: {e}")))?;
        if !status.is_success() {
            return Err(SessionError::AccessRefused {
                url: self.url.clone(),
                status: status.as_u16(),
                body: truncate(body.trim(), 300),
            });
        }
        #[derive(serde::Deserialize)]
        struct AccessReply {
            uri: String,
        }
        let reply: AccessReply = serde_json::from_str(&body).map_err(|e| {
            access_error(format!(
                "reply is not {{\"uri\":...}}: {e}: {}",
                truncate(&body, 300)
            ))
        })?;
        if reply.uri.is_empty() {
            return Err(access_error("reply has an empty uri".into()));
        }
        Ok(reply.uri)
    }
}

impl Dial for RelayDialer {
    type Io = MaybeTlsStream<tokio::net::TcpStream>;

    async fn dial(&self) -> Result<WebSocketStream<Self::Io>, SessionError> {
        let (http, tls) = self.clients().await?;
        let uri = match &self.token {
            Some(token) => self.access(&http, token).await?,
            None => websocket_scheme(&self.url),
        };
        let mut request = uri
            .as_str()
            .into_client_request()
            .map_err(|e| SessionError::Dial(format!("bad websocket uri {uri}: {e}")))?;
        if let Ok(agent) = HeaderValue::from_str(&self.user_agent) {
            request.headers_mut().insert("User-Agent", agent);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(ws_config),
            true,
            Some(Connector::Rustls(tls)),
        );
        match timeout(self.connect_timeout, connect).await {
            Ok(Ok((ws, _response))) => Ok(ws),
            Ok(Err(e)) => Err(SessionError::Dial(format!("{uri}: {e}"))),
            Err(_) => Err(SessionError::Dial(format!(
                "{uri}: handshake timed out after {:?}",
                self.connect_timeout
            ))),
        }
    }
}

/// Open one websocket the way a session does (access POST with the token, or a direct dial
/// without one) but with no reconnect: for connections that must not outlive their purpose,
/// such as one tunnelled TCP connection of the shell relay.
pub async fn connect_once(
    config: &SessionConfig,
) -> Result<WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>, SessionError> {
    RelayDialer::new(config).dial().await
}

/// `http(s)://` → `ws(s)://`, so a plain URL can be given without a token.
fn websocket_scheme(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        url.to_string()
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// How one connected period ended.
enum LinkEnd {
    /// The session was closed by its owner.
    Stopped,
    /// The link failed or the peer closed it.
    Lost(String),
}

/// The background task.
struct Runner<D> {
    config: SessionConfig,
    dialer: D,
    outgoing: mpsc::Receiver<Message>,
    incoming: mpsc::Sender<Message>,
    state: watch::Sender<SessionState>,
    stop: CancellationToken,
}

impl<D: Dial> Runner<D> {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.state.send_modify(|s| s.link = LinkState::Connecting);
            let dialed = tokio::select! {
                dialed = self.dialer.dial() => dialed,
                () = self.stop.cancelled() => break,
            };
            match dialed {
                Ok(ws) => {
                    let connected_at = Instant::now();
                    self.state.send_modify(|s| {
                        s.link = LinkState::Connected;
                        s.connects += 1;
                    });
                    info!(url = %self.config.url, "connected");
                    match self.pump(ws).await {
                        LinkEnd::Stopped => break,
                        LinkEnd::Lost(reason) => {
                            let lasted = connected_at.elapsed();
                            if lasted >= self.config.stable_after {
                                failures = 0;
                            } else {
                                failures = failures.saturating_add(1);
                            }
                            warn!(url = %self.config.url, %reason, ?lasted, "connection lost");
                            self.state.send_modify(|s| {
                                s.failures = failures;
                                s.last_error = Some(SessionError::Lost(reason));
                            });
                        }
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    match &error {
                        SessionError::AccessRefused { .. } | SessionError::Tls(_) => {
                            error!(%error, failures, "cannot connect; will keep retrying")
                        }
                        _ => warn!(%error, failures, "connection attempt failed"),
                    }
                    self.state.send_modify(|s| {
                        s.failures = failures;
                        s.last_error = Some(error);
                    });
                }
            }
            if failures > 0 {
                let wait = self.config.backoff.jittered(failures);
                debug!(?wait, failures, "backing off");
                self.state.send_modify(|s| s.link = LinkState::Waiting);
                tokio::select! {
                    _ = sleep(wait) => {}
                    () = self.stop.cancelled() => break,
                }
            }
        }
        self.state.send_modify(|s| s.link = LinkState::Closed);
        debug!(url = %self.config.url, "session stopped");
    }

    /// Move messages both ways until the link ends or the session stops.
    async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut ws: WebSocketStream<S>,
    ) -> LinkEnd {
        let start = Instant::now();
        let mut next_ping = start + self.config.ping_interval;
        let mut last_heard = start;
        // A received message the consumer has not taken yet; reading pauses meanwhile.
        let mut pending: Option<Message> = None;
        let mut outgoing_open = true;
        loop {
            let idle_deadline = last_heard + self.config.idle_timeout;
            tokio::select! {
                () = self.stop.cancelled() => {
                    let _ = timeout(self.config.write_timeout, ws.close(None)).await;
                    return LinkEnd::Stopped;
                }
                permit = self.incoming.reserve(), if pending.is_some() => {
                    // The owner dropped the receiving half: keep running for senders.
                    if let (Ok(permit), Some(message)) = (permit, pending.take()) {
                        permit.send(message);
                    }
                    last_heard = Instant::now();
                }
                frame = ws.next(), if pending.is_none() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => pending = Some(Message::Text(text.as_str().to_owned())),
                        Some(Ok(WsMessage::Binary(bytes))) => pending = Some(Message::Binary(bytes)),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                        Some(Ok(WsMessage::Close(frame))) => {
                            let reason = match frame {
                                Some(frame) => format!("closed by peer: {} {}", frame.code, frame.reason),
                                None => "closed by peer".to_string(),
                            };
                            return LinkEnd::Lost(reason);
                        }
                        Some(Err(error)) => return LinkEnd::Lost(format!("read: {error}")),
                        None => return LinkEnd::Lost("stream ended".into()),
                    }
                }
                message = self.outgoing.recv(), if outgoing_open => {
                    let Some(message) = message else {
                        outgoing_open = false;
                        continue;
                    };
                    match timeout(self.config.write_timeout, ws.send(message.into_ws())).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return LinkEnd::Lost(format!("write: {error}")),
                        Err(_) => return LinkEnd::Lost(format!("write stalled for {:?}", self.config.write_timeout)),
                    }
                }
                _ = sleep_until(next_ping) => {
                    // From now, not from the missed tick: a stalled task sends one ping, not a burst.
                    next_ping = Instant::now() + self.config.ping_interval;
                    match timeout(self.config.write_timeout, ws.send(WsMessage::Ping(Bytes::new()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return LinkEnd::Lost(format!("ping: {error}")),
                        Err(_) => return LinkEnd::Lost(format!("ping stalled for {:?}", self.config.write_timeout)),
                    }
                }
                _ = sleep_until(idle_deadline), if pending.is_none() => {
                    return LinkEnd::Lost(format!("nothing received for {:?}", self.config.idle_timeout));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::io::DuplexStream;

    type ServerSide = WebSocketStream<DuplexStream>;

    /// An in-memory dialer: each attempt either fails or hands the server half of a websocket
    /// over a duplex pipe to the test. No sockets, so paused time advances deterministically.
    struct FakeDialer {
        start: Instant,
        /// Per attempt: true = accept. When exhausted, every attempt fails.
        script: Mutex<VecDeque<bool>>,
        attempts: mpsc::UnboundedSender<Duration>,
        servers: mpsc::UnboundedSender<ServerSide>,
    }

    impl Dial for FakeDialer {
        type Io = DuplexStream;

        async fn dial(&self) -> Result<WebSocketStream<DuplexStream>, SessionError> {
            let _ = self.attempts.send(self.start.elapsed());
            let accept = self.script.lock().unwrap().pop_front().unwrap_or(false);
            if !accept {
                return Err(SessionError::Dial("scripted failure".into()));
            }
            let (client_io, server_io) = tokio::io::duplex(1 << 16);
            let (client, server) = tokio::join!(
                tokio_tungstenite::client_async("ws://fake/session/t", client_io),
                tokio_tungstenite::accept_async(server_io)
            );
            let _ = self.servers.send(server.unwrap());
            Ok(client.unwrap().0)
        }
    }

    struct Harness {
        session: Session,
        attempts: mpsc::UnboundedReceiver<Duration>,
        servers: mpsc::UnboundedReceiver<ServerSide>,
    }

    fn harness(config: SessionConfig, script: &[bool]) -> Harness {
        let (attempts_tx, attempts) = mpsc::unbounded_channel();
        let (servers_tx, servers) = mpsc::unbounded_channel();
        let dialer = FakeDialer {
            start: Instant::now(),
            script: Mutex::new(script.iter().copied().collect()),
            attempts: attempts_tx,
            servers: servers_tx,
        };
        Harness {
            session: Session::spawn_with_dialer(config, dialer),
            attempts,
            servers,
        }
    }

    fn config() -> SessionConfig {
        SessionConfig::new("ws://fake/session/t")
    }

    async fn attempt_times(
        attempts: &mut mpsc::UnboundedReceiver<Duration>,
        count: usize,
    ) -> Vec<u64> {
        let mut times = Vec::new();
        for _ in 0..count {
            times.push(attempts.recv().await.unwrap().as_millis() as u64);
        }
        times
    }

    /// Serve a connection until `lifetime` has passed, answering pings (tungstenite answers
    /// them while the server reads), then drop it.
    fn serve_for(mut server: ServerSide, lifetime: Duration) {
        tokio::spawn(async move {
            let _ = timeout(lifetime, async {
                while let Some(Ok(_)) = server.next().await {}
            })
            .await;
        });
    }

    #[test]
    fn backoff_waits_double_up_to_the_maximum() {
        let backoff = Backoff::default();
        let waits: Vec<u64> = (1..=7).map(|n| backoff.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
        let wide = Backoff {
            max: Duration::from_secs(30),
            ..Backoff::default()
        };
        let waits: Vec<u64> = (1..=7).map(|n| wide.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.wait(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_between_half_and_full_wait() {
        let backoff = Backoff {
            jitter: true,
            ..Backoff::default()
        };
        for failures in 1..10 {
            for _ in 0..50 {
                let wait = backoff.jittered(failures);
                assert!(
                    wait >= backoff.wait(failures) / 2 && wait <= backoff.wait(failures),
                    "{wait:?}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_retry_at_0_1_3_7_15_25_35_seconds() {
        let mut h = harness(config(), &[]);
        let times = attempt_times(&mut h.attempts, 7).await;
        assert_eq!(times, [0, 1_000, 3_000, 7_000, 15_000, 25_000, 35_000]);
        let state = h.session.state().borrow().clone();
        assert_eq!(state.connects, 0);
        assert!(matches!(state.last_error, Some(SessionError::Dial(_))));
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_dropped_at_once_still_backs_off() {
        // B19: the reference reconnected in a tight loop after each accepted-then-dropped link.
        let mut h = harness(config(), &[true; 6]);
        let mut servers = h.servers;
        tokio::spawn(async move {
            while let Some(server) = servers.recv().await {
                drop(server)
            }
        });
        let times = attempt_times(&mut h.attempts, 6).await;
        assert_eq!(times, [0, 1_000, 3_000, 7_000, 15_000, 25_000]);
        assert!(h.session.state().borrow().connects >= 5);
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_link_resets_the_backoff_and_reconnects_at_once() {
        let mut h = harness(config(), &[false, false, true]);
        let mut servers = h.servers;
        tokio::spawn(async move {
            while let Some(server) = servers.recv().await {
                serve_for(server, Duration::from_secs(30));
            }
        });
        // fail at 0, fail at 1, connect at 3 and stay up until 33, then 33, 34, 36 (failures).
        let times = attempt_times(&mut h.attempts, 6).await;
        assert_eq!(times, [0, 1_000, 3_000, 33_000, 34_000, 36_000]);
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn pings_go_out_at_every_interval() {
        let config = SessionConfig {
            ping_interval: Duration::from_secs(20),
            ..config()
        };
        let mut h = harness(config, &[true]);
        let mut server = h.servers.recv().await.unwrap();
        let start = Instant::now();
        let mut pings = Vec::new();
        while pings.len() < 3 {
            if let Some(Ok(WsMessage::Ping(_))) = server.next().await {
                pings.push(start.elapsed().as_secs());
            }
        }
        assert_eq!(pings, [20, 40, 60]);
        assert_eq!(h.session.state().borrow().connects, 1);
        assert!(h.session.state().borrow().is_connected());
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_half_open_link_is_dropped_after_the_idle_timeout() {
        let config = SessionConfig {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(45),
            ..config()
        };
        let mut h = harness(config, &[true, true]);
        // Keep the server half but never read it: pings stay unanswered, as on a dead path.
        let _silent = h.servers.recv().await.unwrap();
        let times = attempt_times(&mut h.attempts, 2).await;
        // The link lasted 45 s (> stable_after), so the reconnect is immediate.
        assert_eq!(times, [0, 45_000]);
        let state = h.session.state().borrow().clone();
        match state.last_error {
            Some(SessionError::Lost(reason)) => {
                assert!(reason.contains("nothing received"), "{reason}")
            }
            other => panic!("unexpected last error {other:?}"),
        }
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn messages_keep_their_type_and_wait_for_the_link() {
        let mut h = harness(config(), &[false, true]);
        // Queued while the first attempt fails; delivered after the connect at 1 s.
        h.session.send(Message::Text("hello".into())).await.unwrap();
        h.session
            .send(Message::Binary(Bytes::from_static(&[0, 159, 146, 150])))
            .await
            .unwrap();
        let mut server = h.servers.recv().await.unwrap();
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::Text("hello".into())
        );
        assert_eq!(
            server.next().await.unwrap().unwrap(),
            WsMessage::Binary(Bytes::from_static(&[0, 159, 146, 150]))
        );
        server
            .send(WsMessage::Binary(Bytes::from_static(b"\x01\x02")))
            .await
            .unwrap();
        server
            .send(WsMessage::Text("{\"a\":1}".into()))
            .await
            .unwrap();
        assert_eq!(
            h.session.recv().await,
            Some(Message::Binary(Bytes::from_static(b"\x01\x02")))
        );
        assert_eq!(
            h.session.recv().await,
            Some(Message::Text("{\"a\":1}".into()))
        );
        h.session.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn wait_connected_and_close_report_through_the_state() {
        let mut h = harness(config(), &[false, false, true]);
        let start = Instant::now();
        h.session.wait_connected().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let mut state = h.session.state();
        let mut server = h.servers.recv().await.unwrap();
        h.session.close().await;
        assert_eq!(state.borrow_and_update().link, LinkState::Closed);
        // The peer got a close frame.
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Close(_)))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_session_stops_its_task_by_itself() {
        let mut h = harness(config(), &[true]);
        h.session.wait_connected().await.unwrap();
        let mut state = h.session.state();
        let mut server = h.servers.recv().await.unwrap();
        drop(h.session);
        // Not aborted: the task sees the cancellation, says goodbye and records the end.
        assert!(matches!(server.next().await, Some(Ok(WsMessage::Close(_)))));
        let closed = state.wait_for(|s| s.link == LinkState::Closed).await;
        assert!(closed.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_does_not_count_as_silence() {
        let config = SessionConfig {
            recv_queue: 1,
            idle_timeout: Duration::from_secs(5),
            ..config()
        };
        let mut h = harness(config, &[true]);
        let mut server = h.servers.recv().await.unwrap();
        for n in 0..3 {
            server
                .send(WsMessage::Text(n.to_string().into()))
                .await
                .unwrap();
        }
        // Nothing is read for a long time; pings are answered by the server reading below.
        tokio::spawn(async move { while let Some(Ok(_)) = server.next().await {} });
        sleep(Duration::from_secs(60)).await;
        for n in 0..3 {
            assert_eq!(h.session.recv().await, Some(Message::Text(n.to_string())));
        }
        assert_eq!(h.session.state().borrow().connects, 1);
        h.session.close().await;
    }

    #[tokio::test]
    async fn tls_clients_need_no_process_wide_crypto_provider() {
        // Nothing in this test binary installs a default provider; the session must not
        // depend on one (the relay binary may not install it for client subcommands).
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        let dialer = RelayDialer::new(&SessionConfig::new("https://relay.example.io/session/x"));
        assert!(dialer.clients().await.is_ok());
        let ca =
            SessionConfig::new("https://x/session/y").with_extra_ca_file("/nonexistent/ca.pem");
        match RelayDialer::new(&ca).clients().await {
            Err(SessionError::Tls(reason)) => {
                assert!(reason.contains("/nonexistent/ca.pem"), "{reason}")
            }
            other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn http_urls_map_to_websocket_schemes() {
        assert_eq!(
            websocket_scheme("http://h:1/session/x"),
            "ws://h:1/session/x"
        );
        assert_eq!(websocket_scheme("https://h/session/x"), "wss://h/session/x");
        assert_eq!(websocket_scheme("ws://h/x"), "ws://h/x");
    }
}
