//! Small pieces that several relay crates share, each with exactly one home.
//!
//! Nothing here knows about HTTP routes or tokens; it is the vocabulary the server, the
//! host agent, the client library and the HTTP relay have in common.
//!
//! - [`shutdown`]: cancellation tokens, task trackers and the one SIGINT/SIGTERM helper.

pub mod shutdown;
