//! [`ConnectionAction`]: what the relay tells a shell host's management connection, as
//! text frames. The server builds them and `relay-shell` parses them; the JSON is the
//! reference's: `{"action":"connect","uri":"wss://…/shell/H/U?code=…","uuid":"…"}` and
//! `{"action":"disconnect","uri":"","uuid":"…"}`.

use serde::{Deserialize, Serialize};

/// One instruction from the relay to a shell host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireAction", try_from = "WireAction")]
pub enum ConnectionAction {
    /// Dial `uri` (a pair topic with a one-time code) and the local service, and pipe them.
    Connect {
        /// The websocket URI, with its one-time code, of the new pair topic.
        uri: String,
        /// Names the connection, so that a later `Disconnect` can refer to it.
        uuid: String,
    },
    /// Hang up the connection named `uuid`.
    Disconnect {
        /// The `uuid` of the earlier `Connect`.
        uuid: String,
    },
}

/// The JSON shape: every action carries all three fields (`uri` is empty on disconnect).
#[derive(Serialize, Deserialize)]
struct WireAction {
    action: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    uuid: String,
}

impl From<ConnectionAction> for WireAction {
    fn from(action: ConnectionAction) -> Self {
        match action {
            ConnectionAction::Connect { uri, uuid } => WireAction {
                action: "connect".into(),
                uri,
                uuid,
            },
            ConnectionAction::Disconnect { uuid } => WireAction {
                action: "disconnect".into(),
                uri: String::new(),
                uuid,
            },
        }
    }
}

impl TryFrom<WireAction> for ConnectionAction {
    type Error = String;

    fn try_from(wire: WireAction) -> Result<Self, Self::Error> {
        match wire.action.as_str() {
            "connect" if !wire.uri.is_empty() && !wire.uuid.is_empty() => {
                Ok(ConnectionAction::Connect {
                    uri: wire.uri,
                    uuid: wire.uuid,
                })
            }
            // The reference ignored every disconnect because its uri is empty (bug §4.1).
            "disconnect" if !wire.uuid.is_empty() => {
                Ok(ConnectionAction::Disconnect { uuid: wire.uuid })
            }
            other => Err(format!("not a complete connection action: {other:?}")),
        }
    }
}

impl ConnectionAction {
    /// Parse a management message; junk and incomplete actions are `None` (a host logs
    /// and ignores them, never fails on them).
    pub fn parse(text: &str) -> Option<ConnectionAction> {
        serde_json::from_str(text).ok()
    }

    /// The text frame that carries this action.
    pub fn to_json(&self) -> String {
        // A struct of three strings always serialises; an empty frame is ignored by hosts.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The uuid that names the connection.
    pub fn uuid(&self) -> &str {
        match self {
            ConnectionAction::Connect { uuid, .. } | ConnectionAction::Disconnect { uuid } => uuid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_reference_json() {
        let connect = ConnectionAction::Connect {
            uri: "wss://r/shell/H/U?code=c".into(),
            uuid: "a".into(),
        };
        assert_eq!(
            connect.to_json(),
            r#"{"action":"connect","uri":"wss://r/shell/H/U?code=c","uuid":"a"}"#
        );
        let disconnect = ConnectionAction::Disconnect { uuid: "a".into() };
        assert_eq!(
            disconnect.to_json(),
            r#"{"action":"disconnect","uri":"","uuid":"a"}"#
        );
        assert_eq!(ConnectionAction::parse(&connect.to_json()), Some(connect));
        assert_eq!(
            ConnectionAction::parse(&disconnect.to_json()),
            Some(disconnect)
        );
    }

    #[test]
    fn parses_reference_actions_and_ignores_junk() {
        assert_eq!(
            ConnectionAction::parse(
                r#"{"action":"connect","uri":"wss://r/shell/H/U?code=c","uuid":"a"}"#
            ),
            Some(ConnectionAction::Connect {
                uri: "wss://r/shell/H/U?code=c".into(),
                uuid: "a".into()
            })
        );
        assert_eq!(
            ConnectionAction::parse(r#"{"action":"disconnect","uri":"","uuid":"a"}"#),
            Some(ConnectionAction::Disconnect { uuid: "a".into() })
        );
        for junk in [
            "",
            "{}",
            "[1]",
            r#"{"action":"connect","uuid":"a"}"#,
            r#"{"action":"disconnect","uri":""}"#,
            r#"{"action":"explode","uuid":"a"}"#,
        ] {
            assert_eq!(ConnectionAction::parse(junk), None, "{junk}");
        }
    }
}
