//! Which server names a relay-client may serve. The reference trusts every poller (its
//! ingress checks only that the caller is *some* robot), so one robot could poll another's
//! name and read its users' requests. With a secret configured, every `/server/*` call
//! must carry a relay JWT (`Authorization: Bearer …`, checked with
//! [`relay_auth::Verifier`]) whose `scopes` include `http:server:<name>` for the name it
//! polls or answers for (`http:server:*` for any name).

use http::HeaderMap;
use relay_auth::Verifier;

/// Prefix of the per-name scope: `http:server:robot-a`.
pub const SCOPE_SERVER_PREFIX: &str = "http:server:";
/// Scope that may serve every name (a fleet-wide client or an operator tool).
pub const SCOPE_SERVER_ANY: &str = "http:server:*";

/// The scope that lets a relay-client serve `name`.
pub fn server_scope(name: &str) -> String {
    format!("{SCOPE_SERVER_PREFIX}{name}")
}

/// Why a relay-client call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The call carried no readable `Authorization` header, or an empty bearer token.
    #[error("missing Authorization: Bearer token")]
    MissingToken,
    /// The token did not verify (malformed, wrong algorithm or signature, expired, not
    /// yet valid); the inner error says which.
    #[error("invalid token: {0}")]
    Invalid(#[from] relay_auth::TokenError),
    /// An audience is configured and the token's `aud` does not contain it; holds the
    /// expected audience.
    #[error("token audience does not include {0:?}")]
    Audience(String),
    /// The token has no `exp` claim: it would be valid for ever, so it is refused.
    #[error("token has no exp claim; relay-client tokens must expire")]
    NoExpiry,
    /// The token has neither the scope for this server name nor `http:server:*`; holds
    /// the scope that was needed.
    #[error("token has no scope {0:?} (nor {SCOPE_SERVER_ANY:?})")]
    Scope(String),
}

/// Verifies relay-client tokens.
#[derive(Clone, Debug)]
pub struct PollerAuth {
    verifier: Verifier,
    audience: Option<String>,
}

impl PollerAuth {
    /// Tokens signed with `secret`; when `audience` is set, `aud` must contain it.
    pub fn new(secret: &[u8], audience: Option<String>) -> Self {
        PollerAuth {
            verifier: Verifier::new(secret, 5),
            audience,
        }
    }

    /// Check that the caller may serve `server_name` at unix time `now`.
    pub fn check(&self, headers: &HeaderMap, server_name: &str, now: i64) -> Result<(), AuthError> {
        let raw = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::MissingToken)?;
        let token = raw.strip_prefix("Bearer ").unwrap_or(raw).trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let claims = self.verifier.verify(token, now)?;
        if !matches!(claims.exp, Some(exp) if exp != 0) {
            return Err(AuthError::NoExpiry);
        }
        if let Some(aud) = &self.audience {
            if !claims.aud.contains(aud) {
                return Err(AuthError::Audience(aud.clone()));
            }
        }
        let wanted = server_scope(server_name);
        if claims.has_scope(&wanted) || claims.has_scope(SCOPE_SERVER_ANY) {
            Ok(())
        } else {
            Err(AuthError::Scope(wanted))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use relay_auth::{mint, Audience, Claims};

    fn token(scopes: &[&str], aud: &str) -> String {
        let claims = Claims {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            aud: Audience::single(aud),
            exp: Some(2_000_000_000),
            ..Claims::default()
        };
        mint(&claims, b"s")
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn scope_per_name_is_enforced() {
        let auth = PollerAuth::new(b"s", None);
        let now = 1_900_000_000;
        let a = headers(&token(&["http:server:robot-a"], "x"));
        assert_eq!(auth.check(&a, "robot-a", now), Ok(()));
        assert_eq!(
            auth.check(&a, "robot-b", now),
            Err(AuthError::Scope("http:server:robot-b".into()))
        );
        let any = headers(&token(&[SCOPE_SERVER_ANY], "x"));
        assert_eq!(auth.check(&any, "robot-b", now), Ok(()));
        assert_eq!(
            auth.check(&HeaderMap::new(), "robot-a", now),
            Err(AuthError::MissingToken)
        );
        assert!(matches!(
            auth.check(&a, "robot-a", 2_100_000_000),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn token_without_exp_is_refused() {
        let auth = PollerAuth::new(b"s", None);
        let claims = Claims {
            scopes: vec!["http:server:a".into()],
            exp: None,
            ..Claims::default()
        };
        let h = headers(&mint(&claims, b"s"));
        assert_eq!(auth.check(&h, "a", 1_900_000_000), Err(AuthError::NoExpiry));
    }

    #[test]
    fn audience_is_checked_when_configured() {
        let auth = PollerAuth::new(b"s", Some("https://relay.example".into()));
        let now = 1_900_000_000;
        let wrong = headers(&token(&["http:server:a"], "https://other"));
        assert!(matches!(
            auth.check(&wrong, "a", now),
            Err(AuthError::Audience(_))
        ));
        let right = headers(&token(&["http:server:a"], "https://relay.example"));
        assert_eq!(auth.check(&right, "a", now), Ok(()));
    }
}
