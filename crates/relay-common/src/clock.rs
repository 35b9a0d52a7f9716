//! The wall clock as unix seconds, the unit of JWT `exp`/`nbf`/`iat` and booking expiries,
//! and as unix nanoseconds, the unit of the monitor's timestamp frames.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock reads earlier, `i64::MAX` if it ever
/// overflows), so callers never handle a clock error.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Nanoseconds since the Unix epoch, with the same fallbacks as [`unix_now`].
pub fn unix_now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_plausible_present() {
        // 2020-01-01 .. 2200-01-01: the clock is read, not a constant or an error value.
        let now = unix_now();
        assert!((1_577_836_800..7_258_118_400).contains(&now), "{now}");
        let nanos = unix_now_nanos() / 1_000_000_000;
        assert!((now..now + 2).contains(&nanos), "{nanos} s against {now} s");
    }
}
