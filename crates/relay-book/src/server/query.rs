//! Query parameters, read the way the reference's generated server did: a missing required
//! one is 422 code 602 (`user_name in query is required`), an ill-formed one 422 code 601
//! (`limit in query must be of type int64: "x"`).

use std::collections::HashMap;

use super::error::ApiError;
use crate::timefmt::{parse_time, Nanos};

/// The query of one request.
#[derive(Debug, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    /// A required string.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name)
            .ok_or_else(|| ApiError::query_required(name))
    }

    /// An optional string (empty counts as absent).
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An optional int64.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.optional(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::query_type(name, "int64", v))
            })
            .transpose()
    }

    /// A required boolean (Go's `strconv.ParseBool` spellings).
    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        let value = self.required(name)?;
        match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(ApiError::query_type(name, "bool", value)),
        }
    }

    /// A required date-time.
    pub fn time(&self, name: &str) -> Result<Nanos, ApiError> {
        let value = self.required(name)?;
        parse_time(value).map_err(|_| ApiError::query_type(name, "date-time", value))
    }

    /// A non-negative pagination value (`offset`, `limit`): 400 when negative (the
    /// reference could panic, §7 item 13).
    pub fn count(&self, name: &str) -> Result<Option<usize>, ApiError> {
        match self.int(name)? {
            None => Ok(None),
            Some(n) => usize::try_from(n).map(Some).map_err(|_| {
                ApiError::bad_request(format!("{name} must not be negative (got {n})"))
            }),
        }
    }
}
