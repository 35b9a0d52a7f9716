//! Who is calling (spec §4.3, §4.4, §3.11): the token in `Authorization` (raw, or after
//! `Bearer `), its scopes, the lock for non-admins, and the subject check for routes that
//! name a user.

use axum::http::{header, HeaderMap, StatusCode};

use super::error::ApiError;
use super::AppState;
use crate::tokens::{self, Verified};

/// A caller that passed the checks of a user route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `booking:admin`: may act for any user, never locked out.
    Admin {
        /// The token's subject (may be empty).
        sub: String,
    },
    /// `booking:user`.
    User {
        /// The token's subject: the user name.
        sub: String,
    },
}

impl Caller {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin { .. })
    }

    /// The token's subject.
    pub fn sub(&self) -> &str {
        match self {
            Caller::Admin { sub } | Caller::User { sub } => sub,
        }
    }

    /// Who a cancellation is recorded as made by: the subject, or `admin` for an admin
    /// token without one.
    pub fn cancelled_by(&self) -> String {
        match self {
            Caller::Admin { sub } if sub.is_empty() => "admin".to_owned(),
            _ => self.sub().to_owned(),
        }
    }

    /// A non-admin caller must be `user`; `message` is the refusal's text.
    pub fn require_subject(
        &self,
        user: &str,
        message: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        match self {
            Caller::User { sub } if sub != user => Err(ApiError::unauthorized(message())),
            _ => Ok(()),
        }
    }
}

/// The token: the whole `Authorization` value, or what follows `Bearer `.
fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// A verified token, or 401: `{"code":401,"message":"unauthenticated for invalid
/// credentials"}` without one, the verification error otherwise (the reference answered
/// 500 there, §4.3).
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Verified, ApiError> {
    let token = token(headers).ok_or_else(|| {
        ApiError::framework(
            StatusCode::UNAUTHORIZED,
            401,
            "unauthenticated for invalid credentials",
        )
    })?;
    tokens::verify(
        token,
        state.config.admin_secret.as_bytes(),
        &state.config.audience,
        state.clock.now_secs(),
    )
    .map_err(|message| ApiError::framework(StatusCode::UNAUTHORIZED, 401, message))
}

/// An admin route's check: 401 `no scope booking:admin` without the scope.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Verified, ApiError> {
    let verified = authenticate(state, headers)?;
    if !verified.is_admin() {
        return Err(ApiError::unauthorized("no scope booking:admin"));
    }
    Ok(verified)
}

/// A user route's check: `booking:user` or `booking:admin`
/// (`Missing booking:admin or booking:user Scope`), then, if `lock_applies` (every user
/// route but `/users/status`), the lock for non-admins (`store locked to users: <message>`).
pub async fn require_user(
    state: &AppState,
    headers: &HeaderMap,
    lock_applies: bool,
) -> Result<Caller, ApiError> {
    let verified = authenticate(state, headers)?;
    let caller = if verified.is_admin() {
        Caller::Admin { sub: verified.sub }
    } else if verified.is_user() {
        Caller::User { sub: verified.sub }
    } else {
        return Err(ApiError::unauthorized(
            "Missing booking:admin or booking:user Scope",
        ));
    };
    if lock_applies && !caller.is_admin() {
        let lock = state
            .store
            .lock_state()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if lock.locked {
            return Err(ApiError::unauthorized(format!(
                "store locked to users: {}",
                lock.message
            )));
        }
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_header_with_or_without_bearer() {
        let mut headers = HeaderMap::new();
        assert_eq!(token(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            "eyJ.a.b".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token(&headers), Some("eyJ.a.b"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer eyJ.a.b".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token(&headers), Some("eyJ.a.b"));
        headers.insert(
            header::AUTHORIZATION,
            "bearer  eyJ.a.b "
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token(&headers), Some("eyJ.a.b"));
    }
}
