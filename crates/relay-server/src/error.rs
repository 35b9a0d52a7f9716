//! JSON error bodies in the reference's two shapes.
//!
//! The reference answers authentication and framework errors with an integer code
//! (`{"code":401,"message":"…"}`) and handler errors with a string code and a trailing
//! newline (`{"code":"400","message":"…"}\n`). Existing tests and clients pin both, so both
//! are kept; every error we add uses the integer shape and may carry a `reason` with detail.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the access API or of a refused websocket admission.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status sent with the body (may differ from the body's `code`).
    pub status: StatusCode,
    body: String,
    /// Seconds sent as `Retry-After` (rate-limit answers).
    retry_after: Option<u64>,
}

impl ApiError {
    /// `{"code":<int>,"message":…}` — authentication, framework-style and new errors.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self::coded(status, status.as_u16(), message)
    }

    /// `{"code":<code>,"message":…}` where the code differs from the status, as in the
    /// reference's 422 validation errors (codes 601 and 602).
    pub fn coded(status: StatusCode, code: u16, message: impl Into<String>) -> Self {
        let body = json!({"code": code, "message": message.into()}).to_string();
        ApiError {
            status,
            body,
            retry_after: None,
        }
    }

    /// Like [`ApiError::new`] with a `reason` field carrying detail for logs and humans.
    pub fn with_reason(status: StatusCode, message: &str, reason: impl Into<String>) -> Self {
        let body = json!({"code": status.as_u16(), "message": message, "reason": reason.into()})
            .to_string();
        ApiError {
            status,
            body,
            retry_after: None,
        }
    }

    /// `{"code":"<status>","message":…}` plus a newline — the reference's handler errors.
    pub fn handler(status: StatusCode, message: impl Into<String>) -> Self {
        let body = format!(
            "{}\n",
            json!({"code": status.as_u16().to_string(), "message": message.into()})
        );
        ApiError {
            status,
            body,
            retry_after: None,
        }
    }

    /// Send `Retry-After: secs` with the answer.
    pub fn retry_after(self, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs),
            ..self
        }
    }

    /// The response body, for logs and tests.
    pub fn body(&self) -> &str {
        &self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// A 200 JSON body followed by a newline, as the reference's handlers write them.
pub fn json_line(value: &impl serde::Serialize) -> Response {
    let body = format!(
        "{}\n",
        serde_json::to_string(value).unwrap_or_else(|_| "null".into())
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
