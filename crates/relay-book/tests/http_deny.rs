//! Cancelling a started booking reaches the relay (spec §4.7, fixed): a stub relay on
//! 127.0.0.1:0 (plain http, with a path in its URL) records
//! `POST /access/bids/deny?bid=<id>&exp=<end>` with a raw `relay:admin` token; a relay that
//! answers 500 first is retried until it answers 204; one that keeps failing is given up at
//! the booking's end and never reported as success; `/admin/status` and the metrics show
//! what happened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use http_support::*;
use relay_book::timefmt::SECOND;

/// What the stub relay saw and will answer.
#[derive(Default)]
struct Stub {
    /// `path?query` and `Authorization` of each call.
    calls: Mutex<Vec<(String, String)>>,
    /// Statuses to answer, in order; 204 when empty.
    answers: Mutex<VecDeque<u16>>,
    /// Requests for this booking id never get an answer (a relay that hangs).
    hang_for: Mutex<Option<String>>,
}

async fn deny(State(stub): State<Arc<Stub>>, request: Request) -> StatusCode {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let hangs =
        matches!(&*stub.hang_for.lock().unwrap(), Some(bid) if target.contains(bid.as_str()));
    stub.calls.lock().unwrap().push((target, auth));
    if hangs {
        std::future::pending::<()>().await;
    }
    let status = stub.answers.lock().unwrap().pop_front().unwrap_or(204);
    StatusCode::from_u16(status).unwrap()
}

/// A stub relay; returns its access URL (with the `/access` path) and its record.
async fn stub_relay(answers: &[u16]) -> (String, Arc<Stub>) {
    let stub = Arc::new(Stub::default());
    stub.answers.lock().unwrap().extend(answers);
    let app = axum::Router::new()
        .route("/access/bids/deny", post(deny))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/access"), stub)
}

/// A server whose streams point at `relay_url`, with one booking of `user-d1` from now+0
/// to now+10 min, not started; returns the harness and the booking's name.
async fn booking(relay_url: &str) -> (Harness, String) {
    let h = Harness::start().await;
    h.load(&MANIFEST.replace(RELAY_URL, relay_url)).await;
    h.join("user-d1", "g-a").await;
    assert_eq!(h.book("user-d1", "sl-a", 0, 10).await.status, 204);
    let booking = h.booking_names("user-d1").await.remove(0);
    (h, booking)
}

/// [`booking`], started (its activity was fetched).
async fn started_booking(relay_url: &str) -> (Harness, String) {
    let (h, booking) = booking(relay_url).await;
    let reply = h
        .call(
            "PUT",
            &format!("/users/user-d1/bookings/{booking}"),
            Some(&h.user("user-d1")),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    (h, booking)
}

async fn cancel(h: &Harness, booking: &str) {
    let reply = h
        .call(
            "DELETE",
            &format!("/users/user-d1/bookings/{booking}"),
            Some(&h.user("user-d1")),
            None,
        )
        .await;
    reply.assert_error(404, "cancelled");
}

async fn deny_calls(h: &Harness) -> serde_json::Value {
    h.get("/admin/status", &h.admin).await.json()["deny_calls"].clone()
}

#[tokio::test]
async fn cancelling_a_started_booking_denies_it_at_the_relay() {
    let (relay_url, stub) = stub_relay(&[]).await;
    let (h, booking) = started_booking(&relay_url).await;
    // Nothing is sent before the cancellation.
    assert!(stub.calls.lock().unwrap().is_empty());
    cancel(&h, &booking).await;
    relay_testkit::wait_until(
        "the relay got the deny call",
        Duration::from_secs(10),
        || !stub.calls.lock().unwrap().is_empty(),
    )
    .await;
    let (target, auth) = stub.calls.lock().unwrap()[0].clone();
    assert_eq!(
        target,
        format!("/access/bids/deny?bid={booking}&exp={}", secs(10))
    );
    assert!(!auth.starts_with("Bearer"), "{auth}");
    assert_eq!(
        jwt_payload(&auth),
        format!(
            r#"{{"scopes":["relay:admin"],"sub":"admin","aud":["{relay_url}"],"exp":{},"nbf":{},"iat":{}}}"#,
            NOW - 1 + 300,
            NOW - 1,
            NOW - 1
        )
    );
    relay_testkit::wait_until_async(
        "the call is recorded as ok",
        Duration::from_secs(10),
        || async { deny_calls(&h).await[0]["state"] == "ok" },
    )
    .await;
    assert_eq!(
        deny_calls(&h).await.to_string(),
        format!(r#"[{{"attempts":1,"booking":"{booking}","relay":"{relay_url}","state":"ok"}}]"#)
    );
    // Both streams share one relay URL: one call.
    assert_eq!(stub.calls.lock().unwrap().len(), 1);
    h.assert_metric(r#"book_deny_calls_total{result="ok"} 1"#)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn a_failed_deny_call_is_shown_and_retried_until_it_succeeds() {
    let (relay_url, stub) = stub_relay(&[500]).await;
    let (h, booking) = started_booking(&relay_url).await;
    cancel(&h, &booking).await;
    relay_testkit::wait_until_async(
        "the failure is recorded",
        Duration::from_secs(10),
        || async { deny_calls(&h).await[0]["attempts"] == 1 },
    )
    .await;
    let calls = deny_calls(&h).await;
    assert_eq!(calls[0]["state"], "pending", "{calls}");
    assert!(
        calls[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("relay answered 500 Internal Server Error"),
        "{calls}"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"book_deny_calls_total{result="error"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"result="ok""#), "{metrics}");

    // The retry is due a second later by the server's clock.
    h.clock.advance(2 * SECOND);
    relay_testkit::wait_until_async("the retry succeeded", Duration::from_secs(10), || async {
        deny_calls(&h).await[0]["state"] == "ok"
    })
    .await;
    assert_eq!(deny_calls(&h).await[0]["attempts"], 2);
    let calls = stub.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, calls[1].0);
    h.assert_metric(r#"book_deny_calls_total{result="ok"} 1"#)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn an_unstarted_booking_needs_no_deny_call() {
    let (relay_url, stub) = stub_relay(&[]).await;
    let (h, booking) = booking(&relay_url).await;
    cancel(&h, &booking).await;
    // The status is read after the cancellation committed: no call was queued.
    assert_eq!(deny_calls(&h).await, serde_json::Value::Null);
    assert!(stub.calls.lock().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_relay_that_keeps_failing_is_given_up_at_the_bookings_end_and_never_reported_ok() {
    let (relay_url, stub) = stub_relay(&[500, 500, 500]).await;
    let (h, booking) = started_booking(&relay_url).await;
    cancel(&h, &booking).await;
    relay_testkit::wait_until_async(
        "the first failure is recorded",
        Duration::from_secs(10),
        || async { deny_calls(&h).await[0]["attempts"] == 1 },
    )
    .await;
    // Past the booking's end (00:10) the next failure is the last.
    h.clock.advance(11 * 60 * SECOND);
    relay_testkit::wait_until_async("the call is given up", Duration::from_secs(10), || async {
        deny_calls(&h).await[0]["state"] == "failed"
    })
    .await;
    let calls = deny_calls(&h).await;
    assert_eq!(calls[0]["attempts"], 2, "{calls}");
    assert!(calls[0]["last_error"]
        .as_str()
        .unwrap()
        .starts_with("relay answered 500"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"book_deny_calls_total{result="error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"book_deny_calls_total{result="failed"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"result="ok""#), "{metrics}");
    assert_eq!(stub.calls.lock().unwrap().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn a_relay_that_hangs_does_not_hold_up_the_deny_calls_of_other_bookings() {
    let (relay_url, stub) = stub_relay(&[]).await;
    // Calls may take the reference's full minute: a hung call must not hold up the next.
    let h = Harness::start_with(|c| c.request_timeout = Duration::from_secs(60)).await;
    h.load(&MANIFEST.replace(RELAY_URL, &relay_url)).await;
    let mut started = Vec::new();
    for (user, group, slot) in [("user-d1", "g-a", "sl-a"), ("user-d2", "g-b", "sl-b")] {
        h.join(user, group).await;
        assert_eq!(h.book(user, slot, 0, 10).await.status, 204);
        let booking = h.booking_names(user).await.remove(0);
        let path = format!("/users/{user}/bookings/{booking}");
        let reply = h.call("PUT", &path, Some(&h.user(user)), None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        started.push((user, booking, path));
    }
    let (first, second) = (&started[0], &started[1]);
    *stub.hang_for.lock().unwrap() = Some(first.1.clone());
    for (user, _, path) in [first, second] {
        h.call("DELETE", path, Some(&h.user(user)), None)
            .await
            .assert_error(404, "cancelled");
    }
    relay_testkit::wait_until_async(
        "the second booking's deny call succeeds while the first relay call hangs",
        Duration::from_secs(10),
        || async {
            let calls = deny_calls(&h).await;
            calls
                .as_array()
                .into_iter()
                .flatten()
                .any(|call| call["booking"] == second.1.as_str() && call["state"] == "ok")
        },
    )
    .await;
    let calls = deny_calls(&h).await;
    let first_call = calls
        .as_array()
        .unwrap()
        .iter()
        .find(|call| call["booking"] == first.1.as_str())
        .unwrap();
    assert_eq!(first_call["state"], "pending", "{calls}");
    h.stop().await;
}
