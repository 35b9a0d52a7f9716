//! The protobuf wire types (`cloudrobotics.http_relay.v1alpha1`, proto2) written as prost
//! derives with the exact field numbers of `proto/http_over_rpc.proto`, plus the header
//! conversions and content types both ends share.
//!
//! Hand-written derives keep the build free of `protoc`; the `.proto` file next to the crate
//! is the documentation of record and the tests below pin the encoding.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Content type of a `GET /server/request` 200 answer.
pub const CONTENT_TYPE_REQUEST: &str =
    "application/vnd.google.protobuf;proto=cloudrobotics.http_relay.v1alpha1.HttpRequest";
/// Content type of a `POST /server/response` body.
pub const CONTENT_TYPE_RESPONSE: &str =
    "application/vnd.google.protobuf;proto=cloudrobotics.http_relay.v1alpha1.HttpResponse";
/// Content type of a `/server/requeststream` 200 answer (sic: the reference's spelling).
pub const CONTENT_TYPE_UPSTREAM: &str = "application/octet-data";

/// One header line; a multi-valued header becomes several entries.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HttpHeader {
    /// Header name, written in Go's canonical form (`Content-Type`); an entry without a
    /// name is skipped as invalid when decoded.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Header value as text (bytes that are not UTF-8 are replaced when encoding); `None`
    /// reads as an empty value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// A user request, handed to a relay-client by `GET /server/request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// Request ID `{server name}:{32 hex digits}`, chosen by the relay server; every
    /// response message and `/server/requeststream` pull for this request names it.
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    /// HTTP method of the user's request (`GET`, `POST`, …); the relay-client uses `GET`
    /// when it is absent.
    #[prost(string, optional, tag = "2")]
    pub method: Option<String>,
    /// Always `http://invalid{path}[?query][#fragment]`.
    #[prost(string, optional, tag = "3")]
    pub url: Option<String>,
    /// The user's request headers, without `Host` and `Transfer-Encoding`.
    #[prost(message, repeated, tag = "4")]
    pub header: Vec<HttpHeader>,
    /// The user's request body, or only its start when `body_continues` is set; `None`
    /// means an empty body.
    #[prost(bytes = "bytes", optional, tag = "5")]
    pub body: Option<Bytes>,
    /// The user's `Host` header (else the request URI's authority); the relay-client sends
    /// it to the backend when `preserve_host` is on.
    #[prost(string, optional, tag = "6")]
    pub host: Option<String>,
    /// Extension: the rest of the body follows through `/server/requeststream` until 410.
    #[prost(bool, optional, tag = "1001")]
    pub body_continues: Option<bool>,
}

/// One message of a response stream, posted by a relay-client to `/server/response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpResponse {
    /// Present only on the first message of a stream.
    #[prost(int32, optional, tag = "1")]
    pub status_code: Option<i32>,
    /// The backend's response headers, sent with `status_code` on the first message.
    #[prost(message, repeated, tag = "2")]
    pub header: Vec<HttpHeader>,
    /// The next piece of the backend's response body (after a 101: bytes from the
    /// backend's side of the connection); absent or empty on keep-alive messages.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub body: Option<Bytes>,
    /// Required on every message.
    #[prost(string, optional, tag = "4")]
    pub id: Option<String>,
    /// True on the last message only (left unset, not false, before).
    #[prost(bool, optional, tag = "5")]
    pub eof: Option<bool>,
    /// The backend's response trailers; the server collects them from every message and
    /// sends them to the user after the body.
    #[prost(message, repeated, tag = "6")]
    pub trailer: Vec<HttpHeader>,
    /// Milliseconds the relay-client spent on the request, from taking it to its last
    /// message (set with `eof`); the server's backend and overhead histograms use it.
    #[prost(int64, optional, tag = "7")]
    pub backend_duration_ms: Option<i64>,
    /// Extension: position in the stream, for idempotent retries.
    #[prost(uint64, optional, tag = "1001")]
    pub sequence: Option<u64>,
    /// Extension: the backend response ended abnormally (with `eof`).
    #[prost(string, optional, tag = "1002")]
    pub abort_reason: Option<String>,
}

impl HttpResponse {
    /// An empty message for `id` (a continuation chunk).
    pub fn for_id(id: &str) -> Self {
        HttpResponse {
            id: Some(id.to_owned()),
            ..Default::default()
        }
    }

    /// True when this message ends its stream.
    pub fn is_eof(&self) -> bool {
        self.eof == Some(true)
    }

    /// The body bytes, empty when absent.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone().unwrap_or_default()
    }
}

/// Go's `http.CanonicalHeaderKey`: `content-type` → `Content-Type`. Go peers compare some
/// names (the `Grpc-` prefix) case-sensitively, so we emit this form.
pub fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

/// Encode a header map as entries, values of one name kept in order. `skip` names (lower
/// case) are left out.
pub fn headers_to_proto(map: &HeaderMap, skip: &[&str]) -> Vec<HttpHeader> {
    map.iter()
        .filter(|(name, _)| !skip.contains(&name.as_str()))
        .map(|(name, value)| HttpHeader {
            name: Some(canonical_header_name(name.as_str())),
            value: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        })
        .collect()
}

/// Add (never replace) every entry to `map`. Entries whose name or value is not a valid
/// HTTP header are skipped and counted in the returned number, so a malformed peer message
/// cannot make the caller fail.
pub fn append_proto_headers(map: &mut HeaderMap, headers: &[HttpHeader], skip: &[&str]) -> usize {
    let mut invalid = 0;
    for h in headers {
        let name = h.name.as_deref().unwrap_or_default();
        let value = h.value.as_deref().unwrap_or_default();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                if !skip.contains(&name.as_str()) {
                    map.append(name, value);
                }
            }
            _ => invalid += 1,
        }
    }
    invalid
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn canonical_names_match_go() {
        assert_eq!(canonical_header_name("content-type"), "Content-Type");
        assert_eq!(canonical_header_name("grpc-status"), "Grpc-Status");
        assert_eq!(
            canonical_header_name("X-STREAM-protocol-version"),
            "X-Stream-Protocol-Version"
        );
    }

    /// The reference's TestHeaderMarshaling: a multi-valued header round-trips in order.
    #[test]
    fn header_marshaling_keeps_multi_values_in_order() {
        let mut map = HeaderMap::new();
        map.append("x-test", HeaderValue::from_static("1"));
        map.append("x-test", HeaderValue::from_static("2"));
        map.append("y-test", HeaderValue::from_static("3"));
        let proto = headers_to_proto(&map, &[]);
        assert_eq!(proto.len(), 3);
        let mut back = HeaderMap::new();
        assert_eq!(append_proto_headers(&mut back, &proto, &[]), 0);
        let values: Vec<_> = back.get_all("x-test").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(back.get("y-test").map(|v| v.as_bytes()), Some(&b"3"[..]));
    }

    #[test]
    fn invalid_header_entries_are_skipped_not_fatal() {
        let bad = vec![
            HttpHeader {
                name: Some("bad name".into()),
                value: Some("v".into()),
            },
            HttpHeader {
                name: Some("ok".into()),
                value: Some("line\nbreak".into()),
            },
            HttpHeader {
                name: Some("Good".into()),
                value: Some("v".into()),
            },
        ];
        let mut map = HeaderMap::new();
        assert_eq!(append_proto_headers(&mut map, &bad, &[]), 2);
        assert_eq!(map.len(), 1);
    }

    /// proto2 presence: an unset `eof` is absent on the wire, an empty body is present.
    #[test]
    fn encoding_uses_the_reference_tags_and_presence() {
        let msg = HttpResponse {
            id: Some("a".into()),
            status_code: Some(200),
            body: Some(Bytes::new()),
            ..Default::default()
        };
        // tag 1 varint 200, tag 3 len 0, tag 4 "a"
        assert_eq!(
            msg.encode_to_vec(),
            vec![0x08, 0xc8, 0x01, 0x1a, 0x00, 0x22, 0x01, b'a']
        );
        let req = HttpRequest {
            id: Some("x".into()),
            body: Some(Bytes::new()),
            ..Default::default()
        };
        let decoded = HttpRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.body, Some(Bytes::new()));
        assert_eq!(decoded.method, None);
    }

    /// A Go peer ignores our extension fields, and we ignore unknown fields from newer peers.
    #[test]
    fn extensions_are_skippable_unknown_fields() {
        let msg = HttpResponse {
            sequence: Some(3),
            abort_reason: Some("x".into()),
            ..HttpResponse::for_id("i")
        };
        let bytes = msg.encode_to_vec();
        #[derive(Clone, PartialEq, prost::Message)]
        struct GoView {
            #[prost(string, optional, tag = "4")]
            id: Option<String>,
        }
        assert_eq!(
            GoView::decode(bytes.as_slice()).unwrap().id.as_deref(),
            Some("i")
        );
    }
}
