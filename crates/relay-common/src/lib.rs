//! Small pieces that several relay crates share, each with exactly one home.
//!
//! Nothing here knows about HTTP routes or tokens; it is the vocabulary the server, the
//! host agent, the client library and the HTTP relay have in common.
//!
//! - [`queue`]: the bounded per-reader queue (limits, drops, slow-reader detection).

pub mod queue;
