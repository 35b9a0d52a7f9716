//! Token verification and claims (relay-auth).
//!
//! A random token almost never carries a valid signature, so the first byte picks what the
//! rest is: `0` a raw token; `1` a claims payload, signed here with the verifier's secret
//! under an HS256 header; `2` a header and a payload separated by a NUL byte, both signed
//! here (with the HMAC the header names, if any). The signed forms reach the claims
//! decoding and the time checks, which a forger cannot.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use relay_auth::{mint, Ticket, Verifier};
use relay_common::connection::ConnectionType;

const SECRET: &[u8] = b"fuzz-secret";
/// A fixed "now", so that a run is repeatable.
const NOW: i64 = 1_700_000_000;
const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// Verifies the token the input describes; accepted claims must re-mint to a token that
/// verifies to the same claims, and must make a ticket without panicking.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => signed(HS256_HEADER, rest),
        _ => match rest.iter().position(|&b| b == 0) {
            Some(at) => signed(&rest[..at], &rest[at + 1..]),
            None => signed(rest, b"{}"),
        },
    };
    let verifier = Verifier::new(SECRET, 5);
    let Ok(claims) = verifier.verify(&token, NOW) else {
        return;
    };
    let _ = claims.has_required_session_claims();
    let _ = claims.has_required_admin_claims();
    let again = verifier.verify(&mint(&claims, SECRET), NOW);
    assert_eq!(again.as_ref(), Ok(&claims), "re-minted claims differ");
    if let Ok(connection) = claims.prefix.parse::<ConnectionType>() {
        let ticket = Ticket::grant(&claims, connection, claims.topic.clone(), "ws://relay");
        assert_eq!(ticket.expires_at(), claims.exp);
        assert_eq!(ticket.booking_id(), claims.booking_id);
    }
}

/// `header.payload.signature`, signed with [`SECRET`] by the HMAC the header names
/// (HS256 when it names none or another).
fn signed(header: &[u8], payload: &[u8]) -> String {
    let alg = serde_json::from_slice::<serde_json::Value>(header)
        .ok()
        .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
    let algorithm = match alg.as_deref() {
        Some("HS384") => Algorithm::HS384,
        Some("HS512") => Algorithm::HS512,
        _ => Algorithm::HS256,
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        algorithm,
    )
    .unwrap_or_default();
    format!("{message}.{signature}")
}
