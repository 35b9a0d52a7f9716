//! The booking server behind `relay book …`: who may book which rig when, and the relay
//! tokens a started booking hands out. API-compatible with practable's `book` (v2, spec in
//! `../shared/specs/booking.md`), with its defects fixed (docs/COMPATIBILITY.md) and every
//! change stored in SQLite or PostgreSQL before the reply.
//!
//! - [`timefmt`], [`interval`], [`manifest`], [`model`], [`rules`]: pure domain — time and
//!   duration text, intervals and windows, the manifest and its check, the records, the
//!   booking rules and usage table.
//! - [`store`]: the database (sqlx; SQLite or PostgreSQL) and the transactions that apply
//!   the rules.
//! - [`server`]: the HTTP API under `/api/v1`, relay deny calls, background jobs.
//! - [`tokens`]: the JWTs the server signs and checks (login, admin, stream, deny).
//! - [`pages`]: the student and admin pages (`/`, `/admin`).

pub mod interval;
pub mod manifest;
pub mod model;
pub mod pages;
pub mod rules;
pub mod server;
pub mod store;
pub mod timefmt;
pub mod tokens;
