//! Intervals, windows and availability (spec §3.1–§3.3).
//!
//! Deliberate difference from the reference (COMPATIBILITY): intervals are **half-open**,
//! `[start, end)`, so back-to-back bookings do not clash and a client can book from an
//! advertised gap start (§7 item 12). Gaps are therefore exact, with no ±1 ns edges.
//!
//! Owner: domain helper. Everything here is pure.

use serde::{Deserialize, Serialize};

use crate::timefmt::Nanos;

/// `[start, end)` in unix nanoseconds. On the wire: `{"end": "<time>", "start": "<time>"}`
/// with three fractional digits; any RFC 3339 form is accepted on input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
        todo!("domain: {:?}", serializer.is_human_readable())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        todo!("domain: {}", deserializer.is_human_readable())
    }
}

/// Sort and merge overlapping or touching intervals.
pub fn merge(intervals: &[Interval]) -> Vec<Interval> {
    todo!("domain: {}", intervals.len())
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
        todo!("domain: {} {}", allowed.len(), denied.len())
    }

    /// Whether `when` lies wholly inside the window.
    pub fn allows(&self, when: &Interval) -> bool {
        todo!("domain: {when:?}")
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
    todo!("domain: {} {filter:?} {now} {horizon}", busy.len())
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
