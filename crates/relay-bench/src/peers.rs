//! The systems under test and how to talk to them: our relay (access POST, then dial the
//! returned URI), the Node `ws` broadcast relay and websocat `broadcast:` (plain dial), and
//! nats-server's websocket listener (NATS text protocol inside websocket frames).
//! `relay-tls` is our relay serving TLS on both ports (`--tls-cert`/`--tls-key`) with a
//! self-signed certificate made at start, which the runner's clients trust and nothing else.
//!
//! Every target is reached through the same [`Tx`]/[`Rx`] pair, so each scenario's load is
//! identical whichever peer serves it. Plain `ws://` connections (all of them, unless an
//! external relay hands out `wss://`) use [`crate::lean_ws`], so the load generator costs
//! little CPU per message; `wss://` goes through tokio-tungstenite.

use crate::lean_ws;
use crate::procs::{spawn_listening, Proc};
use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use relay_common::connection::ConnectionType;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Peer names the runner knows, in the order tables list them. `relay-direct` and
/// `relay-queued` are the relay with its write path forced (`--direct-writes true` or
/// `false`), to compare the two in one run; `relay` is its default. `relay-tls` is the
/// default relay behind its own TLS (`https://` access API, `wss://` websockets).
pub const ALL_PEERS: [&str; 7] = [
    "relay",
    "relay-direct",
    "relay-queued",
    "relay-tls",
    "node-ws",
    "websocat",
    "nats",
];

/// The `relay serve` flags that a relay peer's name stands for.
fn relay_variant_args(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "relay" => Some(&[]),
        "relay-direct" => Some(&["--direct-writes", "true"]),
        "relay-queued" => Some(&["--direct-writes", "false"]),
        "relay-tls" => Some(&[]),
        _ => None,
    }
}

/// True for the relay peers that serve TLS with a certificate made by [`SelfSigned::new`].
fn relay_variant_tls(name: &str) -> bool {
    name == "relay-tls"
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, its key, and the two written
/// as PEM files for `relay serve --tls-cert/--tls-key` (removed when this is dropped).
struct SelfSigned {
    cert_pem: String,
    dir: tempfile::TempDir,
}

impl SelfSigned {
    fn new() -> Result<SelfSigned> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(["127.0.0.1".to_owned(), "localhost".to_owned()])
                .context("self-signed certificate")?;
        let dir = tempfile::Builder::new()
            .prefix("relay-bench-tls-")
            .tempdir()
            .context("temporary folder for the TLS certificate")?;
        let cert_pem = cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem)?;
        std::fs::write(dir.path().join("key.pem"), signing_key.serialize_pem())?;
        Ok(SelfSigned { cert_pem, dir })
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// A rustls client configuration (ring provider) whose only root is the PEM `ca_pem`.
fn tls_trusting(ca_pem: &str) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("certificate PEM")?)
            .context("trust the relay's certificate")?;
    }
    if roots.is_empty() {
        bail!("no certificate in the relay's certificate PEM");
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Where the runner finds programs, and how it places them on cores.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The `relay` binary.
    pub relay_bin: PathBuf,
    /// The repository's `bench/` folder (Node relay).
    pub bench_dir: PathBuf,
    /// Core for servers; the load generator runs on the other one.
    pub server_core: Option<usize>,
    /// Peers to include.
    pub peers: Vec<String>,
    /// Use an already running relay (access URL, secret) instead of starting one.
    pub external_relay: Option<(String, Vec<u8>)>,
    /// Binary that serves `tcp-echo` (the TCP floor); `None` skips the floor.
    pub echo_bin: Option<PathBuf>,
    /// Keep `relay serve`'s default caps and rate limits (`--relay-limits`) instead of
    /// starting it with [`RELAY_LIMITS_OFF`].
    pub relay_limits: bool,
}

/// How a target is reached.
#[derive(Debug, Clone)]
enum Endpoint {
    /// `ca_pem`: the one certificate to trust for `https://`/`wss://` (a `relay-tls`
    /// peer's); `None`: plain, or the system's roots for an external relay.
    Relay {
        access: String,
        secret: Vec<u8>,
        ca_pem: Option<String>,
    },
    /// Plain websocket; `rooms` means the URL path selects the room.
    Plain {
        base: String,
        rooms: bool,
    },
    Nats {
        url: String,
    },
}

/// One running system under test.
pub struct Target {
    pub name: String,
    endpoint: Endpoint,
    pub proc: Option<Proc>,
    http: reqwest::Client,
    ws_config: WebSocketConfig,
    /// Client TLS for `wss://` when the endpoint names its own certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The certificate and key files of a `relay-tls` process, kept while it runs.
    _tls_files: Option<SelfSigned>,
}

/// Sending half of a connection.
pub struct Tx {
    sink: Sink,
    nats_subject: Option<String>,
}

/// The lean client for `ws://`; tokio-tungstenite for anything else (`wss://`).
enum Sink {
    Lean(lean_ws::Writer),
    Tungstenite(SplitSink<Ws, Message>),
}

/// Receiving half of a connection.
pub struct Rx {
    stream: Stream,
    nats: Option<BytesMut>,
    /// Close code the server sent, if it closed with one.
    pub close_code: Option<u16>,
}

/// The lean client for `ws://`; tokio-tungstenite for anything else (`wss://`).
enum Stream {
    Lean(lean_ws::Reader),
    Tungstenite(SplitStream<Ws>),
}

const SECRET: &[u8] = b"relay-bench-secret";

/// How long an idle pooled HTTP connection is kept: half the servers' 10 s idle limit
/// (`--header-read-timeout`), so the client never reuses one the server is closing.
pub const IDLE_BEFORE_SERVER_CLOSES: Duration = Duration::from_secs(5);

/// Flags every `relay serve` the runner starts gets: `--limits off` (`RELAY_LIMITS=off`)
/// lifts the connection caps and access rate limits, which would otherwise throttle the
/// runner's handshake floods (B5) and its 1,000-connection bookings.
pub const RELAY_LIMITS_OFF: [&str; 2] = ["--limits", "off"];

impl Lab {
    /// Start peer `name` (fresh process, free ports); `relay_args` are extra `relay serve` flags.
    pub async fn start(&self, name: &str, relay_args: &[String]) -> Result<Target> {
        let core = self.server_core;
        let (endpoint, proc) = match name {
            name if relay_variant_args(name).is_some() => {
                if let Some((access, secret)) = &self.external_relay {
                    let endpoint = Endpoint::Relay {
                        access: access.clone(),
                        secret: secret.clone(),
                        ca_pem: None,
                    };
                    return Target::new(name, endpoint, None);
                }
                let bin = self.relay_bin.to_string_lossy().into_owned();
                let tls = relay_variant_tls(name).then(SelfSigned::new).transpose()?;
                let (http, ws) = match tls {
                    Some(_) => ("https", "wss"),
                    None => ("http", "ws"),
                };
                let (proc, ports) = spawn_listening(2, |ports| {
                    let (pa, pr) = (ports[0], ports[1]);
                    let mut args: Vec<String> = [
                        "serve",
                        "--audience",
                        &format!("{http}://127.0.0.1:{pa}"),
                        "--url",
                        &format!("{ws}://127.0.0.1:{pr}"),
                        "--secret",
                        std::str::from_utf8(SECRET)?,
                        "--port-access",
                        &pa.to_string(),
                        "--port-relay",
                        &pr.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--allow-no-booking-id",
                        "--log-file",
                        "stderr",
                    ]
                    .iter()
                    .chain(RELAY_LIMITS_OFF.iter().filter(|_| !self.relay_limits))
                    .chain(relay_variant_args(name).unwrap_or_default())
                    .map(|s| s.to_string())
                    .collect();
                    if let Some(tls) = &tls {
                        args.push("--tls-cert".into());
                        args.push(tls.cert_file().to_string_lossy().into_owned());
                        args.push("--tls-key".into());
                        args.push(tls.key_file().to_string_lossy().into_owned());
                    }
                    args.extend(relay_args.iter().cloned());
                    Proc::spawn(name, &bin, &args, core)
                })
                .await?;
                let access = format!("{http}://127.0.0.1:{}", ports[0]);
                let endpoint = Endpoint::Relay {
                    access,
                    secret: SECRET.to_vec(),
                    ca_pem: tls.as_ref().map(|t| t.cert_pem.clone()),
                };
                let mut target = Target::new(name, endpoint, Some(proc))?;
                target._tls_files = tls;
                return Ok(target);
            }
            "node-ws" => {
                let script = self.bench_dir.join("node-ws-relay/relay.js");
                let (proc, ports) = spawn_listening(1, |ports| {
                    let args = vec![script.to_string_lossy().into_owned(), ports[0].to_string()];
                    Proc::spawn("node-ws", "node", &args, core)
                })
                .await?;
                let port = ports[0];
                (
                    Endpoint::Plain {
                        base: format!("ws://127.0.0.1:{port}"),
                        rooms: true,
                    },
                    proc,
                )
            }
            "websocat" => {
                let (proc, ports) = spawn_listening(1, |ports| {
                    let args: Vec<String> = [
                        "-b",
                        "-B",
                        "2097152",
                        "--queue-len",
                        "128",
                        &format!("ws-l:127.0.0.1:{}", ports[0]),
                        "broadcast:mirror:",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                    Proc::spawn("websocat", "websocat", &args, core)
                })
                .await?;
                let port = ports[0];
                (
                    Endpoint::Plain {
                        base: format!("ws://127.0.0.1:{port}"),
                        rooms: false,
                    },
                    proc,
                )
            }
            "nats" => {
                let conf = std::env::temp_dir().join("relay-bench-nats.conf");
                let (proc, ports) = spawn_listening(2, |ports| {
                    let (client, ws) = (ports[0], ports[1]);
                    std::fs::write(
                        &conf,
                        format!(
                            "listen: \"127.0.0.1:{client}\"\nmax_payload: 2MB\nmax_connections: 100000\n\
                             websocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n  compression: false\n}}\n"
                        ),
                    )?;
                    let args = vec!["-c".to_owned(), conf.to_string_lossy().into_owned()];
                    Proc::spawn("nats", "nats-server", &args, core)
                })
                .await?;
                let ws = ports[1];
                (
                    Endpoint::Nats {
                        url: format!("ws://127.0.0.1:{ws}"),
                    },
                    proc,
                )
            }
            other => bail!("unknown peer {other:?} (known: {})", ALL_PEERS.join(", ")),
        };
        Target::new(name, endpoint, Some(proc))
    }
}

impl Target {
    fn new(name: &str, endpoint: Endpoint, proc: Option<Proc>) -> Result<Target> {
        // Small read buffers: B4 holds 10k client sockets in this process too.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let tls = match &endpoint {
            Endpoint::Relay {
                ca_pem: Some(pem), ..
            } => Some(Arc::new(tls_trusting(pem)?)),
            _ => None,
        };
        // The relay closes a kept-alive connection that sends no request head for its
        // --header-read-timeout (10 s); a pooled connection reused just as it closes fails
        // ("error sending request"), so idle ones are dropped well before that.
        let mut http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(IDLE_BEFORE_SERVER_CLOSES)
            .tcp_nodelay(true);
        if let Some(tls) = &tls {
            http = http.use_preconfigured_tls((**tls).clone());
        }
        let http = http.build().context("HTTP client")?;
        Ok(Target {
            name: name.to_owned(),
            endpoint,
            proc,
            http,
            ws_config,
            tls,
            _tls_files: None,
        })
    }

    /// How to reach this target from another process (a B5 load-generator worker), as one
    /// line of JSON for [`Target::from_spec`]. The process handle is not part of it.
    pub fn spec(&self) -> String {
        let endpoint = match &self.endpoint {
            Endpoint::Relay {
                access,
                secret,
                ca_pem,
            } => {
                serde_json::json!({ "relay": { "access": access, "secret": secret, "ca_pem": ca_pem } })
            }
            Endpoint::Plain { base, rooms } => {
                serde_json::json!({ "plain": { "base": base, "rooms": rooms } })
            }
            Endpoint::Nats { url } => serde_json::json!({ "nats": { "url": url } }),
        };
        serde_json::json!({ "name": self.name, "endpoint": endpoint }).to_string()
    }

    /// The target described by [`Target::spec`], without a process (it runs elsewhere).
    pub fn from_spec(spec: &str) -> Result<Target> {
        let v: serde_json::Value = serde_json::from_str(spec).context("target spec")?;
        let text = |v: &serde_json::Value, key: &str| -> Result<String> {
            v.get(key)
                .and_then(|s| s.as_str())
                .map(str::to_owned)
                .with_context(|| format!("target spec: no {key:?} string"))
        };
        let name = text(&v, "name")?;
        let endpoint = v.get("endpoint").context("target spec: no endpoint")?;
        let endpoint = if let Some(r) = endpoint.get("relay") {
            let secret = r
                .get("secret")
                .and_then(|s| s.as_array())
                .context("target spec: no relay secret")?
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .context("target spec: relay secret is not bytes")?;
            let ca_pem = match r.get("ca_pem") {
                None | Some(serde_json::Value::Null) => None,
                Some(_) => Some(text(r, "ca_pem")?),
            };
            Endpoint::Relay {
                access: text(r, "access")?,
                secret,
                ca_pem,
            }
        } else if let Some(p) = endpoint.get("plain") {
            Endpoint::Plain {
                base: text(p, "base")?,
                rooms: p
                    .get("rooms")
                    .and_then(|r| r.as_bool())
                    .context("target spec: no plain rooms flag")?,
            }
        } else if let Some(n) = endpoint.get("nats") {
            Endpoint::Nats {
                url: text(n, "url")?,
            }
        } else {
            bail!("target spec: unknown endpoint {endpoint}");
        };
        Target::new(&name, endpoint, None)
    }

    /// True when messages are also delivered back to their sender (websocat's mirror).
    pub fn echoes_to_sender(&self) -> bool {
        matches!(self.endpoint, Endpoint::Plain { rooms: false, .. })
    }

    /// True when every connection shares one room whatever the topic.
    pub fn single_room(&self) -> bool {
        self.echoes_to_sender()
    }

    /// Join `topic` as a reader and writer. Returns once the target will deliver to it.
    pub async fn open(&self, topic: &str) -> Result<(Tx, Rx)> {
        let (url, nats) = match &self.endpoint {
            Endpoint::Relay { access, secret, .. } => {
                (self.access(access, secret, topic).await?, false)
            }
            Endpoint::Plain { base, rooms: true } => (format!("{base}/{topic}"), false),
            Endpoint::Plain { base, rooms: false } => (format!("{base}/"), false),
            Endpoint::Nats { url } => (url.clone(), true),
        };
        self.dial(&url, topic, nats).await
    }

    /// The relay's access API URL and token secret; `None` for the other peers.
    pub fn relay_access(&self) -> Option<(&str, &[u8])> {
        match &self.endpoint {
            Endpoint::Relay { access, secret, .. } => Some((access, secret)),
            _ => None,
        }
    }

    /// Join `topic` on the relay with `token` (the caller's own claims: scopes, booking id,
    /// lifetime) instead of the read/write hour-long token of [`Target::open`].
    pub async fn open_with_token(&self, topic: &str, token: &str) -> Result<(Tx, Rx)> {
        let Some((access, _)) = self.relay_access() else {
            bail!("{}: only the relay takes tokens", self.name);
        };
        let url = access_uri(&self.http, access, topic, token).await?;
        self.dial(&url, topic, false).await
    }

    /// Dial the websocket `url` (for nats, also subscribe to `topic`).
    async fn dial(&self, url: &str, topic: &str, nats: bool) -> Result<(Tx, Rx)> {
        let (sink, stream) = if url.starts_with("ws://") {
            let (w, r) = lean_ws::connect(url)
                .await
                .with_context(|| format!("{}: websocket dial {url}", self.name))?;
            (Sink::Lean(w), Stream::Lean(r))
        } else {
            // `None`: the system's roots (an external relay handing out `wss://`).
            let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
            let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                url,
                Some(self.ws_config),
                true,
                connector,
            )
            .await
            .with_context(|| format!("{}: websocket dial {url}", self.name))?;
            let (sink, stream) = ws.split();
            (Sink::Tungstenite(sink), Stream::Tungstenite(stream))
        };
        let mut tx = Tx {
            sink,
            nats_subject: None,
        };
        let mut rx = Rx {
            stream,
            nats: None,
            close_code: None,
        };
        if nats {
            let subject = topic.replace('/', ".");
            let hello = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1}}\r\nSUB {subject} 1\r\nPING\r\n"
            );
            // Sent before `nats_subject` is set, so it goes out as is, not inside a PUB.
            tx.send(Bytes::from(hello)).await?;
            rx.nats = Some(BytesMut::new());
            // The PONG proves the subscription is registered.
            tokio::time::timeout(Duration::from_secs(10), rx.wait_nats_pong()).await??;
            tx.nats_subject = Some(subject);
        }
        Ok((tx, rx))
    }

    /// POST a read/write token for `topic` to the access API; returns the websocket URI.
    /// Every token carries its own booking id, as every student in a class has their own
    /// booking, so the relay's per-booking limits apply to one connection each (the id
    /// includes the process id, so B5's worker processes never share one).
    async fn access(&self, access: &str, secret: &[u8], topic: &str) -> Result<String> {
        static NEXT_BOOKING: AtomicU64 = AtomicU64::new(1);
        let scopes = [relay_auth::SCOPE_READ, relay_auth::SCOPE_WRITE];
        let claims = relay_auth::Claims {
            booking_id: format!(
                "bench-{}-{}",
                std::process::id(),
                NEXT_BOOKING.fetch_add(1, Ordering::Relaxed)
            ),
            ..relay_auth::Claims::grant(
                ConnectionType::Session.as_str(),
                topic,
                &scopes,
                access,
                relay_auth::unix_now(),
                3600,
            )
        };
        access_uri(
            &self.http,
            access,
            topic,
            &relay_auth::mint(&claims, secret),
        )
        .await
    }

    /// Stop the target's process, if the runner started it.
    pub async fn stop(self) {
        if let Some(p) = self.proc {
            p.stop().await;
        }
    }
}

/// The relay's access exchange: POST `token` to `{access}/session/{topic}` and return the
/// single-use websocket URI from the reply (an error carries the relay's status and reason).
pub async fn access_uri(
    http: &reqwest::Client,
    access: &str,
    topic: &str,
    token: &str,
) -> Result<String> {
    let response = http
        .post(format!("{access}/session/{topic}"))
        .header("Authorization", token)
        .send()
        .await
        .with_context(|| format!("POST {access}/session/{topic}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("access refused: {status} {body}");
    }
    let value: serde_json::Value = serde_json::from_str(&body)?;
    value
        .get("uri")
        .and_then(|u| u.as_str())
        .map(str::to_owned)
        .context("no uri in access reply")
}

impl Tx {
    /// Send one message (wrapped in a NATS `PUB` for nats).
    pub async fn send(&mut self, payload: Bytes) -> Result<()> {
        self.feed(payload).await?;
        self.flush().await
    }

    /// Queue one message without flushing.
    pub async fn feed(&mut self, payload: Bytes) -> Result<()> {
        match &mut self.sink {
            Sink::Lean(w) => match &self.nats_subject {
                None => w.feed(&[&payload]).await,
                Some(subject) => {
                    // The PUB line, payload and CRLF become one frame without being joined.
                    let head = format!("PUB {subject} {}\r\n", payload.len());
                    w.feed(&[head.as_bytes(), &payload, b"\r\n"]).await
                }
            },
            Sink::Tungstenite(sink) => {
                let frame = Message::Binary(nats_pub(self.nats_subject.as_deref(), payload));
                sink.feed(frame).await?;
                Ok(())
            }
        }
    }

    pub async fn flush(&mut self) -> Result<()> {
        match &mut self.sink {
            Sink::Lean(w) => w.flush().await,
            Sink::Tungstenite(sink) => Ok(sink.flush().await?),
        }
    }

    /// Send a normal close (1000) and shut the write side; bounded to one second.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            match &mut self.sink {
                Sink::Lean(w) => w.close(1000).await,
                Sink::Tungstenite(sink) => Ok(sink.close().await?),
            }
        })
        .await;
    }
}

/// `payload` as the body of a NATS `PUB` to `subject`, or as is without a subject.
fn nats_pub(subject: Option<&str>, payload: Bytes) -> Bytes {
    let Some(subject) = subject else {
        return payload;
    };
    let head = format!("PUB {subject} {}\r\n", payload.len());
    let mut b = BytesMut::with_capacity(head.len() + payload.len() + 2);
    b.put_slice(head.as_bytes());
    b.put_slice(&payload);
    b.put_slice(b"\r\n");
    b.freeze()
}

/// One item of the NATS server-to-client protocol.
#[derive(Debug, PartialEq)]
pub enum NatsItem {
    Msg(Bytes),
    Control(String),
}

/// Take the next complete NATS item from `buf`, if there is one.
pub fn nats_take(buf: &mut BytesMut) -> Result<Option<NatsItem>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..eol]).into_owned();
    if line.starts_with("MSG ") {
        let len: usize = line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("bad NATS MSG line {line:?}"))?;
        if buf.len() < eol + 2 + len + 2 {
            return Ok(None);
        }
        buf.advance(eol + 2);
        let payload = buf.split_to(len).freeze();
        buf.advance(2);
        return Ok(Some(NatsItem::Msg(payload)));
    }
    if line.starts_with("-ERR") {
        bail!("nats-server: {line}");
    }
    buf.advance(eol + 2);
    Ok(Some(NatsItem::Control(line)))
}

impl Rx {
    /// The next data message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(buf) = &mut self.nats {
                match nats_take(buf)? {
                    Some(NatsItem::Msg(m)) => return Ok(Some(m)),
                    Some(NatsItem::Control(_)) => continue,
                    None => {}
                }
            }
            let Some(data) = self.next_ws().await? else {
                return Ok(None);
            };
            match &mut self.nats {
                Some(buf) => buf.extend_from_slice(&data),
                None => return Ok(Some(data)),
            }
        }
    }

    /// The next websocket text or binary message; `None` once closed, with
    /// [`Rx::close_code`] set if the server sent one. Cancel-safe, as `recv` must be.
    async fn next_ws(&mut self) -> Result<Option<Bytes>> {
        match &mut self.stream {
            Stream::Lean(r) => {
                let got = r.recv().await?;
                if got.is_none() {
                    self.close_code = r.close_code;
                }
                Ok(got)
            }
            Stream::Tungstenite(stream) => loop {
                let Some(frame) = stream.next().await else {
                    return Ok(None);
                };
                match frame? {
                    Message::Binary(b) => return Ok(Some(b)),
                    Message::Text(t) => return Ok(Some(Bytes::copy_from_slice(t.as_bytes()))),
                    Message::Close(frame) => {
                        self.close_code = frame.map(|f| u16::from(f.code));
                        return Ok(None);
                    }
                    _ => continue,
                }
            },
        }
    }

    async fn wait_nats_pong(&mut self) -> Result<()> {
        loop {
            if let Some(buf) = &mut self.nats {
                while let Some(item) = nats_take(buf)? {
                    if item == NatsItem::Control("PONG".into()) {
                        return Ok(());
                    }
                }
            }
            let Some(data) = self.next_ws().await? else {
                bail!("nats closed during handshake")
            };
            if let Some(buf) = &mut self.nats {
                buf.extend_from_slice(&data);
            }
        }
    }

    /// Read and discard everything until the connection ends (a writer's echo channel).
    pub async fn drain(mut self) {
        while let Ok(Some(_)) = self.recv().await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs_round_trip() {
        let cert = SelfSigned::new().unwrap();
        let targets = [
            Target::new(
                "relay",
                Endpoint::Relay {
                    access: "http://127.0.0.1:1".into(),
                    secret: vec![0, 1, 255],
                    ca_pem: None,
                },
                None,
            ),
            Target::new(
                "relay-tls",
                Endpoint::Relay {
                    access: "https://127.0.0.1:1".into(),
                    secret: vec![7],
                    ca_pem: Some(cert.cert_pem.clone()),
                },
                None,
            ),
            Target::new(
                "node-ws",
                Endpoint::Plain {
                    base: "ws://127.0.0.1:2".into(),
                    rooms: true,
                },
                None,
            ),
            Target::new(
                "nats",
                Endpoint::Nats {
                    url: "ws://127.0.0.1:3".into(),
                },
                None,
            ),
        ]
        .map(|t| t.unwrap());
        assert!(targets[1].tls.is_some() && targets[0].tls.is_none());
        for t in &targets {
            let back = Target::from_spec(&t.spec()).unwrap();
            assert_eq!(back.name, t.name);
            assert_eq!(format!("{:?}", back.endpoint), format!("{:?}", t.endpoint));
            assert!(back.proc.is_none());
        }
        assert!(Target::from_spec("{}").is_err());
        assert!(Target::from_spec(r#"{"name":"x","endpoint":{"other":{}}}"#).is_err());
        assert!(tls_trusting("not a certificate").is_err());
    }

    /// `relay-tls`'s client side against an in-process relay serving TLS with a
    /// [`SelfSigned`] certificate: access over https and a wss message from one connection
    /// to another when trusting that certificate; refused when trusting another one.
    #[tokio::test]
    async fn wss_to_a_relay_with_a_self_signed_certificate() {
        let cert = SelfSigned::new().unwrap();
        let config = relay_server::ServerConfig {
            tls: Some(relay_server::TlsFiles {
                cert: cert.cert_file(),
                key: cert.key_file(),
            }),
            ..relay_server::ServerConfig::local(SECRET.to_vec())
        };
        let server = relay_server::RunningServer::start(config).await.unwrap();
        assert!(server.access_url().starts_with("https://"));
        let target = |ca_pem: &str| {
            let endpoint = Endpoint::Relay {
                access: server.access_url().to_owned(),
                secret: SECRET.to_vec(),
                ca_pem: Some(ca_pem.to_owned()),
            };
            Target::new("relay-tls", endpoint, None).unwrap()
        };
        let trusting = target(&cert.cert_pem);
        tokio::time::timeout(Duration::from_secs(20), async {
            let (_tx_a, mut rx_a) = trusting.open("tls-room").await.unwrap();
            let (mut tx_b, _rx_b) = trusting.open("tls-room").await.unwrap();
            tx_b.send(Bytes::from_static(b"over tls")).await.unwrap();
            assert_eq!(rx_a.recv().await.unwrap().unwrap(), &b"over tls"[..]);
        })
        .await
        .expect("a message over wss within 20 s");
        let other = SelfSigned::new().unwrap();
        let Err(err) = target(&other.cert_pem).open("tls-room").await else {
            panic!("an untrusted certificate was accepted");
        };
        assert!(format!("{err:#}").contains("certificate"), "{err:#}");
        server.shutdown().await;
    }

    #[test]
    fn nats_items_split_across_frames_are_reassembled() {
        let mut buf = BytesMut::from(&b"INFO {}\r\nMSG a.b 1 5\r\nhel"[..]);
        assert_eq!(
            nats_take(&mut buf).unwrap(),
            Some(NatsItem::Control("INFO {}".into()))
        );
        assert_eq!(nats_take(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lo\r\nPONG\r\n");
        assert_eq!(
            nats_take(&mut buf).unwrap(),
            Some(NatsItem::Msg(Bytes::from_static(b"hello")))
        );
        assert_eq!(
            nats_take(&mut buf).unwrap(),
            Some(NatsItem::Control("PONG".into()))
        );
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&b"-ERR 'Maximum Payload Violation'\r\n"[..]);
        assert!(nats_take(&mut bad).is_err());
    }
}
