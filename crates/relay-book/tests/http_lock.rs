//! The lock (spec §3.11) and who may call what (§4.4): the lock round trip with exact
//! admin status bodies; the lock matrix (a locked-out user gets 401 on every user route
//! but `/users/status`; admins are never locked out); the admin-only matrix (a user token
//! gets 401 `no scope booking:admin` on every admin route).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;

use http_support::*;

fn status_body(locked: bool, message: &str, users: i64) -> String {
    format!(
        r#"{{"bookings":0,"descriptions":10,"filters":1,"locked":{locked},"message":"{message}","now":"{}","old_bookings":0,"policies":2,"resources":2,"slots":2,"streams":2,"ui_sets":1,"uis":2,"users":{users},"windows":1}}"#,
        at(0)
    )
}

#[tokio::test]
async fn lock_round_trip() {
    let h = Harness::loaded().await;
    let reply = h.get("/admin/status", &h.admin).await;
    assert_eq!(
        (reply.status, reply.body),
        (
            200,
            status_body(false, "Welcome to the interval booking store", 0)
        )
    );
    let reply = h
        .as_admin(
            "PUT",
            "/admin/status?lock=true&msg=closed%20for%20maintenance",
            None,
        )
        .await;
    assert_eq!(
        (reply.status, reply.body),
        (200, status_body(true, "closed for maintenance", 0))
    );
    assert_eq!(
        h.get("/admin/status", &h.admin).await.body,
        status_body(true, "closed for maintenance", 0)
    );
    // Unlocking without a message keeps the message.
    let reply = h.as_admin("PUT", "/admin/status?lock=false", None).await;
    assert_eq!(
        (reply.status, reply.body),
        (200, status_body(false, "closed for maintenance", 0))
    );
    let user = h.user("someuser");
    assert_eq!(
        h.get("/users/status", &user).await.body,
        format!(
            r#"{{"locked":false,"message":"closed for maintenance","now":"{}"}}"#,
            at(0)
        )
    );
    h.stop().await;
}

/// Every user route with a token, as (method, path).
fn user_routes(user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/descriptions/d-r-a".into()),
        ("GET", "/groups/g-a".into()),
        ("GET", "/policies/p-a".into()),
        ("GET", "/slots/sl-a".into()),
        (
            "POST",
            format!("/slots/sl-a?user_name={user}&from={}&to={}", at(10), at(20)),
        ),
        ("GET", format!("/users/{user}/bookings")),
        ("DELETE", format!("/users/{user}/bookings/bk-x")),
        ("PUT", format!("/users/{user}/bookings/bk-x")),
        ("GET", format!("/users/{user}/oldbookings")),
        ("GET", format!("/users/{user}/groups")),
        ("POST", format!("/users/{user}/groups/g-a")),
        ("GET", format!("/users/{user}/policies/p-a")),
    ]
}

#[tokio::test]
async fn the_lock_matrix() {
    let h = Harness::loaded().await;
    h.join("user-l1", "g-a").await;
    let reply = h
        .as_admin("PUT", "/admin/status?lock=true&msg=exam", None)
        .await;
    assert_eq!(reply.status, 200);
    let user = h.user("user-l1");
    for (method, path) in user_routes("user-l1") {
        let reply = h.call(method, &path, Some(&user), None).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, error_body(401, "store locked to users: exam").as_str()),
            "{method} {path}"
        );
        let reply = h.as_admin(method, &path, None).await;
        assert_ne!(reply.status, 401, "admin {method} {path}: {}", reply.body);
    }
    assert_eq!(h.get("/users/status", &user).await.status, 200);
    assert_eq!(
        h.call("POST", "/login/user-l1", None, None).await.status,
        200
    );
    assert_eq!(
        h.call("POST", "/users/unique", None, None).await.status,
        200
    );

    // Unlocked, the same routes are open to the user again.
    h.as_admin("PUT", "/admin/status?lock=false", None).await;
    for (method, path) in user_routes("user-l1") {
        let reply = h.call(method, &path, Some(&user), None).await;
        assert_ne!(reply.status, 401, "{method} {path}: {}", reply.body);
    }
    h.stop().await;
}

#[tokio::test]
async fn admin_routes_refuse_user_tokens() {
    let h = Harness::loaded().await;
    let user = h.user("someuser");
    let routes = [
        ("GET", "/admin/status"),
        ("PUT", "/admin/status?lock=true"),
        ("GET", "/admin/manifest"),
        ("PUT", "/admin/manifest"),
        ("GET", "/admin/manifest/check"),
        ("POST", "/admin/manifest/check"),
        ("GET", "/admin/bookings"),
        ("PUT", "/admin/bookings"),
        ("GET", "/admin/oldbookings"),
        ("PUT", "/admin/oldbookings"),
        ("GET", "/admin/users"),
        ("GET", "/admin/resources"),
        ("GET", "/admin/resources/r-a"),
        ("PUT", "/admin/resources/r-a?available=false&reason=broken"),
        ("GET", "/admin/slots/sl-a"),
        ("PUT", "/admin/slots/sl-a?available=false&reason=broken"),
    ];
    for (method, path) in routes {
        let reply = h.call(method, path, Some(&user), Some("[]".into())).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, error_body(401, "no scope booking:admin").as_str()),
            "{method} {path}"
        );
    }
    // Nothing changed.
    let status = h.get("/admin/slots/sl-a", &h.admin).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["available"], true);
    h.stop().await;
}

#[tokio::test]
async fn slot_and_resource_availability_round_trip() {
    let h = Harness::loaded().await;
    let reply = h.get("/admin/slots/sl-a", &h.admin).await;
    assert_eq!(
        (reply.status, reply.body),
        (
            200,
            r#"{"available":true,"reason":"Loaded at 2022-11-05T00:00:00Z"}"#.to_owned()
        )
    );
    let reply = h
        .as_admin("PUT", "/admin/slots/sl-a?available=false&reason=foo", None)
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    let reply = h.get("/admin/resources/r-a", &h.admin).await;
    assert_eq!(
        reply.body,
        r#"{"available":false,"reason":"unavailable because foo"}"#
    );
    let reply = h.get("/admin/slots/sl-x", &h.admin).await;
    reply.assert_error(404, "slot sl-x not found");
    let reply = h.get("/admin/resources/r-x", &h.admin).await;
    reply.assert_error(404, "resource r-x not found");

    // An unavailable rig has no availability and cannot be booked.
    let user = h.member("user-r1", "g-a").await;
    let reply = h.get("/slots/sl-a", &user).await;
    reply.assert_error(
        500,
        "error getting availability from store: not available because unavailable because foo",
    );
    let reply = h.book("user-r1", "sl-a", 10, 20).await;
    reply.assert_error(
        404,
        "could not make the booking because unavailable because foo",
    );
    let reply = h
        .as_admin(
            "PUT",
            "/admin/resources/r-a?available=true&reason=fixed",
            None,
        )
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(h.book("user-r1", "sl-a", 10, 20).await.status, 204);
    h.stop().await;
}
