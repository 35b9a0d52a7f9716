//! The booking API's time, duration and query parsing (relay-book `timefmt` and the
//! server's `QueryParams`).
//!
//! The input is a query string, read the way the server's `Query` extractor reads it;
//! every value is also tried as a time and a duration.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::Uri;
use relay_book::server::query::QueryParams;
use relay_book::timefmt::{
    format_duration, format_go_time, format_time, humanise, parse_duration, parse_time,
};

/// One millisecond in nanoseconds: API times print with three fractional digits.
const MILLI: i64 = 1_000_000;

/// Parses the input as a request's query and each value as a time and a duration; a
/// parsed time prints as a time that reads back truncated to the millisecond, and a
/// parsed duration prints as one that reads back exactly.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for value in text.split(['&', '=', '\n']) {
        check_time(value);
        check_duration(value);
    }
    let Ok(uri) = format!("/bookings?{}", text.trim()).parse::<Uri>() else {
        return;
    };
    let Ok(Query(map)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return;
    };
    for value in map.values() {
        check_time(value);
        check_duration(value);
    }
    let query = QueryParams(map);
    for name in ["from", "to", "at"] {
        if let Ok(t) = query.time(name) {
            assert!(query.required(name).is_ok());
            let _ = format_time(t);
        }
    }
    for name in ["offset", "limit"] {
        let _ = query.int(name);
        if let Ok(Some(n)) = query.count(name) {
            assert!(i64::try_from(n).is_ok());
        }
    }
    let _ = query.bool("delete_old");
    let _ = query.required("user_name");
}

fn check_time(value: &str) {
    let Ok(t) = parse_time(value) else {
        return;
    };
    let printed = format_time(t);
    let back = parse_time(&printed);
    assert_eq!(
        back,
        Ok(t - t.rem_euclid(MILLI)),
        "{value:?} read as {t}, printed as {printed:?}"
    );
    let _ = format_go_time(t);
}

fn check_duration(value: &str) {
    let Ok(d) = parse_duration(value) else {
        return;
    };
    let printed = format_duration(d);
    assert_eq!(
        parse_duration(&printed),
        Ok(d),
        "{value:?} read as {d} ns, printed as {printed:?}"
    );
    let _ = humanise(d);
}
