//! One-time codes behind one interface, [`Codes`]: in this process
//! ([`relay_auth::CodeStore`]) on a single node, in a JetStream KV bucket in a cluster, so
//! that the access API of node A issues a code and the websocket may redeem it on node B.
//!
//! In the bucket, a code is the key and its ticket (with its expiry) the value; the
//! bucket's `max_age` is the code lifetime, so NATS forgets unused codes by itself.
//! Redemption reads the entry and deletes it *expecting its revision*: when two nodes
//! redeem the same code at the same moment, JetStream accepts exactly one delete and the
//! other gets "wrong last sequence", which is the ordinary "invalid code". A node that
//! cannot reach NATS refuses to issue or redeem codes (503) rather than guess.
//!
//! The caps on waiting codes (`RELAY_MAX_CODES_PER_BOOKING`, `RELAY_MAX_CODES`) are counted
//! per issuing node, by a local [`CodeStore`] used as a ledger: a code redeemed on another
//! node holds its place on the issuing node until its lifetime ends.

use crate::cluster::{Cluster, NATS_TIMEOUT};
use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use relay_auth::{Claims, CodeError, CodeStore, SubmitError, Ticket};
use relay_common::connection::ConnectionType;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why no code was issued.
#[derive(Debug, PartialEq, Eq)]
pub enum IssueError {
    /// A cap on waiting codes was reached.
    Full(SubmitError),
    /// The cluster's code store is unreachable.
    Unavailable(String),
}

/// Why a code was not exchanged for its ticket.
#[derive(Debug, PartialEq, Eq)]
pub enum RedeemError {
    /// Unknown, used or expired.
    Code(CodeError),
    /// The cluster's code store is unreachable, so the code cannot be checked.
    Unavailable(String),
}

/// The one-time code store of a server: local, or shared by the cluster.
pub enum Codes {
    /// In this process (a single node, and `relay crossbar`).
    Local(CodeStore),
    /// In the cluster's KV bucket.
    Cluster(ClusterCodes),
}

impl Codes {
    /// Store `ticket` under a fresh code and return the code.
    pub async fn submit(&self, ticket: Ticket, now: Instant) -> Result<String, IssueError> {
        match self {
            Codes::Local(store) => store.submit(ticket, now).map_err(IssueError::Full),
            Codes::Cluster(store) => store.submit(ticket, now).await,
        }
    }

    /// Exchange `code` for its ticket, once.
    pub async fn exchange(&self, code: &str, now: Instant) -> Result<Ticket, RedeemError> {
        match self {
            Codes::Local(store) => store.exchange(code, now).map_err(RedeemError::Code),
            Codes::Cluster(store) => store.exchange(code, now).await,
        }
    }

    /// Forget this node's record of `booking_id`'s unused codes; returns how many. (In a
    /// cluster the codes themselves stay in the bucket until they expire, but a denied
    /// booking's ticket is refused at redemption on every node.)
    pub fn delete_by_booking_id(&self, booking_id: &str) -> usize {
        self.ledger().delete_by_booking_id(booking_id)
    }

    /// Forget expired codes (of this node's record); returns how many.
    pub fn prune(&self, now: Instant) -> usize {
        self.ledger().prune(now)
    }

    /// How many codes this node issued that are still waiting (as far as it knows).
    pub fn len(&self) -> usize {
        self.ledger().len()
    }

    /// True when [`Codes::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ledger(&self) -> &CodeStore {
        match self {
            Codes::Local(store) => store,
            Codes::Cluster(store) => &store.ledger,
        }
    }
}

/// Codes in the cluster's KV bucket, with a local ledger for the caps.
pub struct ClusterCodes {
    cluster: Arc<Cluster>,
    ledger: CodeStore,
    ttl: Duration,
}

/// What the bucket holds for one code.
#[derive(Serialize, Deserialize)]
struct Stored {
    booking_id: String,
    topic: String,
    connection: String,
    scopes: Vec<String>,
    relay: String,
    nbf: Option<i64>,
    exp: Option<i64>,
    salt: Option<String>,
    alerts_host: bool,
    /// Unix milliseconds after which the code is refused.
    valid_until_ms: u64,
}

impl Stored {
    fn of(ticket: &Ticket, valid_until_ms: u64) -> Self {
        Stored {
            booking_id: ticket.booking_id().to_owned(),
            topic: ticket.topic().to_owned(),
            connection: ticket.connection().to_string(),
            scopes: ticket.scopes().to_vec(),
            relay: ticket.relay().to_owned(),
            nbf: ticket.not_before(),
            exp: ticket.expires_at(),
            salt: ticket.topic_salt().map(str::to_owned),
            alerts_host: ticket.alerts_host(),
            valid_until_ms,
        }
    }

    /// The same ticket again, built the way the access API built it.
    fn ticket(self) -> Option<Ticket> {
        let connection = self.connection.parse::<ConnectionType>().ok()?;
        let claims = Claims {
            booking_id: self.booking_id,
            scopes: self.scopes,
            nbf: self.nbf,
            exp: self.exp,
            ..Claims::default()
        };
        let ticket = Ticket::grant(&claims, connection, self.topic, self.relay);
        Some(match self.salt {
            Some(salt) => {
                let client = ticket.shell_client(salt);
                if self.alerts_host {
                    client
                } else {
                    client.host_end()
                }
            }
            None => ticket,
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> String {
    format!("{what}: {error}")
}

impl ClusterCodes {
    /// Codes in `cluster`'s bucket that live for `ttl`, capped per node by `ledger`.
    pub fn new(cluster: Arc<Cluster>, ledger: CodeStore) -> Self {
        let ttl = ledger.ttl();
        ClusterCodes {
            cluster,
            ledger,
            ttl,
        }
    }

    async fn submit(&self, ticket: Ticket, now: Instant) -> Result<String, IssueError> {
        if !self.cluster.is_connected() {
            return Err(IssueError::Unavailable("NATS is unreachable".into()));
        }
        let stored = Stored::of(&ticket, unix_ms() + self.ttl.as_millis() as u64);
        let code = self.ledger.submit(ticket, now).map_err(IssueError::Full)?;
        let value = serde_json::to_vec(&stored).unwrap_or_default();
        let put = tokio::time::timeout(
            NATS_TIMEOUT,
            self.cluster.codes_kv.create(&code, value.into()),
        )
        .await;
        let failure = match put {
            Ok(Ok(_)) => return Ok(code),
            Ok(Err(e)) => unavailable("cannot store the code", e),
            Err(_) => "storing the code timed out".to_owned(),
        };
        let _ = self.ledger.exchange(&code, now);
        tracing::warn!(reason = %failure, "code not issued: the cluster's code store is unavailable");
        Err(IssueError::Unavailable(failure))
    }

    async fn exchange(&self, code: &str, now: Instant) -> Result<Ticket, RedeemError> {
        if !self.cluster.is_connected() {
            return Err(RedeemError::Unavailable("NATS is unreachable".into()));
        }
        if !is_code_shaped(code) {
            return Err(RedeemError::Code(CodeError::Unknown));
        }
        // Frees the issuing node's place under the caps (when that is this node).
        let _ = self.ledger.exchange(code, now);
        let kv = &self.cluster.codes_kv;
        let entry = match tokio::time::timeout(NATS_TIMEOUT, kv.entry(code)).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => {
                return Err(RedeemError::Unavailable(unavailable(
                    "cannot read the code",
                    e,
                )))
            }
            Err(_) => {
                return Err(RedeemError::Unavailable(
                    "reading the code timed out".into(),
                ))
            }
        };
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Err(RedeemError::Code(CodeError::Unknown));
        };
        let taken = tokio::time::timeout(
            NATS_TIMEOUT,
            kv.delete_expect_revision(code, Some(entry.revision)),
        )
        .await;
        match taken {
            Ok(Ok(())) => {}
            // Another node redeemed it first.
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                return Err(RedeemError::Code(CodeError::Unknown))
            }
            Ok(Err(e)) => {
                return Err(RedeemError::Unavailable(unavailable(
                    "cannot redeem the code",
                    e,
                )))
            }
            Err(_) => {
                return Err(RedeemError::Unavailable(
                    "redeeming the code timed out".into(),
                ))
            }
        }
        let stored: Stored = serde_json::from_slice(&entry.value)
            .map_err(|_| RedeemError::Code(CodeError::Unknown))?;
        if unix_ms() >= stored.valid_until_ms {
            return Err(RedeemError::Code(CodeError::Expired));
        }
        stored.ticket().ok_or(RedeemError::Code(CodeError::Unknown))
    }
}

/// Codes are UUIDs; anything else is not looked up (and could not be a KV key).
fn is_code_shaped(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ticket_comes_back_the_same() {
        let claims = Claims {
            booking_id: "b".into(),
            scopes: vec!["read".into(), "write".into()],
            nbf: Some(5),
            exp: Some(50),
            ..Claims::default()
        };
        let plain = Ticket::grant(&claims, ConnectionType::Session, "t.*>", "ws://r");
        let client =
            Ticket::grant(&claims, ConnectionType::Shell, "x/y", "ws://r").shell_client("salt");
        let host = client.host_end();
        for ticket in [plain, client, host] {
            let json = serde_json::to_vec(&Stored::of(&ticket, 1)).unwrap_or_default();
            let back: Stored = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.ticket(), Some(ticket));
        }
    }

    #[test]
    fn only_code_shaped_strings_are_looked_up() {
        assert!(is_code_shaped(&uuid::Uuid::new_v4().to_string()));
        for bad in ["", "a.b", "*", ">", "a b", &"x".repeat(65)] {
            assert!(!is_code_shaped(bad), "{bad:?}");
        }
    }
}
