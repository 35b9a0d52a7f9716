//! Client side of the relay, shared by `relay client`, `relay host` and tests.
//!
//! - [`session`]: a reconnecting websocket session to a relay topic (access POST with a JWT,
//!   dial, backoff, client-side heartbeat), with typed text/binary messages.
//! - [`tls`]: the rustls client configuration (system roots plus an optional extra CA,
//!   `ring` provider) used for https and wss.
//! - [`playfile`]: the playfile grammar of `relay client file`.
//! - [`file`](mod@file): the engine of `relay client file` (log, binary recording, play).
//! - [`status`]: typed stats-topic reports and the `GET /status` client.
//! - [`monitor`]: the latency canary of `relay monitor`.

#![warn(missing_docs)]

pub mod file;
pub mod monitor;
pub mod playfile;
pub mod session;
pub mod status;
pub mod tls;

pub use session::{Message, Session, SessionConfig, SessionState};
