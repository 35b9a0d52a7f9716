//! Tickets: what the server grants once it has checked a token, kept under a one-time code
//! until the websocket upgrade redeems it.
//!
//! A ticket is not a token. It has no `Deserialize`, its fields are private, and it is made
//! only by [`Ticket::grant`] from claims the server has already verified, so nothing a
//! client signs can set a ticket-only field (the shell pair's salt, "alert the host").

use crate::Claims;
use relay_common::connection::ConnectionType;

/// One grant of access to one relay topic, made by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    booking_id: String,
    topic: String,
    connection: ConnectionType,
    scopes: Vec<String>,
    relay: String,
    not_before: Option<i64>,
    expires_at: Option<i64>,
    topic_salt: Option<String>,
    alerts_host: bool,
}

impl Ticket {
    /// A ticket for `connection` on `topic` at the relay `relay`, carrying the booking,
    /// scopes and validity of the verified `claims`.
    pub fn grant(
        claims: &Claims,
        connection: ConnectionType,
        topic: impl Into<String>,
        relay: impl Into<String>,
    ) -> Ticket {
        Ticket {
            booking_id: claims.booking_id.clone(),
            topic: topic.into(),
            connection,
            scopes: claims.scopes.clone(),
            relay: relay.into(),
            not_before: claims.nbf,
            expires_at: claims.exp,
            topic_salt: None,
            alerts_host: false,
        }
    }

    /// The same ticket with exactly `scopes`.
    pub fn with_scopes(self, scopes: &[&str]) -> Ticket {
        Ticket {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ..self
        }
    }

    /// The admin's end of a shell pair: its hub topic is salted with `salt`, and its arrival
    /// tells the shell host to dial the other end.
    pub fn shell_client(self, salt: impl Into<String>) -> Ticket {
        Ticket {
            topic_salt: Some(salt.into()),
            alerts_host: true,
            ..self
        }
    }

    /// The host's end of the same shell pair: the same topic and salt, alerting nobody.
    pub fn host_end(&self) -> Ticket {
        Ticket {
            alerts_host: false,
            ..self.clone()
        }
    }

    /// Booking identifier, used to deny the booking's codes and connections.
    pub fn booking_id(&self) -> &str {
        &self.booking_id
    }

    /// The topic the ticket is for, as it appears in the relay URL.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The connection type the ticket is for.
    pub fn connection(&self) -> ConnectionType {
        self.connection
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// True when `scope` is one of the granted scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The relay URL the ticket was issued for.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Not valid before, unix seconds (from the token).
    pub fn not_before(&self) -> Option<i64> {
        self.not_before
    }

    /// Expiry, unix seconds (from the token).
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// Shell pairs only: the random suffix that makes the pair's hub topic unguessable.
    pub fn topic_salt(&self) -> Option<&str> {
        self.topic_salt.as_deref()
    }

    /// Shell pairs only: true for the admin's end, whose arrival makes the relay tell the
    /// host to dial in.
    pub fn alerts_host(&self) -> bool {
        self.alerts_host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_carries_the_tokens_booking_scopes_and_times_but_no_pair() {
        let claims = Claims {
            booking_id: "b".into(),
            topic: "from-token".into(),
            prefix: "session".into(),
            scopes: vec!["read".into()],
            exp: Some(20),
            nbf: Some(10),
            ..Claims::default()
        };
        let ticket = Ticket::grant(&claims, ConnectionType::Session, "t", "ws://relay");
        assert_eq!(ticket.booking_id(), "b");
        assert_eq!(ticket.topic(), "t");
        assert_eq!(ticket.connection(), ConnectionType::Session);
        assert!(ticket.has_scope("read") && !ticket.has_scope("write"));
        assert_eq!(ticket.relay(), "ws://relay");
        assert_eq!(
            (ticket.not_before(), ticket.expires_at()),
            (Some(10), Some(20))
        );
        assert_eq!((ticket.topic_salt(), ticket.alerts_host()), (None, false));
    }

    #[test]
    fn a_shell_pair_shares_its_salt_and_only_the_client_end_alerts() {
        let client = Ticket::grant(&Claims::default(), ConnectionType::Shell, "h/u", "r")
            .with_scopes(&["read", "write"])
            .shell_client("salt");
        assert_eq!(
            (client.topic_salt(), client.alerts_host()),
            (Some("salt"), true)
        );
        let host = client.host_end();
        assert_eq!(
            (host.topic_salt(), host.alerts_host()),
            (Some("salt"), false)
        );
        assert_eq!(host.scopes(), ["read", "write"]);
        assert_eq!(host.topic(), "h/u");
    }
}
