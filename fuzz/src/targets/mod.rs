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

/// `name: value` lines as a header map; lines that are not a valid header are skipped.
pub(crate) fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            axum::http::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}
