//! Intervals, windows and availability (spec §3.1–§3.3).
//!
//! Deliberate difference from the reference (COMPATIBILITY): intervals are **half-open**,
//! `[start, end)`, so back-to-back bookings do not clash and a client can book from an
//! advertised gap start (§7 item 12). Gaps are therefore exact, with no ±1 ns edges.
//!
//! Owner: domain helper. Everything here is pure.

use serde::{Deserialize, Serialize};

use crate::timefmt::{format_time, parse_time, Nanos, DISTANT_FUTURE};

/// `[start, end)` in unix nanoseconds. On the wire: `{"end": "<time>", "start": "<time>"}`
/// with three fractional digits; any RFC 3339 form is accepted on input.
/// The default (both ends at the epoch) is the "no interval" of a booking read without `when`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    /// First instant inside.
    pub start: Nanos,
    /// First instant after.
    pub end: Nanos,
}

impl Interval {
    /// Whether the two share any instant (half-open).
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// `end - start`.
    pub fn duration(&self) -> i64 {
        self.end - self.start
    }
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut fields = serializer.serialize_struct("Interval", 2)?;
        fields.serialize_field("end", &format_time(self.end))?;
        fields.serialize_field("start", &format_time(self.start))?;
        fields.end()
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The wire form: both times as text (serde_yaml hands unquoted timestamps over as
        /// strings too).
        #[derive(Deserialize)]
        struct Wire {
            start: String,
            end: String,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(Interval {
            start: parse_time(&wire.start).map_err(serde::de::Error::custom)?,
            end: parse_time(&wire.end).map_err(serde::de::Error::custom)?,
        })
    }
}

/// Sort and merge overlapping or touching intervals.
pub fn merge(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted = intervals.to_vec();
    sorted.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(sorted.len());
    for interval in sorted {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end => last.end = last.end.max(interval.end),
            _ => merged.push(interval),
        }
    }
    merged
}

/// The gaps between the merged `busy` intervals inside `[from, to)`: exact, since
/// intervals are half-open.
fn gaps(busy: &[Interval], from: Nanos, to: Nanos) -> Vec<Interval> {
    let mut free = Vec::new();
    let mut cursor = from;
    for taken in merge(busy) {
        if cursor >= to {
            break;
        }
        if taken.start > cursor {
            free.push(Interval {
                start: cursor,
                end: taken.start.min(to),
            });
        }
        cursor = cursor.max(taken.end);
    }
    if cursor < to {
        free.push(Interval {
            start: cursor,
            end: to,
        });
    }
    free
}

/// Refuse an interval that does not end after it starts (it would block or allow nothing).
fn check_ordered(kind: &str, intervals: &[Interval]) -> Result<(), String> {
    match intervals
        .iter()
        .find(|interval| interval.end <= interval.start)
    {
        Some(bad) => Err(format!(
            "{kind} interval from {} to {} does not end after it starts",
            format_time(bad.start),
            format_time(bad.end)
        )),
        None => Ok(()),
    }
}

/// A window (§3.2) compiled: the merged blocked periods (outside every allowed interval,
/// or inside a denied one). `allowed: []` blocks nothing but the denied periods.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Merged, sorted blocked periods.
    pub blocked: Vec<Interval>,
}

impl Filter {
    /// Compile a manifest window. Errors are the reference's `failed creating filter` cases.
    pub fn new(allowed: &[Interval], denied: &[Interval]) -> Result<Filter, String> {
        check_ordered("allowed", allowed)?;
        check_ordered("denied", denied)?;
        let mut blocked = if allowed.is_empty() {
            Vec::new()
        } else {
            gaps(allowed, 0, DISTANT_FUTURE)
        };
        blocked.extend_from_slice(denied);
        Ok(Filter {
            blocked: merge(&blocked),
        })
    }

    /// Whether `when` lies wholly inside the window.
    pub fn allows(&self, when: &Interval) -> bool {
        !self.blocked.iter().any(|blocked| blocked.overlaps(when))
    }
}

/// Free gaps of a resource for one slot (§3.3): `busy` (diary entries of the resource that
/// have not ended, any order) merged with the window's blocked list, inverted, clipped to
/// `[now, horizon]`. `horizon` is `now + book_ahead` if enforced, else [`crate::timefmt::DISTANT_FUTURE`].
pub fn availability(
    busy: &[Interval],
    filter: &Filter,
    now: Nanos,
    horizon: Nanos,
) -> Vec<Interval> {
    let mut taken = busy.to_vec();
    taken.extend_from_slice(&filter.blocked);
    gaps(&taken, now, horizon)
}

/// Bounded pagination (§7 item 13 fixed): `offset` past the end gives `[]`; `limit` 0 or
/// absent means all that is left. Negative values are refused by the caller (400).
pub fn page<T: Clone>(items: &[T], offset: usize, limit: Option<usize>) -> Vec<T> {
    let rest = items.get(offset..).unwrap_or(&[]);
    match limit {
        Some(limit) if limit > 0 => rest.iter().take(limit).cloned().collect(),
        _ => rest.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::SECOND;

    const MINUTE: i64 = 60 * SECOND;
    const T0: Nanos = 1_667_606_400 * SECOND; // 2022-11-05T00:00:00Z

    fn at(minutes: i64) -> Nanos {
        T0 + minutes * MINUTE
    }

    fn iv(start_minutes: i64, end_minutes: i64) -> Interval {
        Interval {
            start: at(start_minutes),
            end: at(end_minutes),
        }
    }

    #[test]
    fn half_open_overlap() {
        assert!(
            !iv(0, 10).overlaps(&iv(10, 20)),
            "back to back do not clash"
        );
        assert!(iv(0, 10).overlaps(&iv(9, 20)));
        assert!(iv(0, 10).overlaps(&iv(0, 10)), "identity clashes");
        assert!(iv(0, 10).overlaps(&iv(2, 3)), "nested clashes");
        assert_eq!(iv(0, 10).duration(), 10 * MINUTE);
    }

    #[test]
    fn merge_cases() {
        assert_eq!(merge(&[]), vec![]);
        assert_eq!(
            merge(&[iv(5, 6), iv(1, 2)]),
            vec![iv(1, 2), iv(5, 6)],
            "sorted"
        );
        assert_eq!(merge(&[iv(1, 3), iv(2, 5)]), vec![iv(1, 5)], "overlapping");
        assert_eq!(merge(&[iv(1, 3), iv(1, 5)]), vec![iv(1, 5)], "same start");
        assert_eq!(merge(&[iv(1, 10), iv(2, 3)]), vec![iv(1, 10)], "nested");
        assert_eq!(merge(&[iv(1, 2), iv(2, 3)]), vec![iv(1, 3)], "touching");
    }

    #[test]
    fn interval_json_is_end_first_with_three_digits() {
        let when = Interval {
            start: at(0),
            end: at(10) - 1,
        };
        assert_eq!(
            serde_json::to_string(&when).unwrap(),
            r#"{"end":"2022-11-05T00:09:59.999Z","start":"2022-11-05T00:00:00.000Z"}"#
        );
        let back: Interval = serde_json::from_str(
            r#"{"start":"2022-11-05T00:00:00Z","end":"2022-11-05T00:10:00.000000000Z"}"#,
        )
        .unwrap();
        assert_eq!(back, iv(0, 10));
    }

    #[test]
    fn interval_yaml_accepts_unquoted_timestamps() {
        let back: Interval =
            serde_yaml::from_str("{start: 2022-11-05T00:00:00Z, end: 2022-11-05T00:10:00}")
                .unwrap();
        assert_eq!(back, iv(0, 10));
        let error = serde_yaml::from_str::<Interval>("{start: 2022-11-05 00:00:00Z, end: x}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("2022-11-05 00:00:00Z"), "{error}");
    }

    #[test]
    fn filter_allows_inside_allowed_and_away_from_denied() {
        let filter = Filter::new(
            &[iv(0, 60), iv(120, 180), iv(50, 70)],
            &[iv(20, 30), iv(25, 35)],
        )
        .unwrap();
        assert_eq!(
            filter.blocked,
            vec![
                Interval {
                    start: 0,
                    end: at(0)
                },
                iv(20, 35),
                iv(70, 120),
                Interval {
                    start: at(180),
                    end: DISTANT_FUTURE
                }
            ]
        );
        assert!(
            filter.allows(&iv(0, 20)),
            "ends where the denied period starts"
        );
        assert!(
            filter.allows(&iv(35, 70)),
            "starts where the denied period ends; merged allowed"
        );
        assert!(filter.allows(&iv(120, 180)), "exactly an allowed period");
        assert!(!filter.allows(&iv(10, 21)), "touches denied");
        assert!(!filter.allows(&iv(60, 121)), "crosses a not-allowed gap");
        assert!(
            !filter.allows(&iv(-1, 5)),
            "starts before the first allowed period"
        );
        assert!(
            !filter.allows(&iv(179, 181)),
            "ends after the last allowed period"
        );
    }

    #[test]
    fn empty_allowed_blocks_only_denied() {
        let filter = Filter::new(&[], &[iv(10, 20)]).unwrap();
        assert_eq!(filter.blocked, vec![iv(10, 20)]);
        assert!(filter.allows(&iv(0, 10)));
        assert!(filter.allows(&iv(20, 1000)));
        assert!(!filter.allows(&iv(15, 16)));
        assert_eq!(Filter::new(&[], &[]).unwrap().blocked, vec![]);
    }

    #[test]
    fn filter_refuses_intervals_that_do_not_end_after_they_start() {
        assert_eq!(
            Filter::new(&[iv(10, 10)], &[]),
            Err("allowed interval from 2022-11-05T00:10:00.000Z to 2022-11-05T00:10:00.000Z does not end after it starts".into())
        );
        assert_eq!(
            Filter::new(&[iv(0, 10)], &[iv(5, 4)]),
            Err("denied interval from 2022-11-05T00:05:00.000Z to 2022-11-05T00:04:00.000Z does not end after it starts".into())
        );
    }

    #[test]
    fn availability_gaps_around_two_bookings_are_exact() {
        let open = Filter::new(&[], &[]).unwrap();
        let busy = [iv(20, 30), iv(5, 10)];
        let free = availability(&busy, &open, at(0), DISTANT_FUTURE);
        assert_eq!(
            free,
            vec![
                iv(0, 5),
                iv(10, 20),
                Interval {
                    start: at(30),
                    end: DISTANT_FUTURE
                }
            ]
        );
        // The middle gap, taken whole, clashes with neither booking.
        assert!(busy.iter().all(|taken| !taken.overlaps(&free[1])));
    }

    #[test]
    fn availability_with_nothing_busy_is_now_to_horizon() {
        let open = Filter::new(&[], &[]).unwrap();
        assert_eq!(availability(&[], &open, at(0), at(60)), vec![iv(0, 60)]);
    }

    #[test]
    fn availability_is_clipped_to_the_window_end_without_book_ahead() {
        let window = Filter::new(&[iv(-60, 120)], &[]).unwrap();
        assert_eq!(
            availability(&[], &window, at(0), DISTANT_FUTURE),
            vec![iv(0, 120)]
        );
    }

    #[test]
    fn availability_is_clipped_to_book_ahead() {
        let window = Filter::new(&[iv(-60, 1000)], &[]).unwrap();
        assert_eq!(
            availability(&[iv(-5, 1)], &window, at(0), at(120)),
            vec![iv(1, 120)]
        );
        assert_eq!(availability(&[], &window, at(0), at(120)), vec![iv(0, 120)]);
    }

    #[test]
    fn availability_of_windows_all_in_the_past_is_empty() {
        let window = Filter::new(&[iv(-600, -300), iv(-200, -1)], &[]).unwrap();
        assert_eq!(availability(&[], &window, at(0), DISTANT_FUTURE), vec![]);
        assert_eq!(availability(&[], &window, at(0), at(120)), vec![]);
    }

    #[test]
    fn availability_drops_past_busy_and_gaps_beyond_the_horizon() {
        let open = Filter::new(&[], &[iv(200, 300)]).unwrap();
        let free = availability(&[iv(-30, -20), iv(50, 60)], &open, at(0), at(100));
        assert_eq!(free, vec![iv(0, 50), iv(60, 100)]);
    }

    #[test]
    fn pages_are_bounded() {
        let items = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(page(&items, 0, Some(3)), vec![1, 2, 3]);
        assert_eq!(page(&items, 6, Some(3)), vec![7, 8, 9]);
        assert_eq!(page(&items, 8, Some(3)), vec![9]);
        assert_eq!(page(&items, 20, Some(3)), Vec::<i32>::new());
        assert_eq!(page(&items, 3, None), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(page(&items, 3, Some(0)), vec![4, 5, 6, 7, 8, 9]);
    }
}
