//! The engine of `relay client file`: log what a topic receives, and optionally play a
//! [`Playfile`] into it (spec relay-core §5, and the later text/binary log mode of §9).
//!
//! ```text
//! Session ─recv─► receiver task ─┬─► condition watch (every received message)
//!                                └─► filter ─► log writer task ─► file / stdout
//! player (playfile) ─send─► Session          (echo comments go straight to the writer)
//! ```
//!
//! - Text mode: each received message is a line `[<RFC3339 nanoseconds, UTC>] <content>`;
//!   binary frames are base64. Binary mode: the raw frame bytes, concatenated (for `.ts`).
//! - A reopen request (SIGHUP in the CLI) closes and reopens the log path in append mode, so
//!   logrotate's move-then-HUP works. Nothing queued is lost across the reopen.
//! - Stopping (SIGINT, or the end of the playfile) drains what was already received, flushes
//!   and closes the websocket.
//! - Differences from the reference (B18) are listed in `docs/COMPATIBILITY.md` (relay-client section):
//!   condition timeouts are exact deadlines not starved by traffic, a deny-only filter denies
//!   only what it matches, and received messages are drained even with no log file.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use regex::Regex;
use relay_common::shutdown::CancellationToken;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

use crate::playfile::{Condition, FilterAction, Line, Playfile};
use crate::session::{
    LinkState, Message, Session, SessionClosed, SessionConfig, SessionSender, SessionState,
};

/// How received messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Timestamped lines; binary frames base64.
    #[default]
    Text,
    /// Raw frame bytes concatenated, no timestamps.
    Binary,
}

/// Where received messages are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output (the CLI argument `-` or an empty one).
    Stdout,
    /// A file, opened in append mode and created if missing; reopened on request.
    File(PathBuf),
}

impl LogTarget {
    /// `-` (or empty) is stdout, anything else a path.
    pub fn from_arg(arg: &str) -> LogTarget {
        if arg.is_empty() || arg == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(arg))
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FileClientConfig {
    /// The relay topic to connect to, with its token and reconnect settings.
    pub session: SessionConfig,
    /// None: received messages are only used for playfile conditions.
    pub log: Option<LogTarget>,
    /// Text lines with timestamps (default) or raw binary frames.
    pub mode: OutputMode,
    /// With a playfile the client stops after its last line; without, it logs until stopped.
    pub playfile: Option<Playfile>,
}

/// Why the file client stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum FileClientError {
    /// The log file could not be opened (at start or on a reopen request).
    #[error("cannot open log file {path}: {source}")]
    OpenLog {
        /// The log file path that failed to open.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Writing or flushing the log failed (e.g. disk full).
    #[error("writing the log: {0}")]
    Write(std::io::Error),
    /// The websocket session was closed while the playfile still had lines to send.
    #[error("session closed before the playfile finished")]
    SessionClosed,
}

/// External controls of a running client.
pub struct Controls {
    /// Each message asks the writer to reopen its file.
    pub reopen: mpsc::Receiver<()>,
    /// Cancel to stop (drain, flush, close).
    pub stop: CancellationToken,
}

/// Format one log line: `[<time>] <content>\n`.
pub fn format_line(at: OffsetDateTime, content: &str) -> String {
    format!("[{}] {content}\n", rfc3339_nano(at))
}

/// Go's RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed (none when zero).
pub fn rfc3339_nano(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let nanos = at.nanosecond();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// The text form of a message, as logged and as matched by filters and conditions.
pub fn message_text(message: &Message) -> String {
    match message {
        Message::Text(text) => text.clone(),
        Message::Binary(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// The log filter. Patterns are keyed by their source text, so duplicates collapse.
#[derive(Debug, Default)]
pub struct Filter {
    accept: BTreeMap<String, Regex>,
    deny: BTreeMap<String, Regex>,
}

impl Filter {
    /// Add an accept or deny pattern, or clear all patterns on `Reset`.
    pub fn apply(&mut self, action: &FilterAction) {
        match action {
            FilterAction::Accept(re) => {
                self.accept.insert(re.as_str().to_string(), re.clone());
            }
            FilterAction::Deny(re) => {
                self.deny.insert(re.as_str().to_string(), re.clone());
            }
            FilterAction::Reset => {
                self.accept.clear();
                self.deny.clear();
            }
        }
    }

    /// True when no pattern is set (everything passes).
    pub fn is_empty(&self) -> bool {
        self.accept.is_empty() && self.deny.is_empty()
    }

    /// True when `text` matches no deny pattern and, if there are accept patterns, at
    /// least one of them. (The reference also required an accept match when only deny
    /// patterns existed, so a deny-only filter blocked everything.)
    pub fn passes(&self, text: &str) -> bool {
        !self.deny.values().any(|re| re.is_match(text))
            && (self.accept.is_empty() || self.accept.values().any(|re| re.is_match(text)))
    }
}

/// A condition the player is waiting on.
struct Waiting {
    pattern: Regex,
    needed: usize,
    seen: usize,
    satisfied: Option<oneshot::Sender<()>>,
}

impl Waiting {
    fn notify_if_met(&mut self) {
        if self.seen >= self.needed {
            if let Some(satisfied) = self.satisfied.take() {
                let _ = satisfied.send(());
            }
        }
    }
}

/// Most received messages remembered between a send and the condition that follows it.
const RECENT_LIMIT: usize = 1024;

/// What a condition counts: while one is registered, the matches it sees; otherwise the
/// messages received since the player last sent, so a reply that arrives before the
/// condition line is reached still counts (on a fast link the echo of a message can beat
/// the player to its next line).
#[derive(Default)]
struct Watch {
    waiting: Option<Waiting>,
    /// `Some` while a playfile is playing.
    since_send: Option<std::collections::VecDeque<String>>,
}

/// State shared by the player (which changes it) and the receiver (which consults it).
#[derive(Default)]
pub struct PlayState {
    filter: Mutex<Filter>,
    condition: Mutex<Watch>,
}

impl PlayState {
    /// Count `message` towards the current condition; true when it should be logged. The
    /// text form (base64 for binary) is only computed when a condition or filter needs it,
    /// so recording video costs no encoding.
    pub fn observe(&self, message: &Message) -> bool {
        let text = std::cell::OnceCell::new();
        let text_of = |message: &Message| -> &str { text.get_or_init(|| message_text(message)) };
        {
            let mut watch = self
                .condition
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Watch {
                waiting,
                since_send,
            } = &mut *watch;
            if let Some(waiting) = waiting.as_mut() {
                if waiting.pattern.is_match(text_of(message)) {
                    waiting.seen += 1;
                    waiting.notify_if_met();
                }
            } else if let Some(recent) = since_send.as_mut() {
                if recent.len() >= RECENT_LIMIT {
                    recent.pop_front();
                }
                recent.push_back(text_of(message).to_owned());
            }
        }
        let filter = self.filter.lock().unwrap_or_else(PoisonError::into_inner);
        filter.is_empty() || filter.passes(text_of(message))
    }

    fn apply_filter(&self, action: &FilterAction) {
        self.filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(action);
    }

    /// Start remembering received messages for conditions (playing), or forget them.
    fn remember_since_send(&self, on: bool) {
        self.condition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since_send = on.then(std::collections::VecDeque::new);
    }

    /// The player is about to send: conditions from now on count only what follows.
    fn sending(&self) {
        if let Some(recent) = self
            .condition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since_send
            .as_mut()
        {
            recent.clear();
        }
    }

    /// Wait until `condition` is met by messages received since the last send (or since
    /// playing started), or its timeout. Returns true when met, false on timeout.
    async fn wait_for(&self, condition: &Condition) -> bool {
        let (satisfied_tx, satisfied_rx) = oneshot::channel();
        {
            let mut watch = self
                .condition
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let seen = watch
                .since_send
                .as_mut()
                .map(|recent| {
                    recent
                        .drain(..)
                        .filter(|text| condition.pattern.is_match(text))
                        .count()
                })
                .unwrap_or(0);
            let mut waiting = Waiting {
                pattern: condition.pattern.clone(),
                needed: condition.count,
                seen,
                satisfied: Some(satisfied_tx),
            };
            waiting.notify_if_met();
            watch.waiting = Some(waiting);
        }
        let met = timeout(condition.timeout, satisfied_rx).await.is_ok();
        self.condition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting = None;
        met
    }
}

/// One item for the log writer.
#[derive(Debug)]
pub enum LogEntry {
    /// A received message with its time of receipt.
    Received {
        /// When the message was received (written as the line's timestamp).
        at: OffsetDateTime,
        /// The message as received; binary frames are base64 in text mode.
        message: Message,
    },
    /// An echo comment (`#+`) from the playfile; not written in binary mode.
    Echo {
        /// When the player reached the comment line.
        at: OffsetDateTime,
        /// The comment text after `#+`.
        text: String,
    },
}

/// Play every line of `playfile`. Error lines (present only with force) are skipped.
pub async fn play(
    playfile: &Playfile,
    sender: &SessionSender,
    state: &PlayState,
    log: Option<&mpsc::Sender<LogEntry>>,
) -> Result<(), SessionClosed> {
    info!(lines = playfile.lines.len(), "playing");
    state.remember_since_send(true);
    for (index, line) in playfile.lines.iter().enumerate() {
        let number = index + 1;
        match line {
            Line::Comment { msg, echo: true } => {
                if let Some(log) = log {
                    let entry = LogEntry::Echo {
                        at: OffsetDateTime::now_utc(),
                        text: msg.clone(),
                    };
                    let _ = log.send(entry).await;
                }
            }
            Line::Comment { echo: false, .. } | Line::Blank => {}
            Line::Error(error) => warn!(line = number, %error, "skipping playfile error"),
            Line::Wait(delay) => sleep(*delay).await,
            Line::Send {
                msg,
                delay,
                condition,
            } => {
                sleep(*delay).await;
                if let Some(condition) = condition {
                    let met = state.wait_for(condition).await;
                    debug!(
                        line = number,
                        met,
                        pattern = condition.pattern.as_str(),
                        "condition done"
                    );
                }
                state.sending();
                sender.send(Message::Text(msg.clone())).await?;
                debug!(line = number, %msg, "sent");
            }
            Line::Filter(action) => state.apply_filter(action),
        }
    }
    state.remember_since_send(false);
    Ok(())
}

/// The log file or stdout, reopenable.
struct LogWriter {
    target: LogTarget,
    mode: OutputMode,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl LogWriter {
    fn open(target: LogTarget, mode: OutputMode) -> Result<LogWriter, FileClientError> {
        let out = Self::open_target(&target)?;
        Ok(LogWriter {
            target,
            mode,
            out: BufWriter::new(out),
        })
    }

    fn open_target(target: &LogTarget) -> Result<Box<dyn Write + Send>, FileClientError> {
        match target {
            LogTarget::Stdout => Ok(Box::new(std::io::stdout())),
            LogTarget::File(path) => {
                let file: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| FileClientError::OpenLog {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Box::new(file))
            }
        }
    }

    fn write(&mut self, entry: &LogEntry) -> std::io::Result<()> {
        match (entry, self.mode) {
            (LogEntry::Received { at, message }, OutputMode::Text) => self
                .out
                .write_all(format_line(*at, &message_text(message)).as_bytes()),
            (LogEntry::Received { message, .. }, OutputMode::Binary) => {
                self.out.write_all(message.as_bytes())
            }
            (LogEntry::Echo { at, text }, OutputMode::Text) => {
                self.out.write_all(format_line(*at, text).as_bytes())
            }
            (LogEntry::Echo { .. }, OutputMode::Binary) => Ok(()),
        }
    }

    fn reopen(&mut self) -> Result<(), FileClientError> {
        self.out.flush().map_err(FileClientError::Write)?;
        let fresh = Self::open_target(&self.target)?;
        self.out = BufWriter::new(fresh);
        Ok(())
    }
}

/// Write entries until the channel closes; reopen on request. Flushes whenever the queue
/// is empty, so a reader of the file sees lines promptly.
async fn write_log(
    mut writer: LogWriter,
    mut entries: mpsc::Receiver<LogEntry>,
    mut reopen: mpsc::Receiver<()>,
) -> Result<(), FileClientError> {
    let mut reopen_open = true;
    loop {
        tokio::select! {
            biased;
            entry = entries.recv() => {
                let Some(entry) = entry else { break };
                writer.write(&entry).map_err(FileClientError::Write)?;
                while let Ok(entry) = entries.try_recv() {
                    writer.write(&entry).map_err(FileClientError::Write)?;
                }
                writer.out.flush().map_err(FileClientError::Write)?;
            }
            request = reopen.recv(), if reopen_open => {
                match request {
                    Some(()) => {
                        info!(log = ?writer.target, "reopening the log");
                        writer.reopen()?;
                    }
                    None => reopen_open = false,
                }
            }
        }
    }
    writer.out.flush().map_err(FileClientError::Write)
}

/// Run the client until the playfile ends (when there is one) or `controls.stop`.
pub async fn run(config: FileClientConfig, controls: Controls) -> Result<(), FileClientError> {
    let Controls { reopen, stop } = controls;
    let (log_tx, writer_task) = match &config.log {
        Some(target) => {
            let writer = LogWriter::open(target.clone(), config.mode)?;
            let (log_tx, log_rx) = mpsc::channel(1024);
            (
                Some(log_tx),
                Some(tokio::spawn(write_log(writer, log_rx, reopen))),
            )
        }
        None => (None, None),
    };
    let state = Arc::new(PlayState::default());
    let session = Session::spawn(config.session.clone());
    let sender = session.sender();
    let session_state = session.state();
    // The receiver also stops when the playfile ends, so it gets its own (child) token.
    let receiver_stop = stop.child_token();
    let receiver = tokio::spawn(receive(
        session,
        state.clone(),
        log_tx.clone(),
        receiver_stop.clone(),
    ));

    let outcome = match &config.playfile {
        Some(playfile) => {
            tokio::select! {
                played = async {
                    if connected(session_state).await {
                        play(playfile, &sender, &state, log_tx.as_ref()).await.map_err(|_| FileClientError::SessionClosed)
                    } else {
                        Err(FileClientError::SessionClosed)
                    }
                } => played,
                () = stop.cancelled() => Ok(()),
            }
        }
        None => {
            stop.cancelled().await;
            Ok(())
        }
    };
    receiver_stop.cancel();
    if let Err(error) = receiver.await {
        warn!(%error, "receiver task failed");
    }
    drop(log_tx);
    if let Some(writer_task) = writer_task {
        match writer_task.await {
            Ok(result) => result?,
            Err(error) => warn!(%error, "log writer task failed"),
        }
    }
    outcome
}

/// Wait for the first connect (the reference slept 1 s instead); false when the session
/// closed first.
async fn connected(mut state: watch::Receiver<SessionState>) -> bool {
    state
        .wait_for(|s| s.is_connected() || s.link == LinkState::Closed)
        .await
        .map(|s| s.is_connected())
        .unwrap_or(false)
}

/// Receive until stopped: count towards conditions, filter, hand to the writer. On stop,
/// drain what is already queued, then close the session.
async fn receive(
    mut session: Session,
    state: Arc<PlayState>,
    log: Option<mpsc::Sender<LogEntry>>,
    stop: CancellationToken,
) {
    let handle = |message: Message, log: &Option<mpsc::Sender<LogEntry>>| {
        let at = OffsetDateTime::now_utc();
        let keep = state.observe(&message);
        match log {
            Some(log) if keep => Some((log.clone(), LogEntry::Received { at, message })),
            _ => None,
        }
    };
    loop {
        tokio::select! {
            message = session.recv() => {
                let Some(message) = message else { break };
                if let Some((log, entry)) = handle(message, &log) {
                    let _ = log.send(entry).await;
                }
            }
            () = stop.cancelled() => {
                while let Some(message) = session.try_recv() {
                    if let Some((log, entry)) = handle(message, &log) {
                        let _ = log.send(entry).await;
                    }
                }
                break;
            }
        }
    }
    session.close().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::playfile::parse_line;
    use std::time::Duration;
    use time::macros::datetime;
    use tokio::time::Instant;

    #[test]
    fn log_lines_use_rfc3339_nanoseconds_with_trailing_zeros_trimmed() {
        assert_eq!(
            format_line(datetime!(2022-03-13 19:15:32.0152 UTC), "hello"),
            "[2022-03-13T19:15:32.0152Z] hello\n"
        );
        assert_eq!(
            format_line(datetime!(2022-03-13 19:15:32 UTC), "x"),
            "[2022-03-13T19:15:32Z] x\n"
        );
        assert_eq!(
            format_line(datetime!(2022-03-13 20:15:32.000000001 +01:00), "{\"a\":1}"),
            "[2022-03-13T19:15:32.000000001Z] {\"a\":1}\n"
        );
        assert_eq!(
            message_text(&Message::Binary(vec![0, 1, 2, 255].into())),
            "AAEC/w=="
        );
    }

    fn filter_of(lines: &[&str]) -> Filter {
        let mut filter = Filter::default();
        for line in lines {
            match parse_line(line) {
                Line::Filter(action) => filter.apply(&action),
                other => panic!("not a filter line: {other:?}"),
            }
        }
        filter
    }

    #[test]
    fn accept_and_deny_filters_combine_as_in_the_reference() {
        let filter = filter_of(&["|+> [a-h]", "|accept> [R-Z]", "|->[0-9]", "|deny>  [#!&%]"]);
        let passed: Vec<&str> = ["ah0#", "AA", "ZZ", "abc", "abc!", "ah"]
            .into_iter()
            .filter(|t| filter.passes(t))
            .collect();
        assert_eq!(passed, ["ZZ", "abc", "ah"]);
        let reset = filter_of(&["|+> [a-h]", "|->[0-9]", "|reset>"]);
        assert!(reset.passes("AA") && reset.passes("0"));
        assert!(Filter::default().passes("anything"));
    }

    #[test]
    fn a_deny_only_filter_denies_only_what_it_matches() {
        // B18: the reference logged nothing at all once only deny patterns were set.
        let filter = filter_of(&["|-> [0-9]"]);
        assert!(filter.passes("abc"));
        assert!(!filter.passes("a1"));
    }

    #[test]
    fn duplicate_patterns_collapse() {
        let mut filter = filter_of(&["|+> a", "|+> a"]);
        assert_eq!(filter.accept.len(), 1);
        filter.apply(&FilterAction::Reset);
        assert!(filter.accept.is_empty() && filter.deny.is_empty());
    }

    /// Play `script` with a bare queue for a session; returns (seconds since start, text)
    /// of everything sent and the log entries.
    async fn play_script(script: &str, state: Arc<PlayState>) -> (Vec<(u64, String)>, Vec<String>) {
        let start = Instant::now();
        let (sender, mut sent) = Session::test_sender(64);
        let (log_tx, mut log_rx) = mpsc::channel(64);
        let playfile = Playfile::parse(script);
        let collector = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(message) = sent.recv().await {
                out.push((start.elapsed().as_millis() as u64, message_text(&message)));
            }
            out
        });
        play(&playfile, &sender, &state, Some(&log_tx))
            .await
            .unwrap();
        drop(sender);
        drop(log_tx);
        let mut logged = Vec::new();
        while let Some(entry) = log_rx.recv().await {
            logged.push(match entry {
                LogEntry::Received { message, .. } => message_text(&message),
                LogEntry::Echo { text, .. } => format!("echo: {text}"),
            });
        }
        (collector.await.unwrap(), logged)
    }

    #[tokio::test(start_paused = true)]
    async fn play_sends_waits_and_echoes_in_order() {
        let state = Arc::new(PlayState::default());
        let script = "#+ start\n# silent\nfirst\n[1.5s] second\n[2s]\n\n[] third\n#+ done\n";
        let (sent, logged) = play_script(script, state).await;
        assert_eq!(
            sent,
            [
                (0, "first".to_string()),
                (1_500, "second".into()),
                (3_500, "third".into())
            ]
        );
        assert_eq!(logged, ["echo: start", "echo: done"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_timeout_is_not_starved_by_traffic() {
        // B18: in the reference each received line re-armed the poll timer, so steady
        // non-matching traffic kept the timeout from ever firing.
        let state = Arc::new(PlayState::default());
        let noise_state = state.clone();
        let noise = tokio::spawn(async move {
            loop {
                noise_state.observe(&Message::Text("noise".into()));
                sleep(Duration::from_millis(100)).await;
            }
        });
        let (sent, _) = play_script("<'^match$',1,10s> after\n", state).await;
        noise.abort();
        assert_eq!(sent, [(10_000, "after".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_condition_is_met_early_by_enough_matching_lines_received_after_it() {
        let state = Arc::new(PlayState::default());
        // Received before playing started: must not count.
        state.observe(&Message::Text("foo before".into()));
        let feeder_state = state.clone();
        let feeder = tokio::spawn(async move {
            for n in 1..=5u64 {
                sleep(Duration::from_secs(1)).await;
                feeder_state.observe(&Message::Text(
                    if n % 2 == 0 { "bar" } else { "foo" }.into(),
                ));
            }
        });
        // foo arrives at 1, 3, 5 s: the third match is at 5 s, well before the 60 s timeout.
        let (sent, _) = play_script("<'^foo',3,60s> enough\n", state).await;
        feeder.abort();
        assert_eq!(sent, [(5_000, "enough".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_that_beats_the_player_to_the_condition_still_counts() {
        let state = Arc::new(PlayState::default());
        let echo_state = state.clone();
        // The reply to "first" arrives at once, 100 ms before the condition line is reached
        // (the reference ignored it and waited out the full timeout).
        let script = "first\n[100ms]\n<'^reply$',1,5s> next\n";
        let replier = tokio::spawn(async move {
            sleep(Duration::from_millis(1)).await;
            echo_state.observe(&Message::Text("reply".into()));
        });
        let (sent, _) = play_script(script, state).await;
        replier.abort();
        assert_eq!(sent, [(0, "first".to_string()), (100, "next".into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn too_few_matches_wait_for_the_full_timeout() {
        let state = Arc::new(PlayState::default());
        let feeder_state = state.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(10)).await;
            feeder_state.observe(&Message::Text("foo".into()));
        });
        let (sent, _) = play_script("<'foo',2,250ms> late\n", state).await;
        assert_eq!(sent, [(250, "late".to_string())]);
    }
}
