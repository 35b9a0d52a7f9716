//! Driving the booking server (`relay book serve`, spec §5) from the outside, as the
//! end-to-end tests and relay-bench's B9 do: a manifest of identical rigs under one policy
//! and one group, admin tokens, and a small HTTP client for login, join, book and the
//! admin reads. Times are RFC 3339 with milliseconds, durations Go strings, as on the wire.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The one group of [`manifest`]; it holds [`POLICY`].
pub const GROUP: &str = "g-book";
/// The one policy of [`manifest`]; every slot is under it.
pub const POLICY: &str = "p-book";
/// The one stream of every rig in [`manifest`] (relay topic `<topic stub>-data`).
pub const STREAM: &str = "data";
/// The message a booking refused because its interval is taken carries (§3.4 check 16).
pub const CONFLICT: &str = "could not make the booking because conflict with existing";

/// Slot `i` of [`manifest`]; each slot has a rig (resource) of its own.
pub fn slot_name(i: usize) -> String {
    format!("sl-{i:03}")
}

/// The relay topic stub of slot `i`'s rig.
pub fn topic_stub(i: usize) -> String {
    format!("rig{i:03}")
}

/// A manifest (JSON form, §2.2) of `slots` slots, each on its own rig with one read/write
/// `session` stream whose relay access URL is `stream_url`, all under [`POLICY`] (whose
/// rules are `rules`, e.g. `{"enforce_grace_period":true,…}`), in [`GROUP`], with a window
/// open from 2020 to 2100.
pub fn manifest(slots: usize, stream_url: &str, rules: &Value) -> Value {
    let describe = |kind: &str| json!({"name": format!("A {kind}"), "short": format!("The {kind}"), "type": kind});
    let mut policy = json!({
        "description": "d-policy",
        "slots": (0..slots).map(slot_name).collect::<Vec<_>>(),
    });
    if let (Some(policy), Some(rules)) = (policy.as_object_mut(), rules.as_object()) {
        policy.extend(rules.clone());
    }
    let resources: serde_json::Map<String, Value> = (0..slots)
        .map(|i| {
            let resource = json!({"description": "d-resource", "streams": [STREAM], "topic_stub": topic_stub(i)});
            (format!("r-{i:03}"), resource)
        })
        .collect();
    let slot_map: serde_json::Map<String, Value> = (0..slots)
        .map(|i| {
            let slot = json!({
                "description": "d-slot", "policy": POLICY, "resource": format!("r-{i:03}"),
                "ui_set": "us-book", "window": "w-open",
            });
            (slot_name(i), slot)
        })
        .collect();
    json!({
        "descriptions": {
            "d-group": describe("group"), "d-policy": describe("policy"),
            "d-resource": describe("resource"), "d-slot": describe("slot"), "d-ui": describe("ui"),
        },
        "groups": {GROUP: {"description": "d-group", "policies": [POLICY]}},
        "policies": {POLICY: policy},
        "resources": resources,
        "slots": slot_map,
        "streams": {STREAM: {
            "connection_type": "session", "for": STREAM, "scopes": ["read", "write"],
            "topic": "auto", "url": stream_url,
        }},
        "uis": {"ui-book": {
            "description": "d-ui", "streams_required": [STREAM],
            "url": "https://example.org/ui/?streams={{streams}}&exp={{exp}}",
        }},
        "ui_sets": {"us-book": {"UIs": ["ui-book"]}},
        "windows": {"w-open": {
            "allowed": [{"start": "2020-01-01T00:00:00.000Z", "end": "2100-01-01T00:00:00.000Z"}],
            "denied": [],
        }},
    })
}

/// Seconds since the Unix epoch.
fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An HS256 `booking:admin` token for the server whose `BOOK_AUDIENCE` is `audience`,
/// signed with its `BOOK_ADMIN_SECRET`, valid for `ttl` (claims of §4.2).
pub fn admin_token(secret: &str, audience: &str, ttl: Duration) -> String {
    let now = unix_seconds(SystemTime::now());
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let claims = json!({
        "scopes": ["booking:admin"], "sub": "admin", "aud": [audience],
        "exp": now + ttl, "nbf": now - 1, "iat": now - 1,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    // Encoding a JSON object with an HMAC key cannot fail.
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default()
}

/// `t` as the API writes times: RFC 3339, UTC, exactly three fractional digits.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A whole number of seconds as Go writes a duration (`0s`, `3s`, `5m0s`, `1h30m0s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (hours, minutes, seconds) = (s / 3600, s % 3600 / 60, s % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// A reply: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as text (empty for 204).
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A client of one booking server's API.
#[derive(Debug, Clone)]
pub struct BookApi {
    client: reqwest::Client,
    /// `http://<address>/api/v1`.
    api: String,
}

/// How long one request may take before it counts as failed (a loaded debug build is slow).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl BookApi {
    /// A client of the API at `api` (e.g. `http://127.0.0.1:4000/api/v1`).
    pub fn new(api: impl Into<String>) -> BookApi {
        // reqwest needs a process-wide rustls provider when its features carry none; the
        // API is plain HTTP, but the client builder asks for one anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        BookApi {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                // The server closes a kept-alive connection idle for 10 s (its header read
                // timeout); drop idle ones first so none is reused just as it closes.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            api: api.into(),
        }
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.api
    }

    /// `method` on `path` (under the API base, with its leading `/`), with the token raw in
    /// `Authorization` and `body` as JSON; an `Err` when no reply came.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.api));
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(Reply { status, body })
    }

    /// POST `/login/{user}`: the user's token, or why there is none.
    pub async fn login(&self, user: &str) -> Result<String, String> {
        let reply = self
            .send(reqwest::Method::POST, &format!("/login/{user}"), None, None)
            .await
            .map_err(|e| format!("login {user}: {e}"))?;
        match reply.json()["token"].as_str() {
            Some(token) if reply.status == 200 => Ok(token.to_owned()),
            _ => Err(format!("login {user}: {reply:?}")),
        }
    }

    /// POST `/users/{user}/groups/{group}` (204 when joined).
    pub async fn join(
        &self,
        user: &str,
        token: &str,
        group: &str,
    ) -> Result<Reply, reqwest::Error> {
        let path = format!("/users/{user}/groups/{group}");
        self.send(reqwest::Method::POST, &path, Some(token), None)
            .await
    }

    /// POST `/slots/{slot}?user_name=&from=&to=` (204 when booked).
    pub async fn book(
        &self,
        user: &str,
        token: &str,
        slot: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Result<Reply, reqwest::Error> {
        let path = format!(
            "/slots/{slot}?user_name={user}&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        );
        self.send(reqwest::Method::POST, &path, Some(token), None)
            .await
    }

    /// [`send`](Self::send) with `token`, which must answer 200; the error starts with
    /// `<method> <path>: `.
    async fn send_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let request = format!("{method} {path}");
        let reply = self
            .send(method, path, Some(token), body)
            .await
            .map_err(|e| format!("{request}: {e}"))?;
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(format!("{request}: {reply:?}"))
        }
    }

    /// GET `path` with `token`, which must answer 200 with JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Result<Value, String> {
        let reply = self
            .send_ok(reqwest::Method::GET, path, token, None)
            .await?;
        serde_json::from_str(&reply.body).map_err(|e| format!("GET {path}: {e}: {}", reply.body))
    }

    /// PUT `/admin/manifest`, which must answer 200.
    pub async fn put_manifest(&self, admin: &str, manifest: &Value) -> Result<(), String> {
        self.send_ok(
            reqwest::Method::PUT,
            "/admin/manifest",
            admin,
            Some(manifest),
        )
        .await?;
        Ok(())
    }
}

/// The bookings of `list` (a `GET /admin/bookings` reply) as (name, user, slot, start, end)
/// rows; entries that lack a field are left out.
pub fn booking_rows(list: &Value) -> Vec<BookingRow> {
    let text = |v: &Value, key: &str| v[key].as_str().map(str::to_owned);
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|b| {
                    Some(BookingRow {
                        name: text(b, "name")?,
                        user: text(b, "user")?,
                        slot: text(b, "slot")?,
                        start: text(&b["when"], "start")?,
                        end: text(&b["when"], "end")?,
                        cancelled: b["cancelled"].as_bool().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One booking as the admin lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRow {
    /// The booking id.
    pub name: String,
    /// Its user.
    pub user: String,
    /// Its slot.
    pub slot: String,
    /// `when.start` as written (RFC 3339, milliseconds).
    pub start: String,
    /// `when.end` as written.
    pub end: String,
    /// Whether it was cancelled (old bookings).
    pub cancelled: bool,
}

/// Pairs of bookings (by name) in `rows` that share a slot and overlap, taking intervals as
/// half-open. Every rig of [`manifest`] has one slot, so these are double bookings of a rig.
/// Times compare as text: the API writes them in one fixed-width UTC form.
pub fn double_bookings(rows: &[BookingRow]) -> Vec<(String, String)> {
    let mut live: Vec<&BookingRow> = rows.iter().filter(|r| !r.cancelled).collect();
    live.sort_by(|a, b| (&a.slot, &a.start).cmp(&(&b.slot, &b.start)));
    let mut doubles = Vec::new();
    for (i, a) in live.iter().enumerate() {
        for b in live.iter().skip(i + 1) {
            if b.slot != a.slot || b.start >= a.end {
                break;
            }
            doubles.push((a.name.clone(), b.name.clone()));
        }
    }
    doubles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, slot: &str, start: &str, end: &str) -> BookingRow {
        BookingRow {
            name: name.into(),
            user: "u".into(),
            slot: slot.into(),
            start: format!("2030-01-01T{start}:00.000Z"),
            end: format!("2030-01-01T{end}:00.000Z"),
            cancelled: false,
        }
    }

    #[test]
    fn double_bookings_are_overlaps_on_one_slot_with_half_open_intervals() {
        let rows = [
            row("a", "s1", "10:00", "10:30"),
            row("b", "s1", "10:30", "11:00"), // back to back with a: fine
            row("c", "s1", "10:45", "11:15"), // overlaps b
            row("d", "s2", "10:00", "12:00"), // another slot
            BookingRow {
                cancelled: true,
                ..row("e", "s1", "10:00", "12:00") // cancelled: not a booking
            },
        ];
        assert_eq!(double_bookings(&rows), [("b".into(), "c".into())]);
        assert!(double_bookings(&[]).is_empty());
    }

    #[test]
    fn go_durations_and_times_are_written_as_the_api_writes_them() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_secs(3)), "3s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(5400)), "1h30m0s");
        let t = UNIX_EPOCH + Duration::from_millis(1_667_606_999_999);
        assert_eq!(rfc3339(t), "2022-11-05T00:09:59.999Z");
    }

    #[test]
    fn the_manifest_has_one_rig_per_slot_under_one_policy_and_group() {
        let m = manifest(
            2,
            "http://relay.test",
            &json!({"enforce_grace_period": true}),
        );
        assert_eq!(m["policies"][POLICY]["slots"], json!(["sl-000", "sl-001"]));
        assert_eq!(m["policies"][POLICY]["enforce_grace_period"], true);
        assert_eq!(m["slots"]["sl-001"]["resource"], "r-001");
        assert_eq!(m["resources"]["r-001"]["topic_stub"], "rig001");
        assert_eq!(m["groups"][GROUP]["policies"], json!([POLICY]));
        assert_eq!(m["streams"][STREAM]["url"], "http://relay.test");
    }
}
