//! The booking rules (spec §3.4, §3.5), as pure functions over facts the store gathers in
//! its transaction. The check order and message texts are the reference's, because booking
//! front ends show them to students. The store adds nothing but the facts and the write.
//!
//! Owner: domain helper.

use std::collections::BTreeMap;

use crate::interval::{Filter, Interval};
use crate::manifest::Manifest;
use crate::model::{Booking, ResourceState};
use crate::timefmt::{DurationNanos, Nanos};

/// Everything the check of one booking request needs, gathered by the store inside the
/// transaction that will write the booking.
#[derive(Debug)]
pub struct BookingFacts<'a> {
    pub manifest: &'a Manifest,
    /// Compiled windows by name.
    pub filters: &'a BTreeMap<String, Filter>,
    pub slot: &'a str,
    pub user: &'a str,
    pub when: Interval,
    pub now: Nanos,
    /// `Some(groups)` for user bookings (group check on): `None` inside means the user does
    /// not exist. `GroupCheck::Off` for admin import (missing users are created).
    pub group_check: GroupCheck,
    /// The user's current bookings (not ended, not cancelled) under the slot's policy.
    pub current_under_policy: i64,
    /// The user's usage under the slot's policy (0 when never booked).
    pub usage: DurationNanos,
    /// Diary entries of the slot's resource that end after `now` (for next-available and
    /// the conflict check).
    pub busy: &'a [Interval],
    /// The resource's runtime state.
    pub resource_state: &'a ResourceState,
    /// Whether a booking with this name already exists (current).
    pub name_in_use: bool,
    /// The booking name (empty is refused).
    pub name: &'a str,
}

/// The group check of §3.4 row 5.
#[derive(Debug, Clone)]
pub enum GroupCheck {
    /// User booking: the user's groups, or `None` if the user does not exist.
    On(Option<Vec<String>>),
    /// Admin import.
    Off,
}

/// What an accepted request becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub policy: String,
    pub resource: String,
    /// False for `enforce_unlimited_users`: no diary entry.
    pub exclusive: bool,
    /// Start + grace when the policy enforces a grace period.
    pub grace_check_at: Option<Nanos>,
    /// Charged to usage now (the full duration).
    pub charge: DurationNanos,
}

/// Run checks 1–16 of §3.4 in order; the first failure's message (without the
/// `could not make the booking because ` prefix) is the error. Also refuses `end <= start`
/// (§7 item 11) right after the slot lookups, with `booking must end after it starts`.
pub fn check_booking(facts: &BookingFacts) -> Result<Accepted, String> {
    todo!("domain: {facts:?}")
}

/// Usage actually owed by a booking cancelled at `cancelled_at` (§3.5, `calculateUsage`).
pub fn charged_usage(
    booking: &Booking,
    policy: &crate::manifest::Policy,
    cancelled_at: Option<Nanos>,
) -> DurationNanos {
    todo!("domain: {booking:?} {policy:?} {cancelled_at:?}")
}

/// Refund on cancellation: `(end - start) - charged` (may be negative).
pub fn refund(
    booking: &Booking,
    policy: &crate::manifest::Policy,
    cancelled_at: Nanos,
) -> DurationNanos {
    booking.when.duration() - charged_usage(booking, policy, Some(cancelled_at))
}

/// Checks of §3.8 for an activity request, in order: `too early`, `too late`, `cancelled`,
/// `unavailable because <reason>` / `unavailable`.
pub fn check_activity(
    booking: &Booking,
    resource_state: &ResourceState,
    now: Nanos,
) -> Result<(), String> {
    todo!("domain: {booking:?} {resource_state:?} {now}")
}
