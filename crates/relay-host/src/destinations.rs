//! Destination rules: each rule connects one local topic (a feed or a `stream/`) to the
//! relay through a reconnecting [`Link`], in both directions, and optionally records the
//! outgoing bytes to a file.
//!
//! Rules are keyed by id. Adding a rule with an existing id stops the old connection and
//! starts the new one, which is how a token is rotated or a destination switched. Other
//! rules are untouched.
//!
//! Recordings (a rule's `file`) are written only inside the operator's record directory
//! (`VW_RECORD_DIR`); without one, a rule that names a file is refused.

use crate::drops::LinkDrops;
use crate::hub::{Hub, Message, Reach, Subscription};
use crate::link::{Link, LinkTarget, SharedConnector};
use relay_common::shutdown::{wait_for_tasks, CancellationToken, DropGuard, TaskTracker};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// Reserved by the reference for "delete all"; refused as a rule id or stream name.
pub const DELETE_ALL: &str = "deleteAll";

/// What list calls show instead of a token unless tokens are asked for explicitly.
pub const REDACTED: &str = "<redacted>";

/// How many hub messages may wait for one destination before newer ones are dropped.
const DESTINATION_QUEUE: usize = 64;

/// The reference's rule JSON; all fields are strings and all five are always written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRule {
    /// The rule's unique name; adding a rule with an existing id replaces it.
    #[serde(default)]
    pub id: String,
    /// The local topic (a feed or a `stream/` aggregate) carried to the relay.
    #[serde(default)]
    pub stream: String,
    /// With a token, the relay's access URL (`http(s)://`); without, a `ws(s)://` URL.
    #[serde(default)]
    pub destination: String,
    /// The raw JWT POSTed to the access URL; empty to dial `destination` directly.
    #[serde(default)]
    pub token: String,
    /// A path to record the outgoing bytes to, raw and unframed; empty records nothing.
    /// It must resolve inside the record directory (`VW_RECORD_DIR`): relative paths are
    /// taken from there, absolute ones must lie in it.
    #[serde(default)]
    pub file: String,
}

/// A rule that cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// The rule has no `id`.
    #[error("rule id is empty")]
    EmptyId,
    /// The id is `deleteAll`, which the command API uses to mean "every rule".
    #[error("{0:?} is reserved and cannot be used as a name")]
    Reserved(String),
    /// The rule (named by its id) has no `stream` to carry.
    #[error("rule {0:?} has an empty stream")]
    EmptyStream(String),
    /// The destination URL's scheme does not fit the token (http(s) with, ws(s) without).
    #[error("rule {id:?}: destination {destination:?} must be {expected}")]
    BadDestination {
        /// The rule's id.
        id: String,
        /// The URL that was refused.
        destination: String,
        /// What kind of URL the rule needs, in words.
        expected: &'static str,
    },
    /// The rule names a recording file but recording is off or the path leaves the record
    /// directory.
    #[error("rule {id:?}: recording to {file:?} refused: {reason}")]
    Recording {
        /// The rule's id.
        id: String,
        /// The `file` as given.
        file: String,
        /// Why, in words (naming `VW_RECORD_DIR` when recording is off).
        reason: String,
    },
}

/// What refuses recordings when no record directory is set.
pub const RECORDING_OFF: &str =
    "recording to files is off; the operator must set VW_RECORD_DIR (--record-dir) to a directory for recordings";

/// Where `file` (a rule's recording path) may be written, inside `dir` (canonical).
///
/// A relative path is taken from `dir`, an absolute one must lie inside it; `..` is
/// refused, the parent directory must already exist inside `dir` once symlinks are
/// resolved, and an existing file must be a regular file, not a symlink.
pub fn resolve_recording(dir: Option<&Path>, file: &str) -> Result<PathBuf, String> {
    let Some(dir) = dir else {
        return Err(RECORDING_OFF.to_string());
    };
    let path = Path::new(file);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err("the path may not contain \"..\"".to_string());
    }
    let candidate = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let Some(name) = candidate.file_name() else {
        return Err("the path names no file".to_string());
    };
    let parent = candidate.parent().unwrap_or(dir);
    let parent = parent
        .canonicalize()
        .map_err(|e| format!("its directory {parent:?} is not usable: {e}"))?;
    if !parent.starts_with(dir) {
        return Err(format!(
            "the path is outside the record directory {dir:?} (symlinks resolved)"
        ));
    }
    let resolved = parent.join(name);
    match std::fs::symlink_metadata(&resolved) {
        Ok(meta) if !meta.file_type().is_file() => Err(format!(
            "{resolved:?} exists and is not a regular file (symlinks are refused)"
        )),
        Ok(_) => Ok(resolved),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(resolved),
        Err(e) => Err(format!("cannot inspect {resolved:?}: {e}")),
    }
}

impl DestinationRule {
    /// The reference strips a leading `/` from the stream (`/stream/x` → `stream/x`).
    pub fn normalised(mut self) -> Self {
        self.stream = strip_leading_slash(&self.stream);
        self
    }

    /// Checks the rule can run: an id, a stream, and a URL scheme that fits the token
    /// (http/https access URL with a token, ws/wss without).
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.id.is_empty() {
            return Err(RuleError::EmptyId);
        }
        if self.id == DELETE_ALL {
            return Err(RuleError::Reserved(self.id.clone()));
        }
        if self.stream.is_empty() {
            return Err(RuleError::EmptyStream(self.id.clone()));
        }
        let (schemes, expected): (&[&str], _) = if self.token.is_empty() {
            (
                &["ws://", "wss://"],
                "a ws:// or wss:// URL when there is no token",
            )
        } else {
            (
                &["http://", "https://"],
                "an http:// or https:// access URL when there is a token",
            )
        };
        if !schemes.iter().any(|s| self.destination.starts_with(s)) {
            return Err(RuleError::BadDestination {
                id: self.id.clone(),
                destination: self.destination.clone(),
                expected,
            });
        }
        Ok(())
    }

    /// The rule with its token hidden (when it has one), for list replies.
    pub fn redacted(&self) -> Self {
        let mut rule = self.clone();
        if !rule.token.is_empty() {
            rule.token = REDACTED.to_string();
        }
        rule
    }
}

/// Checks the record directory (`VW_RECORD_DIR`) exists and is a directory, and returns
/// its canonical path (symlinks resolved) for [`Destinations::set_record_dir`].
pub fn canonical_record_dir(dir: &Path) -> Result<PathBuf, String> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| format!("VW_RECORD_DIR {dir:?} is not usable: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!("VW_RECORD_DIR {dir:?} is not a directory"));
    }
    Ok(canonical)
}

/// Strips one leading `/`, as the reference does for stream names.
pub fn strip_leading_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_string()
}

/// One rule's state as shown by `GET /api/status` (not in the reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStatus {
    /// The local topic the rule carries.
    pub stream: String,
    /// The access or websocket URL the rule connects to.
    pub destination: String,
    /// True while the rule's websocket to the relay is open.
    pub connected: bool,
    /// Messages for the relay that this rule's full hub queue did not take.
    pub dropped_queue_full: u64,
    /// Messages not sent because the link to the relay was down.
    pub dropped_link_down: u64,
    /// Messages not sent because the link to the relay was busy (its queue full).
    pub dropped_link_busy: u64,
}

struct Running {
    rule: DestinationRule,
    connected: watch::Receiver<bool>,
    /// What this rule's link did not carry.
    drops: Arc<LinkDrops>,
    /// Dropping this cancels the destination's token: its task ends and closes its link.
    _stop: DropGuard,
}

/// The running destinations of a host.
pub struct Destinations {
    hub: Arc<Hub>,
    connector: SharedConnector,
    running: Mutex<BTreeMap<String, Running>>,
    /// Every destination task, so [`Destinations::stop_all`] can wait for them.
    tasks: TaskTracker,
    /// The canonical record directory; `None` refuses every rule with a `file`.
    record_dir: Option<PathBuf>,
    /// Every rule's link drops added up, deleted rules included.
    totals: Arc<LinkDrops>,
}

impl Destinations {
    /// No destinations yet; rules added later subscribe to `hub` and open links with `connector`.
    pub fn new(hub: Arc<Hub>, connector: SharedConnector) -> Self {
        Destinations {
            hub,
            connector,
            running: Mutex::new(BTreeMap::new()),
            tasks: TaskTracker::new(),
            record_dir: None,
            totals: Arc::default(),
        }
    }

    /// Sets the record directory (`VW_RECORD_DIR`), which must already be canonical (see
    /// [`canonical_record_dir`]); `None` turns recording off.
    pub fn set_record_dir(&mut self, dir: Option<PathBuf>) {
        self.record_dir = dir;
    }

    /// Starts `rule`, replacing (and disconnecting) any rule with the same id. Returns the
    /// normalised rule as stored.
    pub fn add(&self, rule: DestinationRule) -> Result<DestinationRule, RuleError> {
        let rule = rule.normalised();
        rule.validate()?;
        let recording = if rule.file.is_empty() {
            None
        } else {
            let path =
                resolve_recording(self.record_dir.as_deref(), &rule.file).map_err(|reason| {
                    RuleError::Recording {
                        id: rule.id.clone(),
                        file: rule.file.clone(),
                        reason,
                    }
                })?;
            Some(path)
        };
        let subscription = self.hub.subscribe(&rule.stream, DESTINATION_QUEUE);
        let link = self.connector.open(LinkTarget {
            destination: rule.destination.clone(),
            token: (!rule.token.is_empty()).then(|| rule.token.clone()),
        });
        let stop = CancellationToken::new();
        let connected = link.connected.clone();
        let drops = Arc::new(LinkDrops::default());
        self.tasks.spawn(run_destination(
            rule.clone(),
            recording,
            subscription,
            link,
            Counted {
                rule: drops.clone(),
                totals: self.totals.clone(),
            },
            stop.clone(),
        ));
        let running = Running {
            rule: rule.clone(),
            connected,
            drops,
            _stop: stop.drop_guard(),
        };
        let previous = self.lock().insert(rule.id.clone(), running);
        if previous.is_some() {
            tracing::info!(id = %rule.id, "destination rule replaced");
        } else {
            tracing::info!(id = %rule.id, stream = %rule.stream, destination = %rule.destination, "destination rule added");
        }
        Ok(rule)
    }

    /// Stops and removes rule `id`. Returns whether it existed.
    pub fn delete(&self, id: &str) -> bool {
        let removed = self.lock().remove(id).is_some();
        if removed {
            tracing::info!(id, "destination rule deleted");
        }
        removed
    }

    /// Stops and removes every rule.
    pub fn delete_all(&self) {
        let all = std::mem::take(&mut *self.lock());
        tracing::info!(count = all.len(), "all destination rules deleted");
    }

    /// Stops every rule (as [`Destinations::delete_all`]) and waits up to `limit` for their
    /// tasks to end. Returns how many were still running then.
    pub async fn stop_all(&self, limit: Duration) -> usize {
        self.delete_all();
        wait_for_tasks(&self.tasks, limit).await
    }

    /// One rule, as stored (token included).
    pub fn get(&self, id: &str) -> Option<DestinationRule> {
        self.lock().get(id).map(|r| r.rule.clone())
    }

    /// Whether rule `id`'s link to the relay is up (`None`: no such rule).
    pub fn is_connected(&self, id: &str) -> Option<bool> {
        self.lock().get(id).map(|r| *r.connected.borrow())
    }

    /// Every rule's stream, destination and link state, for `GET /api/status`.
    pub fn status(&self) -> BTreeMap<String, DestinationStatus> {
        self.lock()
            .iter()
            .map(|(id, r)| {
                let status = DestinationStatus {
                    stream: r.rule.stream.clone(),
                    destination: r.rule.destination.clone(),
                    connected: *r.connected.borrow(),
                    dropped_queue_full: r.drops.queue_full(),
                    dropped_link_down: r.drops.link_down(),
                    dropped_link_busy: r.drops.link_busy(),
                };
                (id.clone(), status)
            })
            .collect()
    }

    /// Every rule by id (sorted), with tokens only when `with_tokens`.
    pub fn list(&self, with_tokens: bool) -> BTreeMap<String, DestinationRule> {
        self.lock()
            .iter()
            .map(|(id, r)| {
                (
                    id.clone(),
                    if with_tokens {
                        r.rule.clone()
                    } else {
                        r.rule.redacted()
                    },
                )
            })
            .collect()
    }

    /// Link drops of every rule so far (deleted rules included).
    pub fn drop_totals(&self) -> &LinkDrops {
        &self.totals
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A rule's drop counters and the host's totals, counted together.
struct Counted {
    rule: Arc<LinkDrops>,
    totals: Arc<LinkDrops>,
}

impl Counted {
    fn link_down(&self) {
        self.rule.count_link_down();
        self.totals.count_link_down();
    }

    fn link_busy(&self) {
        self.rule.count_link_busy();
        self.totals.count_link_busy();
    }

    /// Takes over what the link and the rule's hub queue counted themselves.
    fn sync(&self, subscription: &Subscription, link: &Link) {
        self.rule.set_queue_full(subscription.dropped());
        let link_dropped = link.dropped.load(std::sync::atomic::Ordering::Relaxed);
        let new = self.rule.set_link_queue_full(link_dropped);
        self.totals.add_link_busy(new);
    }
}

/// Moves messages between the hub and the link until the rule is stopped.
async fn run_destination(
    rule: DestinationRule,
    recording: Option<PathBuf>,
    mut subscription: Subscription,
    mut link: Link,
    drops: Counted,
    stopped: CancellationToken,
) {
    let mut recorder = Recorder::open(recording).await;
    loop {
        tokio::select! {
            () = stopped.cancelled() => break,
            message = subscription.recv() => {
                let Some(message) = message else { break };
                drops.sync(&subscription, &link);
                // Host-only messages (a command reply showing tokens) never leave the host.
                if message.reach == Reach::HostOnly {
                    continue;
                }
                recorder.record(&message).await;
                // While disconnected the message is dropped (and counted): the relay gets
                // live data only.
                if !*link.connected.borrow() {
                    drops.link_down();
                } else if link.outgoing.try_send(message).is_err() {
                    drops.link_busy();
                    tracing::debug!(id = %rule.id, "relay link busy; message dropped");
                }
            }
            message = link.incoming.recv() => {
                let Some(message) = message else { break };
                subscription.publish(message.from_relay());
            }
        }
    }
    drops.sync(&subscription, &link);
    tracing::debug!(id = %rule.id, "destination stopped");
}

/// Raw recording of outgoing messages: bytes appended with no framing, as the reference.
struct Recorder {
    file: Option<tokio::fs::File>,
    path: PathBuf,
}

impl Recorder {
    /// Creates (or truncates) the file at `path`, a path from [`resolve_recording`].
    async fn open(path: Option<PathBuf>) -> Self {
        let Some(path) = path else {
            return Recorder {
                file: None,
                path: PathBuf::new(),
            };
        };
        // Checked again just before opening: a symlink put there since the rule was added
        // is not followed.
        let file = match tokio::fs::symlink_metadata(&path).await {
            Ok(meta) if !meta.file_type().is_file() => {
                tracing::error!(path = %path.display(), "recording path is not a regular file; not recording");
                None
            }
            _ => match tokio::fs::File::create(&path).await {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot create recording file; not recording");
                    None
                }
            },
        };
        Recorder { file, path }
    }

    async fn record(&mut self, message: &Message) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let written = match file.write_all(&message.data).await {
            Ok(()) => file.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "recording failed; recording stopped");
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::ChannelConnector;

    fn rule(id: &str, stream: &str) -> DestinationRule {
        DestinationRule {
            id: id.into(),
            stream: stream.into(),
            destination: "ws://127.0.0.1:1/x".into(),
            ..Default::default()
        }
    }

    fn setup() -> (Arc<Hub>, Arc<ChannelConnector>, Destinations) {
        let hub = Hub::new();
        let connector = Arc::new(ChannelConnector::new(true));
        let destinations = Destinations::new(hub.clone(), connector.clone());
        (hub, connector, destinations)
    }

    #[tokio::test]
    async fn rules_register_replace_by_id_and_delete() {
        let (hub, _c, d) = setup();
        d.add(rule("a", "/stream/x")).unwrap();
        d.add(rule("b", "data")).unwrap();
        assert_eq!(d.get("a").unwrap().stream, "stream/x");
        assert_eq!(d.list(true).len(), 2);
        d.add(rule("a", "video")).unwrap();
        assert_eq!(d.list(true).len(), 2);
        assert_eq!(d.get("a").unwrap().stream, "video");
        // The replaced rule's subscription is gone (its task saw the stop).
        relay_testkit::wait_until(
            "the replaced rule's subscription to end",
            std::time::Duration::from_secs(10),
            || hub.subscriber_count("stream/x") == 0,
        )
        .await;
        assert!(d.delete("a"));
        assert!(!d.delete("a"));
        d.delete_all();
        assert!(d.list(true).is_empty());
    }

    #[tokio::test]
    async fn reserved_and_malformed_rules_are_refused() {
        let (_h, _c, d) = setup();
        assert_eq!(
            d.add(rule(DELETE_ALL, "x")),
            Err(RuleError::Reserved(DELETE_ALL.into()))
        );
        assert_eq!(d.add(rule("", "x")), Err(RuleError::EmptyId));
        assert_eq!(
            d.add(rule("a", "")),
            Err(RuleError::EmptyStream("a".into()))
        );
        let mut with_token = rule("t", "x");
        with_token.token = "jwt".into();
        assert!(matches!(
            d.add(with_token),
            Err(RuleError::BadDestination { .. })
        ));
        assert!(d.list(true).is_empty());
    }

    #[tokio::test]
    async fn tokens_are_redacted_in_lists_unless_asked() {
        let (_h, _c, d) = setup();
        let mut r = rule("a", "data");
        r.token = "secret.jwt".into();
        r.destination = "https://relay.example.io/session/x".into();
        d.add(r).unwrap();
        assert_eq!(d.list(false)["a"].token, REDACTED);
        assert_eq!(d.list(true)["a"].token, "secret.jwt");
    }

    #[tokio::test]
    async fn messages_flow_both_ways_and_outgoing_is_recorded() {
        let (hub, connector, mut d) = setup();
        d.set_record_dir(Some(canonical_record_dir(&std::env::temp_dir()).unwrap()));
        let dir = std::env::temp_dir().join(format!("relay-host-rec-{}", uuid::Uuid::new_v4()));
        let mut r = rule("a", "data");
        r.file = dir.to_string_lossy().into_owned();
        d.add(r).unwrap();
        let mut local = hub.subscribe("data", 8);
        let mut relay = connector.take_ends().pop().unwrap();
        assert_eq!(relay.target.token, None);
        // The destination subscribes inside add(), so this publish reaches it.
        local.publish(Message::text("test message"));
        local.publish(Message::text("here we go again"));
        assert_eq!(relay.sent.recv().await, Some(Message::text("test message")));
        assert_eq!(
            relay.sent.recv().await,
            Some(Message::text("here we go again"))
        );
        relay.reply.send(Message::text("reply")).await.unwrap();
        // What the relay sends is marked as remote (the command API's trust boundary).
        assert_eq!(
            local.recv().await,
            Some(Message::text("reply").from_relay())
        );
        d.delete("a");
        let recorded = tokio::fs::read(&dir).await.unwrap();
        assert_eq!(recorded, b"test messagehere we go again");
        let _ = std::fs::remove_file(&dir);
    }
}
