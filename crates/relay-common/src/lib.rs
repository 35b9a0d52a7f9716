//! Small pieces that several relay crates share, each with exactly one home.
//!
//! Nothing here knows about HTTP routes or tokens; it is the vocabulary the server, the
//! host agent, the client library and the HTTP relay have in common.
//!
//! - [`connection`]: [`ConnectionType`](connection::ConnectionType), `session` or `shell`.
//! - [`action`]: [`ConnectionAction`](action::ConnectionAction), the relay's instructions to
//!   a shell host.

pub mod action;
pub mod connection;
