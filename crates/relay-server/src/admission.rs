//! Why a request is refused, and the one ticket check that the access API and the
//! websocket upgrade share.
//!
//! Every refusal is a [`Refusal`] variant that knows its metrics label, its HTTP status and
//! its message; [`Refusal::into_api_error`] is the only place a refusal becomes a
//! response body. The wording is the reference's where clients depend on it, so the same
//! reason can read differently at each [`Endpoint`] (the access API's handler errors,
//! the relay port's framework-style errors).

use crate::cluster::codes::{IssueError, RedeemError};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use relay_auth::{CodeError, SubmitError, Ticket, TokenError};
use relay_common::connection::ConnectionType;

impl From<IssueError> for Refusal {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Full(e) => Refusal::TooManyCodes(e),
            IssueError::Unavailable(reason) => Refusal::CodesUnavailable(reason),
        }
    }
}

impl From<RedeemError> for Refusal {
    fn from(e: RedeemError) -> Self {
        match e {
            RedeemError::Code(e) => Refusal::BadCode(e),
            RedeemError::Unavailable(reason) => Refusal::CodesUnavailable(reason),
        }
    }
}

/// Where a request is admitted; the wording of some refusals depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /session/{id}` on the access API.
    SessionAccess,
    /// `POST /shell/{id}` on the access API.
    ShellAccess,
    /// The websocket upgrade on the relay port, where a ticket is redeemed.
    Relay,
}

/// A reason to refuse an access request or a websocket upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token in `Authorization`.
    NoCredentials,
    /// The token failed verification (signature, algorithm, times, shape).
    InvalidToken(TokenError),
    /// The token's audience is not this access host.
    ForeignAudience {
        /// The token's audiences.
        aud: Vec<String>,
        /// This access host.
        host: String,
    },
    /// The token lacks topic, scopes, prefix, audience or expiry.
    MissingClaims,
    /// The relay path names no connection type.
    UnknownConnectionType(String),
    /// The browser's `Origin` is not in the allowed list.
    OriginNotAllowed(String),
    /// The relay request is not a websocket upgrade.
    NotWebsocket(String),
    /// The relay request has no `code`.
    NoCode,
    /// The code is unknown, used or expired.
    BadCode(CodeError),
    /// The ticket's token is not valid yet.
    TooEarly,
    /// The ticket was issued for another relay.
    WrongAudience,
    /// The grant is for another topic than the request's.
    WrongTopic {
        /// Where the topic was compared.
        at: Endpoint,
        /// The request's topic.
        topic: String,
    },
    /// The ticket's token has expired.
    Expired,
    /// The booking is on the deny list.
    Denied(Endpoint),
    /// A ticket with neither `read` nor `write`.
    NoReadOrWrite,
    /// The stats topic needs `relay:stats` (when so configured).
    NoStatsScope,
    /// A shell token on the session route.
    ShellTokenOnSessionRoute,
    /// The ticket is for another connection type than the relay path's.
    WrongConnectionType(ConnectionType),
    /// The token has an empty booking id and those are not permitted.
    NoBookingId,
    /// Shell route: the stats scope on a path other than `stats`.
    StatsScopeOffStatsPath,
    /// Shell route: the `stats` path without the stats scope.
    StatsPathWithoutStatsScope,
    /// Shell route: none of the `host`, `client` and `stats` scopes.
    NoShellScope,
    /// Shell route: both the `host` and the `client` scope.
    HostAndClientScope,
    /// A shell client arrived while its host's management connection is away.
    HostOffline(String),
    /// No code could be issued: the booking (429) or the whole relay (503) has too many
    /// unused codes waiting (`RELAY_MAX_CODES_PER_BOOKING`, `RELAY_MAX_CODES`).
    TooManyCodes(SubmitError),
    /// The booking used up its access rate (`RELAY_RATE_PER_BOOKING`).
    RateLimitedBooking {
        /// Seconds until the next request would be accepted (`Retry-After`).
        retry_after_secs: u64,
    },
    /// Too many failed authentications from this address (`RELAY_RATE_BAD_AUTH_PER_IP`).
    RateLimitedAddress {
        /// Seconds until the next request would be accepted (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The relay holds `RELAY_MAX_CONNECTIONS` websockets.
    TooManyConnections,
    /// A clustered node cannot reach the cluster's code store (NATS), so it can neither
    /// issue nor check a code.
    CodesUnavailable(String),
    /// The booking holds `RELAY_MAX_CONNECTIONS_PER_BOOKING` websockets.
    TooManyBookingConnections,
}

impl Refusal {
    /// The `result` label of the access and handshake metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoCredentials | Refusal::InvalidToken(_) | Refusal::ForeignAudience { .. } => {
                "bad_token"
            }
            Refusal::MissingClaims => "missing_claims",
            Refusal::UnknownConnectionType(_) => "not_found",
            Refusal::OriginNotAllowed(_) => "bad_origin",
            Refusal::NotWebsocket(_) => "not_websocket",
            Refusal::NoCode => "no_code",
            Refusal::BadCode(_) => "bad_code",
            Refusal::TooEarly => "too_early",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::WrongTopic { .. }
            | Refusal::StatsScopeOffStatsPath
            | Refusal::StatsPathWithoutStatsScope => "wrong_topic",
            Refusal::Expired => "expired",
            Refusal::Denied(_) => "denied",
            Refusal::NoReadOrWrite | Refusal::NoShellScope => "no_scope",
            Refusal::NoStatsScope => "no_stats_scope",
            Refusal::ShellTokenOnSessionRoute | Refusal::WrongConnectionType(_) => "wrong_prefix",
            Refusal::NoBookingId => "no_booking_id",
            Refusal::HostAndClientScope => "bad_scope",
            Refusal::HostOffline(_) => "host_offline",
            Refusal::TooManyCodes(SubmitError::BookingFull(_)) => "too_many_codes",
            Refusal::TooManyCodes(SubmitError::StoreFull(_)) => "codes_full",
            Refusal::RateLimitedBooking { .. } => "rate_limited_booking",
            Refusal::RateLimitedAddress { .. } => "rate_limited_address",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::CodesUnavailable(_) => "cluster_unavailable",
            Refusal::TooManyBookingConnections => "too_many_booking_connections",
        }
    }

    /// The error answer the client sees: status, body shape and the reference's wording.
    pub fn into_api_error(self) -> ApiError {
        use StatusCode as S;
        let handler = ApiError::handler;
        match self {
            Refusal::NoCredentials => {
                ApiError::new(S::UNAUTHORIZED, "unauthenticated for invalid credentials")
            }
            Refusal::InvalidToken(e) => {
                ApiError::with_reason(S::UNAUTHORIZED, "token invalid", e.to_string())
            }
            Refusal::ForeignAudience { aud, host } => ApiError::new(
                S::UNAUTHORIZED,
                format!("aud [{}] does not match this host {host}", aud.join(" ")),
            ),
            Refusal::MissingClaims => handler(S::UNAUTHORIZED, "Token Missing Required Claims"),
            Refusal::UnknownConnectionType(prefix) => {
                ApiError::new(S::NOT_FOUND, format!("unknown connection type {prefix:?}"))
            }
            Refusal::OriginNotAllowed(origin) => {
                ApiError::new(S::FORBIDDEN, format!("origin {origin} is not allowed"))
            }
            Refusal::NotWebsocket(why) => ApiError::new(
                S::BAD_REQUEST,
                format!("expected a websocket upgrade: {why}"),
            ),
            Refusal::NoCode => ApiError::new(S::UNAUTHORIZED, "missing code"),
            Refusal::BadCode(e) => ApiError::new(S::UNAUTHORIZED, e.to_string()),
            Refusal::TooEarly => ApiError::new(S::UNAUTHORIZED, "token not valid yet"),
            Refusal::WrongAudience => {
                ApiError::new(S::FORBIDDEN, "code was issued for another relay")
            }
            Refusal::WrongTopic { at, topic } => match at {
                Endpoint::SessionAccess => handler(S::UNAUTHORIZED, "Token Wrong Topic"),
                Endpoint::ShellAccess => handler(S::UNAUTHORIZED, "ShellID Does Not Match Token"),
                Endpoint::Relay => {
                    ApiError::new(S::FORBIDDEN, format!("code is not for topic {topic:?}"))
                }
            },
            Refusal::Expired => ApiError::new(S::UNAUTHORIZED, "token expired"),
            Refusal::Denied(Endpoint::Relay) => {
                ApiError::new(S::FORBIDDEN, "booking has been denied")
            }
            Refusal::Denied(Endpoint::SessionAccess | Endpoint::ShellAccess) => handler(
                S::BAD_REQUEST,
                "bookingID has been deny-listed, probably because the session was cancelled",
            ),
            Refusal::NoReadOrWrite => {
                ApiError::new(S::FORBIDDEN, "token has neither read nor write scope")
            }
            Refusal::NoStatsScope => {
                ApiError::new(S::FORBIDDEN, "the stats topic needs the relay:stats scope")
            }
            Refusal::ShellTokenOnSessionRoute => {
                handler(S::UNAUTHORIZED, "Token Wrong Connection Type")
            }
            Refusal::WrongConnectionType(connection) => ApiError::new(
                S::FORBIDDEN,
                format!("code is not for {:?} connections", connection.as_str()),
            ),
            Refusal::NoBookingId => {
                handler(S::BAD_REQUEST, "empty bookingID field is not permitted")
            }
            Refusal::StatsScopeOffStatsPath => {
                handler(S::UNAUTHORIZED, "Path Not Valid for Stats Scope")
            }
            Refusal::StatsPathWithoutStatsScope => {
                handler(S::UNAUTHORIZED, "Path Not Valid Without Stats Scope")
            }
            Refusal::NoShellScope => {
                handler(S::UNAUTHORIZED, "Missing client, host or stats Scope")
            }
            Refusal::HostAndClientScope => handler(
                S::UNAUTHORIZED,
                "Can only have Client Or Host Scope, Not Both",
            ),
            Refusal::HostOffline(host) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                format!("shell host {host:?} is not connected"),
            ),
            Refusal::TooManyCodes(e @ SubmitError::BookingFull(_)) => ApiError::with_reason(
                S::TOO_MANY_REQUESTS,
                "too many unused codes for this booking; use or let expire the ones issued",
                e.to_string(),
            ),
            Refusal::CodesUnavailable(reason) => ApiError::with_reason(
                S::SERVICE_UNAVAILABLE,
                "the relay cannot reach its cluster's code store to issue or check codes; try again shortly",
                reason,
            ),
            Refusal::TooManyCodes(e @ SubmitError::StoreFull(_)) => ApiError::with_reason(
                S::SERVICE_UNAVAILABLE,
                "the relay is issuing too many codes; try again shortly",
                e.to_string(),
            ),
            Refusal::RateLimitedBooking { retry_after_secs } => ApiError::new(
                S::TOO_MANY_REQUESTS,
                format!("too many requests for this booking; retry after {retry_after_secs} s"),
            )
            .retry_after(retry_after_secs),
            Refusal::RateLimitedAddress { retry_after_secs } => ApiError::new(
                S::TOO_MANY_REQUESTS,
                format!(
                    "too many failed authentications from this address; retry after {retry_after_secs} s"
                ),
            )
            .retry_after(retry_after_secs),
            Refusal::TooManyConnections => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "the relay is at its connection limit; try again later",
            ),
            Refusal::TooManyBookingConnections => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "this booking is at its connection limit; close a connection first",
            ),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        refusal.into_api_error()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.into_api_error().into_response()
    }
}

/// The one ticket check: the ticket is for this relay and `topic`, valid now, and its
/// booking is not denied.
///
/// The access API runs it on the ticket it is about to issue, the relay on the ticket it
/// redeems. The times are checked only at redemption: at the access API the verifier has
/// just checked them (with its configured leeway) on the token the ticket came from.
pub fn check_ticket(
    state: &AppState,
    ticket: &Ticket,
    at: Endpoint,
    topic: &str,
) -> Result<(), Refusal> {
    let redeeming = at == Endpoint::Relay;
    let now = state.now_unix();
    if redeeming && ticket.not_before().is_some_and(|nbf| nbf > now) {
        return Err(Refusal::TooEarly);
    }
    if ticket.relay() != state.relay_url {
        return Err(Refusal::WrongAudience);
    }
    if ticket.topic() != topic {
        return Err(Refusal::WrongTopic {
            at,
            topic: topic.to_owned(),
        });
    }
    if redeeming && ticket.expires_at().is_some_and(|exp| exp <= now) {
        return Err(Refusal::Expired);
    }
    if state.deny.is_denied(ticket.booking_id()) {
        return Err(Refusal::Denied(at));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(refusal: Refusal) -> (u16, String) {
        let err = refusal.into_api_error();
        (err.status.as_u16(), err.body().to_owned())
    }

    #[test]
    fn refusals_keep_the_wording_clients_see() {
        assert_eq!(
            body(Refusal::WrongTopic {
                at: Endpoint::Relay,
                topic: "456".into()
            }),
            (
                403,
                r#"{"code":403,"message":"code is not for topic \"456\""}"#.into()
            )
        );
        assert_eq!(
            body(Refusal::Denied(Endpoint::SessionAccess)),
            (
                400,
                "{\"code\":\"400\",\"message\":\"bookingID has been deny-listed, probably because the session was cancelled\"}\n".into()
            )
        );
        assert_eq!(
            body(Refusal::WrongConnectionType(ConnectionType::Shell)),
            (
                403,
                r#"{"code":403,"message":"code is not for \"shell\" connections"}"#.into()
            )
        );
        assert_eq!(
            body(Refusal::UnknownConnectionType("nope".into())),
            (
                404,
                r#"{"code":404,"message":"unknown connection type \"nope\""}"#.into()
            )
        );
        assert_eq!(Refusal::HostOffline("h".into()).label(), "host_offline");
        assert_eq!(Refusal::NoShellScope.label(), "no_scope");
        assert_eq!(
            body(Refusal::TooManyCodes(SubmitError::BookingFull(64))),
            (
                429,
                r#"{"code":429,"message":"too many unused codes for this booking; use or let expire the ones issued","reason":"booking already has 64 unused codes waiting"}"#.into()
            )
        );
        assert_eq!(
            Refusal::TooManyCodes(SubmitError::StoreFull(1)).label(),
            "codes_full"
        );
        assert_eq!(
            Refusal::TooManyCodes(SubmitError::StoreFull(1))
                .into_api_error()
                .status
                .as_u16(),
            503
        );
    }
}
