//! Everything `relay serve` can be told, with the reference's defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::limits::{Limits, Rate};
pub use ipnet::IpNet;

/// The reference's per-connection queue length.
pub const DEFAULT_QUEUE_MESSAGES: usize = 128;
/// What an out-of-range `RELAY_BUFFER_SIZE` is replaced with (as the reference does).
pub const FALLBACK_QUEUE_MESSAGES: usize = 256;
/// Largest accepted `RELAY_BUFFER_SIZE`.
pub const MAX_QUEUE_MESSAGES: usize = 512;
/// Default burst allowance: small messages may queue past the message bound up to this
/// many bytes, so a short stall at 10k msg/s loses nothing.
pub const DEFAULT_QUEUE_BURST_BYTES: usize = 1024 * 1024;
/// However small the messages, a queue never holds more than this many.
pub use relay_common::queue::MAX_QUEUED_MESSAGES;

/// Configuration of one relay server (both ports).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HMAC secret shared with whoever mints tokens.
    pub secret: Vec<u8>,
    /// External base URL of the access API; user tokens' `aud` must contain it. `None`
    /// means `http://<bound access address>` (useful with port 0 in tests and `--dev`).
    pub audience: Option<String>,
    /// External base URL of the websocket relay, used to build the returned `uri`. `None`
    /// means `ws://<bound relay address>`.
    pub relay_url: Option<String>,
    /// Where the access API listens.
    pub access_listen: SocketAddr,
    /// Where the websocket crossbar listens.
    pub relay_listen: SocketAddr,
    /// Accept session tokens whose `booking_id` is empty.
    pub allow_no_booking_id: bool,
    /// Per-subscriber queue bound in messages.
    pub queue_messages: usize,
    /// Per-subscriber queue bound in bytes.
    pub queue_bytes: usize,
    /// Small messages may queue past `queue_messages` while the queue holds no more than
    /// this many bytes (at most [`MAX_QUEUED_MESSAGES`] messages). 0 turns bursts off.
    pub queue_burst_bytes: usize,
    /// A subscriber whose queue stays full this long is disconnected as too slow.
    pub slow_reader_timeout: Duration,
    /// Period of unsolicited reports on the `stats` topic.
    pub stats_every: Duration,
    /// Period of deny/allow list and code pruning.
    pub tidy_every: Duration,
    /// Server ping period.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub pong_timeout: Duration,
    /// Deadline for writing a batch of frames (or a ping) to one connection.
    pub write_timeout: Duration,
    /// Largest accepted inbound message.
    pub max_message_bytes: usize,
    /// Websocket read buffer per connection (small keeps idle connections cheap).
    pub read_buffer_bytes: usize,
    /// Merge queued binary messages into one frame (the reference's behaviour; only
    /// harmless for byte streams such as MPEG-TS).
    pub coalesce_binary: bool,
    /// Tolerated clock skew on token times, in seconds.
    pub leeway_secs: u64,
    /// Lifetime of one-time codes.
    pub code_ttl: Duration,
    /// Browser origins allowed (CORS on the access API, `Origin` on upgrades). Empty: any.
    pub allowed_origins: Vec<String>,
    /// Require the `relay:stats` scope to join the `stats` topic (the reference did not).
    pub stats_require_scope: bool,
    /// PEM certificate chain and key; when set, both ports speak TLS.
    pub tls: Option<TlsFiles>,
    /// A client must send its TLS handshake and whole request head within this long of
    /// connecting, and a keep-alive connection its next request head within this long of
    /// the last answer, or the connection is closed (slowloris). Default 10 s; both ports.
    pub header_read_timeout: Duration,
    /// Connection caps and access rate limits ([`Limits::defaults`]; [`Limits::off`] is
    /// `RELAY_LIMITS=off`).
    pub limits: Limits,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client address for the
    /// per-address limits (reverse proxies). Default empty: every header is ignored and
    /// the TCP peer is the client, loopback included.
    pub trusted_proxies: Vec<IpNet>,
}

/// Default of [`ServerConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// PEM files for TLS on both ports.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key matching the leaf certificate (`--tls-key`).
    pub key: PathBuf,
}

impl ServerConfig {
    /// The reference's defaults with the given secret, listening on every interface on
    /// ports 3000 (access) and 3001 (relay).
    pub fn new(secret: Vec<u8>) -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        ServerConfig {
            secret,
            audience: None,
            relay_url: None,
            access_listen: SocketAddr::new(any, 3000),
            relay_listen: SocketAddr::new(any, 3001),
            allow_no_booking_id: false,
            queue_messages: DEFAULT_QUEUE_MESSAGES,
            queue_bytes: 16 * 1024 * 1024,
            queue_burst_bytes: DEFAULT_QUEUE_BURST_BYTES,
            slow_reader_timeout: Duration::from_secs(10),
            stats_every: Duration::from_secs(5),
            tidy_every: Duration::from_secs(300),
            ping_interval: Duration::from_secs(54),
            pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 10 * 1024 * 1024,
            read_buffer_bytes: 4 * 1024,
            coalesce_binary: false,
            leeway_secs: 0,
            code_ttl: relay_auth::codes::DEFAULT_CODE_TTL,
            allowed_origins: Vec::new(),
            stats_require_scope: false,
            tls: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            limits: Limits::defaults(),
            trusted_proxies: Vec::new(),
        }
    }

    /// For tests and local use: both ports on 127.0.0.1 with OS-chosen port numbers, the
    /// URLs derived from them, tokens without a booking id accepted, and the connection caps
    /// and rate limits lifted ([`Limits::off`], so that tests opening many connections are
    /// not throttled; tests of the limits set them).
    pub fn local(secret: Vec<u8>) -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        ServerConfig {
            access_listen: SocketAddr::new(lo, 0),
            relay_listen: SocketAddr::new(lo, 0),
            allow_no_booking_id: true,
            limits: Limits::off(),
            ..ServerConfig::new(secret)
        }
    }

    /// The reference's rule for `RELAY_BUFFER_SIZE`: 1..=512 is kept, anything else
    /// becomes 256. Returns the value to use and whether it was replaced.
    pub fn checked_queue_messages(requested: i64) -> (usize, bool) {
        match usize::try_from(requested) {
            Ok(n) if (1..=MAX_QUEUE_MESSAGES).contains(&n) => (n, false),
            _ => (FALLBACK_QUEUE_MESSAGES, true),
        }
    }
}
