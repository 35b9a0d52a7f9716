//! What the HTTP tests share: a booking server on 127.0.0.1:0 with SQLite in a temporary
//! directory and a fixed clock, a small manifest, tokens, and request helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;

use relay_book::server::{self, Config, ManualClock, RunningBookServer};
use relay_book::store::{Location, Store};
use relay_book::timefmt::SECOND;
use relay_book::tokens;

/// The tests' "now": 2022-11-05T00:00:00Z.
pub const NOW: i64 = 1_667_606_400;
/// The server's audience.
pub const AUDIENCE: &str = "https://book.example.org";
/// The booking-API secret.
pub const ADMIN_SECRET: &str = "admin-secret";
/// The relay secret.
pub const RELAY_SECRET: &str = "relay-secret";
/// The relay access URL in [`MANIFEST`] (replaced by a stub's in the deny tests).
pub const RELAY_URL: &str = "https://relay-access.practable.io";

/// `2022-11-05T<hh:mm>:00Z`, `minutes` after [`NOW`] (same day).
pub fn at(minutes: i64) -> String {
    format!("2022-11-05T{:02}:{:02}:00.000Z", minutes / 60, minutes % 60)
}

/// Unix seconds `minutes` after [`NOW`].
pub fn secs(minutes: i64) -> i64 {
    NOW + minutes * 60
}

/// A small manifest: two policies (`p-a` with book-ahead 2h, max 2 bookings and grace;
/// `p-b` with no limits), two groups, two rigs with two streams each, one UI set.
pub const MANIFEST: &str = r#"
descriptions:
  d-g-a: {name: "group a", type: group, short: "a"}
  d-g-b: {name: "group b", type: group, short: "b"}
  d-p-a: {name: "policy a", type: policy, short: "a"}
  d-p-b: {name: "policy b", type: policy, short: "b"}
  d-r-a: {name: "resource a", type: resource, short: "a"}
  d-r-b: {name: "resource b", type: resource, short: "b"}
  d-sl-a: {name: "slot a", type: slot, short: "a", long: "a long", further: "https://further.example.org/a", thumb: "https://thumb.example.org/a.png", image: "https://image.example.org/a.png"}
  d-sl-b: {name: "slot b", type: slot, short: "b"}
  d-ui-a: {name: "ui a", type: ui, short: "a"}
  d-ui-b: {name: "ui b", type: ui, short: "b"}
display_guides:
  1m: {book_ahead: 1h, duration: 1m, max_slots: 15, label: "1m"}
groups:
  g-a: {description: d-g-a, policies: [p-a]}
  g-b: {description: d-g-b, policies: [p-b]}
policies:
  p-a:
    description: d-p-a
    display_guides: [1m]
    slots: [sl-a]
    enforce_book_ahead: true
    book_ahead: 2h
    enforce_max_bookings: true
    max_bookings: 2
    enforce_grace_period: true
    grace_period: 3m
    grace_penalty: 5m
  p-b:
    description: d-p-b
    slots: [sl-b]
resources:
  r-a: {description: d-r-a, streams: [st-a, st-b], topic_stub: aaaa00, config_url: "https://config.example.org/a.json"}
  r-b: {description: d-r-b, streams: [st-a, st-b], topic_stub: bbbb00}
slots:
  sl-a: {description: d-sl-a, policy: p-a, resource: r-a, ui_set: us-a, window: w-a}
  sl-b: {description: d-sl-b, policy: p-b, resource: r-b, ui_set: us-a, window: w-a}
streams:
  st-a: {url: "https://relay-access.practable.io", connection_type: session, for: data, scopes: [read, write], topic: auto}
  st-b: {url: "https://relay-access.practable.io", connection_type: session, for: video, scopes: [read], topic: auto}
uis:
  ui-a: {description: d-ui-a, url: "https://ui.example.org/a?streams={{streams}}", streams_required: [st-a, st-b]}
  ui-b: {description: d-ui-b, url: "https://ui.example.org/b", streams_required: [st-a]}
ui_sets:
  us-a: {uis: [ui-b, ui-a]}
windows:
  w-a:
    allowed: [{start: "2022-11-04T00:00:00Z", end: "2022-11-06T00:00:00Z"}]
    denied: []
"#;

/// The YAML manifest as the JSON body of `PUT /admin/manifest`.
pub fn manifest_json(yaml: &str) -> String {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    serde_json::to_string(&value).unwrap()
}

/// A running server and what a test needs to talk to it.
pub struct Harness {
    pub server: RunningBookServer,
    pub clock: ManualClock,
    pub api: String,
    pub http: reqwest::Client,
    pub admin: String,
    _dir: tempfile::TempDir,
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Assert the reply is `status` with the body [`error_body`]`(status, message)`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (status, error_body(status, message).as_str())
        );
    }
}

impl Harness {
    /// A server with the default test settings.
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// A server with the default test settings and [`MANIFEST`] loaded.
    pub async fn loaded() -> Harness {
        let h = Self::start().await;
        h.load(MANIFEST).await;
        h
    }

    /// A server with the test settings changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(AUDIENCE, ADMIN_SECRET, RELAY_SECRET);
        config.bind = "127.0.0.1".parse().unwrap();
        config.port = 0;
        config.access_token_ttl = Duration::from_secs(60);
        config.persist_dir = dir.path().to_owned();
        config.deny_poll_every = Duration::from_millis(20);
        adjust(&mut config);
        let store = Store::open(
            &Location::SqliteDir(dir.path().to_owned()),
            config.store_options(),
        )
        .await
        .unwrap();
        let clock = ManualClock::new(NOW * SECOND);
        let server = server::start(config, store, clock.clock()).await.unwrap();
        let api = format!("{}/api/v1", server.url());
        let admin = Self::token_at(&clock, "admin-alice", true);
        Harness {
            server,
            clock,
            api,
            http: reqwest::Client::new(),
            admin,
            _dir: dir,
        }
    }

    fn token_at(clock: &ManualClock, sub: &str, admin: bool) -> String {
        let now = clock.clock().now_secs();
        let claims = tokens::client_claims(sub, AUDIENCE, admin, 24 * 3600, None, now);
        tokens::sign(&claims, ADMIN_SECRET.as_bytes()).unwrap()
    }

    /// A `booking:admin` token valid for a day from the clock's now.
    pub fn admin_token(&self) -> String {
        Self::token_at(&self.clock, "admin-alice", true)
    }

    /// A `booking:user` token for `user`, valid for a day from the clock's now.
    pub fn user(&self, user: &str) -> String {
        Self::token_at(&self.clock, user, false)
    }

    /// Any request; `path` is under `/api/v1` unless it starts with `http`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.api)
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status().as_u16(),
            body: response.text().await.unwrap(),
        }
    }

    /// Any request with the admin token.
    pub async fn as_admin(&self, method: &str, path: &str, body: Option<String>) -> Reply {
        self.call(method, path, Some(&self.admin), body).await
    }

    /// Assert the `/metrics` text has `line`.
    pub async fn assert_metric(&self, line: &str) {
        let metrics = self.metrics().await;
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    /// Load `yaml` as the manifest (asserting 200).
    pub async fn load(&self, yaml: &str) {
        let reply = self
            .call(
                "PUT",
                "/admin/manifest",
                Some(&self.admin),
                Some(manifest_json(yaml)),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    /// Join `user` to `group` (asserting 204).
    pub async fn join(&self, user: &str, group: &str) {
        let reply = self
            .call(
                "POST",
                &format!("/users/{user}/groups/{group}"),
                Some(&self.user(user)),
                None,
            )
            .await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }

    /// Join `user` to `group` (asserting 204) and return a user token for `user`.
    pub async fn member(&self, user: &str, group: &str) -> String {
        self.join(user, group).await;
        self.user(user)
    }

    /// Book `slot` for `user` from `from` to `to` minutes after now.
    pub async fn book(&self, user: &str, slot: &str, from: i64, to: i64) -> Reply {
        self.call(
            "POST",
            &format!(
                "/slots/{slot}?user_name={user}&from={}&to={}",
                at(from),
                at(to)
            ),
            Some(&self.user(user)),
            None,
        )
        .await
    }

    /// The names of `user`'s current bookings.
    pub async fn booking_names(&self, user: &str) -> Vec<String> {
        let reply = self
            .get(&format!("/users/{user}/bookings"), &self.user(user))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.server.url());
        self.call("GET", &url, None, None).await.body
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// The claims of a JWT as the JSON text it carries (the middle part, decoded).
pub fn jwt_payload(token: &str) -> String {
    let part = token.split('.').nth(1).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// `{"code":"<status>","message":<message>}`.
pub fn error_body(status: u16, message: &str) -> String {
    serde_json::json!({"code": status.to_string(), "message": message}).to_string()
}
