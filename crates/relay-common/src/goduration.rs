//! Go's `time.Duration` text, both ways: [`format()`] prints like `Duration.String()`
//! (`850ms`, `1m30s`, `1h0m0s`), and [`parse`] reads like `time.ParseDuration`, with Go's
//! error texts. The reference is written in Go, so its messages, stats reports
//! (`"last":"2.90373838s"`), playfiles (`[1h5.3m]`) and settings carry these strings.
//! [`parse_setting`] is the one parser for duration flags and environment variables, and
//! [`check_setting`] the one start-up check of their range.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Go's unit names and their length in nanoseconds (both spellings of the micro sign).
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
];

/// Format exactly like Go's `time.Duration.String`: `0s`, `5ns`, `1.5µs`, `850ms`,
/// `2.90373838s`, `1m2.5s`, `1h0m0s`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < NANOS_PER_SEC {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let seconds = decimal(
        u128::from(s) * NANOS_PER_SEC + u128::from(d.subsec_nanos()),
        NANOS_PER_SEC,
    );
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` as a decimal with trailing zeros trimmed.
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Parse a Go duration such as `300ms`, `1.5h` or `2h45m`; `0` alone is allowed.
/// Negative durations are clamped to zero (every caller treats them as "now").
pub fn parse(text: &str) -> Result<Duration, String> {
    let quoted = format!("{text:?}");
    let invalid = || format!("time: invalid duration {quoted}");
    let mut rest = text;
    let mut negative = false;
    if let Some(stripped) = rest.strip_prefix('-') {
        negative = true;
        rest = stripped;
    } else if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let integer_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (integer, after) = rest.split_at(integer_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(len)
            }
            None => ("", after),
        };
        if integer.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {quoted}"));
        }
        let Some(scale) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, s)| *s)
        else {
            return Err(format!("time: unknown unit {unit:?} in duration {quoted}"));
        };
        let whole: u128 = if integer.is_empty() {
            0
        } else {
            integer.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(scale).ok_or_else(invalid)?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * place;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(invalid)?;
        if total_nanos > i64::MAX as u128 {
            return Err(invalid());
        }
        rest = after;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    let secs = (total_nanos / NANOS_PER_SEC) as u64;
    let sub = (total_nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

/// Parse a duration setting (a flag or an environment variable): Go's syntax first
/// (`0`, `1m30s`, `1.5h`, `500ms`), as the reference's settings are written, then
/// humantime's longer forms (`5 min`, `1h 30m`, `2days`). Surrounding blanks are ignored.
/// The error names the value and shows examples, for a person reading a start-up failure.
pub fn parse_setting(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    parse(trimmed).or_else(|go_error| {
        humantime::parse_duration(trimmed)
            .map_err(|_| format!("{go_error} (use e.g. 500ms, 5s, 1m30s, 1h30m)"))
    })
}

/// Longest duration any setting may have: one year. Far beyond any sensible timeout or
/// period, and far below where `Instant + duration` overflows (which panics).
pub const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whether zero is a meaningful value of a duration setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// Zero means something (off, no wait, "as often as allowed").
    Allowed,
    /// Zero is meaningless or harmful (a zero period panics, a zero timeout closes
    /// everything at once): refuse it.
    Refused,
}

/// Check a duration setting once at start-up: at most [`MAX_SETTING`], and not zero when
/// `zero` is [`Zero::Refused`]. `name` says how a person sets it, e.g.
/// `RELAY_PING_INTERVAL (--ping-interval)`; the error starts with it.
pub fn check_setting(name: &str, value: Duration, zero: Zero) -> Result<Duration, String> {
    if zero == Zero::Refused && value.is_zero() {
        return Err(format!(
            "{name} must be more than 0 (use e.g. 500ms, 5s, 1m30s)"
        ));
    }
    if value > MAX_SETTING {
        return Err(format!(
            "{name} is {}; it must be at most 1 year ({})",
            format(value),
            format(MAX_SETTING)
        ));
    }
    Ok(value)
}

/// [`check_setting`] for each `(name, value, zero)`: one error message per bad setting, in
/// order; empty when all are fine.
pub fn check_settings(settings: &[(&str, Duration, Zero)]) -> Vec<String> {
    settings
        .iter()
        .filter_map(|&(name, value, zero)| check_setting(name, value, zero).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_nanos(2_903_738_380), "2.90373838s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(62_500), "1m2.5s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want, "{d:?}");
        }
    }

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10ms", Duration::from_millis(10)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            (
                "0.3h1.5m0.1s",
                Duration::from_millis((19 * 60 + 30) * 1000 + 100),
            ),
            ("2.90373838s", Duration::from_nanos(2_903_738_380)),
            ("1m2.5s", Duration::from_millis(62_500)),
            ("850ms", Duration::from_millis(850)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("7ns", Duration::from_nanos(7)),
            ("8760h", Duration::from_secs(8760 * 3600)),
            ("-1s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn reports_errors_with_go_texts() {
        let cases = [
            ("", "time: invalid duration \"\""),
            ("5", "time: missing unit in duration \"5\""),
            ("0.1", "time: missing unit in duration \"0.1\""),
            ("10x", "time: unknown unit \"x\" in duration \"10x\""),
            ("s", "time: invalid duration \"s\""),
            (".s", "time: invalid duration \".s\""),
            ("99999999999h", "time: invalid duration \"99999999999h\""),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Err(expected.to_string()), "{text}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for nanos in [1, 999, 1_500, 850_000_000, 2_903_738_380, 62_500_000_000] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse(&format(d)), Ok(d), "{d:?}");
        }
        let hour = Duration::from_secs(3723);
        assert_eq!(parse(&format(hour)), Ok(hour));
    }

    /// Every form the CLI's three former parsers accepted: Go's (`relay http`, the client
    /// file interval) and humantime's (`relay serve`, `relay http`).
    #[test]
    fn settings_accept_go_and_humantime_forms() {
        let cases: &[(&str, Duration)] = &[
            ("1m0s", Duration::from_secs(60)),
            ("30m", Duration::from_secs(1800)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("54s", Duration::from_secs(54)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1.5h", Duration::from_secs(5400)),
            ("-1s", Duration::ZERO),
            (" 10s ", Duration::from_secs(10)),
            ("5 min", Duration::from_secs(300)),
            ("1h 30m", Duration::from_secs(5400)),
            ("2days", Duration::from_secs(2 * 86_400)),
            ("1m 0s", Duration::from_secs(60)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_setting(text), Ok(*expected), "{text:?}");
        }
    }

    #[test]
    fn settings_reject_junk_with_examples() {
        assert_eq!(
            parse_setting("soon"),
            Err("time: invalid duration \"soon\" (use e.g. 500ms, 5s, 1m30s, 1h30m)".into())
        );
        assert!(parse_setting("").is_err());
        assert!(parse_setting("5").is_err());
    }

    #[test]
    fn settings_are_checked_for_zero_and_overflow() {
        let name = "RELAY_PING_INTERVAL (--ping-interval)";
        let second = Duration::from_secs(1);
        assert_eq!(check_setting(name, second, Zero::Refused), Ok(second));
        assert_eq!(
            check_setting(name, MAX_SETTING, Zero::Refused),
            Ok(MAX_SETTING)
        );
        assert_eq!(
            check_setting(name, Duration::ZERO, Zero::Allowed),
            Ok(Duration::ZERO)
        );
        let zero = check_setting(name, Duration::ZERO, Zero::Refused).unwrap_err();
        assert!(zero.starts_with(name), "{zero}");
        assert!(zero.contains("more than 0"), "{zero}");
        let huge = parse_setting("1000000h").unwrap();
        let too_long = check_setting(name, huge, Zero::Allowed).unwrap_err();
        assert!(too_long.starts_with(name), "{too_long}");
        assert!(too_long.contains("at most 1 year"), "{too_long}");
        let just_over = MAX_SETTING + Duration::from_nanos(1);
        assert!(check_setting(name, just_over, Zero::Allowed).is_err());
        let all = check_settings(&[
            ("A", Duration::ZERO, Zero::Refused),
            ("B", second, Zero::Refused),
            ("C", huge, Zero::Allowed),
        ]);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].starts_with("A must be more than 0"), "{all:?}");
        assert!(all[1].starts_with("C is 1000000h0m0s"), "{all:?}");
        // Whatever passes can be added to a monotonic instant without a panic.
        assert!(std::time::Instant::now().checked_add(MAX_SETTING).is_some());
    }
}
