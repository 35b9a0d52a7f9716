//! Error replies. Handlers answer `{"code":"<status as string>","message":…}` (spec §2.1);
//! the framework-level errors the reference's generated server wrote (missing or ill-formed
//! query parameters, unknown paths, wrong methods, bad credentials) keep its numeric code:
//! `{"code":602,"message":"user_name in query is required"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Framework-style numeric code; `None` for a handler error (string code = status).
    pub numeric_code: Option<u16>,
    /// The message.
    pub message: String,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A handler error: `{"code":"<status>","message":…}`.
    pub fn handler(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            numeric_code: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A framework-style error: `{"code":<code>,"message":…}`.
    pub fn framework(status: StatusCode, code: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            numeric_code: Some(code),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 404 with a handler body.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::handler(StatusCode::NOT_FOUND, message)
    }

    /// 401 with a handler body.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::handler(StatusCode::UNAUTHORIZED, message)
    }

    /// 500 with a handler body.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::handler(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 400 with a handler body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::handler(StatusCode::BAD_REQUEST, message)
    }

    /// 422 `<name> in query is required` (code 602).
    pub fn query_required(name: &str) -> Self {
        Self::framework(
            StatusCode::UNPROCESSABLE_ENTITY,
            602,
            format!("{name} in query is required"),
        )
    }

    /// 422 `<name> in query must be of type <kind>: "<value>"` (code 601).
    pub fn query_type(name: &str, kind: &str, value: &str) -> Self {
        Self::framework(
            StatusCode::UNPROCESSABLE_ENTITY,
            601,
            format!("{name} in query must be of type {kind}: {value:?}"),
        )
    }

    /// Add a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let value = match self.numeric_code {
            Some(code) => json!({"code": code, "message": self.message}),
            None => json!({"code": self.status.as_u16().to_string(), "message": self.message}),
        };
        value.to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// The default mapping of a store error: not found (and no manifest yet) → 404 with the
    /// store's text, a refusal → 500 with its text, a database failure → 500. Routes whose
    /// reference status differs map the error themselves.
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match error {
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::NoManifest => ApiError::not_found("not found"),
            StoreError::Refused(message) => ApiError::internal(message),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal(other.to_string())
            }
        }
    }
}
