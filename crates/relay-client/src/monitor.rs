//! The latency canary behind `relay monitor` (reference `internal/monitor`, v0.9).
//!
//! Two [`Session`]s join one topic of the relay: a writer sends a **binary timestamp frame**
//! (the big-endian bytes of the Unix time in nanoseconds, leading zero bytes dropped, as
//! Go's `big.Int.Bytes()` writes them) and a reader receives it back through the relay and
//! computes the latency. [`watch`] is the measuring loop, independent of the transport:
//!
//! - every [`MonitorSettings::interval`] it sends a probe and waits for that probe's echo;
//! - an echo within [`MonitorSettings::threshold`] is a good sample and resets the count;
//! - every `threshold` without the echo is a miss ([`Measurement::Missing`]): a frozen relay
//!   therefore triggers within `threshold × trigger_after_misses` of the first unanswered
//!   probe, that is at most one interval after it froze;
//! - after [`MonitorSettings::trigger_after_misses`] consecutive misses it runs the action,
//!   resets the count and measures nothing for [`MonitorSettings::no_retrigger_within`].
//!
//! [`run`] adds the sessions, a fresh token for each period of
//! [`MonitorConfig::reconnect_every`], and stopping through a [`CancellationToken`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use relay_common::shutdown::CancellationToken;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::session::{LinkState, Message, Session, SessionConfig};

/// The reference's topic for the canary.
pub const DEFAULT_TOPIC: &str = "canary-st-data";

/// Encodes a timestamp the way the reference does: big-endian, without leading zero bytes
/// (zero and negative times give an empty frame, as `big.Int.Bytes()` of zero does).
pub fn encode_timestamp(unix_nanos: i64) -> Vec<u8> {
    let bytes = unix_nanos.max(0).to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default().to_vec()
}

/// Decodes a frame written by [`encode_timestamp`] (or by the reference); `None` when it is
/// longer than eight bytes or does not fit an `i64`.
pub fn decode_timestamp(frame: &[u8]) -> Option<i64> {
    if frame.len() > 8 {
        return None;
    }
    let value = frame
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    i64::try_from(value).ok()
}

/// How the canary measures and when it acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// Time between probes (reference `RELAY_MONITOR_INTERVAL`, 1 s).
    pub interval: Duration,
    /// A latency above this is a miss; so is each `threshold` without an answer
    /// (`RELAY_MONITOR_THRESHOLD`, 200 ms).
    pub threshold: Duration,
    /// Consecutive misses that run the action (`RELAY_MONITOR_TRIGGER_AFTER_MISSES`, 3).
    pub trigger_after_misses: u32,
    /// Quiet time after the action, so a restarting relay is not killed again
    /// (`RELAY_MONITOR_NO_RETRIGGER_WITHIN`, 60 s).
    pub no_retrigger_within: Duration,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            interval: Duration::from_secs(1),
            threshold: Duration::from_millis(200),
            trigger_after_misses: 3,
            no_retrigger_within: Duration::from_secs(60),
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// The probe came back after this long.
    Latency(Duration),
    /// The probe did not come back within the threshold.
    Missing,
}

/// A measurement and what it did to the count of consecutive misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// What was measured.
    pub measurement: Measurement,
    /// Whether it counts as a miss (missing, or a latency above the threshold).
    pub miss: bool,
    /// Consecutive misses so far, this one included.
    pub misses: u32,
    /// Whether this sample reached `trigger_after_misses` (the action runs next).
    pub triggered: bool,
}

/// Counts consecutive misses and says when to act.
#[derive(Debug, Clone)]
pub struct Trigger {
    threshold: Duration,
    after: u32,
    misses: u32,
}

impl Trigger {
    /// A trigger for these settings (`trigger_after_misses` of 0 acts like 1).
    pub fn new(settings: &MonitorSettings) -> Self {
        Trigger {
            threshold: settings.threshold,
            after: settings.trigger_after_misses.max(1),
            misses: 0,
        }
    }

    /// Reports the late answer of a probe that was already counted missing: a miss, but
    /// not counted a second time.
    pub fn late(&mut self, latency: Duration) -> Sample {
        Sample {
            measurement: Measurement::Latency(latency),
            miss: true,
            misses: self.misses,
            triggered: false,
        }
    }

    /// Records a measurement. When it reaches the trigger the count is reset.
    pub fn observe(&mut self, measurement: Measurement) -> Sample {
        let miss = match measurement {
            Measurement::Latency(latency) => latency > self.threshold,
            Measurement::Missing => true,
        };
        self.misses = if miss { self.misses + 1 } else { 0 };
        let misses = self.misses;
        let triggered = misses >= self.after;
        if triggered {
            self.misses = 0;
        }
        Sample {
            measurement,
            miss,
            misses,
            triggered,
        }
    }
}

/// A wall clock in nanoseconds that moves with tokio's clock: the Unix time at creation
/// plus the monotonic time since. Latencies do not jump with the wall clock, and tests
/// under paused time measure exactly.
#[derive(Debug, Clone, Copy)]
pub struct ProbeClock {
    base_nanos: i64,
    start: Instant,
}

impl ProbeClock {
    /// Starts the clock now.
    pub fn new() -> Self {
        ProbeClock {
            base_nanos: relay_common::clock::unix_now_nanos(),
            start: Instant::now(),
        }
    }

    /// Unix time in nanoseconds.
    pub fn now_nanos(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_nanos()).unwrap_or(i64::MAX);
        self.base_nanos.saturating_add(elapsed)
    }
}

impl Default for ProbeClock {
    fn default() -> Self {
        ProbeClock::new()
    }
}

/// Why [`watch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The token was cancelled.
    Cancelled,
    /// The incoming channel closed (the reader session ended).
    ReaderClosed,
}

/// The measuring loop: sends probes through `send`, reads echoes from `incoming`, reports
/// every sample to `on_sample` and awaits `action` when the misses reach the trigger.
///
/// A probe is sent every interval whether or not the last one was answered; an echo of any
/// probe sent since the last answer is an answer. While no answer comes, a miss is counted
/// every threshold, starting one threshold after the first unanswered probe. An answer that
/// comes after its probe was already counted missing is reported but not counted twice.
/// Frames that are not pending probes (old echoes, other writers) are ignored.
pub async fn watch<S, F, A, Fut>(
    settings: &MonitorSettings,
    clock: ProbeClock,
    mut send: S,
    incoming: &mut mpsc::Receiver<Bytes>,
    mut on_sample: F,
    mut action: A,
    cancel: &CancellationToken,
) -> WatchEnd
where
    S: FnMut(Bytes),
    F: FnMut(&Sample),
    A: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    /// Probes remembered while unanswered (a frozen relay answers none).
    const MAX_PENDING: usize = 256;
    let mut trigger = Trigger::new(settings);
    let threshold = settings.threshold.max(Duration::from_millis(1));
    let interval = settings.interval.max(Duration::from_millis(1));
    let mut next_probe = Instant::now();
    let mut pending: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
    let mut next_miss: Option<Instant> = None;
    let mut missed_since_answer = false;
    loop {
        let miss_at = next_miss;
        let sample = tokio::select! {
            () = cancel.cancelled() => return WatchEnd::Cancelled,
            () = sleep_until(next_probe) => {
                let now = Instant::now();
                next_probe += interval;
                if next_probe <= now {
                    next_probe = now + interval;
                }
                let stamp = clock.now_nanos();
                if pending.len() >= MAX_PENDING {
                    pending.pop_front();
                }
                pending.push_back(stamp);
                next_miss.get_or_insert(now + threshold);
                send(Bytes::from(encode_timestamp(stamp)));
                continue;
            }
            () = sleep_until(miss_at.unwrap_or(next_probe)), if miss_at.is_some() => {
                next_miss = miss_at.map(|at| at + threshold);
                missed_since_answer = true;
                trigger.observe(Measurement::Missing)
            }
            frame = incoming.recv() => {
                let Some(frame) = frame else { return WatchEnd::ReaderClosed };
                let Some(stamp) = decode_timestamp(&frame).filter(|s| pending.contains(s)) else {
                    debug!(bytes = frame.len(), "ignored a frame that is not a pending probe");
                    continue;
                };
                pending.clear();
                next_miss = None;
                let nanos = clock.now_nanos().saturating_sub(stamp).max(0);
                let latency = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
                if std::mem::take(&mut missed_since_answer) && latency > threshold {
                    trigger.late(latency)
                } else {
                    trigger.observe(Measurement::Latency(latency))
                }
            }
        };
        on_sample(&sample);
        if sample.triggered {
            action().await;
            tokio::select! {
                () = cancel.cancelled() => return WatchEnd::Cancelled,
                () = sleep(settings.no_retrigger_within) => {}
            }
            // Forget the probes and echoes from before the action.
            while incoming.try_recv().is_ok() {}
            pending.clear();
            next_miss = None;
            missed_since_answer = false;
            next_probe = Instant::now();
        }
    }
}

/// Where the canary connects and how often it starts afresh.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// The access URL of the topic, `<audience>/session/<topic>`.
    pub access_url: String,
    /// Measuring and acting.
    pub settings: MonitorSettings,
    /// Both sessions are closed and reopened with a fresh token this often
    /// (`RELAY_MONITOR_RECONNECT_EVERY`, 24 h).
    pub reconnect_every: Duration,
}

/// Runs the canary until `cancel`: for each period of `reconnect_every`, mints a token with
/// `token`, opens a writer and a reader session and runs [`watch`] over them.
pub async fn run<T, F, A, Fut>(
    config: MonitorConfig,
    mut token: T,
    mut on_sample: F,
    mut action: A,
    cancel: CancellationToken,
) where
    T: FnMut() -> String,
    F: FnMut(&Sample),
    A: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let clock = ProbeClock::new();
    while !cancel.is_cancelled() {
        let session_config = SessionConfig::new(&config.access_url)
            .with_token(token())
            .with_user_agent(format!("relay-monitor/{}", env!("CARGO_PKG_VERSION")));
        let writer = Session::spawn(session_config.clone());
        let mut reader = Session::spawn(session_config);
        let reader_state = reader.state();
        let period = cancel.child_token();
        let (echo_tx, mut echoes) = mpsc::channel::<Bytes>(64);
        let forward = async {
            while let Some(message) = reader.recv().await {
                if let Message::Binary(frame) = message {
                    if echo_tx.try_send(frame).is_err() {
                        debug!("echo queue full: frame dropped");
                    }
                }
            }
            drop(echo_tx);
        };
        let measure = async {
            let connected = async {
                let _ = writer.wait_connected().await;
                let mut state = reader_state.clone();
                let _ = state
                    .wait_for(|s| s.is_connected() || s.link == LinkState::Closed)
                    .await;
            };
            tokio::select! {
                () = period.cancelled() => return,
                () = connected => {}
            }
            info!(url = %config.access_url, "relay monitor connected (writer and reader)");
            let sender = writer.sender();
            let end = watch(
                &config.settings,
                clock,
                |frame| {
                    if sender.try_send(Message::Binary(frame)).is_err() {
                        debug!("probe queue full: probe not sent");
                    }
                },
                &mut echoes,
                &mut on_sample,
                &mut action,
                &period,
            )
            .await;
            if end == WatchEnd::ReaderClosed {
                warn!("relay monitor reader closed");
            }
        };
        tokio::select! {
            () = forward => {}
            () = measure => {}
            () = sleep(config.reconnect_every) => {
                info!("relay monitor reconnecting with a fresh token");
            }
        }
        period.cancel();
        writer.close().await;
        reader.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn timestamps_are_minimal_big_endian() {
        assert_eq!(encode_timestamp(0), Vec::<u8>::new());
        assert_eq!(encode_timestamp(0x0102), vec![1, 2]);
        let now = 1_767_225_600_123_456_789_i64;
        let frame = encode_timestamp(now);
        assert_eq!(frame, now.to_be_bytes().to_vec());
        assert_eq!(decode_timestamp(&frame), Some(now));
        assert_eq!(decode_timestamp(&[1, 2]), Some(0x0102));
        assert_eq!(decode_timestamp(&[0; 9]), None);
        assert_eq!(decode_timestamp(&[0xff; 8]), None);
    }

    #[test]
    fn a_good_sample_resets_the_count() {
        let settings = MonitorSettings::default();
        let mut trigger = Trigger::new(&settings);
        let slow = Measurement::Latency(Duration::from_millis(300));
        let fast = Measurement::Latency(Duration::from_millis(5));
        assert_eq!(trigger.observe(slow).misses, 1);
        assert_eq!(trigger.observe(Measurement::Missing).misses, 2);
        let good = trigger.observe(fast);
        assert!(!good.miss && good.misses == 0);
        assert!(!trigger.observe(slow).triggered);
        assert!(!trigger.observe(slow).triggered);
        let third = trigger.observe(slow);
        assert!(third.triggered && third.misses == 3);
        assert_eq!(trigger.observe(slow).misses, 1, "reset after triggering");
    }

    /// A fake relay: copies probes to the reader after `delay`, or drops them while frozen.
    struct Fake {
        frozen: Arc<Mutex<bool>>,
        delay: Duration,
    }

    struct Run {
        triggers: Arc<Mutex<Vec<Instant>>>,
        samples: Arc<Mutex<Vec<Sample>>>,
        frozen: Arc<Mutex<bool>>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<WatchEnd>,
    }

    fn start(settings: MonitorSettings, delay: Duration) -> Run {
        let fake = Fake {
            frozen: Arc::new(Mutex::new(false)),
            delay,
        };
        let (echo_tx, mut echoes) = mpsc::channel::<Bytes>(64);
        let triggers = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let frozen = fake.frozen.clone();
        let task = {
            let triggers = triggers.clone();
            let samples = samples.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                watch(
                    &settings,
                    ProbeClock::new(),
                    move |frame| {
                        if *fake.frozen.lock().unwrap() {
                            return;
                        }
                        let echo_tx = echo_tx.clone();
                        let delay = fake.delay;
                        tokio::spawn(async move {
                            sleep(delay).await;
                            let _ = echo_tx.send(frame).await;
                        });
                    },
                    &mut echoes,
                    |sample| samples.lock().unwrap().push(*sample),
                    || {
                        triggers.lock().unwrap().push(Instant::now());
                        async {}
                    },
                    &cancel,
                )
                .await
            })
        };
        Run {
            triggers,
            samples,
            frozen,
            cancel,
            task,
        }
    }

    fn quick() -> MonitorSettings {
        MonitorSettings {
            interval: Duration::from_millis(500),
            threshold: Duration::from_millis(200),
            trigger_after_misses: 3,
            no_retrigger_within: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_relay_never_triggers() {
        let run = start(quick(), Duration::from_millis(20));
        sleep(Duration::from_secs(300)).await;
        run.cancel.cancel();
        assert_eq!(run.task.await.unwrap(), WatchEnd::Cancelled);
        assert!(run.triggers.lock().unwrap().is_empty());
        let samples = run.samples.lock().unwrap();
        assert!(samples.len() >= 500, "{} samples", samples.len());
        assert!(samples
            .iter()
            .all(|s| s.measurement == Measurement::Latency(Duration::from_millis(20))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_relay_triggers_within_threshold_times_misses_plus_one_interval() {
        let settings = quick();
        let run = start(settings.clone(), Duration::from_millis(20));
        sleep(Duration::from_millis(1_730)).await;
        *run.frozen.lock().unwrap() = true;
        let frozen_at = Instant::now();
        sleep(Duration::from_secs(5)).await;
        let triggers = run.triggers.lock().unwrap().clone();
        assert_eq!(triggers.len(), 1, "{triggers:?}");
        let bound = settings.threshold * settings.trigger_after_misses + settings.interval;
        let took = triggers[0] - frozen_at;
        assert!(took <= bound, "took {took:?}, bound {bound:?}");
        run.cancel.cancel();
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_trigger_and_no_retrigger_within_is_quiet() {
        let settings = quick();
        let run = start(settings.clone(), Duration::from_millis(300));
        sleep(Duration::from_secs(10)).await;
        assert_eq!(run.triggers.lock().unwrap().len(), 1);
        sleep(Duration::from_secs(45)).await;
        assert_eq!(run.triggers.lock().unwrap().len(), 1, "quiet for 60 s");
        sleep(Duration::from_secs(20)).await;
        assert_eq!(
            run.triggers.lock().unwrap().len(),
            2,
            "measures again after"
        );
        run.cancel.cancel();
        run.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn two_misses_then_a_good_answer_do_not_trigger() {
        let settings = quick();
        let run = start(settings, Duration::from_millis(20));
        sleep(Duration::from_millis(1_000)).await;
        *run.frozen.lock().unwrap() = true;
        // Frozen for a little more than two thresholds after the next probe.
        sleep(Duration::from_millis(450)).await;
        *run.frozen.lock().unwrap() = false;
        sleep(Duration::from_secs(10)).await;
        assert!(run.triggers.lock().unwrap().is_empty());
        assert!(run.samples.lock().unwrap().iter().any(|s| s.miss));
        run.cancel.cancel();
        run.task.await.unwrap();
    }
}
