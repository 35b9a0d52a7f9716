//! Outgoing links to the relay: the [`Connector`] trait that destinations use, and
//! [`SessionConnector`], which implements it with `relay_client::Session` (access POST
//! with the token or a direct dial, backoff 1→2→4→8→10 s, client pings, idle timeout).
//!
//! A destination only needs three things from a link: a queue to send into, a queue of
//! what arrived, and whether it is connected now. Keeping that behind a trait lets tests
//! plug in a double ([`ChannelConnector`]) without touching the hub or the rule handling. Dropping the
//! [`Link`]'s sender ends the link and closes its connection.

use crate::hub::{Kind, Message};
use relay_client::session::{Session, SessionConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Where a destination connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTarget {
    /// With a token: the access URL (`http(s)://.../session/{topic}`) to POST the token to.
    /// Without: the websocket URL (`ws(s)://...`) to dial directly.
    pub destination: String,
    /// The raw JWT, sent verbatim in `Authorization`; `None` dials directly.
    pub token: Option<String>,
}

/// One live (reconnecting) link. Dropping `outgoing` stops it.
pub struct Link {
    /// Messages to write to the relay. Sending waits while the socket is busy.
    pub outgoing: mpsc::Sender<Message>,
    /// Messages the relay sent us.
    pub incoming: mpsc::Receiver<Message>,
    /// True while a websocket is open.
    pub connected: watch::Receiver<bool>,
    /// Messages the link itself dropped after taking them from `outgoing` (its session's
    /// queue was full), counted so the destination can report them.
    pub dropped: Arc<AtomicU64>,
}

/// Opens links. Shared by every destination of a host.
pub trait Connector: Send + Sync + 'static {
    /// Starts a link to `target` that keeps reconnecting until its `outgoing` sender is dropped.
    fn open(&self, target: LinkTarget) -> Link;
}

/// A shared connector.
pub type SharedConnector = Arc<dyn Connector>;

/// The relay side of a [`ChannelConnector`] link: what the destination sent, a way to
/// answer, and the connected flag to flip.
pub struct FarEnd {
    /// Where the destination asked to connect.
    pub target: LinkTarget,
    /// What the destination wrote to the link.
    pub sent: mpsc::Receiver<Message>,
    /// Sends a message to the destination as if the relay had sent it.
    pub reply: mpsc::Sender<Message>,
    /// Sets whether the link reports connected.
    pub connected: watch::Sender<bool>,
}

/// An in-memory connector for tests and dry runs: each link's far end is kept (so the
/// link stays open) until taken with [`ChannelConnector::take_ends`].
#[derive(Default)]
pub struct ChannelConnector {
    /// Whether new links report connected.
    pub start_connected: bool,
    ends: Mutex<Vec<FarEnd>>,
}

impl ChannelConnector {
    /// A connector whose links report connected (`true`) or never connect (`false`).
    pub fn new(start_connected: bool) -> Self {
        ChannelConnector {
            start_connected,
            ends: Mutex::default(),
        }
    }

    /// The far ends of the links opened so far, oldest first.
    pub fn take_ends(&self) -> Vec<FarEnd> {
        std::mem::take(&mut *self.ends.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Connector for ChannelConnector {
    fn open(&self, target: LinkTarget) -> Link {
        let (outgoing, sent) = mpsc::channel(LINK_QUEUE);
        let (reply, incoming) = mpsc::channel(LINK_QUEUE);
        let (connected_tx, connected) = watch::channel(self.start_connected);
        let end = FarEnd {
            target,
            sent,
            reply,
            connected: connected_tx,
        };
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(end);
        Link {
            outgoing,
            incoming,
            connected,
            dropped: Arc::default(),
        }
    }
}

/// Opens links as `relay_client` sessions. `base` supplies everything but the URL and
/// token (timings, extra CA file, user agent), so tests can shorten the timings.
#[derive(Debug, Clone)]
pub struct SessionConnector {
    /// Settings copied into every session; its URL and token are replaced per link.
    pub base: SessionConfig,
}

impl Default for SessionConnector {
    fn default() -> Self {
        let base = SessionConfig::new("")
            .with_user_agent(format!("relay-host/{}", env!("CARGO_PKG_VERSION")));
        SessionConnector { base }
    }
}

/// Messages that may wait between a destination and its session, each way.
const LINK_QUEUE: usize = 64;

impl Connector for SessionConnector {
    fn open(&self, target: LinkTarget) -> Link {
        let mut config = self.base.clone();
        config.url = target.destination;
        config.token = target.token;
        let session = Session::spawn(config);
        let (outgoing, outgoing_rx) = mpsc::channel(LINK_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(LINK_QUEUE);
        let (connected_tx, connected) = watch::channel(false);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(bridge(
            session,
            outgoing_rx,
            incoming_tx,
            connected_tx,
            dropped.clone(),
        ));
        Link {
            outgoing,
            incoming,
            connected,
            dropped,
        }
    }
}

/// Moves messages between a destination's queues and its session, and mirrors the
/// session's connected state, until the destination drops its sender.
async fn bridge(
    mut session: Session,
    mut outgoing: mpsc::Receiver<Message>,
    incoming: mpsc::Sender<Message>,
    connected: watch::Sender<bool>,
    dropped: Arc<AtomicU64>,
) {
    let mut state = session.state();
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => {
                    if session.try_send(to_session(message)).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("relay session queue full; message dropped");
                    }
                }
                None => break,
            },
            message = session.recv() => match message {
                Some(message) => {
                    if incoming.send(from_session(message)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                let is_connected = state.borrow_and_update().is_connected();
                connected.send_replace(is_connected);
            }
        }
    }
    connected.send_replace(false);
    session.close().await;
}

fn to_session(message: Message) -> relay_client::Message {
    match message.kind {
        Kind::Binary => relay_client::Message::Binary(message.data),
        Kind::Text => match String::from_utf8(message.data.to_vec()) {
            Ok(text) => relay_client::Message::Text(text),
            Err(_) => relay_client::Message::Binary(message.data),
        },
    }
}

fn from_session(message: relay_client::Message) -> Message {
    match message {
        relay_client::Message::Text(text) => Message::text(text),
        relay_client::Message::Binary(data) => Message::binary(data),
    }
}
