//! The broker: hands user requests to relay-clients polling for the same server name, and
//! routes response messages and upstream bytes to the waiting user request by ID.
//!
//! Unlike the reference, the global state lock is a plain `std::sync::Mutex` that is never
//! held across an `.await`: every wait (for a poller, for the user to take a message, for
//! upstream bytes) happens on per-request or per-backend primitives after the lock is
//! released, so one slow user or client cannot freeze the broker or `/healthz`.

use crate::metrics::{self, Metrics};
use crate::proto::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// The fixed waits of the broker (the reference hard-codes the first two).
#[derive(Clone, Debug)]
pub struct BrokerTimeouts {
    /// How long a user request waits for a poll to take it (reference: 10 s, then 500).
    pub relay: Duration,
    /// How long `/server/request` and `/server/requeststream` long-polls wait (30 s).
    pub poll: Duration,
    /// How long a `/server/response` POST may wait for the user side to take its message
    /// before answering a retryable 503 without delivering it. Kept under the Go client's
    /// 60 s call timeout, so the client never retries a message we still deliver.
    pub response_post: Duration,
}

impl Default for BrokerTimeouts {
    fn default() -> Self {
        BrokerTimeouts {
            relay: Duration::from_secs(10),
            poll: Duration::from_secs(30),
            response_post: Duration::from_secs(45),
        }
    }
}

/// Why a broker operation failed. The messages are the reference's, clients match on some.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The request's `url` is not a valid URI; holds the parser's message. The user gets
    /// a 500.
    #[error("failed to parse URL: {0}")]
    UrlParse(String),
    /// No relay-client has polled for this server name (or it was reaped); holds the name.
    /// The user gets a 503 carrying the request ID header.
    #[error("cannot reach the client {0:?}; check that it's turned on, set up, and connected to the internet (unknown client)")]
    UnknownBackend(String),
    /// A request with this ID is already in flight (IDs are random, so only a collision
    /// or a replayed ID gets here). The user gets a 500.
    #[error("multiple clients trying to handle request ID {id} on server {backend}")]
    MultipleClients {
        /// The request ID that is already in flight.
        id: String,
        /// The server name the request was meant for.
        backend: String,
    },
    /// No relay-client took the request within the relay timeout (default 10 s); holds
    /// the server name. The user gets a 500.
    #[error("cannot reach the client {0:?}; check that it's turned on, set up, and connected to the internet; if the network config recently changed, try again in 1-2 minutes (timeout waiting for relay client to accept request)")]
    RelayTimeout(String),
    /// A long-poll found no request within the poll timeout (default 30 s); the
    /// relay-client gets a 408 and polls again.
    #[error("no request received within timeout")]
    PollTimeout,
    /// The poll was cut short by shutdown (or its backend was forgotten meanwhile); the
    /// relay-client gets a 408.
    #[error("server is restarting")]
    ServerRestarting,
    /// A posted response message has no `id`; answered with 400.
    #[error("missing id in response message")]
    MissingId,
    /// A posted response names an ID that is not in flight, or whose final (`eof`)
    /// message was already delivered; holds the ID. Answered with 400.
    #[error("duplicate or invalid request ID {0}")]
    UnknownId(String),
    /// The request was stopped (reaped for inactivity, or the user went away) before the
    /// message could be delivered; answered with 400.
    #[error("closed due to inactivity")]
    ClosedInactivity,
    /// The user side did not take the message within the response-post timeout (default
    /// 45 s), which it holds; answered with a retryable 503, the message not delivered.
    #[error("the user-client did not take the response message within {0:?}; retry")]
    ResponseBusy(Duration),
}

/// A user request on its way to a relay-client. `body_rest` is the not-yet-read remainder
/// of a large request body (see [`Broker::stream_request_body`]).
pub struct Dispatch {
    /// The message the relay-client polls for: ID, method, URL, headers, host and the body
    /// (or its start).
    pub request: HttpRequest,
    /// The unread rest of a body longer than the body-stream threshold; `None` when
    /// `request.body` holds the whole body.
    pub body_rest: Option<axum::body::Body>,
}

/// The backend name of a request ID: the text before the last `:`. IDs are
/// `{name}:{32 hex}` ([`new_request_id`]) and a name may itself contain `:`
/// (`/client/a%3Ab/`), so splitting at the first `:` would check a response's token
/// against the wrong backend (found by fuzzing, issue 19).
pub fn backend_of(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(name, _)| name)
}

/// A new request ID `{name}:{32 lowercase hex}` from the thread CSPRNG.
pub fn new_request_id(backend: &str) -> String {
    use std::fmt::Write as _;
    let random: [u8; 16] = rand::random();
    let mut id = String::with_capacity(backend.len() + 33);
    id.push_str(backend);
    id.push(':');
    for b in random {
        let _ = write!(id, "{b:02x}");
    }
    id
}

struct Backend {
    queue_tx: flume::Sender<Dispatch>,
    queue_rx: flume::Receiver<Dispatch>,
    last_activity: Instant,
}

impl Backend {
    fn new(now: Instant) -> Self {
        // Capacity 0: a request is handed over only to a poll that is waiting right now,
        // and a hand-off that times out is withdrawn rather than left queued.
        let (queue_tx, queue_rx) = flume::bounded(0);
        Backend {
            queue_tx,
            queue_rx,
            last_activity: now,
        }
    }
}

#[derive(Default)]
struct State {
    backends: HashMap<String, Backend>,
    pending: HashMap<String, Arc<PendingRequest>>,
}

/// Per-request delivery bookkeeping, guarded by the per-request send lock.
#[derive(Default)]
struct Delivery {
    delivered: u64,
    eof_delivered: bool,
}

/// One in-flight user request as the broker sees it.
pub struct PendingRequest {
    /// The request ID (`{backend}:{32 hex digits}`), its key in the broker.
    pub id: String,
    /// The server name the request was relayed to.
    pub backend: String,
    /// The path of the request's URL, without the query.
    pub path: String,
    /// When the broker accepted the request; response durations are measured from it.
    pub start: Instant,
    last_activity: Mutex<Instant>,
    responses: mpsc::Sender<HttpResponse>,
    /// Serialises deliveries of one ID; never taken while the state lock is held.
    delivery: tokio::sync::Mutex<Delivery>,
    upstream_tx: flume::Sender<Bytes>,
    upstream_rx: flume::Receiver<Bytes>,
    /// A streamed request body has been fully handed over; `/server/requeststream`
    /// answers 410 once the queue is drained.
    upstream_finished: CancellationToken,
    /// Fired when the request is reaped or stopped.
    stopped: CancellationToken,
}

impl PendingRequest {
    fn touch(&self, now: Instant) {
        *lock(&self.last_activity) = now;
    }

    fn last_activity(&self) -> Instant {
        *lock(&self.last_activity)
    }

    /// True once the request was reaped or stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }
}

/// What the user side gets next for its request.
#[derive(Debug)]
pub enum NextMessage {
    /// The next response message from the relay-client, in the order they were posted.
    Message(HttpResponse),
    /// The stream ended without `eof`: reaped (no message for the inactivity timeout) or
    /// stopped.
    Ended,
}

/// The user side of a dispatched request. Dropping it stops the request (the reference's
/// StopRelayRequest), so a handler that returns or is cancelled never leaks its record.
pub struct RelayedRequest {
    broker: Arc<Broker>,
    /// The broker's record of this request (ID, backend, start time).
    pub record: Arc<PendingRequest>,
    responses: mpsc::Receiver<HttpResponse>,
}

impl RelayedRequest {
    /// The next response message, or `Ended` when the request was reaped or stopped.
    pub async fn next_message(&mut self) -> NextMessage {
        tokio::select! {
            biased;
            msg = self.responses.recv() => msg.map_or(NextMessage::Ended, NextMessage::Message),
            _ = self.record.stopped.cancelled() => match self.responses.try_recv() {
                Ok(msg) => NextMessage::Message(msg),
                Err(_) => NextMessage::Ended,
            },
        }
    }

    /// The request ID, as the relay-client sees it.
    pub fn id(&self) -> &str {
        &self.record.id
    }
}

impl Drop for RelayedRequest {
    fn drop(&mut self) {
        self.broker.stop_relay_request(&self.record.id);
    }
}

/// Result of a `/server/requeststream` pull.
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamPull {
    /// One or more blocks, coalesced.
    Data(Bytes),
    /// Nothing within the poll timeout (or the stream is closing): 200 with an empty body.
    KeepAlive,
    /// Unknown ID or the streamed body is complete: 410.
    Gone,
}

/// Outcome of a delivered `/server/response` message.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The message was handed to the user side.
    Delivered,
    /// A retry of a message already delivered (same `sequence`); acknowledged, not resent.
    Duplicate,
}

/// The in-memory matcher. Always used behind an `Arc`.
pub struct Broker {
    state: Mutex<State>,
    timeouts: BrokerTimeouts,
    /// The metrics this broker updates; the server registers them for `/metrics`.
    pub metrics: Metrics,
    upstream_queue: usize,
    max_upstream_pull: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters more than refusing service, so keep serving with the inner value.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Broker {
    /// An empty broker with the given waits, counting into `metrics`. No backend is known
    /// until a relay-client polls; a `/server/requeststream` answer holds at most 1 MiB
    /// until [`Broker::set_max_upstream_pull`] changes it.
    pub fn new(timeouts: BrokerTimeouts, metrics: Metrics) -> Arc<Self> {
        Arc::new(Broker {
            state: Mutex::new(State::default()),
            timeouts,
            metrics,
            upstream_queue: 4,
            max_upstream_pull: AtomicUsize::new(1 << 20),
        })
    }

    /// Largest coalesced `/server/requeststream` answer.
    pub fn set_max_upstream_pull(&self, bytes: usize) {
        self.max_upstream_pull
            .store(bytes.max(1), Ordering::Relaxed);
    }

    /// Take and release the state lock (the reference's health check), reporting how long
    /// acquiring it took.
    pub fn health(&self) -> Duration {
        let start = std::time::Instant::now();
        drop(lock(&self.state));
        start.elapsed()
    }

    /// Make `name` known, as a poll does; used by tests to pre-register backends.
    pub fn register_backend(&self, name: &str) {
        let mut state = lock(&self.state);
        self.touch_backend(&mut state, name, true);
    }

    fn touch_backend(&self, state: &mut State, name: &str, create: bool) {
        let now = Instant::now();
        match state.backends.get_mut(name) {
            Some(b) => b.last_activity = now,
            None if create => {
                state.backends.insert(name.to_owned(), Backend::new(now));
                self.metrics.backends.inc();
            }
            None => {}
        }
    }

    /// Number of requests in flight (tests and metrics).
    pub fn pending_count(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// True when `id` is in flight.
    pub fn is_pending(&self, id: &str) -> bool {
        lock(&self.state).pending.contains_key(id)
    }

    /// True when `name` is a known backend.
    pub fn is_known_backend(&self, name: &str) -> bool {
        lock(&self.state).backends.contains_key(name)
    }

    /// Hand a user request to a relay-client polling for `backend`, waiting at most the
    /// relay timeout for one. On success the caller reads response messages from the
    /// returned handle; on any failure the record is already gone.
    pub async fn relay_request(
        self: &Arc<Self>,
        backend: &str,
        dispatch: Dispatch,
    ) -> Result<RelayedRequest, BrokerError> {
        let url = dispatch.request.url.as_deref().unwrap_or_default();
        let parsed = http::Uri::try_from(url).map_err(|e| BrokerError::UrlParse(e.to_string()))?;
        let id = dispatch.request.id.clone().unwrap_or_default();
        let now = Instant::now();
        let (queue, handle) = {
            let mut state = lock(&self.state);
            let Some(slot) = state.backends.get_mut(backend) else {
                return Err(BrokerError::UnknownBackend(backend.to_owned()));
            };
            slot.last_activity = now;
            let queue = slot.queue_tx.clone();
            if state.pending.contains_key(&id) {
                return Err(BrokerError::MultipleClients {
                    id,
                    backend: backend.to_owned(),
                });
            }
            let (responses, responses_rx) = mpsc::channel(1);
            let (upstream_tx, upstream_rx) = flume::bounded(self.upstream_queue);
            let record = Arc::new(PendingRequest {
                id: id.clone(),
                backend: backend.to_owned(),
                path: parsed.path().to_owned(),
                start: now,
                last_activity: Mutex::new(now),
                responses,
                delivery: tokio::sync::Mutex::new(Delivery::default()),
                upstream_tx,
                upstream_rx,
                upstream_finished: CancellationToken::new(),
                stopped: CancellationToken::new(),
            });
            state.pending.insert(id.clone(), Arc::clone(&record));
            self.metrics.pending_requests.inc();
            (
                queue,
                RelayedRequest {
                    broker: Arc::clone(self),
                    record,
                    responses: responses_rx,
                },
            )
        };
        self.metrics.count_request(metrics::METHOD_CLIENT, backend);
        tracing::debug!(ID = %id, "Enqueuing request");
        match tokio::time::timeout(self.timeouts.relay, queue.send_async(dispatch)).await {
            Ok(Ok(())) => Ok(handle),
            // `handle` drops here and removes the record (the reference leaked it).
            _ => Err(BrokerError::RelayTimeout(backend.to_owned())),
        }
    }

    /// Long-poll for the next request for `server`: registers the backend, then waits up
    /// to the poll timeout. `cancel` fires on shutdown or when the poller goes away.
    pub async fn get_request(
        &self,
        server: &str,
        cancel: &CancellationToken,
    ) -> Result<Dispatch, BrokerError> {
        let queue = {
            let mut state = lock(&self.state);
            self.touch_backend(&mut state, server, true);
            state.backends.get(server).map(|b| b.queue_rx.clone())
        };
        let Some(queue) = queue else {
            return Err(BrokerError::ServerRestarting);
        };
        self.metrics
            .count_request(metrics::METHOD_SERVER_REQUEST, server);
        let deadline = Instant::now() + self.timeouts.poll;
        tokio::select! {
            dispatch = queue.recv_async() => match dispatch {
                Ok(dispatch) => {
                    self.metrics.count_response(metrics::METHOD_SERVER_REQUEST, metrics::RESULT_OK, server);
                    Ok(dispatch)
                }
                Err(_) => Err(BrokerError::ServerRestarting),
            },
            _ = sleep_until(deadline) => {
                self.metrics.count_response(metrics::METHOD_SERVER_REQUEST, metrics::RESULT_TIMEOUT, server);
                Err(BrokerError::PollTimeout)
            }
            _ = cancel.cancelled() => Err(BrokerError::ServerRestarting),
        }
    }

    fn lookup(&self, id: &str, refresh_backend: bool) -> Option<Arc<PendingRequest>> {
        let mut state = lock(&self.state);
        if refresh_backend {
            self.touch_backend(&mut state, backend_of(id), false);
        }
        state.pending.get(id).cloned()
    }

    /// The record for `id`, if in flight.
    pub fn pending(&self, id: &str) -> Option<Arc<PendingRequest>> {
        self.lookup(id, false)
    }

    /// Deliver one response message to the user side, waiting (without any global lock)
    /// until it is taken, the request stops, or the post timeout passes.
    pub async fn send_response(&self, msg: HttpResponse) -> Result<Delivered, BrokerError> {
        let id = msg.id.clone().ok_or(BrokerError::MissingId)?;
        let backend = backend_of(&id).to_owned();
        let Some(record) = self.lookup(&id, true) else {
            // Only a connected backend's name becomes a label: the name comes from the
            // caller, and a series per invented name would grow /metrics without bound.
            if self.is_known_backend(&backend) {
                self.metrics.count_response(
                    metrics::METHOD_SERVER_RESPONSE,
                    metrics::RESULT_NOT_RECOGNIZED,
                    &backend,
                );
            }
            return Err(BrokerError::UnknownId(id));
        };
        record.touch(Instant::now());
        let deadline = Instant::now() + self.timeouts.response_post;
        let busy = BrokerError::ResponseBusy(self.timeouts.response_post);
        let mut delivery = tokio::select! {
            guard = record.delivery.lock() => guard,
            _ = record.stopped.cancelled() => return Err(BrokerError::ClosedInactivity),
            _ = sleep_until(deadline) => return Err(busy),
        };
        if delivery.eof_delivered {
            return Err(BrokerError::UnknownId(id));
        }
        if msg.sequence.is_some_and(|seq| seq < delivery.delivered) {
            return Ok(Delivered::Duplicate);
        }
        let permit = tokio::select! {
            permit = record.responses.reserve() => permit.map_err(|_| BrokerError::ClosedInactivity)?,
            _ = record.stopped.cancelled() => return Err(BrokerError::ClosedInactivity),
            _ = sleep_until(deadline) => return Err(busy),
        };
        let eof = msg.is_eof();
        let backend_ms = msg.backend_duration_ms.unwrap_or(0);
        permit.send(msg);
        delivery.delivered += 1;
        record.touch(Instant::now());

        let labels = metrics::method_labels(metrics::METHOD_SERVER_RESPONSE, &backend);
        let total = record.start.elapsed().as_secs_f64();
        self.metrics
            .count_request(metrics::METHOD_SERVER_RESPONSE, &backend);
        self.metrics
            .response_durations
            .get_or_create(&labels)
            .observe(total);
        if eof {
            delivery.eof_delivered = true;
            self.remove_record(&record);
            if backend_ms > 0 {
                let backend_secs = backend_ms as f64 / 1000.0;
                self.metrics
                    .backend_durations
                    .get_or_create(&labels)
                    .observe(backend_secs);
                self.metrics
                    .overhead_durations
                    .get_or_create(&labels)
                    .observe((total - backend_secs).max(0.0));
            }
            tracing::debug!(ID = %id, elapsed = total, backend_ms, "Delivered (final) response to client");
        }
        self.metrics.count_response(
            metrics::METHOD_SERVER_RESPONSE,
            metrics::RESULT_OK,
            &backend,
        );
        Ok(Delivered::Delivered)
    }

    /// Queue bytes from the user towards the relay-client. Returns false when `id` is not
    /// in flight; true otherwise (also when the request stopped meanwhile and the block
    /// was dropped, as the reference does).
    pub async fn put_upstream(&self, id: &str, bytes: Bytes) -> bool {
        let Some(record) = self.lookup(id, false) else {
            return false;
        };
        tokio::select! {
            _ = record.upstream_tx.send_async(bytes) => {}
            _ = record.stopped.cancelled() => {}
        }
        true
    }

    /// Pull upstream bytes for `id` (a `/server/requeststream` call), waiting up to the
    /// poll timeout. Blocks already queued are coalesced up to the pull limit.
    pub async fn get_upstream(&self, id: &str) -> UpstreamPull {
        let Some(record) = self.lookup(id, false) else {
            return UpstreamPull::Gone;
        };
        let deadline = Instant::now() + self.timeouts.poll;
        let first = tokio::select! {
            biased;
            block = record.upstream_rx.recv_async() => block.ok(),
            _ = record.upstream_finished.cancelled() => record.upstream_rx.try_recv().ok(),
            _ = record.stopped.cancelled() => None,
            _ = sleep_until(deadline) => None,
        };
        let Some(first) = first else {
            if record.upstream_finished.is_cancelled() && record.upstream_rx.is_empty() {
                return UpstreamPull::Gone;
            }
            return UpstreamPull::KeepAlive;
        };
        // Pulled bytes count as activity, so a long streamed upload (no response messages
        // until the backend has read it) is not reaped.
        record.touch(Instant::now());
        let limit = self.max_upstream_pull.load(Ordering::Relaxed);
        if first.len() >= limit || record.upstream_rx.is_empty() {
            return UpstreamPull::Data(first);
        }
        let mut joined = BytesMut::from(first.as_ref());
        while joined.len() < limit {
            match record.upstream_rx.try_recv() {
                Ok(block) => joined.extend_from_slice(&block),
                Err(_) => break,
            }
        }
        UpstreamPull::Data(joined.freeze())
    }

    /// Feed the remainder of a request body upstream in blocks of at most `block_size`,
    /// then mark the upstream finished so pulls answer 410. Runs until the body ends, the
    /// body fails (the request is stopped: the backend must not see a truncated body as
    /// complete), or the request stops.
    pub async fn stream_request_body(&self, id: &str, body: axum::body::Body, block_size: usize) {
        use futures_util::StreamExt as _;
        let Some(record) = self.lookup(id, false) else {
            return;
        };
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::warn!(ID = %id, error = %e, "user request body failed mid-stream; stopping request");
                    self.stop_relay_request(id);
                    return;
                }
            };
            while !chunk.is_empty() {
                let block = chunk.split_to(chunk.len().min(block_size.max(1)));
                if record.is_stopped() || !self.put_upstream(id, block).await {
                    return;
                }
            }
        }
        record.upstream_finished.cancel();
    }

    fn remove_record(&self, record: &Arc<PendingRequest>) {
        let mut state = lock(&self.state);
        if state
            .pending
            .get(&record.id)
            .is_some_and(|r| Arc::ptr_eq(r, record))
        {
            state.pending.remove(&record.id);
            self.metrics.pending_requests.dec();
        }
    }

    /// Stop a request: release anything blocked on it and forget it.
    pub fn stop_relay_request(&self, id: &str) {
        let record = lock(&self.state).pending.get(id).cloned();
        if let Some(record) = record {
            record.stopped.cancel();
            self.remove_record(&record);
        }
    }

    /// Remove requests with no response message since before `threshold`. Returns their
    /// IDs.
    pub fn reap_inactive_requests(&self, threshold: Instant) -> Vec<String> {
        let stale: Vec<Arc<PendingRequest>> = lock(&self.state)
            .pending
            .values()
            .filter(|r| r.last_activity() < threshold)
            .cloned()
            .collect();
        for record in &stale {
            tracing::info!(ID = %record.id, "Timeout on inactive request");
            record.stopped.cancel();
            self.remove_record(record);
        }
        stale.iter().map(|r| r.id.clone()).collect()
    }

    /// Forget backends with no activity since before `threshold`, with their metric series.
    pub fn reap_inactive_backends(&self, threshold: Instant) -> Vec<String> {
        let mut state = lock(&self.state);
        let stale: Vec<String> = state
            .backends
            .iter()
            .filter(|(_, b)| b.last_activity < threshold)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            state.backends.remove(name);
            self.metrics.backends.dec();
            self.metrics.forget_backend(name);
            tracing::info!(ServerName = %name, "Timeout on inactive backend");
        }
        stale
    }
}

#[cfg(test)]
mod tests;
