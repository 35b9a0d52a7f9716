//! Bookings over HTTP with a fixed clock: exact bodies of a description, a policy,
//! availability (with pages), user bookings and policy status; booking 204, a refusal's
//! text and metric, DELETE → 404 `cancelled`; the owner check; the activity with exact,
//! deterministic stream tokens, topics and URLs; bulk replace and prune.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;

use http_support::*;
use relay_book::timefmt::SECOND;
use relay_book::tokens::{self, StreamClaims};

fn interval(from: &str, to: &str) -> String {
    format!(r#"{{"end":"{to}","start":"{from}"}}"#)
}

#[tokio::test]
async fn descriptions_and_policies_have_exact_bodies() {
    let h = Harness::loaded().await;
    let user = h.user("someuser");
    let slot_a = r#"{"further":"https://further.example.org/a","image":"https://image.example.org/a.png","long":"a long","name":"slot a","short":"a","thumb":"https://thumb.example.org/a.png","type":"slot"}"#;
    let reply = h.get("/descriptions/d-sl-a", &user).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, slot_a));
    let reply = h.get("/descriptions/d-x", &user).await;
    reply.assert_error(404, "not found");

    let reply = h.get("/policies/p-a", &user).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        format!(
            r#"{{"allow_start_in_past_within":"0s","book_ahead":"2h0m0s","description":{{"name":"policy a","short":"a","type":"policy"}},"display_guides":{{"1m":{{"book_ahead":"1h0m0s","duration":"1m0s","label":"1m","max_slots":15}}}},"enforce_book_ahead":true,"enforce_grace_period":true,"enforce_max_bookings":true,"grace_penalty":"5m0s","grace_period":"3m0s","max_bookings":2,"max_duration":"0s","max_usage":"0s","min_duration":"0s","next_available":"0s","slots":{{"sl-a":{{"description":{slot_a},"policy":"p-a"}}}},"starts_within":"0s"}}"#
        )
    );
    let reply = h.get("/policies/p-x", &user).await;
    reply.assert_error(404, "not found");
    h.stop().await;
}

#[tokio::test]
async fn book_list_page_and_cancel() {
    let h = Harness::loaded().await;
    let user = h.member("user-b1", "g-b").await;

    // Before any booking: one gap from now to the window's end (p-b has no book-ahead).
    let reply = h.get("/slots/sl-b", &user).await;
    assert_eq!(
        (reply.status, reply.body),
        (
            200,
            format!("[{}]", interval(&at(0), "2022-11-06T00:00:00.000Z"))
        )
    );

    for hour in 1..=4 {
        let reply = h.book("user-b1", "sl-b", hour * 60, hour * 60 + 10).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (204, ""),
            "hour {hour}"
        );
    }
    let gaps = [
        interval(&at(0), &at(60)),
        interval(&at(70), &at(120)),
        interval(&at(130), &at(180)),
        interval(&at(190), &at(240)),
        interval(&at(250), "2022-11-06T00:00:00.000Z"),
    ];
    let reply = h.get("/slots/sl-b", &user).await;
    assert_eq!(reply.body, format!("[{}]", gaps.join(",")));
    for (offset, want) in [
        (0, &gaps[0..2]),
        (2, &gaps[2..4]),
        (4, &gaps[4..5]),
        (5, &gaps[5..5]),
        (50, &gaps[5..5]),
    ] {
        let reply = h
            .get(&format!("/slots/sl-b?limit=2&offset={offset}"), &user)
            .await;
        assert_eq!(
            reply.body,
            format!("[{}]", want.join(",")),
            "offset {offset}"
        );
    }
    let reply = h.get("/slots/sl-b?offset=-1", &user).await;
    reply.assert_error(400, "offset must not be negative (got -1)");
    let reply = h.get("/slots/sl-x", &user).await;
    reply.assert_error(
        404,
        "error getting availability from store: slot sl-x not found",
    );

    // A gap's advertised start can be booked (half-open intervals).
    assert_eq!(h.book("user-b1", "sl-b", 70, 80).await.status, 204);
    // An overlapping one cannot.
    let reply = h.book("user-b1", "sl-b", 75, 85).await;
    reply.assert_error(
        404,
        "could not make the booking because conflict with existing",
    );
    let reply = h.book("user-b1", "sl-b", 95, 90).await;
    reply.assert_error(
        404,
        "could not make the booking because booking must end after it starts",
    );

    let reply = h.get("/users/user-b1/bookings", &user).await;
    assert_eq!(reply.status, 200);
    let bookings = reply.json();
    let bookings = bookings.as_array().unwrap();
    assert_eq!(bookings.len(), 5);
    let first = bookings
        .iter()
        .find(|b| b["when"]["start"] == at(60))
        .unwrap();
    let name = first["name"].as_str().unwrap();
    assert_eq!(
        first.to_string(),
        format!(
            r#"{{"cancelled_at":"0001-01-01T00:00:00.000Z","name":"{name}","policy":"p-b","slot":"sl-b","started_at":"0001-01-01T00:00:00.000Z","user":"user-b1","when":{}}}"#,
            interval(&at(60), &at(70))
        )
    );
    let reply = h.get("/users/user-b1/policies/p-b", &user).await;
    assert_eq!(
        reply.body,
        r#"{"current_bookings":5,"old_bookings":0,"usage":"50m0s"}"#
    );

    // Cancel every booking: 404 "cancelled", then 404 "not found" on a repeat.
    for booking in h.booking_names("user-b1").await {
        let path = format!("/users/user-b1/bookings/{booking}");
        let reply = h.call("DELETE", &path, Some(&user), None).await;
        reply.assert_error(404, "cancelled");
        let reply = h.call("DELETE", &path, Some(&user), None).await;
        reply.assert_error(404, "not found");
    }
    assert_eq!(h.get("/users/user-b1/bookings", &user).await.body, "[]");
    let reply = h.get("/users/user-b1/policies/p-b", &user).await;
    assert_eq!(
        reply.body,
        r#"{"current_bookings":0,"old_bookings":5,"usage":"0s"}"#
    );
    let old = h.get("/users/user-b1/oldbookings", &user).await;
    assert_eq!(old.json().as_array().unwrap().len(), 5);
    assert!(old.json()[0]["cancelled"].as_bool().unwrap());

    let metrics = h.metrics().await;
    assert!(metrics.contains("book_bookings_made_total 5"), "{metrics}");
    assert!(
        metrics.contains(r#"book_bookings_refused_total{reason="conflict"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"book_cancellations_total{by="user"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"book_http_request_duration_seconds_count{method="POST",route="/api/v1/slots/{slot_name}"}"#), "{metrics}");
    h.stop().await;
}

#[tokio::test]
async fn group_rule_and_policy_limits_refuse_with_the_reference_texts() {
    let h = Harness::loaded().await;
    let reply = h.book("user-n1", "sl-a", 10, 20).await;
    reply.assert_error(
        404,
        "could not make the booking because user user-n1 not found",
    );
    h.join("user-n1", "g-b").await;
    let reply = h.book("user-n1", "sl-a", 10, 20).await;
    reply.assert_error(404, "could not make the booking because user user-n1 belongs to no group that includes this policy");
    h.join("user-n1", "g-a").await;
    let reply = h.book("user-n1", "sl-a", 130, 140).await;
    reply.assert_error(404, "could not make the booking because bookings cannot be made more than 2h0m0s ahead of the current time");
    assert_eq!(h.book("user-n1", "sl-a", 10, 20).await.status, 204);
    assert_eq!(h.book("user-n1", "sl-a", 30, 40).await.status, 204);
    let reply = h.book("user-n1", "sl-a", 50, 60).await;
    reply.assert_error(404, "could not make the booking because you currently have 2 current/future bookings which is at or exceeds the limit of 2 for policy p-a");
    let metrics = h.metrics().await;
    for reason in ["user_not_found", "no_group", "book_ahead", "max_bookings"] {
        assert!(
            metrics.contains(&format!(
                r#"book_bookings_refused_total{{reason="{reason}"}} 1"#
            )),
            "{reason}: {metrics}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn activity_carries_exact_deterministic_stream_tokens() {
    let h = Harness::loaded().await;
    let user = h.member("user-a1", "g-a").await;
    assert_eq!(h.book("user-a1", "sl-a", 5, 15).await.status, 204);
    let booking = h.booking_names("user-a1").await.remove(0);
    let path = format!("/users/user-a1/bookings/{booking}");

    let early = h.call("PUT", &path, Some(&user), None).await;
    early.assert_error(404, "too early");

    h.clock.advance(6 * 60 * SECOND);
    let reply = h.call("PUT", &path, Some(&user), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now = NOW + 6 * 60;
    let token = |key: &str, scopes: &[&str]| {
        tokens::sign(
            &StreamClaims {
                booking_id: booking.clone(),
                topic: format!("aaaa00-{key}"),
                prefix: "session".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                sub: "user-a1".into(),
                aud: vec![RELAY_URL.into()],
                exp: secs(15),
                nbf: now - 1,
                iat: now - 1,
            },
            RELAY_SECRET.as_bytes(),
        )
        .unwrap()
    };
    let (token_a, token_b) = (token("st-a", &["read", "write"]), token("st-b", &["read"]));
    assert_eq!(
        jwt_payload(&token_a),
        format!(
            r#"{{"booking_id":"{booking}","topic":"aaaa00-st-a","prefix":"session","scopes":["read","write"],"sub":"user-a1","aud":["https://relay-access.practable.io"],"exp":{},"nbf":{},"iat":{}}}"#,
            secs(15),
            now - 1,
            now - 1
        )
    );
    let ui = |name: &str, short: &str, url: &str, streams: &str| {
        format!(
            r#"{{"description":{{"name":"{name}","short":"{short}","type":"ui"}},"streams_required":{streams},"url":"{url}"}}"#
        )
    };
    let want = format!(
        r#"{{"config":"https://config.example.org/a.json","description":{{"further":"https://further.example.org/a","image":"https://image.example.org/a.png","long":"a long","name":"slot a","short":"a","thumb":"https://thumb.example.org/a.png","type":"slot"}},"exp":{},"nbf":{},"streams":[{{"audience":"https://relay-access.practable.io","connection_type":"session","for":"data","scopes":["read","write"],"token":"{token_a}","topic":"aaaa00-st-a","url":"https://relay-access.practable.io/session/aaaa00-st-a"}},{{"audience":"https://relay-access.practable.io","connection_type":"session","for":"video","scopes":["read"],"token":"{token_b}","topic":"aaaa00-st-b","url":"https://relay-access.practable.io/session/aaaa00-st-b"}}],"uis":[{},{}]}}"#,
        secs(15),
        secs(5),
        ui("ui b", "b", "https://ui.example.org/b", r#"["st-a"]"#),
        ui(
            "ui a",
            "a",
            "https://ui.example.org/a?streams={{streams}}",
            r#"["st-a","st-b"]"#
        ),
    );
    assert_eq!(reply.body, want);
    // Same clock, same secret: the same bytes.
    assert_eq!(h.call("PUT", &path, Some(&user), None).await.body, want);
    // Bearer works here too.
    assert_eq!(
        h.call("PUT", &path, Some(&format!("Bearer {user}")), None)
            .await
            .body,
        want
    );

    let reply = h.get("/users/user-a1/policies/p-a", &user).await;
    assert_eq!(
        reply.body,
        r#"{"current_bookings":1,"old_bookings":0,"usage":"10m0s"}"#
    );

    h.clock.advance(10 * 60 * SECOND);
    let late = h.call("PUT", &path, Some(&user), None).await;
    late.assert_error(404, "too late");
    h.stop().await;
}

#[tokio::test]
async fn another_users_booking_is_not_found_for_cancel_and_activity() {
    let h = Harness::loaded().await;
    h.join("user-o1", "g-b").await;
    h.join("user-o2", "g-b").await;
    assert_eq!(h.book("user-o1", "sl-b", 0, 10).await.status, 204);
    let booking = h.booking_names("user-o1").await.remove(0);
    let intruder = h.user("user-o2");
    let path = format!("/users/user-o2/bookings/{booking}");
    for method in ["DELETE", "PUT"] {
        let reply = h.call(method, &path, Some(&intruder), None).await;
        assert_eq!(
            (reply.status, reply.body),
            (404, error_body(404, "not found")),
            "{method}"
        );
    }
    // Through the owner's path, the intruder's token is refused by the subject check.
    let owner_path = format!("/users/user-o1/bookings/{booking}");
    let reply = h.call("DELETE", &owner_path, Some(&intruder), None).await;
    reply.assert_error(
        401,
        "user_name in path user-o1 does not match subject user-o2 in token",
    );
    assert_eq!(h.booking_names("user-o1").await, vec![booking.clone()]);
    // An admin may act for the owner.
    let reply = h.as_admin("DELETE", &owner_path, None).await;
    reply.assert_error(404, "cancelled");
    h.assert_metric(r#"book_cancellations_total{by="admin"} 1"#)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn bookings_export_replace_users_and_prune() {
    let h = Harness::start_with(|c| c.tidy_every = std::time::Duration::from_millis(20)).await;
    h.load(MANIFEST).await;
    h.join("user-e1", "g-b").await;
    assert_eq!(h.book("user-e1", "sl-b", 10, 20).await.status, 204);
    assert_eq!(h.book("user-e1", "sl-b", 30, 40).await.status, 204);
    let exported = h.get("/admin/bookings", &h.admin).await;
    assert_eq!(exported.status, 200);
    assert_eq!(exported.json().as_array().unwrap().len(), 2);

    // Replace with the same two plus one that starts in the past: that one is dropped and
    // reported.
    let mut bookings: Vec<serde_json::Value> = serde_json::from_str(&exported.body).unwrap();
    bookings.push(serde_json::json!({
        "name": "bk-past", "policy": "p-b", "slot": "sl-b", "user": "user-e1",
        "when": {"start": "2022-11-04T23:00:00Z", "end": "2022-11-04T23:10:00Z"}
    }));
    let reply = h
        .as_admin(
            "PUT",
            "/admin/bookings",
            Some(serde_json::to_string(&bookings).unwrap()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status = reply.json();
    assert_eq!(status["bookings"], 2);
    assert_eq!(status["dropped"][0]["name"], "bk-past");
    assert!(
        status["dropped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("in the past"),
        "{status}"
    );

    let users = h.get("/admin/users", &h.admin).await;
    assert_eq!(users.status, 200);
    assert_eq!(
        users.json()["user-e1"]["groups"],
        serde_json::json!(["g-b"])
    );
    assert_eq!(users.json()["user-e1"]["usage"]["p-b"], "20m0s");

    // A month later the bookings have ended; pruning moves them to old bookings, next to
    // the two cancelled copies the replacement left there (§3.10).
    h.clock.advance(31 * 24 * 3600 * SECOND);
    relay_testkit::wait_until_async(
        "pruning moved both ended bookings",
        std::time::Duration::from_secs(10),
        || async {
            // A fresh admin token: the harness's expired with the month.
            let status = h.get("/admin/status", &h.admin_token()).await.json();
            status["bookings"] == 0 && status["old_bookings"] == 4
        },
    )
    .await;
    let admin = h.admin_token();
    let old = h.get("/admin/oldbookings", &admin).await.json();
    let old = old.as_array().unwrap();
    assert_eq!(old.len(), 4);
    assert_eq!(old.iter().filter(|b| b["cancelled"] == true).count(), 2);
    let user = h.user("user-e1");
    let old = h.get("/users/user-e1/oldbookings", &user).await;
    assert_eq!(old.json().as_array().unwrap().len(), 4, "{}", old.body);
    assert_eq!(h.get("/users/user-e1/bookings", &user).await.body, "[]");
    let reply = h
        .call("PUT", "/admin/oldbookings", Some(&admin), Some("[]".into()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["old_bookings"], 0);
    h.stop().await;
}

#[tokio::test]
async fn no_shows_are_cancelled_after_their_grace_period_and_the_slot_can_be_rebooked() {
    let h = Harness::start_with(|c| c.check_every = std::time::Duration::from_millis(10)).await;
    h.load(MANIFEST).await;
    let user = h.member("user-g1", "g-a").await;
    assert_eq!(h.book("user-g1", "sl-a", 1, 11).await.status, 204);
    assert_eq!(h.book("user-g1", "sl-a", 30, 40).await.status, 204);
    let names = h.booking_names("user-g1").await;
    assert_eq!(names.len(), 2);

    // p-a's grace is 3 min: at 00:05 the booking that started at 00:01 is a no-show.
    h.clock.advance(5 * 60 * SECOND);
    relay_testkit::wait_until_async(
        "the grace check cancelled the no-show",
        std::time::Duration::from_secs(10),
        || async { h.booking_names("user-g1").await.len() == 1 },
    )
    .await;
    let old = h.get("/users/user-g1/oldbookings", &user).await.json();
    assert_eq!(old[0]["cancelled"], true, "{old}");
    assert_eq!(old[0]["when"]["start"], at(1));
    // Charged grace + penalty (3m + 5m), plus the other booking's 10m.
    let status = h.get("/users/user-g1/policies/p-a", &user).await;
    assert_eq!(
        status.body,
        r#"{"current_bookings":1,"old_bookings":1,"usage":"18m0s"}"#
    );
    h.assert_metric(r#"book_cancellations_total{by="auto-grace-check"} 1"#)
        .await;

    // The freed time can be booked again, with `from`/`to` given without a zone (UTC).
    let reply = h
        .call(
            "POST",
            "/slots/sl-a?user_name=user-g1&from=2022-11-05T00:06:00&to=2022-11-05T00:11:00",
            Some(&user),
            None,
        )
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    h.stop().await;
}

/// `book_grace_checks_total` from the metrics text.
async fn grace_checks(h: &Harness) -> u64 {
    let metrics = h.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("book_grace_checks_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn the_lock_stops_grace_cancellation_until_unlocked() {
    let h = Harness::start_with(|c| c.check_every = std::time::Duration::from_millis(10)).await;
    h.load(MANIFEST).await;
    h.join("user-k1", "g-a").await;
    assert_eq!(h.book("user-k1", "sl-a", 1, 11).await.status, 204);
    let reply = h
        .as_admin("PUT", "/admin/status?lock=true&msg=exam", None)
        .await;
    assert_eq!(reply.status, 200);
    h.clock.advance(5 * 60 * SECOND);
    // Two more completed runs: at least one ran entirely after the clock moved.
    let runs = grace_checks(&h).await;
    relay_testkit::wait_until_async(
        "two grace checks ran",
        std::time::Duration::from_secs(10),
        || async { grace_checks(&h).await >= runs + 2 },
    )
    .await;
    let all = h.get("/admin/bookings", &h.admin).await.json();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");

    h.as_admin("PUT", "/admin/status?lock=false", None).await;
    relay_testkit::wait_until_async(
        "the no-show is cancelled after unlock",
        std::time::Duration::from_secs(10),
        || async { h.booking_names("user-k1").await.is_empty() },
    )
    .await;
    h.stop().await;
}
