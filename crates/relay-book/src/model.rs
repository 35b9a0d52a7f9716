//! The runtime records the store keeps and the API returns: bookings, users, resource
//! state, status. Their JSON is the reference's (alphabetical keys, false booleans and empty
//! strings left out, three-digit timestamps).
//!
//! Owner: domain helper (serialisation); the store fills them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::interval::Interval;
use crate::timefmt::{format_time, parse_time, DurationNanos, Nanos, ZERO_TIME};

/// One booking, current or old.
///
/// JSON (`Serialize`): `{"cancelled":true?, "cancelled_at":"<time or zero>", "name", "policy",
/// "slot", "started":true?, "started_at":"<time or zero>", "user", "when":{"end","start"}}`,
/// keys alphabetical, false booleans omitted, `cancelled_at`/`started_at` always present
/// (the zero time `0001-01-01T00:00:00.000Z` when unset). `Deserialize` accepts that form
/// (admin import); unknown fields are ignored and missing ones are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Booking {
    pub name: String,
    pub policy: String,
    pub slot: String,
    pub user: String,
    pub when: Interval,
    pub cancelled: bool,
    pub cancelled_at: Option<Nanos>,
    /// Subject of the token, `admin`, `auto-grace-check`, `replaceManifest`. Not on the wire.
    pub cancelled_by: Option<String>,
    pub started: bool,
    pub started_at: Option<Nanos>,
    /// Never set by the reference; kept for import/export fidelity.
    pub unfulfilled: bool,
}

impl Serialize for Booking {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut fields = serializer.serialize_map(None)?;
        if self.cancelled {
            fields.serialize_entry("cancelled", &true)?;
        }
        fields.serialize_entry("cancelled_at", &wire_time(self.cancelled_at))?;
        fields.serialize_entry("name", &self.name)?;
        fields.serialize_entry("policy", &self.policy)?;
        fields.serialize_entry("slot", &self.slot)?;
        if self.started {
            fields.serialize_entry("started", &true)?;
        }
        fields.serialize_entry("started_at", &wire_time(self.started_at))?;
        fields.serialize_entry("user", &self.user)?;
        fields.serialize_entry("when", &self.when)?;
        fields.end()
    }
}

/// A booking's optional instant on the wire: the Go zero time when unset.
fn wire_time(t: Option<Nanos>) -> String {
    t.map_or_else(|| ZERO_TIME.to_string(), format_time)
}

impl<'de> Deserialize<'de> for Booking {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The wire form; `unfulfilled` is read (old-booking imports may carry it) but
        /// never written.
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            policy: Option<String>,
            #[serde(default)]
            slot: Option<String>,
            #[serde(default)]
            user: Option<String>,
            #[serde(default)]
            when: Option<Interval>,
            #[serde(default)]
            cancelled: Option<bool>,
            #[serde(default)]
            cancelled_at: Option<String>,
            #[serde(default)]
            started: Option<bool>,
            #[serde(default)]
            started_at: Option<String>,
            #[serde(default)]
            unfulfilled: Option<bool>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(Booking {
            name: wire.name.unwrap_or_default(),
            policy: wire.policy.unwrap_or_default(),
            slot: wire.slot.unwrap_or_default(),
            user: wire.user.unwrap_or_default(),
            when: wire.when.unwrap_or_default(),
            cancelled: wire.cancelled.unwrap_or_default(),
            cancelled_at: read_wire_time(wire.cancelled_at).map_err(serde::de::Error::custom)?,
            cancelled_by: None,
            started: wire.started.unwrap_or_default(),
            started_at: read_wire_time(wire.started_at).map_err(serde::de::Error::custom)?,
            unfulfilled: wire.unfulfilled.unwrap_or_default(),
        })
    }
}

/// Read a booking's optional instant: absent, empty or the Go zero time (any fraction or
/// zone spelling, e.g. `0001-01-01T00:00:00Z`) is unset.
fn read_wire_time(text: Option<String>) -> Result<Option<Nanos>, String> {
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(zero) if zero.starts_with("0001-01-01T00:00:00") => Ok(None),
        Some(text) => parse_time(text).map(Some),
    }
}

/// A user's record (admin export: `bookings`, `groups`, `old_bookings`, `usage` with
/// humanised durations).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub bookings: Vec<String>,
    pub old_bookings: Vec<String>,
    pub groups: Vec<String>,
    /// Usage charged per policy name.
    pub usage: BTreeMap<String, DurationNanos>,
}

/// Runtime state of a resource (not in the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub available: bool,
    pub reason: String,
}

impl ResourceState {
    /// Why requests are refused, in the reference diary's words: `None` while available,
    /// else `unavailable because <reason>`, or `unavailable` when the reason is empty.
    pub fn refusal(&self) -> Option<String> {
        match (self.available, self.reason.is_empty()) {
            (true, _) => None,
            (false, true) => Some("unavailable".into()),
            (false, false) => Some(format!("unavailable because {}", self.reason)),
        }
    }
}

/// Store-wide counts for `StoreStatusAdmin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub bookings: i64,
    pub descriptions: i64,
    pub filters: i64,
    pub old_bookings: i64,
    pub policies: i64,
    pub resources: i64,
    pub slots: i64,
    pub streams: i64,
    pub uis: i64,
    pub ui_sets: i64,
    pub users: i64,
    pub windows: i64,
}

/// The lock and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub locked: bool,
    pub message: String,
}

/// A user's standing under one policy (`PolicyStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyStatus {
    pub current_bookings: i64,
    pub old_bookings: i64,
    pub usage: DurationNanos,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::SECOND;

    const T0: Nanos = 1_667_606_400 * SECOND; // 2022-11-05T00:00:00Z

    /// The example body of spec §2.3.
    const EXAMPLE: &str = r#"{"cancelled_at":"0001-01-01T00:00:00.000Z","name":"bk-6","policy":"p-b","slot":"sl-b","started_at":"0001-01-01T00:00:00.000Z","user":"user-g","when":{"end":"2022-11-05T01:20:00.000Z","start":"2022-11-05T01:15:00.000Z"}}"#;

    fn example() -> Booking {
        Booking {
            name: "bk-6".into(),
            policy: "p-b".into(),
            slot: "sl-b".into(),
            user: "user-g".into(),
            when: Interval {
                start: T0 + 75 * 60 * SECOND,
                end: T0 + 80 * 60 * SECOND,
            },
            ..Booking::default()
        }
    }

    #[test]
    fn booking_json_is_the_reference_body_byte_for_byte() {
        assert_eq!(serde_json::to_string(&example()).unwrap(), EXAMPLE);
        assert_eq!(serde_json::from_str::<Booking>(EXAMPLE).unwrap(), example());
    }

    #[test]
    fn set_flags_and_times_are_written_and_hidden_fields_are_not() {
        let booking = Booking {
            cancelled: true,
            cancelled_at: Some(T0 + 1),
            cancelled_by: Some("admin".into()),
            started: true,
            started_at: Some(T0 + 60 * SECOND + 1_500_000),
            unfulfilled: true,
            ..example()
        };
        let text = serde_json::to_string(&booking).unwrap();
        assert_eq!(
            text,
            r#"{"cancelled":true,"cancelled_at":"2022-11-05T00:00:00.000Z","name":"bk-6","policy":"p-b","slot":"sl-b","started":true,"started_at":"2022-11-05T00:01:00.001Z","user":"user-g","when":{"end":"2022-11-05T01:20:00.000Z","start":"2022-11-05T01:15:00.000Z"}}"#
        );
        let back: Booking = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            Booking {
                cancelled_at: Some(T0),
                cancelled_by: None,
                started_at: Some(T0 + 60 * SECOND + 1_000_000),
                unfulfilled: false,
                ..booking
            }
        );
    }

    #[test]
    fn reading_is_lenient() {
        let back: Booking = serde_json::from_str(
            r#"{"name":"bk-1","cancelled_by":"someone","usage_charged":"5m","extra":1,"cancelled_at":"0001-01-01T00:00:00Z","unfulfilled":true}"#,
        )
        .unwrap();
        assert_eq!(
            back,
            Booking {
                name: "bk-1".into(),
                unfulfilled: true,
                ..Booking::default()
            }
        );
        let yaml: Booking = serde_yaml::from_str(
            "name: bk-2\nwhen: {start: 2022-11-05T00:00:00Z, end: 2022-11-05T00:05:00Z}\nstarted_at: 2022-11-05T00:01:00Z\n",
        )
        .unwrap();
        assert_eq!(
            yaml.when,
            Interval {
                start: T0,
                end: T0 + 300 * SECOND
            }
        );
        assert_eq!(yaml.started_at, Some(T0 + 60 * SECOND));
        assert!(serde_json::from_str::<Booking>(r#"{"started_at":"yesterday"}"#).is_err());
    }
}
