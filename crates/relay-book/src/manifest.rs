//! The manifest (spec §2.2, §2.5–§2.7): what is bookable, under which rules, with which
//! streams and UIs. One set of types reads YAML and JSON (both `uis` and `UIs` for UI sets,
//! durations as Go strings, a missing duration is `0s`), and writes the export form
//! (alphabetical keys, `UIs`, `tests: null`).
//!
//! Owner: domain helper (check, conversion, export, resolution helpers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::interval::{Filter, Interval};
use crate::timefmt::DurationNanos;

/// A Go duration string on the wire, signed nanoseconds inside. Missing means `0s`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub DurationNanos);

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::timefmt::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::timefmt::parse_duration(&text)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

fn is_empty(text: &str) -> bool {
    text.is_empty()
}

/// The whole manifest. Keys are names; entities carry no name field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub descriptions: BTreeMap<String, Description>,
    #[serde(default)]
    pub display_guides: BTreeMap<String, DisplayGuide>,
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    #[serde(default)]
    pub resources: BTreeMap<String, Resource>,
    #[serde(default)]
    pub slots: BTreeMap<String, Slot>,
    #[serde(default)]
    pub streams: BTreeMap<String, Stream>,
    #[serde(default)]
    pub ui_sets: BTreeMap<String, UiSet>,
    #[serde(default)]
    pub uis: BTreeMap<String, Ui>,
    #[serde(default)]
    pub windows: BTreeMap<String, Window>,
}

/// Display text for any entity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Description {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub further: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub long: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub short: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub thumb: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// A hint to the booking UI: which tabs of fixed-length slots to offer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DisplayGuide {
    #[serde(default)]
    pub book_ahead: GoDuration,
    #[serde(default)]
    pub duration: GoDuration,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub max_slots: i64,
}

/// A bundle of policies joined through a link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub policies: Vec<String>,
}

/// The booking rules shared by a set of slots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub allow_start_in_past_within: GoDuration,
    #[serde(default)]
    pub book_ahead: GoDuration,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub display_guides: Vec<String>,
    #[serde(default)]
    pub enforce_allow_start_in_past: bool,
    #[serde(default)]
    pub enforce_book_ahead: bool,
    #[serde(default)]
    pub enforce_grace_period: bool,
    #[serde(default)]
    pub enforce_max_bookings: bool,
    #[serde(default)]
    pub enforce_max_duration: bool,
    #[serde(default)]
    pub enforce_max_usage: bool,
    #[serde(default)]
    pub enforce_min_duration: bool,
    #[serde(default)]
    pub enforce_next_available: bool,
    #[serde(default)]
    pub enforce_starts_within: bool,
    #[serde(default)]
    pub enforce_unlimited_users: bool,
    #[serde(default)]
    pub grace_penalty: GoDuration,
    #[serde(default)]
    pub grace_period: GoDuration,
    #[serde(default)]
    pub max_bookings: i64,
    #[serde(default)]
    pub max_duration: GoDuration,
    #[serde(default)]
    pub max_usage: GoDuration,
    #[serde(default)]
    pub min_duration: GoDuration,
    #[serde(default)]
    pub next_available: GoDuration,
    /// `None` when the field is missing (a check failure), `Some(vec![])` when empty.
    #[serde(default)]
    pub slots: Option<Vec<String>>,
    #[serde(default)]
    pub starts_within: GoDuration,
}

/// One physical rig.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub config_url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    /// Exported as `null` when absent.
    #[serde(default)]
    pub tests: Option<Vec<String>>,
    #[serde(default)]
    pub topic_stub: String,
}

/// The right to book one resource under one policy, in one window, with one UI set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub ui_set: String,
    #[serde(default)]
    pub window: String,
}

/// A prototype for one relay connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    #[serde(default, skip_serializing_if = "is_empty")]
    pub audience: String,
    #[serde(default)]
    pub connection_type: String,
    #[serde(default, rename = "for")]
    pub for_: String,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub url: String,
}

/// A user interface: a URL template with `{{key}}` placeholders filled in client-side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ui {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub streams_required: Vec<String>,
    #[serde(default)]
    pub url: String,
}

/// A list of UIs: `uis` in YAML, `UIs` in JSON and exports (both accepted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UiSet {
    #[serde(default, rename = "UIs", alias = "uis")]
    pub uis: Option<Vec<String>>,
}

/// When a slot may be booked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    #[serde(default)]
    pub allowed: Option<Vec<Interval>>,
    #[serde(default)]
    pub denied: Vec<Interval>,
}

/// Why a manifest was refused (§2.5): the category and one message per problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{category}")]
pub struct ManifestError {
    /// `missing field`, `missing reference(s)` or `failed creating filter`.
    pub category: String,
    /// `missing <field> field in <kind> <key>` and the like, in check order.
    pub messages: Vec<String>,
}

impl Manifest {
    /// Read YAML or JSON (JSON is YAML). Error text names the line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        serde_yaml::from_str(text).map_err(|error| error.to_string())
    }

    /// The two-stage check of §2.5, plus building every window's filter.
    pub fn check(&self) -> Result<(), ManifestError> {
        todo!("domain")
    }

    /// The compiled filter of every window, by window name. Call after [`Manifest::check`].
    pub fn filters(&self) -> Result<BTreeMap<String, Filter>, ManifestError> {
        todo!("domain")
    }
}
