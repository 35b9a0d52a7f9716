//! The JWTs the booking server signs and checks (spec §4): login tokens (§4.1), admin
//! tokens made offline by `relay book token` (§4.2), the check of incoming booking-API
//! tokens (§4.3), stream tokens for the relay (§4.6) and the `relay:admin` tokens of relay
//! deny calls (§4.7).
//!
//! Every token is HS256. The claim structs below list their fields in the reference's
//! order, because serde writes them in declaration order: given the same clock and secret
//! a token is byte-for-byte the same as the reference's.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The scope of a user token.
pub const SCOPE_USER: &str = "booking:user";
/// The scope of an admin token.
pub const SCOPE_ADMIN: &str = "booking:admin";
/// The scope of the deny-call token the relay requires.
pub const SCOPE_RELAY_ADMIN: &str = "relay:admin";
/// Lifetime of a deny-call token, seconds (the reference's 5 minutes).
pub const DENY_TOKEN_TTL_SECS: i64 = 300;

/// Login and admin token claims (§4.1, §4.2): `scopes`, `sub`, `aud` (array), `exp`,
/// `nbf`, `iat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingClaims {
    pub scopes: Vec<String>,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
}

/// Stream token claims (§4.6), in exactly this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamClaims {
    pub booking_id: String,
    pub topic: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
}

/// Why a token could not be signed (an encoding failure; HS256 with any key cannot fail in
/// practice, but the library's signature says it may).
#[derive(Debug, thiserror::Error)]
#[error("error signing token: {0}")]
pub struct SignError(#[from] jsonwebtoken::errors::Error);

/// Sign any claims with HS256.
pub fn sign<T: Serialize>(claims: &T, secret: &[u8]) -> Result<String, SignError> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// A login token's claims (§4.1): `nbf = iat = now − 1`, `exp = now + ttl`, so
/// `exp − nbf = ttl + 1`.
pub fn login_claims(user: &str, audience: &str, ttl_secs: i64, now_secs: i64) -> BookingClaims {
    BookingClaims {
        scopes: vec![SCOPE_USER.to_owned()],
        sub: user.to_owned(),
        aud: vec![audience.to_owned()],
        exp: now_secs + ttl_secs,
        nbf: now_secs - 1,
        iat: now_secs - 1,
    }
}

/// An admin or user token's claims as `relay book token` makes them (§4.2): `iat = nbf =
/// now − 1` and `exp = now + ttl`, as a login token; a given `nbf` is used only when it is
/// in the future, and then `exp = nbf + ttl`.
pub fn client_claims(
    sub: &str,
    audience: &str,
    admin: bool,
    ttl_secs: i64,
    nbf_secs: Option<i64>,
    now_secs: i64,
) -> BookingClaims {
    let iat = now_secs - 1;
    let future_nbf = nbf_secs.filter(|nbf| *nbf > now_secs);
    let nbf = future_nbf.unwrap_or(iat);
    let exp = future_nbf.unwrap_or(now_secs) + ttl_secs;
    let scope = if admin { SCOPE_ADMIN } else { SCOPE_USER };
    BookingClaims {
        scopes: vec![scope.to_owned()],
        sub: sub.to_owned(),
        aud: vec![audience.to_owned()],
        exp,
        nbf,
        iat,
    }
}

/// A deny-call token's claims (§4.7): `relay:admin`, `sub` `admin`, `aud` = the relay's
/// access URL as written in the manifest.
pub fn deny_claims(relay_url: &str, now_secs: i64) -> BookingClaims {
    BookingClaims {
        scopes: vec![SCOPE_RELAY_ADMIN.to_owned()],
        sub: "admin".to_owned(),
        aud: vec![relay_url.to_owned()],
        exp: now_secs - 1 + DENY_TOKEN_TTL_SECS,
        nbf: now_secs - 1,
        iat: now_secs - 1,
    }
}

/// An incoming booking-API token, verified (§4.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Verified {
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub sub: String,
}

impl Verified {
    /// Whether the token carries `booking:admin`.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == SCOPE_ADMIN)
    }

    /// Whether the token carries `booking:user`.
    pub fn is_user(&self) -> bool {
        self.scopes.iter().any(|s| s == SCOPE_USER)
    }
}

/// `aud` may be a string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct TimedClaims {
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    sub: String,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
}

/// Check a booking-API token (§4.3): an HMAC algorithm and a valid signature with
/// `secret`; `exp`, `nbf` and `iat` against `now_secs` with no leeway (each where present,
/// as the reference); `aud` containing `audience` exactly. The error text is for the 401
/// body.
pub fn verify(
    token: &str,
    secret: &[u8],
    audience: &str,
    now_secs: i64,
) -> Result<Verified, String> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| format!("error parsing claims was {e}"))?;
    let hmac = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
    if !hmac.contains(&header.alg) {
        return Err(format!("unexpected signing method: {:?}", header.alg));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = hmac.to_vec();
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims =
        jsonwebtoken::decode::<TimedClaims>(token, &DecodingKey::from_secret(secret), &validation)
            .map_err(|e| format!("error parsing claims was {e}"))?
            .claims;
    if claims.exp.is_some_and(|exp| now_secs >= exp) {
        return Err("token is expired".into());
    }
    if claims.nbf.is_some_and(|nbf| now_secs < nbf) {
        return Err("token is not valid yet".into());
    }
    if claims.iat.is_some_and(|iat| now_secs < iat) {
        return Err("token used before issued".into());
    }
    let audiences = match claims.aud {
        Some(Audience::One(one)) => vec![one],
        Some(Audience::Many(many)) => many,
        None => Vec::new(),
    };
    if !audiences.iter().any(|a| a == audience) {
        return Err(format!(
            "aud {audiences:?} does not match this host {audience}"
        ));
    }
    Ok(Verified {
        scopes: claims.scopes,
        sub: claims.sub,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn payload(token: &str) -> String {
        let part = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn login_claims_are_in_the_reference_order_and_span_ttl_plus_one() {
        let claims = login_claims("someuser", "https://book.example.org", 60, 1_667_606_400);
        let token = sign(&claims, b"secret").unwrap();
        assert!(token.starts_with("ey"));
        assert_eq!(
            payload(&token),
            r#"{"scopes":["booking:user"],"sub":"someuser","aud":["https://book.example.org"],"exp":1667606460,"nbf":1667606399,"iat":1667606399}"#
        );
        assert_eq!(claims.exp - claims.nbf, 61);
        assert_eq!(token, sign(&claims, b"secret").unwrap());
    }

    #[test]
    fn stream_claims_are_in_the_reference_order() {
        let claims = StreamClaims {
            booking_id: "bk-0".into(),
            topic: "bbbb00-st-a".into(),
            prefix: "session".into(),
            scopes: vec!["read".into(), "write".into()],
            sub: "user-a".into(),
            aud: vec!["https://relay-access.practable.io".into()],
            exp: 20,
            nbf: 9,
            iat: 9,
        };
        assert_eq!(
            payload(&sign(&claims, b"relay").unwrap()),
            r#"{"booking_id":"bk-0","topic":"bbbb00-st-a","prefix":"session","scopes":["read","write"],"sub":"user-a","aud":["https://relay-access.practable.io"],"exp":20,"nbf":9,"iat":9}"#
        );
    }

    #[test]
    fn deny_claims_match_the_reference() {
        let token = sign(&deny_claims("http://127.0.0.1:9/access", 1000), b"r").unwrap();
        assert_eq!(
            payload(&token),
            r#"{"scopes":["relay:admin"],"sub":"admin","aud":["http://127.0.0.1:9/access"],"exp":1299,"nbf":999,"iat":999}"#
        );
    }

    #[test]
    fn verification_checks_signature_time_and_audience_with_no_leeway() {
        let aud = "https://book.example.org";
        let token = sign(&login_claims("someuser", aud, 60, 1000), b"s").unwrap();
        let ok = verify(&token, b"s", aud, 1000).unwrap();
        assert_eq!(ok.sub, "someuser");
        assert!(ok.is_user() && !ok.is_admin());
        assert!(verify(&token, b"other", aud, 1000)
            .unwrap_err()
            .starts_with("error parsing claims was"));
        assert_eq!(
            verify(&token, b"s", aud, 1060).unwrap_err(),
            "token is expired"
        );
        assert_eq!(
            verify(&token, b"s", aud, 998).unwrap_err(),
            "token is not valid yet"
        );
        assert!(verify(&token, b"s", "https://elsewhere", 1000)
            .unwrap_err()
            .contains("does not match this host https://elsewhere"));
        assert!(verify("junk", b"s", aud, 1000).is_err());
    }

    #[test]
    fn client_tokens_use_a_future_nbf_only() {
        let c = client_claims("admin", "a", true, 60, Some(5000), 1000);
        assert_eq!((c.nbf, c.iat, c.exp), (5000, 999, 5060));
        assert_eq!(c.scopes, vec![SCOPE_ADMIN.to_owned()]);
        let c = client_claims("u", "a", false, 60, Some(10), 1000);
        assert_eq!((c.nbf, c.iat, c.exp), (999, 999, 1060));
    }
}
