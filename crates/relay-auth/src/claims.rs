//! JWT claims, minting and verification.
//!
//! The JSON names and their order match practable's relay (`booking_id`, `topic`, `prefix`,
//! `scopes`, `aud`, `exp`, `nbf`, `iat`), so tokens minted by either side are accepted by
//! the other. Time checks are done here rather than by `jsonwebtoken`, so that the current
//! time can be injected and a small leeway configured.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer, Serialize};

/// The claims of a relay token: what a user presents, signed by whoever holds the secret.
///
/// It has no field that only the server may set: what the server grants after checking a
/// token is a [`Ticket`](crate::Ticket), which is never read from a token. Unknown claims
/// (such as the `topicSalt` and `alertHost` of older tickets) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Booking identifier used to cancel (deny) live sessions. Always emitted, may be empty.
    #[serde(default)]
    pub booking_id: String,
    /// The relay topic (session id), e.g. `expt00-data` or `stats`.
    #[serde(default)]
    pub topic: String,
    /// Connection type as sent: `session` or `shell` (see `relay_common::connection`).
    /// Kept as the string so an unknown value reaches the relay's own refusal.
    #[serde(default)]
    pub prefix: String,
    /// Permissions such as `read`, `write`, `relay:admin`, `relay:stats`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<String>,
    /// Audience; a single string is accepted on input, an array is always written.
    #[serde(default)]
    pub aud: Audience,
    /// Expiry, unix seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub exp: Option<i64>,
    /// Not before, unix seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub nbf: Option<i64>,
    /// Issued at, unix seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub iat: Option<i64>,
    /// Issuer; carried but never checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject; carried but never checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Token id; carried but never checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// A grant of `scopes` on `prefix`/`topic` for `audience`, valid for `lifetime_secs`.
    /// `iat` and `nbf` are one second before `now`, so a verifier whose clock is a little
    /// behind (or reads the same second) does not find the token "not yet valid".
    pub fn grant(
        prefix: &str,
        topic: &str,
        scopes: &[&str],
        audience: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Claims {
        let issued = now.saturating_sub(1);
        Claims {
            topic: topic.to_owned(),
            prefix: prefix.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            aud: Audience::single(audience),
            exp: Some(now.saturating_add(lifetime_secs)),
            nbf: Some(issued),
            iat: Some(issued),
            ..Claims::default()
        }
    }

    /// True when `scope` is one of the token's scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The reference's `HasRequiredClaims` for session tokens: topic, scopes, prefix,
    /// audience and a non-zero expiry must all be present.
    pub fn has_required_session_claims(&self) -> bool {
        !self.topic.is_empty()
            && !self.scopes.is_empty()
            && !self.prefix.is_empty()
            && !self.aud.0.is_empty()
            && self.exp.is_some_and(|e| e != 0)
    }

    /// The reference's admin/stats `claimsCheck`: scopes, audience and expiry present.
    pub fn has_required_admin_claims(&self) -> bool {
        !self.scopes.is_empty() && !self.aud.0.is_empty() && self.exp.is_some_and(|e| e != 0)
    }
}

/// The `aud` claim: a list of audiences, read from either a string or an array.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Audience(pub Vec<String>);

impl Audience {
    /// An audience of exactly one entry.
    pub fn single(aud: impl Into<String>) -> Self {
        Audience(vec![aud.into()])
    }

    /// True when `aud` is one of the entries (exact string match, as the reference).
    pub fn contains(&self, aud: &str) -> bool {
        self.0.iter().any(|a| a == aud)
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
            Null(()),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Audience(vec![s]),
            OneOrMany::Many(v) => Audience(v),
            OneOrMany::Null(()) => Audience::default(),
        })
    }
}

/// NumericDate: integer seconds, fractional values accepted (and truncated) on input.
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value: Option<f64> = Option::deserialize(d)?;
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v.abs() < 1e15 => Ok(Some(v.trunc() as i64)),
        Some(_) => Err(serde::de::Error::custom("numeric date out of range")),
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The text is not a JWT (bad base64, JSON or structure); holds the decoder's message.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// The header names an algorithm other than HS256/HS384/HS512 (e.g. `none`, RS256);
    /// holds that algorithm's name.
    #[error("token algorithm {0} is not allowed (only HMAC: HS256, HS384, HS512)")]
    Algorithm(String),
    /// The signature does not match the shared secret: forged, altered or signed with
    /// another secret.
    #[error("token signature is invalid")]
    Signature,
    /// `now` is at or past `exp` plus the verifier's leeway.
    #[error("token has expired")]
    Expired,
    /// `now` is before `nbf` minus the verifier's leeway.
    #[error("token is not valid yet (nbf in the future)")]
    NotYetValid,
    /// `now` is before `iat` minus the verifier's leeway (the issuer's clock runs ahead).
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
}

const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Checks signatures and time claims with one shared secret.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat` (the reference used 0).
    leeway: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens signed with `secret`, tolerating `leeway_secs` of clock skew.
    pub fn new(secret: &[u8], leeway_secs: u64) -> Self {
        Verifier {
            key: DecodingKey::from_secret(secret),
            leeway: i64::try_from(leeway_secs).unwrap_or(i64::MAX / 2),
        }
    }

    /// Verify `token` at unix time `now`: any HMAC algorithm, a valid signature, and
    /// `now < exp`, `now >= nbf`, `now >= iat` where those claims are present.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| classify_header_error(token, e))?;
        if !HMAC_ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = HMAC_ALGORITHMS.to_vec();
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        if let Some(exp) = claims.exp {
            if now >= exp.saturating_add(self.leeway) {
                return Err(TokenError::Expired);
            }
        }
        if let Some(nbf) = claims.nbf {
            if now < nbf.saturating_sub(self.leeway) {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(iat) = claims.iat {
            if now < iat.saturating_sub(self.leeway) {
                return Err(TokenError::IssuedInFuture);
            }
        }
        Ok(claims)
    }
}

/// `decode_header` fails both for junk and for algorithms it does not know (such as
/// `none`); look at the raw header to tell the caller which.
fn classify_header_error(token: &str, err: jsonwebtoken::errors::Error) -> TokenError {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let alg = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok())
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v.get("alg").and_then(|a| a.as_str()).map(str::to_owned));
    match alg {
        Some(alg) if !alg.starts_with("HS") => TokenError::Algorithm(alg),
        _ => TokenError::Malformed(err.to_string()),
    }
}

/// Mint an HS256 token for `claims` with `secret`.
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let header = Header::new(Algorithm::HS256);
    // Serialising a plain struct of strings and integers with an HMAC key cannot fail;
    // fall back to an empty (and so invalid) token rather than panic if it ever did.
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"testsecret";

    fn session(now: i64) -> Claims {
        Claims {
            booking_id: "b1".into(),
            topic: "expt00".into(),
            prefix: "session".into(),
            scopes: vec!["read".into(), "write".into()],
            aud: Audience::single("https://example.com"),
            exp: Some(now + 60),
            nbf: Some(now - 1),
            iat: Some(now - 1),
            ..Claims::default()
        }
    }

    fn sign_raw(header_json: &str, payload_json: &str, alg_secret: &[u8]) -> String {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
        let h = URL_SAFE_NO_PAD.encode(header_json);
        let p = URL_SAFE_NO_PAD.encode(payload_json);
        let sig = jsonwebtoken::crypto::sign(
            format!("{h}.{p}").as_bytes(),
            &EncodingKey::from_secret(alg_secret),
            Algorithm::HS256,
        )
        .unwrap_or_default();
        format!("{h}.{p}.{sig}")
    }

    #[test]
    fn claims_serialise_with_reference_names_and_order() {
        let c = Claims {
            booking_id: String::new(),
            topic: "expt00".into(),
            prefix: "session".into(),
            scopes: vec!["read".into(), "write".into()],
            aud: Audience::single("https://example.com"),
            exp: Some(1658306108),
            nbf: Some(1658307108),
            iat: Some(1658306108),
            ..Claims::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap_or_default(),
            r#"{"booking_id":"","topic":"expt00","prefix":"session","scopes":["read","write"],"aud":["https://example.com"],"exp":1658306108,"nbf":1658307108,"iat":1658306108}"#
        );
    }

    #[test]
    fn audience_accepts_string_or_array_and_fractional_dates() {
        let c: Claims =
            serde_json::from_str(r#"{"aud":"a","exp":12.9,"scopes":null}"#).unwrap_or_default();
        assert_eq!(c.aud, Audience::single("a"));
        assert_eq!(c.exp, Some(12));
        assert!(c.scopes.is_empty());
        let c: Claims = serde_json::from_str(r#"{"aud":["a","b"]}"#).unwrap_or_default();
        assert!(c.aud.contains("b"));
    }

    #[test]
    fn ticket_only_claims_in_a_token_are_ignored() {
        let now = 1_700_000_000;
        let mut payload = serde_json::to_value(session(now)).unwrap_or_default();
        payload["topicSalt"] = "chosen-by-the-client".into();
        payload["alertHost"] = true.into();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &payload,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap_or_default();
        let claims = Verifier::new(SECRET, 0).verify(&token, now);
        assert_eq!(claims, Ok(session(now)));
        let written = serde_json::to_string(&session(now)).unwrap_or_default();
        assert!(!written.contains("topicSalt") && !written.contains("alertHost"));
    }

    #[test]
    fn mint_then_verify_round_trips() {
        let now = 1_700_000_000;
        let token = mint(&session(now), SECRET);
        let v = Verifier::new(SECRET, 0);
        assert_eq!(v.verify(&token, now), Ok(session(now)));
        assert!(session(now).has_required_session_claims());
    }

    #[test]
    fn time_rules_match_the_reference_with_optional_leeway() {
        let now = 1_700_000_000;
        let c = session(now);
        let token = mint(&c, SECRET);
        let strict = Verifier::new(SECRET, 0);
        assert_eq!(strict.verify(&token, now + 60), Err(TokenError::Expired));
        assert_eq!(strict.verify(&token, now + 59).map(|_| ()), Ok(()));
        assert_eq!(strict.verify(&token, now - 2), Err(TokenError::NotYetValid));
        let lenient = Verifier::new(SECRET, 5);
        assert_eq!(lenient.verify(&token, now + 64).map(|_| ()), Ok(()));
        assert_eq!(
            lenient.verify(&token, now - 7),
            Err(TokenError::NotYetValid)
        );

        let future_iat = Claims {
            nbf: None,
            iat: Some(now + 10),
            ..session(now)
        };
        assert_eq!(
            strict.verify(&mint(&future_iat, SECRET), now),
            Err(TokenError::IssuedInFuture)
        );
    }

    #[test]
    fn missing_time_claims_do_not_panic() {
        let now = 1_700_000_000;
        let c = Claims {
            exp: None,
            nbf: None,
            iat: None,
            ..session(now)
        };
        let got = Verifier::new(SECRET, 0).verify(&mint(&c, SECRET), now);
        assert_eq!(
            got.as_ref().map(|c| c.has_required_session_claims()),
            Ok(false)
        );
    }

    #[test]
    fn every_hmac_algorithm_is_accepted_and_others_refused() {
        let now = 1_700_000_000;
        let v = Verifier::new(SECRET, 0);
        for alg in HMAC_ALGORITHMS {
            let t = jsonwebtoken::encode(
                &Header::new(alg),
                &session(now),
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap_or_default();
            assert_eq!(v.verify(&t, now).map(|_| ()), Ok(()), "{alg:?}");
        }
        let payload = serde_json::to_string(&session(now)).unwrap_or_default();
        let none = sign_raw(r#"{"alg":"none","typ":"JWT"}"#, &payload, SECRET);
        assert!(matches!(v.verify(&none, now), Err(TokenError::Algorithm(a)) if a == "none"));
        let rs = sign_raw(r#"{"alg":"RS256","typ":"JWT"}"#, &payload, SECRET);
        assert!(matches!(v.verify(&rs, now), Err(TokenError::Algorithm(_))));
    }

    #[test]
    fn wrong_secret_and_garbage_are_refused() {
        let now = 1_700_000_000;
        let v = Verifier::new(SECRET, 0);
        assert_eq!(
            v.verify(&mint(&session(now), b"other"), now),
            Err(TokenError::Signature)
        );
        for junk in [
            "",
            "x",
            "a.b.c",
            "....",
            "eyJhbGciOiJIUzI1NiJ9.e30",
            "Bearer x",
        ] {
            assert!(
                matches!(v.verify(junk, now), Err(TokenError::Malformed(_))),
                "{junk}"
            );
        }
    }
}
