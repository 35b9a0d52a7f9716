//! The two kinds of relay connection, `session` and `shell`: the first path segment of a
//! relay URL and the `prefix` claim of a token. Parsed once where a string comes in (a URL
//! path, a token, a command line), and carried as [`ConnectionType`] from there on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A kind of relay connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    /// Data sessions: video, JSON commands, anything message-shaped.
    Session,
    /// Shell connections: one TCP stream (usually SSH) tunnelled over a websocket pair.
    Shell,
}

impl ConnectionType {
    /// Every connection type, in the order the relay documents them.
    pub const ALL: [ConnectionType; 2] = [ConnectionType::Session, ConnectionType::Shell];

    /// The wire name: the URL path segment and the token's `prefix` claim.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Session => "session",
            ConnectionType::Shell => "shell",
        }
    }
}

impl fmt::Display for ConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no connection type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownConnectionType(pub String);

impl fmt::Display for UnknownConnectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown connection type {:?} (expected \"session\" or \"shell\")",
            self.0
        )
    }
}

impl std::error::Error for UnknownConnectionType {}

impl FromStr for ConnectionType {
    type Err = UnknownConnectionType;

    /// Exact, case-sensitive match on the wire name, as the relay has always matched paths.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectionType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownConnectionType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_parse_and_serde() {
        for t in ConnectionType::ALL {
            assert_eq!(t.as_str().parse::<ConnectionType>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<ConnectionType>(&json).ok(), Some(t));
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_name_in_the_message() {
        for junk in ["", "Session", "SHELL", "nope", "session "] {
            let err = junk.parse::<ConnectionType>().err();
            assert_eq!(
                err,
                Some(UnknownConnectionType(junk.to_owned())),
                "{junk:?}"
            );
        }
        let message = "nope"
            .parse::<ConnectionType>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some(r#"unknown connection type "nope" (expected "session" or "shell")"#)
        );
        assert!(serde_json::from_str::<ConnectionType>("\"nope\"").is_err());
    }
}
