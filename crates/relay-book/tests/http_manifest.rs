//! Manifest over HTTP: check (GET and POST) → 204, or 500 with every message; replace →
//! 200 with the counts; export → the same manifest again; resources export; what a user
//! token gets there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;

use http_support::*;

#[tokio::test]
async fn check_replace_and_export_round_trip() {
    let h = Harness::start().await;
    let body = manifest_json(MANIFEST);
    for method in ["GET", "POST"] {
        let reply = h
            .as_admin(method, "/admin/manifest/check", Some(body.clone()))
            .await;
        assert_eq!((reply.status, reply.body.as_str()), (204, ""), "{method}");
    }

    let reply = h.as_admin("PUT", "/admin/manifest", Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        format!(
            r#"{{"bookings":0,"descriptions":10,"filters":1,"locked":false,"message":"Welcome to the interval booking store","now":"{}","old_bookings":0,"policies":2,"resources":2,"slots":2,"streams":2,"ui_sets":1,"uis":2,"users":0,"windows":1}}"#,
            at(0)
        )
    );

    let exported = h.get("/admin/manifest", &h.admin).await;
    assert_eq!(exported.status, 200, "{}", exported.body);
    let json = exported.json();
    assert_eq!(
        json["ui_sets"]["us-a"]["UIs"],
        serde_json::json!(["ui-b", "ui-a"])
    );
    assert_eq!(json["policies"]["p-a"]["book_ahead"], "2h0m0s");
    assert_eq!(json["policies"]["p-a"]["grace_penalty"], "5m0s");
    assert_eq!(json["policies"]["p-b"]["book_ahead"], "0s");
    assert_eq!(json["resources"]["r-b"]["tests"], serde_json::Value::Null);
    assert_eq!(json["display_guides"]["1m"]["book_ahead"], "1h0m0s");

    // The export is itself a manifest that replaces to the same export.
    let again = h
        .as_admin("PUT", "/admin/manifest", Some(exported.body.clone()))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(h.get("/admin/manifest", &h.admin).await.body, exported.body);

    let resources = h.get("/admin/resources", &h.admin).await;
    assert_eq!(
        resources.body,
        r#"{"r-a":{"config_url":"https://config.example.org/a.json","description":"d-r-a","streams":["st-a","st-b"],"tests":null,"topic_stub":"aaaa00"},"r-b":{"description":"d-r-b","streams":["st-a","st-b"],"tests":null,"topic_stub":"bbbb00"}}"#
    );
    h.stop().await;
}

#[tokio::test]
async fn a_bad_manifest_is_refused_with_its_category_and_every_message() {
    let h = Harness::start().await;
    let broken = MANIFEST
        .replace(
            "ui_set: us-a, window: w-a}\n  sl-b",
            "ui_set: us-x, window: w-a}\n  sl-b",
        )
        .replace("resource: r-b,", "resource: r-x,");
    let body = manifest_json(&broken);
    let check = h
        .as_admin("POST", "/admin/manifest/check", Some(body.clone()))
        .await;
    let messages = "slot sl-a references non-existent ui_set: us-x,slot sl-b references non-existent resource: r-x";
    assert_eq!(check.status, 500);
    assert_eq!(check.body, error_body(500, messages));
    let replace = h.as_admin("PUT", "/admin/manifest", Some(body)).await;
    assert_eq!(
        (replace.status, replace.body),
        (
            500,
            error_body(500, &format!("missing reference(s): {messages}"))
        )
    );

    let missing_field = MANIFEST.replace(
        r#"d-ui-b: {name: "ui b", type: ui, short: "b"}"#,
        r#"d-ui-b: {name: "ui b", type: ui}"#,
    );
    let check = h
        .as_admin(
            "POST",
            "/admin/manifest/check",
            Some(manifest_json(&missing_field)),
        )
        .await;
    check.assert_error(500, "missing short field in description d-ui-b");

    let junk = h
        .as_admin("PUT", "/admin/manifest", Some("{not json".into()))
        .await;
    assert_eq!(junk.status, 400, "{}", junk.body);
    h.stop().await;
}

#[tokio::test]
async fn before_a_manifest_lookups_are_not_found_and_the_export_is_empty() {
    let h = Harness::start().await;
    let user = h.user("someuser");
    let reply = h.get("/descriptions/d-r-a", &user).await;
    reply.assert_error(404, "not found");
    let reply = h.get("/admin/resources", &h.admin).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "{}"));
    h.stop().await;
}
