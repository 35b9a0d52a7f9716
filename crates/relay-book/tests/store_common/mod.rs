//! What the store tests share: a database of either kind (a temp dir for SQLite, a
//! throw-away cluster for PostgreSQL), a small consistent manifest, and time helpers.

#![allow(dead_code)] // each test crate uses a different part
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::BTreeMap;

use relay_book::interval::Interval;
use relay_book::manifest::{
    Description, GoDuration, Group, Manifest, Policy, Resource, Slot, Stream, Ui, UiSet, Window,
};
use relay_book::store::{BookingRequest, Location, Store, StoreOptions};
use relay_book::timefmt::{Nanos, SECOND};
use relay_testkit::postgres::PgCluster;

/// 2024-01-08T00:00:00Z.
pub const T0: Nanos = 1_704_672_000 * SECOND;
pub const MINUTE: Nanos = 60 * SECOND;
pub const HOUR: Nanos = 60 * MINUTE;

/// A database the test owns; several stores may be opened on it.
pub struct Db {
    pub location: Location,
    pub kind: &'static str,
    _dir: Option<tempfile::TempDir>,
    pub cluster: Option<PgCluster>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            location: Location::SqliteDir(dir.path().join("store")),
            kind: "sqlite",
            _dir: Some(dir),
            cluster: None,
        }
    }

    pub fn postgres() -> Db {
        let cluster = PgCluster::start();
        Db {
            location: Location::Url(cluster.url()),
            kind: "postgres",
            _dir: None,
            cluster: Some(cluster),
        }
    }

    pub async fn open(&self) -> Store {
        self.open_with(StoreOptions::default()).await
    }

    pub async fn open_with(&self, options: StoreOptions) -> Store {
        let store = Store::open(&self.location, options).await.unwrap();
        assert_eq!(store.backend(), self.kind);
        store
    }
}

pub fn at(start: Nanos, end: Nanos) -> Interval {
    Interval { start, end }
}

pub fn request(name: &str, slot: &str, user: &str, when: Interval) -> BookingRequest {
    BookingRequest {
        name: name.to_owned(),
        slot: slot.to_owned(),
        user: user.to_owned(),
        when,
        group_check: true,
    }
}

fn description(kind: &str, name: &str) -> Description {
    Description {
        name: name.to_owned(),
        kind: kind.to_owned(),
        short: format!("short {name}"),
        ..Description::default()
    }
}

fn stream(for_: &str, url: &str) -> Stream {
    Stream {
        connection_type: "session".to_owned(),
        for_: for_.to_owned(),
        scopes: Some(vec!["read".to_owned(), "write".to_owned()]),
        topic: "auto".to_owned(),
        url: url.to_owned(),
        ..Stream::default()
    }
}

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// Two rigs (`r-a` with three streams on two relay URLs, `r-b`), slots `sl-a`, `sl-b`
/// under the plain policy `p-a` and `sl-g` (on `r-a`) under `p-grace` (grace 5m, penalty
/// 10m); group `g-a` reaches both policies. The window allows everything.
pub fn manifest() -> Manifest {
    let mut descriptions = BTreeMap::new();
    for (key, kind) in [
        ("d-g-a", "group"),
        ("d-p", "policy"),
        ("d-r", "resource"),
        ("d-sl", "slot"),
        ("d-ui", "ui"),
    ] {
        descriptions.insert(key.to_owned(), description(kind, key));
    }
    let mut groups = BTreeMap::new();
    groups.insert(
        "g-a".to_owned(),
        Group {
            description: "d-g-a".to_owned(),
            policies: names(&["p-a", "p-grace"]),
        },
    );
    let mut policies = BTreeMap::new();
    policies.insert(
        "p-a".to_owned(),
        Policy {
            description: "d-p".to_owned(),
            slots: Some(names(&["sl-a", "sl-b"])),
            ..Policy::default()
        },
    );
    policies.insert(
        "p-grace".to_owned(),
        Policy {
            description: "d-p".to_owned(),
            slots: Some(names(&["sl-g"])),
            enforce_grace_period: true,
            grace_period: GoDuration(5 * MINUTE),
            grace_penalty: GoDuration(10 * MINUTE),
            ..Policy::default()
        },
    );
    let mut resources = BTreeMap::new();
    for (key, streams) in [
        ("r-a", names(&["st-data", "st-video", "st-other"])),
        ("r-b", names(&["st-data"])),
    ] {
        resources.insert(
            key.to_owned(),
            Resource {
                description: "d-r".to_owned(),
                streams: Some(streams),
                topic_stub: key.to_owned(),
                ..Resource::default()
            },
        );
    }
    let mut streams = BTreeMap::new();
    streams.insert(
        "st-data".to_owned(),
        stream("data", "https://relay-one.example/access"),
    );
    streams.insert(
        "st-video".to_owned(),
        stream("video", "https://relay-one.example/access"),
    );
    streams.insert(
        "st-other".to_owned(),
        stream("other", "https://relay-two.example/access"),
    );
    let mut slots = BTreeMap::new();
    for (key, resource, policy) in [
        ("sl-a", "r-a", "p-a"),
        ("sl-b", "r-b", "p-a"),
        ("sl-g", "r-a", "p-grace"),
    ] {
        slots.insert(
            key.to_owned(),
            Slot {
                description: "d-sl".to_owned(),
                policy: policy.to_owned(),
                resource: resource.to_owned(),
                ui_set: "us-a".to_owned(),
                window: "w-a".to_owned(),
            },
        );
    }
    let mut uis = BTreeMap::new();
    uis.insert(
        "ui-a".to_owned(),
        Ui {
            description: "d-ui".to_owned(),
            streams_required: names(&["st-data"]),
            url: "https://example.org/ui/?streams={{streams}}".to_owned(),
        },
    );
    let mut ui_sets = BTreeMap::new();
    ui_sets.insert(
        "us-a".to_owned(),
        UiSet {
            uis: Some(names(&["ui-a"])),
        },
    );
    let mut windows = BTreeMap::new();
    windows.insert(
        "w-a".to_owned(),
        Window {
            allowed: Some(Vec::new()),
            denied: Vec::new(),
        },
    );
    Manifest {
        descriptions,
        display_guides: BTreeMap::new(),
        groups,
        policies,
        resources,
        slots,
        streams,
        ui_sets,
        uis,
        windows,
    }
}
