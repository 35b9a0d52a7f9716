//! The HTTP API (spec §5) under `/api/v1`, its tokens (§4), the relay deny worker (§4.7),
//! the background jobs (pruner, grace checker), `/metrics` and `/healthz`.
//!
//! Owner: server helper.
