//! Time on the booking API: instants are unix nanoseconds ([`Nanos`]), printed as RFC 3339
//! with exactly three fractional digits (truncated, as the reference does); durations are
//! signed nanoseconds printed as Go duration strings (`1h0m0s`, `-5m0s`), some of them
//! "humanised" (rounded to whole seconds first).
//!
//! Owner: domain helper. Everything here is pure.

/// Unix time in nanoseconds. i64 covers 1678..2262, which holds [`DISTANT_FUTURE`].
pub type Nanos = i64;

/// A signed duration in nanoseconds (Go's `time.Duration`).
pub type DurationNanos = i64;

/// One second in nanoseconds.
pub const SECOND: DurationNanos = 1_000_000_000;

/// The end of availability when no book-ahead applies: 2169-11-13T00:00:00Z.
pub const DISTANT_FUTURE: Nanos = 6_275_836_800 * SECOND;

/// How a zero Go `time.Time` prints on the API (bookings' `cancelled_at`/`started_at`
/// when unset).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00.000Z";

/// `2022-11-05T00:09:59.999Z`: UTC, three fractional digits, truncated.
pub fn format_time(t: Nanos) -> String {
    todo!("domain: {t}")
}

/// Parse a `from`/`to` query value or a manifest/booking time: RFC 3339 with any number of
/// fractional digits; a value with no zone (`2022-11-05T00:04:05`) is UTC. Rejects a space
/// separator and garbage with a message naming the value.
pub fn parse_time(text: &str) -> Result<Nanos, String> {
    todo!("domain: {text}")
}

/// Go's `Duration.String()` for a signed duration (`0s`, `-5m0s`, `1h0m0s`).
pub fn format_duration(d: DurationNanos) -> String {
    todo!("domain: {d}")
}

/// Go's `d.Round(time.Second).String()`: what the reference calls humanised.
pub fn humanise(d: DurationNanos) -> String {
    todo!("domain: {d}")
}

/// Go's `time.ParseDuration` (signed), with Go's error texts.
pub fn parse_duration(text: &str) -> Result<DurationNanos, String> {
    todo!("domain: {text}")
}

/// Go's default `time.Time` formatting, used in one refusal text
/// (`2022-11-05 00:00:00 +0000 UTC`).
pub fn format_go_time(t: Nanos) -> String {
    todo!("domain: {t}")
}
