//! Go `time.ParseDuration`, with its error texts: playfiles (`[1h5.3m]`, `<'x',1,10s>`) and
//! stats reports (`"last":"2.90373838s"`) carry Go duration strings.

use std::time::Duration;

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

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
    let secs = (total_nanos / 1_000_000_000) as u64;
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
