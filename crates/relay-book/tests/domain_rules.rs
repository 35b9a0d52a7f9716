//! The booking rules of spec §3.4, §3.5 and §3.8 driven through a tiny in-memory stand-in
//! for the store: it gathers the facts `check_booking` needs, applies accepted bookings
//! (diary, usage) and refunds cancellations, the way the real store does in its transaction.
//! Sequences follow the reference's store tests, adapted to half-open intervals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::BTreeMap;

use relay_book::interval::{Filter, Interval};
use relay_book::manifest::{GoDuration, Manifest, Policy};
use relay_book::model::{Booking, ResourceState};
use relay_book::rules::{
    charged_usage, check_activity, check_booking, refund, Accepted, BookingFacts, GroupCheck,
};
use relay_book::timefmt::{parse_time, Nanos, SECOND};

const MINUTE: i64 = 60 * SECOND;

const MANIFEST: &str = r#"
descriptions:
  d: {name: any, type: any, short: any}
groups:
  g-a: {description: d, policies: [p-a]}
  g-b: {description: d, policies: [p-b]}
  g-modes: {description: d, policies: [p-instant, p-start-in-past, p-starts-within, p-next-available, p-simulation]}
policies:
  p-a: {description: d, slots: [sl-a]}
  p-b:
    description: d
    slots: [sl-b]
    enforce_book_ahead: true
    book_ahead: 2h
    enforce_max_bookings: true
    max_bookings: 2
    enforce_max_duration: true
    max_duration: 10m
    enforce_min_duration: true
    min_duration: 5m
    enforce_max_usage: true
    max_usage: 30m
  p-instant: {description: d, slots: [sl-instant]}
  p-start-in-past:
    description: d
    slots: [sl-start-in-past]
    enforce_allow_start_in_past: true
    allow_start_in_past_within: 1m
  p-starts-within:
    description: d
    slots: [sl-starts-within]
    enforce_allow_start_in_past: true
    allow_start_in_past_within: 1m
    enforce_starts_within: true
    starts_within: 1m
  p-next-available:
    description: d
    slots: [sl-next-available]
    enforce_book_ahead: true
    book_ahead: 2h
    enforce_next_available: true
    next_available: 1m
  p-simulation: {description: d, slots: [sl-simulation], enforce_unlimited_users: true}
  p-orphan: {description: d, slots: []}
resources:
  r-a: {description: d, streams: [], topic_stub: aaaa00}
  r-b: {description: d, streams: [], topic_stub: bbbb00}
  r-c: {description: d, streams: [], topic_stub: cccc00}
  r-d: {description: d, streams: [], topic_stub: dddd00}
  r-e: {description: d, streams: [], topic_stub: eeee00}
  r-sim: {description: d, streams: [], topic_stub: sim}
slots:
  sl-a: {description: d, policy: p-a, resource: r-a, ui_set: us, window: w-a}
  sl-b: {description: d, policy: p-b, resource: r-b, ui_set: us, window: w-open}
  sl-instant: {description: d, policy: p-instant, resource: r-c, ui_set: us, window: w-open}
  sl-start-in-past: {description: d, policy: p-start-in-past, resource: r-c, ui_set: us, window: w-open}
  sl-starts-within: {description: d, policy: p-starts-within, resource: r-d, ui_set: us, window: w-open}
  sl-next-available: {description: d, policy: p-next-available, resource: r-e, ui_set: us, window: w-open}
  sl-simulation: {description: d, policy: p-simulation, resource: r-sim, ui_set: us, window: w-open}
  sl-orphan: {description: d, policy: p-orphan, resource: r-a, ui_set: us, window: w-open}
ui_sets:
  us: {uis: []}
windows:
  w-a:
    allowed: [{start: 2022-11-05T00:00:00Z, end: 2022-11-06T00:00:00Z}]
  w-open:
    allowed: []
"#;

fn t(text: &str) -> Nanos {
    parse_time(text).unwrap()
}

fn when(start: &str, end: &str) -> Interval {
    Interval {
        start: t(start),
        end: t(end),
    }
}

/// The facts and effects of the store, in memory.
struct Sim {
    manifest: Manifest,
    filters: BTreeMap<String, Filter>,
    now: Nanos,
    groups: BTreeMap<String, Vec<String>>,
    bookings: Vec<Booking>,
    usage: BTreeMap<(String, String), i64>,
    states: BTreeMap<String, ResourceState>,
    next_name: usize,
}

impl Sim {
    fn new(now: &str) -> Sim {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        manifest.check().unwrap();
        let filters = manifest.filters().unwrap();
        Sim {
            manifest,
            filters,
            now: t(now),
            groups: BTreeMap::new(),
            bookings: Vec::new(),
            usage: BTreeMap::new(),
            states: BTreeMap::new(),
            next_name: 0,
        }
    }

    fn join(&mut self, user: &str, group: &str) {
        self.groups
            .entry(user.into())
            .or_default()
            .push(group.into());
    }

    fn set_now(&mut self, now: &str) {
        self.now = t(now);
    }

    fn state(&self, resource: &str) -> ResourceState {
        self.states.get(resource).cloned().unwrap_or(ResourceState {
            available: true,
            reason: "Loaded at 2022-11-05T00:00:00Z".into(),
        })
    }

    /// Make a user booking (group check on), applying it when accepted.
    fn book(&mut self, slot: &str, user: &str, interval: Interval) -> Result<Accepted, String> {
        let group_check = GroupCheck::On(self.groups.get(user).cloned());
        self.book_with(slot, user, interval, group_check)
    }

    fn book_with(
        &mut self,
        slot: &str,
        user: &str,
        interval: Interval,
        group_check: GroupCheck,
    ) -> Result<Accepted, String> {
        let (policy, resource) = self
            .manifest
            .slots
            .get(slot)
            .map(|s| (s.policy.clone(), s.resource.clone()))
            .unwrap_or_default();
        let live = |b: &&Booking| !b.cancelled && b.when.end > self.now;
        let current_under_policy = self
            .bookings
            .iter()
            .filter(live)
            .filter(|b| b.user == user && b.policy == policy)
            .count() as i64;
        let busy: Vec<Interval> = self
            .bookings
            .iter()
            .filter(live)
            .filter(|b| self.exclusive_on(b, &resource))
            .map(|b| b.when)
            .collect();
        let name = format!("bk-{}", self.next_name);
        let state = self.state(&resource);
        let facts = BookingFacts {
            manifest: &self.manifest,
            filters: &self.filters,
            slot,
            user,
            when: interval,
            now: self.now,
            group_check,
            current_under_policy,
            usage: self
                .usage
                .get(&(user.to_string(), policy.clone()))
                .copied()
                .unwrap_or(0),
            busy: &busy,
            resource_state: &state,
            name_in_use: false,
            name: &name,
        };
        let accepted = check_booking(&facts)?;
        self.next_name += 1;
        *self
            .usage
            .entry((user.into(), accepted.policy.clone()))
            .or_default() += accepted.charge;
        self.bookings.push(Booking {
            name,
            policy: accepted.policy.clone(),
            slot: slot.into(),
            user: user.into(),
            when: interval,
            ..Booking::default()
        });
        Ok(accepted)
    }

    fn exclusive_on(&self, booking: &Booking, resource: &str) -> bool {
        let slot = &self.manifest.slots[&booking.slot];
        slot.resource == resource && !self.manifest.policies[&slot.policy].enforce_unlimited_users
    }

    fn cancel(&mut self, name: &str) {
        let now = self.now;
        let index = self.bookings.iter().position(|b| b.name == name).unwrap();
        let policy = self.manifest.policies[&self.bookings[index].policy].clone();
        let booking = &mut self.bookings[index];
        let back = refund(booking, &policy, now);
        booking.cancelled = true;
        booking.cancelled_at = Some(now);
        *self
            .usage
            .get_mut(&(booking.user.clone(), booking.policy.clone()))
            .unwrap() -= back;
    }

    /// The name of the booking made last.
    fn last_name(&self) -> String {
        self.bookings.last().unwrap().name.clone()
    }
}

#[test]
fn policy_checks_in_sequence() {
    let mut sim = Sim::new("2022-11-05T01:00:00Z");
    sim.join("test", "g-a");
    assert_eq!(
        sim.book(
            "sl-a",
            "test",
            when("2022-11-20T02:00:00Z", "2022-11-20T02:10:00Z")
        ),
        Err("bookings cannot be made outside the window for the slot".into())
    );

    sim.join("test", "g-b");
    assert_eq!(
        sim.book(
            "sl-b",
            "test",
            when("2022-11-05T12:00:00Z", "2022-11-05T12:10:00Z")
        ),
        Err("bookings cannot be made more than 2h0m0s ahead of the current time".into())
    );
    sim.book(
        "sl-b",
        "test",
        when("2022-11-05T02:00:00Z", "2022-11-05T02:10:00Z"),
    )
    .unwrap();
    // Back to back: half-open intervals do not clash.
    sim.book(
        "sl-b",
        "test",
        when("2022-11-05T02:10:00Z", "2022-11-05T02:20:00Z"),
    )
    .unwrap();
    assert_eq!(
        sim.book("sl-b", "test", when("2022-11-05T02:20:00Z", "2022-11-05T02:30:00Z")),
        Err("you currently have 2 current/future bookings which is at or exceeds the limit of 2 for policy p-b".into())
    );

    sim.set_now("2022-11-05T03:00:00Z");
    sim.book(
        "sl-b",
        "test",
        when("2022-11-05T03:10:00Z", "2022-11-05T03:20:00Z"),
    )
    .unwrap();
    assert_eq!(
        sim.book(
            "sl-b",
            "test",
            when("2022-11-05T03:30:00Z", "2022-11-05T03:40:00Z")
        ),
        Err("requested duration of 10m0s exceeds remaining usage limit of 0s".into())
    );

    sim.join("bar", "g-b");
    sim.book(
        "sl-b",
        "bar",
        when("2022-11-05T03:30:00Z", "2022-11-05T03:36:00Z"),
    )
    .unwrap();
    assert_eq!(
        sim.book(
            "sl-b",
            "bar",
            when("2022-11-05T03:37:00Z", "2022-11-05T03:38:00Z")
        ),
        Err("requested duration of 1m0s shorter than minimum permitted duration of 5m0s".into())
    );
    assert_eq!(
        sim.book(
            "sl-b",
            "bar",
            when("2022-11-05T03:40:00Z", "2022-11-05T03:55:00Z")
        ),
        Err("requested duration of 15m0s longer than maximum permitted duration of 10m0s".into())
    );
    sim.book(
        "sl-b",
        "bar",
        when("2022-11-05T03:40:00Z", "2022-11-05T03:50:00Z"),
    )
    .unwrap();

    sim.set_now("2022-11-05T04:00:00Z");
    sim.book(
        "sl-b",
        "bar",
        when("2022-11-05T04:10:00Z", "2022-11-05T04:20:00Z"),
    )
    .unwrap();
    let cancel_me = sim.last_name();
    let later = when("2022-11-05T04:30:00Z", "2022-11-05T04:40:00Z");
    assert_eq!(
        sim.book("sl-b", "bar", later),
        Err("requested duration of 10m0s exceeds remaining usage limit of 4m0s".into())
    );
    // Cancelling a future booking refunds it in full.
    sim.cancel(&cancel_me);
    sim.book("sl-b", "bar", later).unwrap();
}

#[test]
fn lookups_come_first_then_the_order_check_then_groups() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    let slot_time = when("2022-11-05T01:00:00Z", "2022-11-05T01:10:00Z");
    assert_eq!(
        sim.book("sl-x", "u", slot_time),
        Err("slot sl-x not found".into())
    );
    // Dangling references, as after a manifest the check would refuse.
    let slots = &mut sim.manifest.slots;
    let mut lost_policy = slots["sl-a"].clone();
    lost_policy.policy = "p-gone".into();
    slots.insert("sl-lost-policy".into(), lost_policy);
    let mut lost_resource = slots["sl-a"].clone();
    lost_resource.resource = "r-gone".into();
    slots.insert("sl-lost-resource".into(), lost_resource);
    assert_eq!(
        sim.book("sl-lost-policy", "u", slot_time),
        Err("policy p-gone not found".into())
    );
    assert_eq!(
        sim.book("sl-orphan", "u", slot_time),
        Err("slot sl-orphan not in policy p-orphan".into())
    );
    assert_eq!(
        sim.book("sl-lost-resource", "u", slot_time),
        Err("slot sl-lost-resource not in policy p-a".into())
    );
    sim.manifest
        .policies
        .get_mut("p-a")
        .unwrap()
        .slots
        .as_mut()
        .unwrap()
        .push("sl-lost-resource".into());
    assert_eq!(
        sim.book("sl-lost-resource", "u", slot_time),
        Err("resource r-gone not found".into())
    );

    let reversed = Interval {
        start: slot_time.end,
        end: slot_time.start,
    };
    let empty = Interval {
        start: slot_time.start,
        end: slot_time.start,
    };
    for bad in [reversed, empty] {
        assert_eq!(
            sim.book("sl-a", "nobody", bad),
            Err("booking must end after it starts".into())
        );
    }

    assert_eq!(
        sim.book("sl-a", "nobody", slot_time),
        Err("user nobody not found".into())
    );
    sim.join("u", "g-b");
    sim.join("u", "g-unknown");
    assert_eq!(
        sim.book("sl-a", "u", slot_time),
        Err("user u belongs to no group that includes this policy".into())
    );
    sim.join("u", "g-a");
    let accepted = sim.book("sl-a", "u", slot_time).unwrap();
    assert_eq!(
        accepted,
        Accepted {
            policy: "p-a".into(),
            resource: "r-a".into(),
            exclusive: true,
            grace_check_at: None,
            charge: 10 * MINUTE,
        }
    );
    // Admin import: no group check, even for a user nobody knows.
    let import = when("2022-11-05T02:00:00Z", "2022-11-05T02:10:00Z");
    assert!(sim
        .book_with("sl-a", "stranger", import, GroupCheck::Off)
        .is_ok());
}

#[test]
fn the_diary_refuses_in_the_reference_order() {
    let sim = Sim::new("2022-11-05T00:00:00Z");
    let busy = [when("2022-11-05T01:00:00Z", "2022-11-05T01:10:00Z")];
    let available = sim.state("r-a");
    let offline = ResourceState {
        available: false,
        reason: "foo".into(),
    };
    let silent = ResourceState {
        available: false,
        reason: String::new(),
    };
    let run = |name: &str, name_in_use: bool, state: &ResourceState, interval: Interval| {
        check_booking(&BookingFacts {
            manifest: &sim.manifest,
            filters: &sim.filters,
            slot: "sl-a",
            user: "u",
            when: interval,
            now: sim.now,
            group_check: GroupCheck::Off,
            current_under_policy: 0,
            usage: 0,
            busy: &busy,
            resource_state: state,
            name_in_use,
            name,
        })
    };
    let clash = when("2022-11-05T01:05:00Z", "2022-11-05T01:15:00Z");
    assert_eq!(
        run("", true, &offline, clash),
        Err("must not have empty name".into())
    );
    assert_eq!(
        run("bk", true, &offline, clash),
        Err("name already in use".into())
    );
    assert_eq!(
        run("bk", false, &offline, clash),
        Err("unavailable because foo".into())
    );
    assert_eq!(run("bk", false, &silent, clash), Err("unavailable".into()));
    assert_eq!(
        run("bk", false, &available, clash),
        Err("conflict with existing".into())
    );
    let before = when("2022-11-05T00:50:00Z", "2022-11-05T01:00:00Z");
    let after = when("2022-11-05T01:10:00Z", "2022-11-05T01:20:00Z");
    assert!(
        run("bk", false, &available, before).is_ok(),
        "ends where the booking starts"
    );
    assert!(
        run("bk", false, &available, after).is_ok(),
        "starts where the booking ends"
    );
}

#[test]
fn unavailable_resource_refuses_a_booking() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    sim.join("u", "g-a");
    sim.states.insert(
        "r-a".into(),
        ResourceState {
            available: false,
            reason: "foo".into(),
        },
    );
    assert_eq!(
        sim.book(
            "sl-a",
            "u",
            when("2022-11-05T01:00:00Z", "2022-11-05T01:10:00Z")
        ),
        Err("unavailable because foo".into())
    );
}

#[test]
fn start_in_past() {
    let mut sim = Sim::new("2022-11-05T00:00:30Z");
    sim.join("u", "g-modes");
    let started = when("2022-11-05T00:00:00Z", "2022-11-05T00:10:00Z");
    assert_eq!(
        sim.book("sl-instant", "u", started),
        Err("booking cannot start in the past (start: 2022-11-05 00:00:00 +0000 UTC, now:2022-11-05 00:00:30 +0000 UTC)".into())
    );
    sim.book("sl-start-in-past", "u", started).unwrap();

    sim.set_now("2022-11-05T00:02:00Z");
    assert_eq!(
        sim.book("sl-start-in-past", "u2", started),
        Err("user u2 not found".into())
    );
    sim.join("u2", "g-modes");
    assert_eq!(
        sim.book("sl-start-in-past", "u2", started),
        Err("booking cannot start more than 1m0s in the past".into())
    );
}

#[test]
fn starts_within() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    sim.join("u", "g-modes");
    assert_eq!(
        sim.book(
            "sl-starts-within",
            "u",
            when("2022-11-05T00:05:00Z", "2022-11-05T00:15:00Z")
        ),
        Err("booking cannot start more than 1m0s in the future".into())
    );
    sim.book(
        "sl-starts-within",
        "u",
        when("2022-11-05T00:00:59Z", "2022-11-05T00:10:00Z"),
    )
    .unwrap();
}

#[test]
fn next_available() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    sim.join("user-0", "g-modes");
    sim.join("user-1", "g-modes");
    sim.book(
        "sl-next-available",
        "user-0",
        when("2022-11-05T00:00:30Z", "2022-11-05T00:10:30Z"),
    )
    .unwrap();

    sim.set_now("2022-11-05T00:06:00Z");
    assert_eq!(
        sim.book("sl-next-available", "user-1", when("2022-11-05T00:13:00Z", "2022-11-05T00:23:00Z")),
        Err("due to next available policy setting, booking cannot start more than 1m0s after the last booking ends, i.e. 2022-11-05 00:11:30 +0000 UTC".into())
    );
    let one_ns_late = Interval {
        start: t("2022-11-05T00:11:30Z") + 1,
        end: t("2022-11-05T00:20:00Z"),
    };
    assert!(sim
        .book("sl-next-available", "user-1", one_ns_late)
        .is_err());
    // The advertised gap start itself can be booked.
    sim.book(
        "sl-next-available",
        "user-1",
        when("2022-11-05T00:10:30Z", "2022-11-05T00:11:00Z"),
    )
    .unwrap();
    // The first gap now starts at 00:11:00; a start exactly at the latest is fine.
    sim.book(
        "sl-next-available",
        "user-1",
        when("2022-11-05T00:12:00Z", "2022-11-05T00:20:00Z"),
    )
    .unwrap();
}

#[test]
fn next_available_on_an_unavailable_resource() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    sim.join("u", "g-modes");
    sim.states.insert(
        "r-e".into(),
        ResourceState {
            available: false,
            reason: "broken".into(),
        },
    );
    assert_eq!(
        sim.book("sl-next-available", "u", when("2022-11-05T00:00:00Z", "2022-11-05T00:10:00Z")),
        Err("enforcing next available policy setting failed because not available because unavailable because broken".into())
    );
}

#[test]
fn next_available_with_nothing_free() {
    let sim = Sim::new("2022-11-05T00:00:00Z");
    let all_time = Interval {
        start: i64::MIN,
        end: i64::MAX,
    };
    let state = sim.state("r-e");
    let result = check_booking(&BookingFacts {
        manifest: &sim.manifest,
        filters: &sim.filters,
        slot: "sl-next-available",
        user: "u",
        when: when("2022-11-05T00:00:00Z", "2022-11-05T00:10:00Z"),
        now: sim.now,
        group_check: GroupCheck::Off,
        current_under_policy: 0,
        usage: 0,
        busy: &[all_time],
        resource_state: &state,
        name_in_use: false,
        name: "bk",
    });
    assert_eq!(
        result,
        Err("enforcing next available policy setting because availability list was empty".into())
    );
}

#[test]
fn unlimited_users_share_the_interval_and_ignore_unavailability() {
    let mut sim = Sim::new("2022-11-05T01:00:00Z");
    let same = when("2022-11-05T02:00:00Z", "2022-11-05T02:10:00Z");
    for user in ["sim-user-0", "sim-user-1"] {
        sim.join(user, "g-modes");
        let accepted = sim.book("sl-simulation", user, same).unwrap();
        assert!(!accepted.exclusive);
    }
    sim.states.insert(
        "r-sim".into(),
        ResourceState {
            available: false,
            reason: "off".into(),
        },
    );
    sim.join("sim-user-2", "g-modes");
    assert!(sim.book("sl-simulation", "sim-user-2", same).is_ok());
}

#[test]
fn grace_check_time_is_start_plus_grace() {
    let mut sim = Sim::new("2022-11-05T00:00:00Z");
    sim.join("u", "g-a");
    let policy = sim.manifest.policies.get_mut("p-a").unwrap();
    policy.enforce_grace_period = true;
    policy.grace_period = GoDuration(2 * MINUTE);
    let accepted = sim
        .book(
            "sl-a",
            "u",
            when("2022-11-05T00:01:00Z", "2022-11-05T00:11:00Z"),
        )
        .unwrap();
    assert_eq!(accepted.grace_check_at, Some(t("2022-11-05T00:03:00Z")));
}

/// The usage table (§3.5): the reference's 17 cases (grace 5m, penalty 6m, booking
/// 01:00–01:30), plus the boundaries.
#[test]
fn usage_table() {
    let grace = Policy {
        enforce_grace_period: true,
        grace_period: GoDuration(5 * MINUTE),
        grace_penalty: GoDuration(6 * MINUTE),
        ..Policy::default()
    };
    let no_grace = Policy::default();
    let w = when("2022-11-05T01:00:00Z", "2022-11-05T01:30:00Z");
    let booking = |started: bool, unfulfilled: bool| Booking {
        when: w,
        started,
        unfulfilled,
        ..Booking::default()
    };
    let early = Some(t("2022-11-04T00:00:00Z"));
    let during_grace = Some(t("2022-11-05T01:03:00Z"));
    let just_after_grace = Some(t("2022-11-05T01:05:01Z"));
    let after_grace = Some(t("2022-11-05T01:22:00Z"));
    let after_booking = Some(t("2022-11-07T01:22:00Z"));
    let cases: [(&str, &Policy, Booking, Option<Nanos>, i64); 17] = [
        ("grace:completed", &grace, booking(true, false), None, 30),
        ("grace:unfulfilled", &grace, booking(true, true), None, 0),
        (
            "grace:cancelledEarly",
            &grace,
            booking(false, false),
            early,
            0,
        ),
        (
            "grace:cancelledLate",
            &grace,
            booking(false, false),
            after_booking,
            30,
        ),
        (
            "grace:noShow",
            &grace,
            booking(false, false),
            just_after_grace,
            11,
        ),
        (
            "grace:cancelledDuringGraceUnstarted",
            &grace,
            booking(false, false),
            during_grace,
            5,
        ),
        (
            "grace:cancelledDuringGraceStarted",
            &grace,
            booking(true, false),
            during_grace,
            5,
        ),
        (
            "grace:cancelledAfterGraceUnstarted",
            &grace,
            booking(false, false),
            after_grace,
            11,
        ),
        (
            "grace:cancelledAfterGraceStarted",
            &grace,
            booking(true, false),
            after_grace,
            22,
        ),
        (
            "nograce:completed",
            &no_grace,
            booking(true, false),
            None,
            30,
        ),
        (
            "nograce:unfulfilled",
            &no_grace,
            booking(true, true),
            None,
            0,
        ),
        (
            "nograce:cancelledEarly",
            &no_grace,
            booking(false, false),
            early,
            0,
        ),
        (
            "nograce:cancelledLate",
            &no_grace,
            booking(false, false),
            after_booking,
            30,
        ),
        (
            "nograce:cancelledDuringGraceUnstarted",
            &no_grace,
            booking(false, false),
            during_grace,
            3,
        ),
        (
            "nograce:cancelledDuringGraceStarted",
            &no_grace,
            booking(true, false),
            during_grace,
            3,
        ),
        (
            "nograce:cancelledAfterGraceUnstarted",
            &no_grace,
            booking(false, false),
            after_grace,
            22,
        ),
        (
            "nograce:cancelledAfterGraceStarted",
            &no_grace,
            booking(true, false),
            after_grace,
            22,
        ),
    ];
    for (name, policy, booking, cancelled_at, minutes) in cases {
        assert_eq!(
            charged_usage(&booking, policy, cancelled_at),
            minutes * MINUTE,
            "{name}"
        );
    }

    // Boundaries.
    let unstarted = booking(false, false);
    let started = booking(true, false);
    let start = w.start;
    let grace_end = w.start + 5 * MINUTE;
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(start - 1)),
        0,
        "just before start"
    );
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(start)),
        5 * MINUTE,
        "at start: grace"
    );
    assert_eq!(
        charged_usage(&unstarted, &no_grace, Some(start)),
        0,
        "at start, no grace"
    );
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(grace_end - 1)),
        5 * MINUTE
    );
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(grace_end)),
        11 * MINUTE,
        "at start+grace: penalty"
    );
    assert_eq!(
        charged_usage(&started, &grace, Some(grace_end)),
        5 * MINUTE,
        "at start+grace, started"
    );
    assert_eq!(
        charged_usage(&started, &grace, Some(w.end)),
        30 * MINUTE,
        "at end, started"
    );
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(w.end)),
        11 * MINUTE,
        "at end, unstarted"
    );
    assert_eq!(
        charged_usage(&unstarted, &grace, Some(w.end + 1)),
        30 * MINUTE,
        "after end"
    );

    // Refunds: the rest of the booking; negative when grace outlasts the booking.
    assert_eq!(refund(&unstarted, &grace, start - 1), 30 * MINUTE);
    assert_eq!(
        refund(&started, &no_grace, start + 10 * MINUTE),
        20 * MINUTE
    );
    let short = Booking {
        when: Interval {
            start,
            end: start + 2 * MINUTE,
        },
        ..Booking::default()
    };
    assert_eq!(refund(&short, &grace, start + MINUTE), -3 * MINUTE);
}

#[test]
fn activity_checks_in_order() {
    let w = when("2022-11-05T01:00:00Z", "2022-11-05T01:10:00Z");
    let live = Booking {
        when: w,
        ..Booking::default()
    };
    let cancelled = Booking {
        cancelled: true,
        ..live.clone()
    };
    let up = ResourceState {
        available: true,
        reason: "ok".into(),
    };
    let down = ResourceState {
        available: false,
        reason: "Offline".into(),
    };
    let silent = ResourceState {
        available: false,
        reason: String::new(),
    };
    assert_eq!(
        check_activity(&cancelled, &down, w.start - MINUTE),
        Err("too early".into())
    );
    assert_eq!(
        check_activity(&cancelled, &down, w.end),
        Err("too late".into())
    );
    assert_eq!(
        check_activity(&cancelled, &down, w.start),
        Err("cancelled".into())
    );
    assert_eq!(
        check_activity(&live, &down, w.start),
        Err("unavailable because Offline".into())
    );
    assert_eq!(
        check_activity(&live, &silent, w.start),
        Err("unavailable".into())
    );
    assert_eq!(check_activity(&live, &up, w.start), Ok(()));
    assert_eq!(check_activity(&live, &up, w.end - 1), Ok(()));
}
