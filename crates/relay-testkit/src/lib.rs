//! Helpers for the relay crates' tests: waiting for a condition with a deadline, and
//! the other small pieces every integration test needs. A dev-dependency only (relay-bench,
//! a test driver itself, uses it as a normal dependency).
//!
//! - [`wait`]: `wait_until` (async, blocking and fallible variants) with one deadline and
//!   one failure message.
//! - [`programs`]: `require`, the loud check for external programs e2e tests drive.
//! - [`book`]: a client of the booking server's API and a manifest of identical rigs.
//! - [`netns`]: `Netns`, a network namespace behind a veth link that a test cuts silently
//!   and heals (root, `ip` and `nft` needed).
//! - [`postgres`]: `PgCluster`, a throw-away PostgreSQL cluster (initdb in a temp directory).

#![warn(missing_docs)]

pub mod book;
pub mod netns;
pub mod postgres;
pub mod programs;
pub mod wait;

pub use programs::require;
pub use wait::{wait_until, wait_until_async, wait_until_blocking};
