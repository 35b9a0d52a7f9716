//! The JSON bodies of the API (spec §2.4), built from the manifest and the store's records.
//! Fields are declared in alphabetical order, so serde writes alphabetical keys; false
//! booleans, zero `max_bookings` and empty optional fields are left out, as the reference.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::manifest::{Description, DisplayGuide, Manifest};
use crate::model::{Counts, LockState, PolicyStatus as ModelPolicyStatus, ResourceState, User};
use crate::store::DenyCall;
use crate::timefmt::{format_duration, format_time, humanise, Nanos};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `AccessToken`: a login token and its claims; `aud` is a plain string here.
#[derive(Debug, Clone, Serialize)]
pub struct AccessToken {
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub scopes: Vec<String>,
    pub sub: String,
    pub token: String,
}

/// `UserName`.
#[derive(Debug, Clone, Serialize)]
pub struct UserName {
    pub user_name: String,
}

/// `StoreStatusUser`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatusUser {
    pub locked: bool,
    pub message: String,
    pub now: String,
}

impl StoreStatusUser {
    /// The status from the lock and the time.
    pub fn new(lock: &LockState, now: Nanos) -> Self {
        StoreStatusUser {
            locked: lock.locked,
            message: lock.message.clone(),
            now: format_time(now),
        }
    }
}

/// One deny call's state, in the admin status.
#[derive(Debug, Clone, Serialize)]
pub struct DenyCallStatus {
    pub attempts: i64,
    pub booking: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub relay: String,
    /// `pending`, `ok` or `failed`.
    pub state: String,
}

impl From<&DenyCall> for DenyCallStatus {
    fn from(call: &DenyCall) -> Self {
        DenyCallStatus {
            attempts: call.attempts,
            booking: call.booking.clone(),
            last_error: call.last_error.clone(),
            relay: call.relay_url.clone(),
            state: call.state.clone(),
        }
    }
}

/// A booking a bulk replacement dropped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub name: String,
    pub reason: String,
}

/// `StoreStatusAdmin`, plus three fields the reference does not have, each present only
/// when non-empty: `cancelled_bookings` (a manifest replace cancelled bookings whose slot
/// disappeared), `deny_calls` (recent relay deny calls) and `dropped` (a bookings replace
/// refused some).
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatusAdmin {
    pub bookings: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cancelled_bookings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_calls: Vec<DenyCallStatus>,
    pub descriptions: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
    pub filters: i64,
    pub locked: bool,
    pub message: String,
    pub now: String,
    pub old_bookings: i64,
    pub policies: i64,
    pub resources: i64,
    pub slots: i64,
    pub streams: i64,
    pub ui_sets: i64,
    pub uis: i64,
    pub users: i64,
    pub windows: i64,
}

impl StoreStatusAdmin {
    /// The status from the counts, the lock and the time.
    pub fn new(counts: &Counts, lock: &LockState, now: Nanos) -> Self {
        StoreStatusAdmin {
            bookings: counts.bookings,
            cancelled_bookings: Vec::new(),
            deny_calls: Vec::new(),
            descriptions: counts.descriptions,
            dropped: Vec::new(),
            filters: counts.filters,
            locked: lock.locked,
            message: lock.message.clone(),
            now: format_time(now),
            old_bookings: counts.old_bookings,
            policies: counts.policies,
            resources: counts.resources,
            slots: counts.slots,
            streams: counts.streams,
            ui_sets: counts.ui_sets,
            uis: counts.uis,
            users: counts.users,
            windows: counts.windows,
        }
    }
}

/// `ResourceStatus`: if unavailable, the reason reads `unavailable because <reason>` (or
/// `unavailable` when empty).
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    pub available: bool,
    pub reason: String,
}

impl From<&ResourceState> for ResourceStatus {
    fn from(state: &ResourceState) -> Self {
        ResourceStatus {
            available: state.available,
            reason: state.refusal().unwrap_or_else(|| state.reason.clone()),
        }
    }
}

/// `PolicyStatus`: usage as a Go duration string, not rounded.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub current_bookings: i64,
    pub old_bookings: i64,
    pub usage: String,
}

impl From<&ModelPolicyStatus> for PolicyStatus {
    fn from(status: &ModelPolicyStatus) -> Self {
        PolicyStatus {
            current_bookings: status.current_bookings,
            old_bookings: status.old_bookings,
            usage: format_duration(status.usage),
        }
    }
}

/// A user in the admin export: usage humanised.
#[derive(Debug, Clone, Serialize)]
pub struct UserExport {
    pub bookings: Vec<String>,
    pub groups: Vec<String>,
    pub old_bookings: Vec<String>,
    pub usage: BTreeMap<String, String>,
}

impl From<&User> for UserExport {
    fn from(user: &User) -> Self {
        UserExport {
            bookings: user.bookings.clone(),
            groups: user.groups.clone(),
            old_bookings: user.old_bookings.clone(),
            usage: user
                .usage
                .iter()
                .map(|(policy, used)| (policy.clone(), humanise(*used)))
                .collect(),
        }
    }
}

/// A display guide with humanised durations.
#[derive(Debug, Clone, Serialize)]
pub struct DisplayGuideDescribed {
    pub book_ahead: String,
    pub duration: String,
    pub label: String,
    pub max_slots: i64,
}

impl From<&DisplayGuide> for DisplayGuideDescribed {
    fn from(guide: &DisplayGuide) -> Self {
        DisplayGuideDescribed {
            book_ahead: humanise(guide.book_ahead.0),
            duration: humanise(guide.duration.0),
            label: guide.label.clone(),
            max_slots: guide.max_slots,
        }
    }
}

/// A slot as a policy describes it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotDescribed {
    pub description: Description,
    pub policy: String,
}

/// `PolicyDescribed`: every duration humanised and always present; the grace fields are
/// filled (the reference never did, §7 item 17).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDescribed {
    pub allow_start_in_past_within: String,
    pub book_ahead: String,
    pub description: Description,
    pub display_guides: BTreeMap<String, DisplayGuideDescribed>,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_allow_start_in_past: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_book_ahead: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_grace_period: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_max_bookings: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_max_duration: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_max_usage: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_min_duration: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_next_available: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_starts_within: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub enforce_unlimited_users: bool,
    pub grace_penalty: String,
    pub grace_period: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub max_bookings: i64,
    pub max_duration: String,
    pub max_usage: String,
    pub min_duration: String,
    pub next_available: String,
    pub slots: BTreeMap<String, SlotDescribed>,
    pub starts_within: String,
}

/// The description named `name`, or an empty one (a checked manifest has them all).
fn description(manifest: &Manifest, name: &str) -> Description {
    manifest.descriptions.get(name).cloned().unwrap_or_default()
}

/// The policy `name` described, or `None` if the manifest has no such policy.
pub fn policy_described(manifest: &Manifest, name: &str) -> Option<PolicyDescribed> {
    let policy = manifest.policies.get(name)?;
    let display_guides = policy
        .display_guides
        .iter()
        .filter_map(|g| {
            let guide = manifest.display_guides.get(g)?;
            Some((g.clone(), DisplayGuideDescribed::from(guide)))
        })
        .collect();
    let slots = policy
        .slots
        .iter()
        .flatten()
        .filter_map(|s| {
            let slot = manifest.slots.get(s)?;
            Some((
                s.clone(),
                SlotDescribed {
                    description: description(manifest, &slot.description),
                    policy: slot.policy.clone(),
                },
            ))
        })
        .collect();
    Some(PolicyDescribed {
        allow_start_in_past_within: humanise(policy.allow_start_in_past_within.0),
        book_ahead: humanise(policy.book_ahead.0),
        description: description(manifest, &policy.description),
        display_guides,
        enforce_allow_start_in_past: policy.enforce_allow_start_in_past,
        enforce_book_ahead: policy.enforce_book_ahead,
        enforce_grace_period: policy.enforce_grace_period,
        enforce_max_bookings: policy.enforce_max_bookings,
        enforce_max_duration: policy.enforce_max_duration,
        enforce_max_usage: policy.enforce_max_usage,
        enforce_min_duration: policy.enforce_min_duration,
        enforce_next_available: policy.enforce_next_available,
        enforce_starts_within: policy.enforce_starts_within,
        enforce_unlimited_users: policy.enforce_unlimited_users,
        grace_penalty: humanise(policy.grace_penalty.0),
        grace_period: humanise(policy.grace_period.0),
        max_bookings: policy.max_bookings,
        max_duration: humanise(policy.max_duration.0),
        max_usage: humanise(policy.max_usage.0),
        min_duration: humanise(policy.min_duration.0),
        next_available: humanise(policy.next_available.0),
        slots,
        starts_within: humanise(policy.starts_within.0),
    })
}

/// `GroupDescribed`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDescribed {
    pub description: Description,
}

/// `GroupDescribedWithPolicies`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDescribedWithPolicies {
    pub description: Description,
    pub policies: BTreeMap<String, PolicyDescribed>,
}

/// The group `name` described, or `None` if the manifest has no such group.
pub fn group_described(manifest: &Manifest, name: &str) -> Option<GroupDescribed> {
    let group = manifest.groups.get(name)?;
    Some(GroupDescribed {
        description: description(manifest, &group.description),
    })
}

/// The group `name` with its policies, or `None` if the manifest has no such group.
pub fn group_with_policies(manifest: &Manifest, name: &str) -> Option<GroupDescribedWithPolicies> {
    let group = manifest.groups.get(name)?;
    let policies = group
        .policies
        .iter()
        .filter_map(|p| Some((p.clone(), policy_described(manifest, p)?)))
        .collect();
    Some(GroupDescribedWithPolicies {
        description: description(manifest, &group.description),
        policies,
    })
}

/// `ActivityStream`: one relay connection of an activity.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityStream {
    pub audience: String,
    pub connection_type: String,
    #[serde(rename = "for")]
    pub for_: String,
    pub scopes: Vec<String>,
    pub token: String,
    pub topic: String,
    pub url: String,
}

/// `UIDescribed`.
#[derive(Debug, Clone, Serialize)]
pub struct UiDescribed {
    pub description: Description,
    pub streams_required: Vec<String>,
    pub url: String,
}

/// `Activity`: what a started booking hands the booking app.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config: String,
    pub description: Description,
    pub exp: i64,
    pub nbf: i64,
    pub streams: Vec<ActivityStream>,
    pub uis: Vec<UiDescribed>,
}

/// The UIs of a UI set, in set order, with their descriptions resolved.
pub fn uis_described(manifest: &Manifest, ui_set: &str) -> Vec<UiDescribed> {
    let names = manifest
        .ui_sets
        .get(ui_set)
        .and_then(|set| set.uis.clone())
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|name| {
            let ui = manifest.uis.get(name)?;
            Some(UiDescribed {
                description: description(manifest, &ui.description),
                streams_required: ui.streams_required.clone(),
                url: ui.url.clone(),
            })
        })
        .collect()
}
