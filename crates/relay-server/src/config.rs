//! Everything `relay serve` can be told, with the reference's defaults.

use relay_common::goduration::{check_settings, Zero};
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
/// A production secret shorter than this is reported at start-up (it still works): an
/// HMAC-SHA256 key should have at least as many random bytes as the hash.
pub const MIN_SECRET_BYTES: usize = 32;
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
    /// On by default (`RELAY_DIRECT_WRITES`): on plain (non-TLS) relay connections
    /// the publishing task writes a frame straight to a reader's socket with one
    /// non-blocking vectored write when nothing is queued for that reader, and only a
    /// reader that would block gets the frame queued and its own task woken
    /// ([`crate::direct`]). Not used with TLS, `coalesce_binary`, shell clients that wait
    /// for their host, or the open crossbar: those keep the queued path.
    pub direct_writes: bool,
    /// Tolerated clock skew on token times, in seconds.
    pub leeway_secs: u64,
    /// Lifetime of one-time codes.
    pub code_ttl: Duration,
    /// Most one-time codes waiting (issued, not yet used or expired) for one booking id
    /// (`RELAY_MAX_CODES_PER_BOOKING`, default 64, at least 1): one valid token cannot fill
    /// the code store. Tokens without a booking id share one such cap. Over it, the
    /// access API answers 429.
    pub max_codes_per_booking: usize,
    /// Most one-time codes waiting in total (`RELAY_MAX_CODES`, default 100,000, at least
    /// 1): bounds the store's memory whatever the number of tokens. Over it, 503.
    pub max_codes: usize,
    /// Directory of the relay's state file (`RELAY_STATE_DIR`): the deny list is saved
    /// there on every change and reloaded at start-up, so a cancelled booking stays
    /// refused after a restart. `None` (the default): in memory only, and a restart
    /// forgets every deny.
    pub state_dir: Option<PathBuf>,
    /// Browser origins allowed (CORS on the access API, `Origin` on upgrades). Empty: any.
    pub allowed_origins: Vec<String>,
    /// Send CORS headers on the access API (`RELAY_CORS`). Default on, so a browser page on
    /// another origin can make the access POST; turn it off behind a proxy that adds its
    /// own, or a browser sees two `Access-Control-Allow-Origin` headers and refuses the
    /// answer (the reference sent none).
    pub cors: bool,
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
    /// Join a relay cluster through NATS (`--nats`, `RELAY_NATS_URL`); `None` (the
    /// default): a single node, and nothing of the cluster runs.
    pub cluster: Option<crate::cluster::ClusterConfig>,
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
            direct_writes: true,
            leeway_secs: 0,
            code_ttl: relay_auth::codes::DEFAULT_CODE_TTL,
            max_codes_per_booking: relay_auth::codes::DEFAULT_MAX_CODES_PER_BOOKING,
            max_codes: relay_auth::codes::DEFAULT_MAX_CODES,
            state_dir: None,
            allowed_origins: Vec::new(),
            cors: true,
            stats_require_scope: false,
            tls: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            limits: Limits::defaults(),
            trusted_proxies: Vec::new(),
            cluster: None,
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

    /// Each reader's queue limits (messages, bytes, burst, slow-reader timeout), as every
    /// server built on this config gives them to its hub.
    pub fn queue_limits(&self) -> relay_common::queue::QueueLimits {
        relay_common::queue::QueueLimits {
            messages: self.queue_messages,
            bytes: self.queue_bytes,
            burst_bytes: self.queue_burst_bytes,
            slow_reader_timeout: self.slow_reader_timeout,
        }
    }

    /// Check every duration and size once, before anything starts: a zero ping period
    /// panics in every connection task, a zero pong or write timeout closes every
    /// connection at once, a zero message limit refuses every message, and a duration so
    /// long that `now + it` overflows panics when it is first used. Each error names the
    /// environment variable and the `relay serve` flag.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = check_settings(&[
            (
                "RELAY_PING_INTERVAL (--ping-interval)",
                self.ping_interval,
                Zero::Refused,
            ),
            (
                "RELAY_PONG_TIMEOUT (--pong-timeout)",
                self.pong_timeout,
                Zero::Refused,
            ),
            (
                "RELAY_WRITE_TIMEOUT (--write-timeout)",
                self.write_timeout,
                Zero::Refused,
            ),
            // Zero: a reader is too slow as soon as its queue is full.
            (
                "RELAY_SLOW_READER_TIMEOUT (--slow-reader-timeout)",
                self.slow_reader_timeout,
                Zero::Allowed,
            ),
            // Zero (and anything under a second) means every second.
            (
                "RELAY_STATS_EVERY (--stats-every)",
                self.stats_every,
                Zero::Allowed,
            ),
            (
                "RELAY_TIDY_EVERY (--tidy-every)",
                self.tidy_every,
                Zero::Allowed,
            ),
            ("one-time code lifetime", self.code_ttl, Zero::Allowed),
        ]);
        if self.max_message_bytes == 0 {
            errors.push("RELAY_MAX_MESSAGE_BYTES (--max-message-bytes) must be more than 0".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The start-up warning for a secret shorter than [`MIN_SECRET_BYTES`], if it is.
    /// (Not for `--dev`, whose generated secret is long enough.)
    pub fn short_secret_warning(&self) -> Option<String> {
        (self.secret.len() < MIN_SECRET_BYTES).then(|| {
            format!(
                "RELAY_SECRET (--secret) is {} bytes; use at least {MIN_SECRET_BYTES} bytes \
                 (32 random bytes, e.g. `openssl rand -hex 32`): a short secret can be guessed \
                 offline from one token",
                self.secret.len()
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(ServerConfig::new(vec![0; 32]).validate(), Ok(()));
    }

    #[test]
    fn meaningless_zeros_and_overflowing_durations_are_refused_by_name() {
        let mut cfg = ServerConfig::new(vec![0; 32]);
        cfg.ping_interval = Duration::ZERO;
        cfg.pong_timeout = Duration::ZERO;
        cfg.write_timeout = Duration::ZERO;
        cfg.max_message_bytes = 0;
        cfg.stats_every = Duration::from_secs(1_000_000 * 3600);
        cfg.tidy_every = Duration::MAX;
        let errors = cfg.validate().unwrap_err();
        for name in [
            "RELAY_PING_INTERVAL (--ping-interval) must be more than 0",
            "RELAY_PONG_TIMEOUT (--pong-timeout) must be more than 0",
            "RELAY_WRITE_TIMEOUT (--write-timeout) must be more than 0",
            "RELAY_MAX_MESSAGE_BYTES (--max-message-bytes) must be more than 0",
            "RELAY_STATS_EVERY (--stats-every) is 1000000h0m0s; it must be at most 1 year",
            "RELAY_TIDY_EVERY (--tidy-every) is",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(name)),
                "{name}: {errors:#?}"
            );
        }
        assert_eq!(errors.len(), 6, "{errors:#?}");
    }

    #[test]
    fn zero_is_kept_where_it_means_something() {
        let mut cfg = ServerConfig::new(vec![0; 32]);
        cfg.slow_reader_timeout = Duration::ZERO;
        cfg.stats_every = Duration::ZERO;
        cfg.tidy_every = Duration::ZERO;
        cfg.code_ttl = Duration::ZERO;
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn short_secrets_are_reported() {
        let warning = ServerConfig::new(b"e2e-secret".to_vec()).short_secret_warning();
        let warning = warning.unwrap_or_default();
        assert!(
            warning.starts_with("RELAY_SECRET (--secret) is 10 bytes"),
            "{warning}"
        );
        assert!(warning.contains("at least 32 bytes"), "{warning}");
        assert_eq!(ServerConfig::new(vec![7; 32]).short_secret_warning(), None);
    }
}
