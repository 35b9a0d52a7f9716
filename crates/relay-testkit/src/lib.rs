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
//! - [`process`]: children killed on drop, reading the address a started program prints.
//! - [`nats`]: `NatsServer`, a throw-away `nats-server -js` (kill and restart for faults).
//! - [`haproxy`]: `Haproxy`, a TCP load balancer with health checks.
//! - [`cluster`]: `Cluster`, NATS plus three `relay serve` nodes behind haproxy.

#![warn(missing_docs)]

pub mod book;
pub mod cluster;
pub mod haproxy;
pub mod nats;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod programs;
pub mod wait;

pub use programs::require;
pub use wait::{wait_until, wait_until_async, wait_until_blocking};
