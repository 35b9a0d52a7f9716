//! Login, unique names, groups, and how tokens are read: `Bearer ` accepted, a bad token
//! 401 (the reference said 500), a missing one 401, framework-style 404/405/422 bodies,
//! and the login rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http_support;

use http_support::*;
use relay_book::server::config::DEFAULT_LOGIN_RATE;

fn claims_of(token: &str) -> serde_json::Value {
    serde_json::from_str(&jwt_payload(token)).unwrap()
}

#[tokio::test]
async fn login_gives_a_token_for_the_ttl_plus_one_second_and_refuses_short_names() {
    let h = Harness::start().await;
    let reply = h.call("POST", "/login/someuser", None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json();
    assert_eq!(
        token["exp"].as_i64().unwrap() - token["nbf"].as_i64().unwrap(),
        61
    );
    assert_eq!(token["sub"], "someuser");
    assert_eq!(token["aud"], AUDIENCE);
    assert_eq!(token["scopes"], serde_json::json!(["booking:user"]));
    assert_eq!(token["iat"], NOW - 1);
    let jwt = token["token"].as_str().unwrap();
    assert!(jwt.starts_with("ey"), "{jwt}");
    assert_eq!(
        claims_of(jwt).to_string(),
        format!(
            r#"{{"aud":["{AUDIENCE}"],"exp":{},"iat":{},"nbf":{},"scopes":["booking:user"],"sub":"someuser"}}"#,
            NOW + 60,
            NOW - 1,
            NOW - 1
        )
    );
    // The token works on a user route.
    assert_eq!(h.get("/users/status", jwt).await.status, 200);

    let short = h.call("POST", "/login/short", None, None).await;
    assert_eq!(short.status, 404);
    assert_eq!(
        short.body,
        r#"{"code":"404","message":"user name must be 6 or more alphanumeric characters"}"#
    );
    h.stop().await;
}

#[tokio::test]
async fn unique_names_are_twenty_characters_and_differ() {
    let h = Harness::start().await;
    let a = h.call("POST", "/users/unique", None, None).await.json();
    let b = h.call("POST", "/users/unique", None, None).await.json();
    let (a, b) = (
        a["user_name"].as_str().unwrap(),
        b["user_name"].as_str().unwrap(),
    );
    assert_eq!((a.len(), b.len()), (20, 20));
    assert_ne!(a, b);
    h.stop().await;
}

#[tokio::test]
async fn logins_past_the_rate_get_429() {
    let h = Harness::start_with(|c| {
        c.login_rate = relay_server::limits::Rate::parse_setting("1/m burst 2").unwrap();
    })
    .await;
    assert_ne!(DEFAULT_LOGIN_RATE, "off");
    for _ in 0..2 {
        assert_eq!(
            h.call("POST", "/login/someuser", None, None).await.status,
            200
        );
    }
    let refused = h.call("POST", "/login/someuser", None, None).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.body.starts_with(
            r#"{"code":"429","message":"too many logins from this address; try again in "#
        ),
        "{}",
        refused.body
    );
    h.stop().await;
}

#[tokio::test]
async fn groups_before_and_after_joining() {
    let h = Harness::loaded().await;
    let user = h.user("user-g1");
    let before = h.get("/users/user-g1/groups", &user).await;
    before.assert_error(404, "user not found");

    let joined = h
        .call("POST", "/users/user-g1/groups/g-a", Some(&user), None)
        .await;
    assert_eq!((joined.status, joined.body.as_str()), (204, ""));
    // Joining again changes nothing.
    assert_eq!(
        h.call("POST", "/users/user-g1/groups/g-a", Some(&user), None)
            .await
            .status,
        204
    );
    let unknown = h
        .call("POST", "/users/user-g1/groups/g-x", Some(&user), None)
        .await;
    unknown.assert_error(404, "group g-x not found");

    let groups = h.get("/users/user-g1/groups", &user).await;
    assert_eq!(
        (groups.status, groups.body.as_str()),
        (
            200,
            r#"{"g-a":{"description":{"name":"group a","short":"a","type":"group"}}}"#
        )
    );
    let group = h.get("/groups/g-b", &user).await;
    assert_eq!(group.status, 200, "{}", group.body);
    assert_eq!(
        group.body,
        r#"{"description":{"name":"group b","short":"b","type":"group"},"policies":{"p-b":{"allow_start_in_past_within":"0s","book_ahead":"0s","description":{"name":"policy b","short":"b","type":"policy"},"display_guides":{},"grace_penalty":"0s","grace_period":"0s","max_duration":"0s","max_usage":"0s","min_duration":"0s","next_available":"0s","slots":{"sl-b":{"description":{"name":"slot b","short":"b","type":"slot"},"policy":"p-b"}},"starts_within":"0s"}}}"#
    );
    let missing = h.get("/groups/g-x", &user).await;
    missing.assert_error(404, "not found");
    // Another user's groups are not this token's to read.
    let other = h.get("/users/someone-else/groups", &user).await;
    other.assert_error(
        401,
        "user_name in path someone-else does not match subject user-g1 in token",
    );
    h.stop().await;
}

#[tokio::test]
async fn tokens_are_read_raw_or_after_bearer_and_bad_ones_are_401() {
    let h = Harness::start().await;
    let token = h.user("someuser");
    assert_eq!(h.get("/users/status", &token).await.status, 200);
    assert_eq!(
        h.get("/users/status", &format!("Bearer {token}"))
            .await
            .status,
        200
    );
    let status = h.get("/users/status", &token).await;
    assert_eq!(
        status.body,
        format!(
            r#"{{"locked":false,"message":"Welcome to the interval booking store","now":"{}"}}"#,
            at(0)
        )
    );

    let missing = h.call("GET", "/users/status", None, None).await;
    assert_eq!(
        (missing.status, missing.body.as_str()),
        (
            401,
            r#"{"code":401,"message":"unauthenticated for invalid credentials"}"#
        )
    );
    let forged = relay_book::tokens::sign(
        &relay_book::tokens::client_claims("someuser", AUDIENCE, true, 3600, None, NOW),
        b"wrong secret",
    )
    .unwrap();
    for bad in [forged.as_str(), "not-a-jwt"] {
        let reply = h.get("/users/status", bad).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(
            reply
                .body
                .starts_with(r#"{"code":401,"message":"error parsing claims was"#),
            "{}",
            reply.body
        );
    }
    let elsewhere = relay_book::tokens::sign(
        &relay_book::tokens::client_claims(
            "someuser",
            "https://elsewhere.example.org",
            false,
            3600,
            None,
            NOW,
        ),
        ADMIN_SECRET.as_bytes(),
    )
    .unwrap();
    let reply = h.get("/users/status", &elsewhere).await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .body
            .contains("does not match this host https://book.example.org"),
        "{}",
        reply.body
    );
    // Expired by the server's clock, with no leeway.
    let expired = relay_book::tokens::sign(
        &relay_book::tokens::client_claims("someuser", AUDIENCE, false, 60, None, NOW - 61),
        ADMIN_SECRET.as_bytes(),
    )
    .unwrap();
    let reply = h.get("/users/status", &expired).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (401, r#"{"code":401,"message":"token is expired"}"#)
    );
    // A token with neither booking scope.
    let no_scope = relay_book::tokens::sign(
        &relay_book::tokens::BookingClaims {
            scopes: vec!["read".into()],
            sub: "someuser".into(),
            aud: vec![AUDIENCE.into()],
            exp: NOW + 60,
            nbf: NOW - 1,
            iat: NOW - 1,
        },
        ADMIN_SECRET.as_bytes(),
    )
    .unwrap();
    let reply = h.get("/users/status", &no_scope).await;
    reply.assert_error(401, "Missing booking:admin or booking:user Scope");
    h.stop().await;
}

#[tokio::test]
async fn unknown_paths_wrong_methods_and_missing_queries_get_framework_bodies() {
    let h = Harness::start().await;
    let token = h.user("someuser");
    let reply = h.get("/nowhere", &token).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            404,
            r#"{"code":404,"message":"path /api/v1/nowhere was not found"}"#
        )
    );
    let reply = h.call("DELETE", "/users/status", Some(&token), None).await;
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert!(reply.body.starts_with(r#"{"code":405,"#), "{}", reply.body);

    let reply = h
        .call(
            "POST",
            &format!("/slots/sl-a?from={}&to={}", at(0), at(10)),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            422,
            r#"{"code":602,"message":"user_name in query is required"}"#
        )
    );
    let reply = h
        .call(
            "POST",
            "/slots/sl-a?user_name=someuser&from=yesterday&to=2022-11-05T00:10:00Z",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            422,
            r#"{"code":601,"message":"from in query must be of type date-time: \"yesterday\""}"#
        )
    );
    let reply = h.as_admin("PUT", "/admin/status", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (422, r#"{"code":602,"message":"lock in query is required"}"#)
    );

    let swagger = h.call("GET", "/swagger.json", None, None).await;
    assert_eq!(swagger.status, 200);
    assert_eq!(swagger.json()["basePath"], "/api/v1");
    let root = format!("{}/swagger.json", h.server.url());
    assert_eq!(h.call("GET", &root, None, None).await.body, swagger.body);

    let health = h
        .call("GET", &format!("{}/healthz", h.server.url()), None, None)
        .await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"database":"ok"}"#)
    );
    h.stop().await;
}

#[tokio::test]
async fn every_route_of_the_openapi_document_is_served() {
    let h = Harness::loaded().await;
    let doc: serde_json::Value = serde_json::from_str(relay_book::server::routes::OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 22);
    for (path, methods) in paths {
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods.as_object().unwrap().keys() {
            let reply = h
                .as_admin(&method.to_uppercase(), &concrete, Some("{}".into()))
                .await;
            assert!(
                !reply.body.contains("was not found") && reply.status != 405,
                "{method} {path}: {} {}",
                reply.status,
                reply.body
            );
        }
    }
    h.stop().await;
}
