//! `ConnectionAction`: what the relay tells a shell host's management connection, as text
//! frames: `{"action":"connect","uri":"wss://…/shell/H/U?code=…","uuid":"…"}` and
//! `{"action":"disconnect","uri":"","uuid":"…"}`.

use serde::{Deserialize, Serialize};

/// One instruction from the relay to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionAction {
    /// `connect` or `disconnect`.
    pub action: String,
    /// For `connect`: the websocket URI (with a one-time code) of the new pair topic.
    #[serde(default)]
    pub uri: String,
    /// Identifies the connection, so a later `disconnect` can name it.
    #[serde(default)]
    pub uuid: String,
}

/// What the host should do about one management message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Connect { uri: String, uuid: String },
    Disconnect { uuid: String },
}

impl ConnectionAction {
    /// Parse a management message; junk and incomplete actions are `None` (logged by the
    /// caller and ignored, never fatal).
    pub fn parse(text: &str) -> Option<Instruction> {
        let action: ConnectionAction = serde_json::from_str(text).ok()?;
        match action.action.as_str() {
            "connect" if !action.uri.is_empty() && !action.uuid.is_empty() => {
                Some(Instruction::Connect {
                    uri: action.uri,
                    uuid: action.uuid,
                })
            }
            // The reference ignored every disconnect because its uri is empty (bug §4.1).
            "disconnect" if !action.uuid.is_empty() => {
                Some(Instruction::Disconnect { uuid: action.uuid })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_actions_and_ignores_junk() {
        assert_eq!(
            ConnectionAction::parse(
                r#"{"action":"connect","uri":"wss://r/shell/H/U?code=c","uuid":"a"}"#
            ),
            Some(Instruction::Connect {
                uri: "wss://r/shell/H/U?code=c".into(),
                uuid: "a".into()
            })
        );
        assert_eq!(
            ConnectionAction::parse(r#"{"action":"disconnect","uri":"","uuid":"a"}"#),
            Some(Instruction::Disconnect { uuid: "a".into() })
        );
        for junk in [
            "",
            "{}",
            "[1]",
            r#"{"action":"connect","uuid":"a"}"#,
            r#"{"action":"explode","uuid":"a"}"#,
        ] {
            assert_eq!(ConnectionAction::parse(junk), None, "{junk}");
        }
    }
}
