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
        /// A Go duration string, or a bare integer of nanoseconds (YAML `0`), as Go's YAML
        /// decoder reads a `time.Duration`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Nanoseconds(i64),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Text(text) => crate::timefmt::parse_duration(&text)
                .map(GoDuration)
                .map_err(serde::de::Error::custom),
            Wire::Nanoseconds(nanos) => Ok(GoDuration(nanos)),
        }
    }
}

fn is_empty(text: &str) -> bool {
    text.is_empty()
}

/// The reference's export leaves out false policy flags…
fn is_false(flag: &bool) -> bool {
    !flag
}

/// …and a zero `max_bookings`.
fn is_zero(count: &i64) -> bool {
    *count == 0
}

/// The whole manifest. Keys are names; entities carry no name field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub descriptions: BTreeMap<String, Description>,
    /// Left out of exports when empty, as by the reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display_guides: BTreeMap<String, DisplayGuide>,
    /// Left out of exports when empty, as by the reference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
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
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_allow_start_in_past: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_book_ahead: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_grace_period: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_max_bookings: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_max_duration: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_max_usage: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_min_duration: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_next_available: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_starts_within: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enforce_unlimited_users: bool,
    #[serde(default)]
    pub grace_penalty: GoDuration,
    #[serde(default)]
    pub grace_period: GoDuration,
    #[serde(default, skip_serializing_if = "is_zero")]
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
        if let Some(messages) = self
            .missing_fields()
            .into_iter()
            .find(|messages| !messages.is_empty())
        {
            return Err(ManifestError {
                category: MISSING_FIELD.into(),
                messages,
            });
        }
        self.filters()?;
        let messages = self.missing_references();
        if messages.is_empty() {
            Ok(())
        } else {
            Err(ManifestError {
                category: MISSING_REFERENCES.into(),
                messages,
            })
        }
    }

    /// The compiled filter of every window, by window name. Call after [`Manifest::check`].
    pub fn filters(&self) -> Result<BTreeMap<String, Filter>, ManifestError> {
        let mut filters = BTreeMap::new();
        let mut messages = Vec::new();
        for (key, window) in &self.windows {
            let allowed = window.allowed.as_deref().unwrap_or_default();
            match Filter::new(allowed, &window.denied) {
                Ok(filter) => {
                    filters.insert(key.clone(), filter);
                }
                Err(error) => {
                    messages.push(format!("failed to create filter for window {key}: {error}"))
                }
            }
        }
        if messages.is_empty() {
            Ok(filters)
        } else {
            Err(ManifestError {
                category: FAILED_CREATING_FILTER.into(),
                messages,
            })
        }
    }

    /// Stage 1 of the check: one list of `missing <field> field in <kind> <key>` messages per
    /// category, in the reference's category order.
    fn missing_fields(&self) -> [Vec<String>; 10] {
        fn collect<T>(
            kind: &str,
            items: &BTreeMap<String, T>,
            missing: impl Fn(&T) -> Vec<&'static str>,
        ) -> Vec<String> {
            items
                .iter()
                .flat_map(|(key, item)| {
                    missing(item)
                        .into_iter()
                        .map(move |field| format!("missing {field} field in {kind} {key}"))
                })
                .collect()
        }
        fn absent<'a>(checks: &[(&'static str, bool)]) -> Vec<&'a str> {
            checks
                .iter()
                .filter(|(_, is_missing)| *is_missing)
                .map(|(field, _)| *field)
                .collect()
        }
        [
            collect("description", &self.descriptions, |d: &Description| {
                absent(&[
                    ("name", d.name.is_empty()),
                    ("type", d.kind.is_empty()),
                    ("short", d.short.is_empty()),
                ])
            }),
            collect("display_guide", &self.display_guides, |g: &DisplayGuide| {
                absent(&[
                    ("book_ahead", g.book_ahead.0 == 0),
                    ("duration", g.duration.0 == 0),
                    ("max_slots", g.max_slots == 0),
                ])
            }),
            collect("group", &self.groups, |g: &Group| {
                absent(&[("description", g.description.is_empty())])
            }),
            collect("policy", &self.policies, |p: &Policy| {
                absent(&[
                    ("description", p.description.is_empty()),
                    ("slots", p.slots.is_none()),
                ])
            }),
            collect("resource", &self.resources, |r: &Resource| {
                absent(&[
                    ("description", r.description.is_empty()),
                    ("streams", r.streams.is_none()),
                    ("topic_stub", r.topic_stub.is_empty()),
                ])
            }),
            collect("stream", &self.streams, |s: &Stream| {
                absent(&[
                    ("connection_type", s.connection_type.is_empty()),
                    ("for", s.for_.is_empty()),
                    ("scopes", s.scopes.is_none()),
                    ("topic", s.topic.is_empty()),
                    ("url", s.url.is_empty()),
                ])
            }),
            collect("slot", &self.slots, |s: &Slot| {
                absent(&[
                    ("description", s.description.is_empty()),
                    ("policy", s.policy.is_empty()),
                    ("resource", s.resource.is_empty()),
                    ("ui_set", s.ui_set.is_empty()),
                    ("window", s.window.is_empty()),
                ])
            }),
            collect("ui", &self.uis, |u: &Ui| {
                absent(&[("url", u.url.is_empty())])
            }),
            collect("ui_set", &self.ui_sets, |u: &UiSet| {
                absent(&[("uis", u.uis.is_none())])
            }),
            collect("window", &self.windows, |w: &Window| {
                absent(&[("allowed", w.allowed.is_none())])
            }),
        ]
    }

    /// Stage 2 of the check: every reference to a name the manifest does not define, as
    /// `<kind> <key> references non-existent <target kind>: <name>`.
    fn missing_references(&self) -> Vec<String> {
        let mut messages = Vec::new();
        let mut require = |kind: &str, key: &str, target: &str, name: &str, exists: bool| {
            if !exists {
                messages.push(format!(
                    "{kind} {key} references non-existent {target}: {name}"
                ));
            }
        };
        let description = |name: &String| self.descriptions.contains_key(name);
        for (key, group) in &self.groups {
            require(
                "group",
                key,
                "description",
                &group.description,
                description(&group.description),
            );
            for policy in &group.policies {
                require(
                    "group",
                    key,
                    "policy",
                    policy,
                    self.policies.contains_key(policy),
                );
            }
        }
        for (key, policy) in &self.policies {
            require(
                "policy",
                key,
                "description",
                &policy.description,
                description(&policy.description),
            );
            for guide in &policy.display_guides {
                require(
                    "policy",
                    key,
                    "display_guide",
                    guide,
                    self.display_guides.contains_key(guide),
                );
            }
            for slot in policy.slots.iter().flatten() {
                require("policy", key, "slot", slot, self.slots.contains_key(slot));
            }
        }
        for (key, resource) in &self.resources {
            require(
                "resource",
                key,
                "description",
                &resource.description,
                description(&resource.description),
            );
            for stream in resource.streams.iter().flatten() {
                require(
                    "resource",
                    key,
                    "stream",
                    stream,
                    self.streams.contains_key(stream),
                );
            }
        }
        for (key, slot) in &self.slots {
            require(
                "slot",
                key,
                "description",
                &slot.description,
                description(&slot.description),
            );
            require(
                "slot",
                key,
                "policy",
                &slot.policy,
                self.policies.contains_key(&slot.policy),
            );
            require(
                "slot",
                key,
                "resource",
                &slot.resource,
                self.resources.contains_key(&slot.resource),
            );
            require(
                "slot",
                key,
                "ui_set",
                &slot.ui_set,
                self.ui_sets.contains_key(&slot.ui_set),
            );
            require(
                "slot",
                key,
                "window",
                &slot.window,
                self.windows.contains_key(&slot.window),
            );
        }
        for (key, ui) in &self.uis {
            require(
                "ui",
                key,
                "description",
                &ui.description,
                description(&ui.description),
            );
            for stream in &ui.streams_required {
                require(
                    "ui",
                    key,
                    "stream",
                    stream,
                    self.streams.contains_key(stream),
                );
            }
        }
        for (key, set) in &self.ui_sets {
            for ui in set.uis.iter().flatten() {
                require("ui_set", key, "ui", ui, self.uis.contains_key(ui));
            }
        }
        messages
    }
}

/// Stage 1 failure: a required field is empty or absent.
pub const MISSING_FIELD: &str = "missing field";
/// Stage 2 failure: a name refers to nothing.
pub const MISSING_REFERENCES: &str = "missing reference(s)";
/// A window could not be compiled.
pub const FAILED_CREATING_FILTER: &str = "failed creating filter";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::{parse_time, SECOND};

    /// The example manifest of spec §2.8.
    pub(crate) const EXAMPLE: &str = r#"
descriptions:
  d-g-lab1:   {name: "Lab 1 kit", type: group, short: "Kit for lab 1"}
  d-p-pend:   {name: "Pendulums (lab 1)", type: policy, short: "Book a pendulum"}
  d-r-pend:   {name: "Pendulum", type: resource, short: "Driven pendulum"}
  d-sl-pend07: {name: "Pendulum 07", type: slot, short: "Pendulum 07", thumb: "https://example.org/p.png"}
  d-ui-pend:  {name: "Pendulum UI", type: ui, short: "Standard controls"}
display_guides:
  15m: {book_ahead: 2h, duration: 15m, max_slots: 8, label: "15 min"}
groups:
  g-lab1: {description: d-g-lab1, policies: [p-pend]}
policies:
  p-pend:
    description: d-p-pend
    display_guides: [15m]
    slots: [sl-pend07]
    enforce_book_ahead: true
    book_ahead: 24h
    enforce_max_bookings: true
    max_bookings: 2
    enforce_min_duration: true
    min_duration: 5m
    enforce_max_duration: true
    max_duration: 30m
    enforce_max_usage: true
    max_usage: 2h
    enforce_grace_period: true
    grace_period: 3m
    grace_penalty: 5m
resources:
  r-pend07: {description: d-r-pend, streams: [data, video], topic_stub: pend07}
slots:
  sl-pend07: {description: d-sl-pend07, policy: p-pend, resource: r-pend07, ui_set: us-pend, window: w-term}
streams:
  data:  {url: "https://relay.example.org/access", connection_type: session, for: data,  scopes: [read, write], topic: auto}
  video: {url: "https://relay.example.org/access", connection_type: session, for: video, scopes: [read],        topic: auto}
uis:
  ui-pend: {description: d-ui-pend, url: "https://example.org/ui/pend/?streams={{streams}}&exp={{exp}}", streams_required: [data, video]}
ui_sets:
  us-pend: {uis: [ui-pend]}
windows:
  w-term:
    allowed: [{start: 2024-01-08T00:00:00Z, end: 2024-03-29T00:00:00Z}]
    denied:  [{start: 2024-02-12T09:00:00Z, end: 2024-02-12T12:00:00Z}]
"#;

    fn example() -> Manifest {
        Manifest::parse(EXAMPLE).unwrap()
    }

    fn refused(manifest: &Manifest) -> (String, Vec<String>) {
        let error = manifest.check().unwrap_err();
        (error.category, error.messages)
    }

    #[test]
    fn the_example_parses_and_passes() {
        let manifest = example();
        assert_eq!(manifest.check(), Ok(()));
        let policy = &manifest.policies["p-pend"];
        assert_eq!(policy.book_ahead, GoDuration(24 * 3600 * SECOND));
        assert_eq!(policy.grace_penalty, GoDuration(300 * SECOND));
        assert_eq!(policy.starts_within, GoDuration(0));
        assert_eq!(
            manifest.ui_sets["us-pend"].uis,
            Some(vec!["ui-pend".to_string()])
        );
        let window = &manifest.windows["w-term"];
        assert_eq!(
            window.allowed.as_ref().unwrap()[0].start,
            parse_time("2024-01-08T00:00:00Z").unwrap()
        );
        let filters = manifest.filters().unwrap();
        assert_eq!(filters["w-term"].blocked.len(), 3);
    }

    #[test]
    fn export_is_the_reference_json_and_reads_back() {
        let manifest = example();
        let exported = serde_json::to_value(&manifest).unwrap();
        assert_eq!(
            exported["ui_sets"],
            serde_json::json!({"us-pend": {"UIs": ["ui-pend"]}})
        );
        assert_eq!(
            exported["resources"],
            serde_json::json!({"r-pend07": {"description": "d-r-pend", "streams": ["data", "video"], "tests": null, "topic_stub": "pend07"}})
        );
        assert_eq!(
            exported["policies"]["p-pend"],
            serde_json::json!({
                "allow_start_in_past_within": "0s",
                "book_ahead": "24h0m0s",
                "description": "d-p-pend",
                "display_guides": ["15m"],
                "enforce_book_ahead": true,
                "enforce_grace_period": true,
                "enforce_max_bookings": true,
                "enforce_max_duration": true,
                "enforce_max_usage": true,
                "enforce_min_duration": true,
                "grace_penalty": "5m0s",
                "grace_period": "3m0s",
                "max_bookings": 2,
                "max_duration": "30m0s",
                "max_usage": "2h0m0s",
                "min_duration": "5m0s",
                "next_available": "0s",
                "slots": ["sl-pend07"],
                "starts_within": "0s"
            }),
            "false flags and a zero max_bookings are left out; every duration is present"
        );
        let bare = serde_json::to_value(Manifest::default()).unwrap();
        assert_eq!(
            bare,
            serde_json::json!({"descriptions": {}, "policies": {}, "resources": {}, "slots": {}, "streams": {}, "ui_sets": {}, "uis": {}, "windows": {}})
        );
        assert_eq!(exported["display_guides"]["15m"]["duration"], "15m0s");
        assert_eq!(
            exported["windows"]["w-term"]["denied"][0],
            serde_json::json!({"end": "2024-02-12T12:00:00.000Z", "start": "2024-02-12T09:00:00.000Z"})
        );
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.starts_with(r#"{"descriptions":{"d-g-lab1":{"name":"Lab 1 kit","short":"Kit for lab 1","type":"group"}"#), "{text}");
        assert!(text.contains(r#""streams":{"data":{"connection_type":"session","for":"data","scopes":["read","write"],"topic":"auto","url":"https://relay.example.org/access"}"#), "{text}");
        let keys: Vec<&String> = exported.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(Manifest::parse(&text).unwrap(), manifest);
        let yaml = serde_yaml::to_string(&manifest).unwrap();
        assert_eq!(Manifest::parse(&yaml).unwrap(), manifest);
    }

    #[test]
    fn both_ui_set_keys_are_read() {
        let manifest =
            Manifest::parse(r#"{"ui_sets": {"a": {"UIs": ["x"]}, "b": {"uis": ["y"]}}}"#).unwrap();
        assert_eq!(manifest.ui_sets["a"].uis, Some(vec!["x".to_string()]));
        assert_eq!(manifest.ui_sets["b"].uis, Some(vec!["y".to_string()]));
    }

    #[test]
    fn a_missing_ui_in_a_set() {
        let mut manifest = example();
        manifest.ui_sets.insert(
            "us-b".into(),
            UiSet {
                uis: Some(vec!["ui-c".into()]),
            },
        );
        assert_eq!(
            refused(&manifest),
            (
                "missing reference(s)".into(),
                vec!["ui_set us-b references non-existent ui: ui-c".into()]
            )
        );
    }

    #[test]
    fn a_missing_resource() {
        let mut manifest = example();
        let mut slot = manifest.slots["sl-pend07"].clone();
        slot.resource = "r-b".into();
        manifest.slots.insert("sl-b".into(), slot);
        assert_eq!(
            refused(&manifest),
            (
                "missing reference(s)".into(),
                vec!["slot sl-b references non-existent resource: r-b".into()]
            )
        );
    }

    #[test]
    fn a_missing_description() {
        let mut manifest = example();
        let mut slot = manifest.slots["sl-pend07"].clone();
        slot.description = "d-sl-a".into();
        manifest.slots.insert("sl-a".into(), slot);
        assert_eq!(
            refused(&manifest),
            (
                "missing reference(s)".into(),
                vec!["slot sl-a references non-existent description: d-sl-a".into()]
            )
        );
    }

    #[test]
    fn a_missing_stream() {
        let mut manifest = example();
        let mut ui = manifest.uis["ui-pend"].clone();
        ui.streams_required = vec!["data".into(), "st-c".into()];
        manifest.uis.insert("ui-b".into(), ui);
        assert_eq!(
            refused(&manifest),
            (
                "missing reference(s)".into(),
                vec!["ui ui-b references non-existent stream: st-c".into()]
            )
        );
    }

    #[test]
    fn every_missing_reference_is_listed_in_order() {
        let mut manifest = example();
        manifest
            .groups
            .get_mut("g-lab1")
            .unwrap()
            .policies
            .push("p-x".into());
        manifest
            .policies
            .get_mut("p-pend")
            .unwrap()
            .display_guides
            .push("dg-x".into());
        manifest.policies.get_mut("p-pend").unwrap().slots = Some(vec!["sl-x".into()]);
        manifest.resources.get_mut("r-pend07").unwrap().streams = Some(vec!["st-x".into()]);
        manifest.slots.get_mut("sl-pend07").unwrap().window = "w-x".into();
        manifest.slots.get_mut("sl-pend07").unwrap().policy = "p-y".into();
        assert_eq!(
            refused(&manifest),
            (
                "missing reference(s)".into(),
                vec![
                    "group g-lab1 references non-existent policy: p-x".to_string(),
                    "policy p-pend references non-existent display_guide: dg-x".into(),
                    "policy p-pend references non-existent slot: sl-x".into(),
                    "resource r-pend07 references non-existent stream: st-x".into(),
                    "slot sl-pend07 references non-existent policy: p-y".into(),
                    "slot sl-pend07 references non-existent window: w-x".into(),
                ]
            )
        );
    }

    #[test]
    fn missing_fields_stop_at_the_first_failing_category() {
        let mut manifest = example();
        manifest
            .descriptions
            .insert("d-empty".into(), Description::default());
        manifest
            .streams
            .insert("st-empty".into(), Stream::default());
        assert_eq!(
            refused(&manifest),
            (
                "missing field".into(),
                vec![
                    "missing name field in description d-empty".to_string(),
                    "missing type field in description d-empty".into(),
                    "missing short field in description d-empty".into(),
                ]
            )
        );
        manifest.descriptions.remove("d-empty");
        assert_eq!(
            refused(&manifest),
            (
                "missing field".into(),
                vec![
                    "missing connection_type field in stream st-empty".to_string(),
                    "missing for field in stream st-empty".into(),
                    "missing scopes field in stream st-empty".into(),
                    "missing topic field in stream st-empty".into(),
                    "missing url field in stream st-empty".into(),
                ]
            )
        );
    }

    #[test]
    fn missing_fields_of_every_other_kind() {
        let cases: Vec<(Manifest, Vec<&str>)> = vec![
            (
                Manifest::parse("display_guides: {dg: {label: x}}").unwrap(),
                vec![
                    "missing book_ahead field in display_guide dg",
                    "missing duration field in display_guide dg",
                    "missing max_slots field in display_guide dg",
                ],
            ),
            (
                Manifest::parse("groups: {g: {}}").unwrap(),
                vec!["missing description field in group g"],
            ),
            (
                Manifest::parse("policies: {p: {}}").unwrap(),
                vec![
                    "missing description field in policy p",
                    "missing slots field in policy p",
                ],
            ),
            (
                Manifest::parse("resources: {r: {}}").unwrap(),
                vec![
                    "missing description field in resource r",
                    "missing streams field in resource r",
                    "missing topic_stub field in resource r",
                ],
            ),
            (
                Manifest::parse("slots: {s: {}}").unwrap(),
                vec![
                    "missing description field in slot s",
                    "missing policy field in slot s",
                    "missing resource field in slot s",
                    "missing ui_set field in slot s",
                    "missing window field in slot s",
                ],
            ),
            (
                Manifest::parse("uis: {u: {}}").unwrap(),
                vec!["missing url field in ui u"],
            ),
            (
                Manifest::parse("ui_sets: {us: {}}").unwrap(),
                vec!["missing uis field in ui_set us"],
            ),
            (
                Manifest::parse("windows: {w: {denied: []}}").unwrap(),
                vec!["missing allowed field in window w"],
            ),
        ];
        for (manifest, messages) in cases {
            assert_eq!(
                refused(&manifest),
                (
                    "missing field".into(),
                    messages.iter().map(|m| m.to_string()).collect()
                )
            );
        }
        // Present but empty lists are fine.
        let empty_lists = Manifest::parse("policies: {p: {description: d, slots: []}}\ndescriptions: {d: {name: n, type: t, short: s}}").unwrap();
        assert_eq!(empty_lists.check(), Ok(()));
    }

    #[test]
    fn a_reversed_window_interval_fails_the_filter() {
        let mut manifest = example();
        let window = manifest.windows.get_mut("w-term").unwrap();
        window.denied[0] = Interval {
            start: window.denied[0].end,
            end: window.denied[0].start,
        };
        manifest.slots.get_mut("sl-pend07").unwrap().policy = "p-y".into();
        assert_eq!(
            refused(&manifest),
            (
                "failed creating filter".into(),
                vec!["failed to create filter for window w-term: denied interval from 2024-02-12T12:00:00.000Z to 2024-02-12T09:00:00.000Z does not end after it starts".into()]
            ),
            "filters are built before references are resolved"
        );
    }

    #[test]
    fn durations_are_kept_when_not_enforced() {
        let manifest = Manifest::parse(
            r#"{"policies": {"p": {"book_ahead": "2h", "enforce_book_ahead": false}}}"#,
        )
        .unwrap();
        let exported = serde_json::to_value(&manifest).unwrap();
        assert_eq!(exported["policies"]["p"]["book_ahead"], "2h0m0s");
        assert_eq!(exported["policies"]["p"].get("enforce_book_ahead"), None);
    }

    #[test]
    fn durations_may_be_bare_integers_and_negative() {
        let manifest = Manifest::parse("policies: {p: {book_ahead: 0, max_usage: -5m}}").unwrap();
        assert_eq!(manifest.policies["p"].book_ahead, GoDuration(0));
        assert_eq!(manifest.policies["p"].max_usage, GoDuration(-300 * SECOND));
        let error = Manifest::parse("policies: {p: {book_ahead: 5x}}").unwrap_err();
        assert!(
            error.contains("time: unknown unit \"x\" in duration \"5x\""),
            "{error}"
        );
    }
}
