//! Typed relay status: the `stats` topic's reports and the `GET /status` route.
//!
//! - [`Report`]: one client in a stats-topic report (a JSON array, camelCase). Both
//!   generations decode: v0.6.2 with per-client `stats` (`last` as a Go duration string,
//!   `"Never"`, `""` or an integer of nanoseconds) and the later one with `scopes` and no
//!   `stats`.
//! - [`StatsSubscriber`]: reads reports from a [`Session`] on topic `stats`; frames that do
//!   not decode are logged and skipped, as `pkg/status` did.
//! - [`fetch_status`]: the v0.7.0 `GET /status` (snake_case, decoded into the same
//!   [`Report`]), which needs a token with scope `relay:stats`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use tracing::warn;

use crate::session::{Message, Session, SessionClosed};
use relay_common::goduration;

/// One connection, as listed by a stats-topic report (camelCase) or by `GET /status`
/// (v0.7.0, snake_case: `can_read`, `connected_at`, `expires_at`, `remote_addr`,
/// `user_agent`); both spellings decode into this one type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The topic the connection is on (empty when the report omits it).
    #[serde(default)]
    pub topic: String,
    /// Whether the connection's token allows receiving (`canRead` / `can_read`).
    #[serde(default, alias = "can_read")]
    pub can_read: bool,
    /// Whether the connection's token allows sending (`canWrite` / `can_write`).
    #[serde(default, alias = "can_write")]
    pub can_write: bool,
    /// When the connection was opened (`connected` / `connected_at`); `None` when absent or
    /// empty.
    #[serde(default, alias = "connected_at", with = "rfc3339_or_none")]
    pub connected: Option<OffsetDateTime>,
    /// When the connection's token expires (`expiresAt` / `expires_at`); `None` when absent
    /// or empty.
    #[serde(default, alias = "expires_at", with = "rfc3339_or_none")]
    pub expires_at: Option<OffsetDateTime>,
    /// The peer address as the relay saw it (`internal` for the relay's own connections).
    #[serde(default, alias = "remote_addr")]
    pub remote_addr: String,
    /// The `User-Agent` the connection presented.
    #[serde(default, alias = "user_agent")]
    pub user_agent: String,
    /// Present from v0.6.5 on.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Present up to v0.8.0 on the stats topic only; zero otherwise.
    #[serde(default)]
    pub stats: RxTx,
}

/// Message statistics of one client.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RxTx {
    /// Messages the client sent.
    #[serde(default)]
    pub tx: Statistics,
    /// Messages written to the client.
    #[serde(default)]
    pub rx: Statistics,
}

/// Statistics of one direction.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Statistics {
    /// Time since the last message; `None` when there was none (`"Never"`).
    #[serde(default, deserialize_with = "last_message")]
    pub last: Option<Duration>,
    /// Mean message size in bytes.
    #[serde(default)]
    pub size: f64,
    /// Messages per second.
    #[serde(default)]
    pub fps: f64,
}

impl Statistics {
    /// True when no message was ever seen (the Go `Never` flag).
    pub fn never(&self) -> bool {
        self.last.is_none()
    }
}

fn last_message<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Last {
        Nanos(u64),
        Text(String),
        Null(()),
    }
    match Last::deserialize(d)? {
        Last::Nanos(nanos) => Ok(Some(Duration::from_nanos(nanos))),
        Last::Text(text) if text.is_empty() || text == "Never" => Ok(None),
        Last::Text(text) => goduration::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Last::Null(()) => Ok(None),
    }
}

/// RFC 3339 timestamps, where an empty string or null means absent.
mod rfc3339_or_none {
    use serde::{Deserialize, Deserializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Decode one stats-topic frame.
pub fn parse_reports(frame: &[u8]) -> Result<Vec<Report>, serde_json::Error> {
    serde_json::from_slice(frame)
}

/// Reads reports from a session on the `stats` topic.
#[derive(Debug)]
pub struct StatsSubscriber {
    session: Session,
}

impl StatsSubscriber {
    /// Wrap a session whose token is for topic `stats`.
    pub fn new(session: Session) -> Self {
        StatsSubscriber { session }
    }

    /// Ask the relay for a report now (`{"cmd":"update"}`; at most one per second is made).
    pub async fn request_update(&self) -> Result<(), SessionClosed> {
        self.session
            .send(Message::Text(r#"{"cmd":"update"}"#.into()))
            .await
    }

    /// The next report; frames that do not decode are logged and skipped.
    pub async fn next(&mut self) -> Option<Vec<Report>> {
        loop {
            let message = self.session.recv().await?;
            match parse_reports(message.as_bytes()) {
                Ok(reports) => return Some(reports),
                Err(error) => warn!(%error, "skipping a stats frame that is not a report array"),
            }
        }
    }

    /// The underlying session (for its state).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Close the session.
    pub async fn close(self) {
        self.session.close().await
    }
}

/// Why `GET /status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The request could not be sent or its answer body not read (URL and reason).
    #[error("status request failed: {0}")]
    Request(String),
    /// The server answered with a non-2xx status (e.g. a token without `relay:stats`).
    #[error("status refused: HTTP {status}: {body}")]
    Refused {
        /// The HTTP status code of the answer.
        status: u16,
        /// The answer body, trimmed, for the server's reason.
        body: String,
    },
    /// The answer was 2xx but not a JSON array of reports (the parser's message).
    #[error("status reply is not a report array: {0}")]
    Decode(String),
}

/// `GET {access_base}/status` with the raw JWT (scope `relay:stats`) in `Authorization`.
pub async fn fetch_status(
    http: &reqwest::Client,
    access_base: &str,
    token: &str,
) -> Result<Vec<Report>, StatusError> {
    let url = format!("{}/status", access_base.trim_end_matches('/'));
    let response = http
        .get(&url)
        .header("Authorization", token)
        .send()
        .await
        .map_err(|e| StatusError::Request(format!("{url}: {e}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| StatusError::Request(format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(StatusError::Refused {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| StatusError::Decode(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The v0.6.2 sample of spec §2.7 plus the generator's own entry (pkg/status TestUnmarshal).
    #[test]
    fn decodes_a_v062_report_with_stats() {
        let frame = r#"[{"canRead":true,"canWrite":true,
            "connected":"2023-03-10T14:04:46.294717207Z",
            "expiresAt":"2023-03-10T14:05:16Z",
            "remoteAddr":"203.0.113.7","stats":{
              "tx":{"last":"2.90373838s","size":5,"fps":20.17},
              "rx":{"last":"Never","size":0,"fps":0}},
            "topic":"123","userAgent":"Mozilla/5.0 ..."},
           {"canRead":true,"canWrite":true,"connected":"2023-03-10T14:04:40Z",
            "expiresAt":"0001-01-01T00:00:00Z","remoteAddr":"internal",
            "stats":{"tx":{"last":"","size":0,"fps":0},"rx":{"last":1500000000,"size":12,"fps":0.5}},
            "topic":"stats","userAgent":"crossbar"}]"#;
        let reports = parse_reports(frame.as_bytes()).unwrap();
        assert_eq!(reports.len(), 2);
        let first = &reports[0];
        assert_eq!(first.topic, "123");
        assert!(first.can_read && first.can_write);
        assert_eq!(
            first.connected,
            Some(datetime!(2023-03-10 14:04:46.294717207 UTC))
        );
        assert_eq!(first.expires_at, Some(datetime!(2023-03-10 14:05:16 UTC)));
        assert_eq!(first.remote_addr, "203.0.113.7");
        assert_eq!(first.user_agent, "Mozilla/5.0 ...");
        assert_eq!(
            first.stats.tx.last,
            Some(Duration::from_nanos(2_903_738_380))
        );
        assert_eq!(first.stats.tx.size, 5.0);
        assert_eq!(first.stats.tx.fps, 20.17);
        assert!(first.stats.rx.never());
        assert!(first.scopes.is_empty());
        let generator = &reports[1];
        assert_eq!(generator.expires_at, Some(datetime!(0001-01-01 0:00 UTC)));
        assert!(generator.stats.tx.never());
        assert_eq!(generator.stats.rx.last, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn decodes_the_later_report_with_scopes_and_no_stats() {
        let frame = r#"[{"canRead":true,"canWrite":false,"connected":"2025-12-17T10:00:00Z",
            "expiresAt":"2025-12-17T11:00:00Z","remoteAddr":"","scopes":["read"],
            "topic":"expt00-video","userAgent":"Go-http-client/1.1"}]"#;
        let reports = parse_reports(frame.as_bytes()).unwrap();
        assert_eq!(reports[0].scopes, ["read"]);
        assert!(!reports[0].can_write);
        assert_eq!(reports[0].stats, RxTx::default());
    }

    #[test]
    fn rejects_frames_that_are_not_report_arrays() {
        assert!(parse_reports(br#"{"cmd":"update"}"#).is_err());
        assert!(parse_reports(br#"[{"stats":{"tx":{"last":"10 parsecs"}}}]"#).is_err());
        assert_eq!(parse_reports(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn decodes_the_v070_status_route() {
        let body = r#"[{"can_read":true,"can_write":true,"connected_at":"2023-11-06T10:00:00Z",
            "expires_at":"2023-11-06T11:00:00Z","remote_addr":"198.51.100.2",
            "scopes":["read","write"],"topic":"expt00","user_agent":"relay-host"},
            {"topic":"stats"}]"#;
        let entries: Vec<Report> = serde_json::from_str(body).unwrap();
        assert_eq!(entries[0].topic, "expt00");
        assert!(entries[0].can_read && entries[0].can_write);
        assert_eq!(entries[0].remote_addr, "198.51.100.2");
        assert_eq!(entries[0].user_agent, "relay-host");
        assert_eq!(entries[0].expires_at, Some(datetime!(2023-11-06 11:00 UTC)));
        assert_eq!(entries[0].connected, Some(datetime!(2023-11-06 10:00 UTC)));
        assert_eq!(entries[0].scopes, ["read", "write"]);
        assert_eq!(entries[1].connected, None);
        assert!(!entries[1].can_read);
    }
}
