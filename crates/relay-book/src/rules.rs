//! The booking rules (spec §3.4, §3.5), as pure functions over facts the store gathers in
//! its transaction. The check order and message texts are the reference's, because booking
//! front ends show them to students. The store adds nothing but the facts and the write.
//!
//! Owner: domain helper.

use std::collections::BTreeMap;

use crate::interval::{availability, Filter, Interval};
use crate::manifest::{Manifest, Policy};
use crate::model::{Booking, ResourceState};
use crate::timefmt::{format_go_time, humanise, DurationNanos, Nanos, DISTANT_FUTURE};

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
    let manifest = facts.manifest;
    let when = facts.when;
    let now = facts.now;
    let slot = manifest
        .slots
        .get(facts.slot)
        .ok_or_else(|| format!("slot {} not found", facts.slot))?;
    let policy_name = &slot.policy;
    let policy = manifest
        .policies
        .get(policy_name)
        .ok_or_else(|| format!("policy {policy_name} not found"))?;
    if !policy.slots.iter().flatten().any(|name| name == facts.slot) {
        return Err(format!("slot {} not in policy {policy_name}", facts.slot));
    }
    if !manifest.resources.contains_key(&slot.resource) {
        return Err(format!("resource {} not found", slot.resource));
    }
    if when.end <= when.start {
        return Err("booking must end after it starts".into());
    }
    check_group(manifest, &facts.group_check, facts.user, policy_name)?;

    if policy.enforce_max_bookings && facts.current_under_policy >= policy.max_bookings {
        return Err(format!(
            "you currently have {} current/future bookings which is at or exceeds the limit of {} for policy {policy_name}",
            facts.current_under_policy, policy.max_bookings
        ));
    }
    let filter = facts
        .filters
        .get(&slot.window)
        .ok_or_else(|| format!("window filter {} not found", slot.window))?;
    if !filter.allows(&when) {
        return Err("bookings cannot be made outside the window for the slot".into());
    }
    if policy.enforce_book_ahead && when.end > now.saturating_add(policy.book_ahead.0) {
        return Err(format!(
            "bookings cannot be made more than {} ahead of the current time",
            humanise(policy.book_ahead.0)
        ));
    }
    check_start_in_past(policy, when.start, now)?;
    if policy.enforce_starts_within && when.start > now.saturating_add(policy.starts_within.0) {
        return Err(format!(
            "booking cannot start more than {} in the future",
            humanise(policy.starts_within.0)
        ));
    }
    if policy.enforce_next_available {
        check_next_available(facts, policy, filter)?;
    }

    let duration = when.duration();
    check_durations(policy, facts.usage, duration)?;
    if !policy.enforce_unlimited_users {
        check_diary(facts)?;
    }
    Ok(Accepted {
        policy: policy_name.clone(),
        resource: slot.resource.clone(),
        exclusive: !policy.enforce_unlimited_users,
        grace_check_at: policy
            .enforce_grace_period
            .then(|| when.start.saturating_add(policy.grace_period.0)),
        charge: duration,
    })
}

/// Row 5: a user booking needs a group that includes the policy (unknown groups count as
/// empty).
fn check_group(
    manifest: &Manifest,
    group_check: &GroupCheck,
    user: &str,
    policy_name: &str,
) -> Result<(), String> {
    let groups = match group_check {
        GroupCheck::Off => return Ok(()),
        GroupCheck::On(None) => return Err(format!("user {user} not found")),
        GroupCheck::On(Some(groups)) => groups,
    };
    let included = groups
        .iter()
        .filter_map(|group| manifest.groups.get(group))
        .any(|group| group.policies.iter().any(|policy| policy == policy_name));
    if included {
        Ok(())
    } else {
        Err(format!(
            "user {user} belongs to no group that includes this policy"
        ))
    }
}

/// Row 9: the start may lie in the past only as far as `allow_start_in_past_within`.
fn check_start_in_past(policy: &Policy, start: Nanos, now: Nanos) -> Result<(), String> {
    if policy.enforce_allow_start_in_past {
        let allowance = policy.allow_start_in_past_within.0;
        if start < now.saturating_sub(allowance) {
            return Err(format!(
                "booking cannot start more than {} in the past",
                humanise(allowance)
            ));
        }
    } else if start < now {
        return Err(format!(
            "booking cannot start in the past (start: {}, now:{})",
            format_go_time(start),
            format_go_time(now)
        ));
    }
    Ok(())
}

/// Row 11: the start must be within `next_available` of the slot's first free instant.
fn check_next_available(
    facts: &BookingFacts,
    policy: &Policy,
    filter: &Filter,
) -> Result<(), String> {
    if let Some(refusal) = facts.resource_state.refusal() {
        return Err(format!(
            "enforcing next available policy setting failed because not available because {refusal}"
        ));
    }
    let horizon = if policy.enforce_book_ahead {
        facts.now.saturating_add(policy.book_ahead.0)
    } else {
        DISTANT_FUTURE
    };
    let free = availability(facts.busy, filter, facts.now, horizon);
    let first = free.first().ok_or_else(|| {
        "enforcing next available policy setting because availability list was empty".to_string()
    })?;
    let latest = first.start.saturating_add(policy.next_available.0);
    if facts.when.start > latest {
        return Err(format!(
            "due to next available policy setting, booking cannot start more than {} after the last booking ends, i.e. {}",
            humanise(policy.next_available.0),
            format_go_time(latest)
        ));
    }
    Ok(())
}

/// Rows 13–15: usage allowance, then minimum and maximum duration.
fn check_durations(
    policy: &Policy,
    usage: DurationNanos,
    duration: DurationNanos,
) -> Result<(), String> {
    if policy.enforce_max_usage && usage.saturating_add(duration) > policy.max_usage.0 {
        return Err(format!(
            "requested duration of {} exceeds remaining usage limit of {}",
            humanise(duration),
            humanise(policy.max_usage.0.saturating_sub(usage))
        ));
    }
    if policy.enforce_min_duration && duration < policy.min_duration.0 {
        return Err(format!(
            "requested duration of {} shorter than minimum permitted duration of {}",
            humanise(duration),
            humanise(policy.min_duration.0)
        ));
    }
    if policy.enforce_max_duration && duration > policy.max_duration.0 {
        return Err(format!(
            "requested duration of {} longer than maximum permitted duration of {}",
            humanise(duration),
            humanise(policy.max_duration.0)
        ));
    }
    Ok(())
}

/// Row 16: the resource's diary takes the booking (skipped for unlimited users).
fn check_diary(facts: &BookingFacts) -> Result<(), String> {
    if facts.name.is_empty() {
        return Err("must not have empty name".into());
    }
    if facts.name_in_use {
        return Err("name already in use".into());
    }
    if let Some(refusal) = facts.resource_state.refusal() {
        return Err(refusal);
    }
    if facts.busy.iter().any(|taken| taken.overlaps(&facts.when)) {
        return Err("conflict with existing".into());
    }
    Ok(())
}

/// Usage actually owed by a booking cancelled at `cancelled_at` (§3.5, `calculateUsage`).
/// `None` means not cancelled (the booking's own `cancelled` fields are not consulted).
pub fn charged_usage(
    booking: &Booking,
    policy: &crate::manifest::Policy,
    cancelled_at: Option<Nanos>,
) -> DurationNanos {
    let when = booking.when;
    let Some(cancelled_at) = cancelled_at else {
        return if booking.unfulfilled {
            0
        } else {
            when.duration()
        };
    };
    if cancelled_at < when.start {
        return 0;
    }
    if cancelled_at > when.end {
        return when.duration();
    }
    if policy.enforce_grace_period {
        if cancelled_at < when.start.saturating_add(policy.grace_period.0) {
            return policy.grace_period.0;
        }
        if !booking.started {
            return policy.grace_period.0.saturating_add(policy.grace_penalty.0);
        }
    }
    cancelled_at - when.start
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
    if now < booking.when.start {
        return Err("too early".into());
    }
    // Half-open: the booking's end is the first instant outside it.
    if now >= booking.when.end {
        return Err("too late".into());
    }
    if booking.cancelled {
        return Err("cancelled".into());
    }
    match resource_state.refusal() {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}
