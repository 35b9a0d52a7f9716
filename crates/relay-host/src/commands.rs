//! The websocket JSON command API on feed `api` (the reference's internalAPI).
//!
//! Every message on `api` (from a local `/ws/api` client, or from relay users through a
//! destination whose stream is `api`) is parsed as a command, and the reply is published
//! as text on `api` to every other `api` client. Keys are case-insensitive. Every reply,
//! including errors, is valid JSON built by serde, and nothing in a command can crash the
//! host (bug B6: the reference dereferenced a missing `rule`).
//!
//! Every command carries its [`Origin`]. A command from the relay ([`Origin::Remote`]) is
//! from whoever holds a token for the relay topic, so it can never name a recording file
//! or see tokens, and it may add or delete rules only when the operator set
//! `VW_API_REMOTE_CHANGES=true`. A reply that shows tokens (a local `list` with
//! `"tokens": true`) is [`Reach::HostOnly`], so it is not carried to the relay.

use crate::destinations::{strip_leading_slash, DestinationRule, DELETE_ALL};
pub use crate::hub::Origin;
use crate::hub::{Message, Reach, Subscription};
use crate::state::HostState;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The feed the command API listens on.
pub const API_FEED: &str = "api";

/// The id of the start-up rule made from `VW_API`; it cannot be deleted by command.
pub const API_RULE_ID: &str = "apiRule";

/// A stream rule: `{"stream":"stream/front","feeds":["video0","audio0"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct StreamRule {
    /// The aggregate topic to create, e.g. `stream/front` (a leading `/` is stripped).
    #[serde(default)]
    pub stream: String,
    /// The feeds whose messages are copied into the stream, e.g. `video0`.
    #[serde(default)]
    pub feeds: Vec<String>,
}

impl StreamRule {
    /// The rule with one leading `/` stripped from its stream name, as the reference does.
    pub fn normalised(mut self) -> Self {
        self.stream = strip_leading_slash(&self.stream);
        self
    }

    /// A stream rule needs a name, and not the reserved `deleteAll`.
    pub fn validate(&self) -> Result<(), StreamRuleError> {
        if self.stream.is_empty() {
            return Err(StreamRuleError::Empty);
        }
        if self.stream == DELETE_ALL {
            return Err(StreamRuleError::Reserved(self.stream.clone()));
        }
        Ok(())
    }
}

/// Why a stream rule was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StreamRuleError {
    /// The rule has no `stream` name.
    #[error("stream name is empty")]
    Empty,
    /// The name is `deleteAll`, which the command API uses to mean "every rule".
    #[error("{0:?} is reserved and cannot be used as a stream name")]
    Reserved(String),
}

/// Validates and applies a stream rule; returns it as stored.
pub fn add_stream_rule(state: &HostState, rule: StreamRule) -> Result<StreamRule, StreamRuleError> {
    let rule = rule.normalised();
    rule.validate()?;
    state.hub.set_stream_rule(&rule.stream, rule.feeds.clone());
    tracing::info!(stream = %rule.stream, feeds = ?rule.feeds, "stream rule set");
    Ok(rule)
}

/// Listens on `api` until the subscription ends.
pub async fn run(state: Arc<HostState>, mut subscription: Subscription) {
    loop {
        let message = tokio::select! {
            () = state.shutdown.cancelled() => break,
            message = subscription.recv() => message,
        };
        let Some(message) = message else { break };
        let reply = handle(&state, &message.data, message.origin);
        let mut out = Message::text(reply.body.to_string());
        out.reach = reply.reach;
        subscription.publish(out);
    }
}

fn error(message: impl std::fmt::Display) -> Value {
    json!({ "error": message.to_string() })
}

/// What refuses a remote `add` or `delete` without the opt-in.
pub const REMOTE_CHANGES_OFF: &str = "rule changes from the relay are off; the host operator must set VW_API_REMOTE_CHANGES=true to allow remote add and delete";

/// What refuses a remote rule that names a recording file.
pub const REMOTE_FILE_REFUSED: &str =
    "commands from the relay cannot name a recording file; leave \"file\" empty";

/// A command's reply and who may hear it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The JSON reply.
    pub body: Value,
    /// [`Reach::HostOnly`] when the reply shows tokens.
    pub reach: Reach,
}

/// Runs one command from `origin` and returns the reply.
pub fn handle(state: &HostState, raw: &[u8], origin: Origin) -> Reply {
    let mut reach = Reach::Everyone;
    let body = run_command(state, raw, origin, &mut reach);
    Reply { body, reach }
}

fn run_command(state: &HostState, raw: &[u8], origin: Origin, reach: &mut Reach) -> Value {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(raw) else {
        return error("Unrecognised Command");
    };
    let fields: Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase()
    };
    let which = fields
        .get("which")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // Tokens are for local eyes only: a remote `"tokens": true` is ignored.
    let with_tokens = origin == Origin::Local
        && fields
            .get("tokens")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    if with_tokens {
        *reach = Reach::HostOnly;
    }
    let rule = fields.get("rule");
    let verb = text("verb");
    if origin == Origin::Remote
        && !state.api_remote_changes
        && matches!(verb.as_str(), "add" | "delete")
    {
        tracing::warn!(verb, what = %text("what"), "rule change from the relay refused (VW_API_REMOTE_CHANGES is off)");
        return error(REMOTE_CHANGES_OFF);
    }
    match (verb.as_str(), text("what").as_str()) {
        ("healthcheck", _) => json!({ "healthcheck": "ok" }),
        ("add", "destination") => {
            let Some(rule) = rule else {
                return error("add destination needs a rule");
            };
            match DestinationRule::deserialize(rule) {
                Ok(rule) if origin == Origin::Remote && !rule.file.is_empty() => {
                    tracing::warn!(id = %rule.id, file = %rule.file, "remote rule naming a recording file refused");
                    error(REMOTE_FILE_REFUSED)
                }
                Ok(rule) => match state.destinations.add(rule) {
                    Ok(stored) => to_value(&stored.redacted()),
                    Err(e) => error(e),
                },
                Err(e) => error(format!("bad destination rule: {e}")),
            }
        }
        ("delete", "destination") => match which.as_str() {
            "" => error("delete destination needs which"),
            API_RULE_ID => error("Cannot delete apiRule"),
            "all" | DELETE_ALL => {
                state.delete_all_destinations();
                json!({ "deleted": DELETE_ALL })
            }
            id => {
                state.destinations.delete(id);
                json!({ "deleted": id })
            }
        },
        ("list", "destination") => match which.as_str() {
            "" => error("list destination needs which"),
            "all" => to_value(&state.destinations.list(with_tokens)),
            id => {
                let rule = state.destinations.get(id).unwrap_or_default();
                to_value(&if with_tokens { rule } else { rule.redacted() })
            }
        },
        ("add", "stream") => {
            let Some(rule) = rule else {
                return error("add stream needs a rule");
            };
            match StreamRule::deserialize(rule) {
                Ok(rule) => match add_stream_rule(state, rule) {
                    Ok(stored) => to_value(&stored),
                    Err(e) => error(e),
                },
                Err(e) => error(format!("bad stream rule: {e}")),
            }
        }
        ("delete", "stream") => match which.as_str() {
            "" => error("delete stream needs which"),
            "all" | DELETE_ALL => {
                state.hub.delete_all_stream_rules();
                json!({ "deleted": DELETE_ALL })
            }
            name => {
                let name = strip_leading_slash(name);
                state.hub.delete_stream_rule(&name);
                json!({ "deleted": name })
            }
        },
        ("list", "stream") => match which.as_str() {
            "" => error("list stream needs which"),
            "all" => to_value(&state.hub.stream_rules()),
            name => json!({ "feeds": state.hub.stream_rule(&strip_leading_slash(name)) }),
        },
        _ => error("Unrecognised Command"),
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| error(format!("cannot encode reply: {e}")))
}
