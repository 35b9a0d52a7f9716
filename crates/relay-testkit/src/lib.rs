//! Helpers for the relay crates' tests: waiting for a condition with a deadline, and
//! the other small pieces every integration test needs. A dev-dependency only.

#![warn(missing_docs)]
