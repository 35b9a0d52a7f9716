//! The HTTP relay (http-relay): protobuf messages from relay-clients, their headers as
//! they become real HTTP headers, and the backend name of a user's request.
//!
//! The first byte picks the input's meaning: `0` an `HttpRequest` (what a relay-client
//! polls), `1` an `HttpResponse` (what it posts back), `2` a user's request as text: the
//! path on the first line, then `name: value` header lines.

use axum::http::HeaderMap;
use http_relay::broker::{backend_of, new_request_id};
use http_relay::proto::{
    append_proto_headers, canonical_header_name, headers_to_proto, HttpHeader, HttpRequest,
    HttpResponse,
};
use http_relay::server::extract_backend_and_path;
use prost::Message;

use super::header_lines;

/// Decodes or routes the input. Decoded messages must re-encode to themselves; header
/// conversion must keep or count every entry; a routed request's ID must name its backend.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => request(rest),
        1 => response(rest),
        _ => route(rest),
    }
}

/// `data` decoded as `M`, if it decodes; what decodes must encode and decode to itself.
fn decoded<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<M> {
    let msg = M::decode(data).ok()?;
    assert_eq!(M::decode(msg.encode_to_vec().as_slice()).as_ref(), Ok(&msg));
    Some(msg)
}

fn request(data: &[u8]) {
    let Some(msg) = decoded::<HttpRequest>(data) else {
        return;
    };
    headers(&msg.header, &["host", "transfer-encoding"]);
    if let Some(id) = &msg.id {
        assert!(id.starts_with(backend_of(id)));
    }
    if let Some(url) = &msg.url {
        // The relay-client forwards the path and query of this URL to its backend.
        if let Ok(uri) = url.parse::<axum::http::Uri>() {
            let _ = uri.path_and_query();
        }
    }
}

fn response(data: &[u8]) {
    let Some(msg) = decoded::<HttpResponse>(data) else {
        return;
    };
    headers(&msg.header, &["transfer-encoding"]);
    headers(&msg.trailer, &[]);
    let _ = msg.is_eof();
    let _ = msg.body_bytes();
}

/// Entries become a header map (invalid ones counted, skipped names left out) and back.
fn headers(entries: &[HttpHeader], skip: &[&str]) {
    let mut map = HeaderMap::new();
    let invalid = append_proto_headers(&mut map, entries, skip);
    assert!(invalid + map.len() <= entries.len());
    let back = headers_to_proto(&map, skip);
    assert_eq!(back.len(), map.len());
    let mut again = HeaderMap::new();
    assert_eq!(append_proto_headers(&mut again, &back, skip), 0);
    assert_eq!(again, map, "headers change on a second trip");
    for entry in &back {
        let name = entry.name.as_deref().unwrap_or_default();
        assert_eq!(canonical_header_name(name), name);
    }
}

fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let path = lines.next().unwrap_or_default();
    let map = header_lines(lines);
    let Ok(route) = extract_backend_and_path(path, &map) else {
        return;
    };
    if path.starts_with("/client/") {
        assert!(route.path.starts_with('/'), "{route:?}");
    }
    // The request's ID is how responses and body pulls find their way back to this
    // backend, and how their poster's token is checked.
    let id = new_request_id(&route.backend);
    assert_eq!(backend_of(&id), route.backend, "ID {id:?}");
}
