//! Small pieces that several relay crates share, each with exactly one home.
//!
//! Nothing here knows about HTTP routes or tokens; it is the vocabulary the server, the
//! host agent, the client library and the HTTP relay have in common.
//!
//! - [`action`]: [`ConnectionAction`](action::ConnectionAction), the relay's instructions to
//!   a shell host.
//! - [`clock`]: the wall clock as unix seconds (token and booking expiries).
//! - [`connection`]: [`ConnectionType`](connection::ConnectionType), `session` or `shell`.
//! - [`errors`]: an error with all its causes, as one line a person can act on.
//! - [`frame`]: server-side websocket frame headers and zero-copy vectored frame writes
//!   (for the direct write path of issue 17; not wired in yet).
//! - [`goduration`]: Go's duration text, formatted and parsed, and the one parser for
//!   duration settings (flags and environment variables).
//! - [`queue`]: the bounded per-reader queue (limits, drops, slow-reader detection).
//! - [`shutdown`]: cancellation tokens, task trackers and the one SIGINT/SIGTERM helper.

#![warn(missing_docs)]

pub mod action;
pub mod clock;
pub mod connection;
pub mod errors;
pub mod frame;
pub mod goduration;
pub mod queue;
pub mod shutdown;
