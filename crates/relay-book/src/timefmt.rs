//! Time on the booking API: instants are unix nanoseconds ([`Nanos`]), printed as RFC 3339
//! with exactly three fractional digits (truncated, as the reference does); durations are
//! signed nanoseconds printed as Go duration strings (`1h0m0s`, `-5m0s`), some of them
//! "humanised" (rounded to whole seconds first).
//!
//! Owner: domain helper. Everything here is pure.

use std::time::Duration;

use relay_common::goduration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix time in nanoseconds. i64 covers 1678..2262, which holds [`DISTANT_FUTURE`].
pub type Nanos = i64;

/// A signed duration in nanoseconds (Go's `time.Duration`).
pub type DurationNanos = i64;

/// One second in nanoseconds.
pub const SECOND: DurationNanos = 1_000_000_000;

/// The end of availability when no book-ahead applies: 2169-11-13T00:00:00Z (the
/// reference's epoch + 2 × 36,500 days).
pub const DISTANT_FUTURE: Nanos = 6_307_200_000 * SECOND;

/// How a zero Go `time.Time` prints on the API (bookings' `cancelled_at`/`started_at`
/// when unset).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00.000Z";

/// `2022-11-05T00:09:59.999Z`: UTC, three fractional digits, truncated.
pub fn format_time(t: Nanos) -> String {
    let moment = utc(t);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        date_text(moment),
        moment.hour(),
        moment.minute(),
        moment.second(),
        moment.millisecond()
    )
}

/// Parse a `from`/`to` query value or a manifest/booking time: RFC 3339 with any number of
/// fractional digits; a value with no zone (`2022-11-05T00:04:05`) is UTC. Rejects a space
/// separator and garbage with a message naming the value.
pub fn parse_time(text: &str) -> Result<Nanos, String> {
    let refuse = || format!("{text:?} is not an RFC 3339 date-time (e.g. 2022-11-05T00:04:05Z)");
    // The time crate accepts any date/time separator; RFC 3339 and the reference want `T`.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(refuse());
    }
    let time_part = text.get(11..).ok_or_else(refuse)?;
    let has_zone = time_part.contains(['Z', 'z', '+', '-']);
    let parsed = if has_zone {
        OffsetDateTime::parse(text, &Rfc3339)
    } else {
        OffsetDateTime::parse(&format!("{text}Z"), &Rfc3339)
    }
    .map_err(|_| refuse())?;
    i64::try_from(parsed.unix_timestamp_nanos())
        .map_err(|_| format!("{text:?} is outside the supported years 1678 to 2262"))
}

/// Go's `Duration.String()` for a signed duration (`0s`, `-5m0s`, `1h0m0s`).
pub fn format_duration(d: DurationNanos) -> String {
    let magnitude = goduration::format(Duration::from_nanos(d.unsigned_abs()));
    if d < 0 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

/// Go's `d.Round(time.Second).String()`: what the reference calls humanised.
pub fn humanise(d: DurationNanos) -> String {
    format_duration(round_to_second(d))
}

/// Go's `Duration.Round(time.Second)`: halves away from zero, saturating at the ends.
fn round_to_second(d: DurationNanos) -> DurationNanos {
    let magnitude = d.unsigned_abs();
    let second = SECOND.unsigned_abs();
    let below = magnitude - magnitude % second;
    let rounded = if magnitude % second >= second / 2 {
        below.saturating_add(second)
    } else {
        below
    };
    let rounded = i64::try_from(rounded).unwrap_or(i64::MAX);
    if d < 0 {
        -rounded
    } else {
        rounded
    }
}

/// Go's `time.ParseDuration` (signed), with Go's error texts.
pub fn parse_duration(text: &str) -> Result<DurationNanos, String> {
    let (negative, magnitude_text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if magnitude_text.is_empty() || magnitude_text.starts_with(['-', '+']) {
        return Err(format!("time: invalid duration {text:?}"));
    }
    // The shared parser clamps negatives, so the sign is handled here and its error texts
    // are given the whole value back, as Go quotes it.
    let magnitude = goduration::parse(magnitude_text)
        .map_err(|error| error.replace(&format!("{magnitude_text:?}"), &format!("{text:?}")))?;
    let nanos = i64::try_from(magnitude.as_nanos())
        .map_err(|_| format!("time: invalid duration {text:?}"))?;
    Ok(if negative { -nanos } else { nanos })
}

/// Go's default `time.Time` formatting, used in one refusal text
/// (`2022-11-05 00:00:00 +0000 UTC`).
pub fn format_go_time(t: Nanos) -> String {
    let moment = utc(t);
    let mut fraction = String::new();
    if moment.nanosecond() != 0 {
        fraction = format!(".{:09}", moment.nanosecond());
        fraction.truncate(fraction.trim_end_matches('0').len());
    }
    format!(
        "{} {:02}:{:02}:{:02}{fraction} +0000 UTC",
        date_text(moment),
        moment.hour(),
        moment.minute(),
        moment.second()
    )
}

/// `t` as a UTC date-time; every i64 of nanoseconds is in the time crate's range.
fn utc(t: Nanos) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2022-11-05`.
fn date_text(moment: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        moment.year(),
        u8::from(moment.month()),
        moment.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Nanos = 1_667_606_400 * SECOND; // 2022-11-05T00:00:00Z

    #[test]
    fn times_print_with_three_truncated_digits() {
        assert_eq!(format_time(T0), "2022-11-05T00:00:00.000Z");
        assert_eq!(
            format_time(T0 + 10 * 60 * SECOND - 1),
            "2022-11-05T00:09:59.999Z"
        );
        assert_eq!(format_time(DISTANT_FUTURE), "2169-11-13T00:00:00.000Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_parse_in_every_rfc3339_form() {
        assert_eq!(parse_time("2022-11-05T00:00:00Z"), Ok(T0));
        assert_eq!(parse_time("2022-11-05T00:00:00.000Z"), Ok(T0));
        assert_eq!(parse_time("2022-11-05T00:00:00.000000001Z"), Ok(T0 + 1));
        assert_eq!(parse_time("2022-11-05T01:00:00+01:00"), Ok(T0));
        assert_eq!(parse_time("2022-11-04T23:00:00-01:00"), Ok(T0));
        assert_eq!(parse_time("2022-11-05T00:04:05"), Ok(T0 + 245 * SECOND));
        assert_eq!(
            parse_time("2022-11-05T00:04:05.5"),
            Ok(T0 + 245 * SECOND + SECOND / 2)
        );
    }

    #[test]
    fn times_refuse_a_space_and_garbage() {
        for bad in [
            "2022-11-05 00:00:00Z",
            "garbage",
            "",
            "2022-11-05",
            "2022-13-05T00:00:00Z",
        ] {
            let error = parse_time(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn times_beyond_nanosecond_range_say_so() {
        assert_eq!(
            parse_time("9999-01-01T00:00:00Z").unwrap_err(),
            "\"9999-01-01T00:00:00Z\" is outside the supported years 1678 to 2262"
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(3600 * SECOND), "1h0m0s");
        assert_eq!(format_duration(-300 * SECOND), "-5m0s");
        assert_eq!(format_duration(1500), "1.5µs");
        assert_eq!(format_duration(-1), "-1ns");
        assert_eq!(format_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn humanise_rounds_halves_away_from_zero() {
        assert_eq!(humanise(SECOND / 2), "1s");
        assert_eq!(humanise(SECOND / 2 - 1), "0s");
        assert_eq!(humanise(-SECOND / 2), "-1s");
        assert_eq!(humanise(-(SECOND / 2) + 1), "0s");
        assert_eq!(humanise(299 * SECOND + 999_999_999), "5m0s");
        assert_eq!(humanise(-300 * SECOND - 1), "-5m0s");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("1h30m"), Ok(5400 * SECOND));
        assert_eq!(parse_duration("-5m"), Ok(-300 * SECOND));
        assert_eq!(parse_duration("+2s"), Ok(2 * SECOND));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(
            parse_duration("-"),
            Err("time: invalid duration \"-\"".to_string())
        );
        assert_eq!(
            parse_duration("-5"),
            Err("time: missing unit in duration \"-5\"".to_string())
        );
        assert_eq!(
            parse_duration("5x"),
            Err("time: unknown unit \"x\" in duration \"5x\"".to_string())
        );
        assert_eq!(
            parse_duration(""),
            Err("time: invalid duration \"\"".to_string())
        );
    }

    #[test]
    fn go_time_format_trims_the_fraction() {
        assert_eq!(format_go_time(T0), "2022-11-05 00:00:00 +0000 UTC");
        assert_eq!(
            format_go_time(T0 + 11 * 60 * SECOND + 30 * SECOND + 1),
            "2022-11-05 00:11:30.000000001 +0000 UTC"
        );
        assert_eq!(
            format_go_time(T0 + SECOND / 2),
            "2022-11-05 00:00:00.5 +0000 UTC"
        );
    }
}
