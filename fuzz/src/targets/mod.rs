//! One module per target; each exposes `run(&[u8])`.

pub mod action;
pub mod admission;
pub mod auth;
pub mod book_query;
pub mod host;
pub mod http_relay;
pub mod ingest;
pub mod manifest;
pub mod playfile;

/// A current-thread runtime with a paused clock, for targets whose code needs tokio
/// (spawned tasks are dropped with it, so nothing outlives one input).
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .ok()
}
