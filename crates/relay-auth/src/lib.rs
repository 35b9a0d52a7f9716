//! Relay tokens and the two small stores that admission depends on.
//!
//! Everything here is pure logic with no I/O, and every function that needs the time takes
//! it as an argument, so the server can drive it from tokio's (pausable) clock and tests can
//! pin it exactly.
//!
//! - [`claims`]: the JWT claims with the reference's exact JSON names, HS256 minting and
//!   verification (any HMAC algorithm accepted on input, anything else refused).
//! - [`ticket`]: what the server grants once a token has been checked; never read from a
//!   token, so a client cannot set its server-only fields.
//! - [`codes`]: one-time codes under which tickets wait between the access API and the
//!   websocket upgrade (random, single use, TTL enforced at exchange).
//! - [`deny`]: the booking deny/allow lists with expiry and pruning.

#![warn(missing_docs)]

pub mod claims;
pub mod codes;
pub mod deny;
pub mod ticket;

pub use claims::{mint, Audience, Claims, TokenError, Verifier};
pub use codes::{CodeError, CodeLimits, CodeStore, SubmitError};
pub use deny::{BookingDenied, DenyStore};
/// Seconds since the Unix epoch, for the `now` that every time-checking function here takes.
pub use relay_common::clock::unix_now;
pub use ticket::Ticket;

/// Scope that lets a connection receive messages on its topic.
pub const SCOPE_READ: &str = "read";
/// Scope that lets a connection send messages to its topic.
pub const SCOPE_WRITE: &str = "write";
/// Scope for the booking deny/allow admin routes.
pub const SCOPE_ADMIN: &str = "relay:admin";
/// Scope for `GET /status` and the stats page.
pub const SCOPE_STATS: &str = "relay:stats";
/// Shell relay: the experiment's management connection.
pub const SCOPE_SHELL_HOST: &str = "host";
/// Shell relay: one admin TCP connection.
pub const SCOPE_SHELL_CLIENT: &str = "client";
/// Shell relay: the statistics feed.
pub const SCOPE_SHELL_STATS: &str = "stats";
