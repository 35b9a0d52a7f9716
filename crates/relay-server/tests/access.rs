//! The access API against a real server: the reference's access tests (spec §7
//! internal/access), the deny/allow flow, `/status`, and a table of hostile requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use relay_auth::{mint, Audience, Claims};
use relay_testkit::wait_until;

#[tokio::test]
async fn missing_authorization_gets_the_reference_401_body() {
    let s = start(|_| {}).await;
    let (status, body) = post(&format!("{}/session/123", s.access_url()), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        r#"{"code":401,"message":"unauthenticated for invalid credentials"}"#
    );
}

#[tokio::test]
async fn a_valid_token_gets_a_uri_with_a_code_and_bearer_is_accepted() {
    let s = start(|_| {}).await;
    let c = claims(&s, "123", &["read", "write"]);
    let url = format!("{}/session/123", s.access_url());
    for auth in [token(&c), format!("Bearer {}", token(&c))] {
        let (status, body) = post(&url, Some(&auth)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("}\n"));
        let prefix = format!(r#"{{"uri":"{}/session/123?code="#, s.relay_url());
        assert!(body.starts_with(&prefix), "{body}");
    }
}

#[tokio::test]
async fn garbage_token_is_401_with_the_reference_message() {
    let s = start(|_| {}).await;
    let (status, body) = post(
        &format!("{}/session/123", s.access_url()),
        Some("not-a-token"),
    )
    .await;
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 401);
    assert_eq!(v["message"], "token invalid");
}

/// The reference's TestDeny, plus the connection-level effects.
#[tokio::test]
async fn deny_and_allow_follow_the_reference() {
    let s = start(|c| c.allow_no_booking_id = false).await;
    let base = s.access_url().to_owned();
    let no_bid = Claims {
        booking_id: String::new(),
        ..claims(&s, "123", &["read", "write"])
    };
    let (status, body) = post(&format!("{base}/session/123"), Some(&token(&no_bid))).await;
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            "{\"code\":\"400\",\"message\":\"empty bookingID field is not permitted\"}\n"
        )
    );

    let some = Claims {
        booking_id: "some-bid".into(),
        ..claims(&s, "123", &["read", "write"])
    };
    assert_eq!(
        post(&format!("{base}/session/123"), Some(&token(&some)))
            .await
            .0,
        200
    );

    let admin = admin_token(&s);
    let exp = now() + 5;
    let (status, body) = post(
        &format!("{base}/bids/deny?bid=another-bid&exp={exp}"),
        Some(&admin),
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));

    let another = Claims {
        booking_id: "another-bid".into(),
        ..some.clone()
    };
    let (status, body) = post(&format!("{base}/session/123"), Some(&token(&another))).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "{\"code\":\"400\",\"message\":\"bookingID has been deny-listed, probably because the session was cancelled\"}\n")
    );
    assert_eq!(
        get(&format!("{base}/bids/deny"), Some(&admin)).await,
        (200, "{\"booking_ids\":[\"another-bid\"]}\n".into())
    );
    assert_eq!(
        get(&format!("{base}/bids/allow"), Some(&admin)).await,
        (200, "{\"booking_ids\":[\"some-bid\"]}\n".into())
    );

    assert_eq!(
        post(
            &format!("{base}/bids/allow?bid=another-bid&exp={exp}"),
            Some(&admin)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        post(&format!("{base}/session/123"), Some(&token(&another)))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&format!("{base}/bids/allow"), Some(&admin)).await,
        (
            200,
            "{\"booking_ids\":[\"another-bid\",\"some-bid\"]}\n".into()
        )
    );
    assert_eq!(
        get(&format!("{base}/bids/deny"), Some(&admin)).await,
        (200, "{\"booking_ids\":[]}\n".into())
    );
}

#[tokio::test]
async fn admin_routes_need_the_admin_scope_and_valid_parameters() {
    let s = start(|_| {}).await;
    let base = s.access_url().to_owned();
    let user = token(&claims(&s, "123", &["read", "write"]));
    let admin = admin_token(&s);
    let exp = now() + 60;
    let (status, body) = post(&format!("{base}/bids/deny?bid=b&exp={exp}"), Some(&user)).await;
    assert_eq!((status, body.as_str()), (401, "{\"code\":\"401\",\"message\":\"is token missing relay:admin scope? Missing relay:admin Scope\"}\n"));
    let (status, body) = post(&format!("{base}/bids/allow?bid=b&exp={exp}"), Some(&user)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            "{\"code\":\"401\",\"message\":\"token missing relay:admin scope\"}\n"
        )
    );
    assert_eq!(get(&format!("{base}/bids/deny"), Some(&user)).await.0, 401);

    let (status, body) = post(&format!("{base}/bids/deny?exp={exp}"), Some(&admin)).await;
    assert_eq!(
        (status, body.as_str()),
        (422, r#"{"code":602,"message":"bid in query is required"}"#)
    );
    assert_eq!(
        post(&format!("{base}/bids/deny?bid=b"), Some(&admin))
            .await
            .0,
        422
    );
    assert_eq!(
        post(&format!("{base}/bids/deny?bid=b&exp=soon"), Some(&admin))
            .await
            .0,
        422
    );
    let past = now() - 10;
    let (status, body) = post(&format!("{base}/bids/deny?bid=b&exp={past}"), Some(&admin)).await;
    assert_eq!(status, 400);
    assert!(body.contains("missing or in the past"), "{body}");
    // Authentication comes before parameter validation, as in the reference.
    assert_eq!(post(&format!("{base}/bids/deny"), None).await.0, 401);
}

#[tokio::test]
async fn status_needs_relay_stats_and_lists_connections() {
    let s = start(|_| {}).await;
    let base = s.access_url().to_owned();
    let _a = join(&s, "expt", &["read", "write"]).await;
    wait_until(
        "connection registered",
        std::time::Duration::from_secs(5),
        || s.connection_count() == 2,
    )
    .await;
    let stats = token(&Claims {
        topic: String::new(),
        ..claims(&s, "", &["relay:stats"])
    });
    let (status, body) = get(&format!("{base}/status"), Some(&stats)).await;
    assert_eq!(status, 200, "{body}");
    let reports: serde_json::Value = serde_json::from_str(&body).unwrap();
    let topics: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["topic"].as_str())
        .collect();
    assert_eq!(topics, ["expt", "stats"]);
    assert_eq!(reports[0]["can_read"], true);
    assert_eq!(reports[0]["scopes"], serde_json::json!(["read", "write"]));
    let user = token(&claims(&s, "expt", &["read"]));
    let (status, body) = get(&format!("{base}/status"), Some(&user)).await;
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            "{\"code\":\"401\",\"message\":\"token missing relay:stats scope\"}\n"
        )
    );
}

#[tokio::test]
async fn cors_preflight_healthz_and_metrics() {
    let s = start(|_| {}).await;
    let client = reqwest::Client::new();
    let resp = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/session/123", s.access_url()),
        )
        .header("Origin", "https://lab.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        get(&format!("{}/healthz", s.access_url()), None).await,
        (200, "ok\n".into())
    );
    let (_, metrics) = get(&format!("{}/metrics", s.access_url()), None).await;
    assert!(metrics.contains("relay_connections"), "{metrics}");
    assert!(metrics.contains("relay_drops_total"), "{metrics}");
}

#[tokio::test]
async fn an_origin_allow_list_is_enforced_for_cors() {
    let s = start(|c| c.allowed_origins = vec!["https://good.example".into()]).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/session/1", s.access_url()),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let good = preflight("https://good.example").await.unwrap();
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    let bad = preflight("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
}

fn raw_jwt(header: &str, payload: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode("sig")
    )
}

/// Every malformed or hostile access request gets the right status and a JSON reason,
/// and the server keeps serving.
#[tokio::test]
async fn hostile_access_requests_get_json_errors_and_the_server_keeps_serving() {
    let s = start(|c| c.allow_no_booking_id = false).await;
    let base = s.access_url().to_owned();
    let good = claims(&s, "t1", &["read", "write"]);
    let n = now();
    let admin = admin_token(&s);
    assert_eq!(
        post(
            &format!("{base}/bids/deny?bid=cancelled&exp={}", n + 60),
            Some(&admin)
        )
        .await
        .0,
        204
    );

    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let cases: Vec<(&str, String, u16)> = vec![
        ("garbage", "garbage".into(), 401),
        ("three dots", "a.b.c".into(), 401),
        (
            "alg none",
            raw_jwt(
                r#"{"alg":"none","typ":"JWT"}"#,
                &serde_json::to_string(&good).unwrap(),
            ),
            401,
        ),
        (
            "alg RS256",
            raw_jwt(
                r#"{"alg":"RS256","typ":"JWT"}"#,
                &serde_json::to_string(&good).unwrap(),
            ),
            401,
        ),
        ("wrong secret", mint(&good, b"wrong"), 401),
        (
            "wrong audience",
            token(&Claims {
                aud: Audience::single("https://elsewhere"),
                ..good.clone()
            }),
            401,
        ),
        (
            "expired",
            token(&Claims {
                exp: Some(n - 1),
                ..good.clone()
            }),
            401,
        ),
        (
            "not yet valid",
            token(&Claims {
                nbf: Some(n + 100),
                ..good.clone()
            }),
            401,
        ),
        (
            "issued in the future",
            token(&Claims {
                iat: Some(n + 100),
                ..good.clone()
            }),
            401,
        ),
        (
            "no exp",
            token(&Claims {
                exp: None,
                ..good.clone()
            }),
            401,
        ),
        (
            "no topic",
            token(&Claims {
                topic: String::new(),
                ..good.clone()
            }),
            401,
        ),
        (
            "no scopes",
            token(&Claims {
                scopes: vec![],
                ..good.clone()
            }),
            401,
        ),
        (
            "no prefix",
            token(&Claims {
                prefix: String::new(),
                ..good.clone()
            }),
            401,
        ),
        (
            "wrong topic",
            token(&Claims {
                topic: "t2".into(),
                ..good.clone()
            }),
            401,
        ),
        (
            "no booking id",
            token(&Claims {
                booking_id: String::new(),
                ..good.clone()
            }),
            400,
        ),
        (
            "denied booking",
            token(&Claims {
                booking_id: "cancelled".into(),
                ..good.clone()
            }),
            400,
        ),
        ("large header", "x".repeat(60_000), 401),
        ("huge header", "x".repeat(1_000_000), 431),
        ("HS384 is fine", hs384, 200),
        // Missing iat and nbf crashed the reference's handler; they are optional here.
        (
            "no iat or nbf",
            token(&Claims {
                iat: None,
                nbf: None,
                ..good.clone()
            }),
            200,
        ),
    ];
    for (what, auth, want) in cases {
        let (status, body) = post(&format!("{base}/session/t1"), Some(&auth)).await;
        assert_eq!(status, want, "{what}: {body}");
        if want != 200 && want != 431 {
            let v: serde_json::Value = serde_json::from_str(body.trim_end())
                .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body}"));
            assert!(v["message"].is_string(), "{what}: {body}");
        }
    }
    // Junk paths and methods.
    assert_eq!(
        get(&format!("{base}/session/t1"), Some(&token(&good)))
            .await
            .0,
        405
    );
    assert_eq!(post(&format!("{base}/nope"), None).await.0, 404);
    // Still serving.
    assert!(access_uri(&s, &good).await.contains("code="));
}

/// Issue 13, item 5: one valid token cannot fill the code store. Past the per-booking cap
/// of unused codes the access API answers 429 with a reason (counted in the metrics),
/// other bookings are unaffected, and using a code frees its place.
#[tokio::test]
async fn unused_codes_are_capped_per_booking() {
    let s = start(|c| {
        c.allow_no_booking_id = false;
        c.max_codes_per_booking = 5;
    })
    .await;
    let base = s.access_url().to_owned();
    let mine = claims(&s, "t", &["read", "write"]);
    let mut uris = Vec::new();
    for _ in 0..5 {
        uris.push(access_uri(&s, &mine).await);
    }
    let (status, body) = post(&format!("{base}/session/t"), Some(&token(&mine))).await;
    assert_eq!(status, 429, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 429);
    assert_eq!(v["reason"], "booking already has 5 unused codes waiting");
    let other = Claims {
        booking_id: "other".into(),
        ..mine.clone()
    };
    access_uri(&s, &other).await;
    // Redeeming one code makes room for one more.
    let _ws = dial(&uris[0]).await;
    access_uri(&s, &mine).await;
    assert_eq!(
        post(&format!("{base}/session/t"), Some(&token(&mine)))
            .await
            .0,
        429
    );
    let (_, metrics) = get(&format!("{base}/metrics"), None).await;
    assert!(
        metrics.contains("relay_access_requests_total{result=\"too_many_codes\"} 2"),
        "{metrics}"
    );
}

/// An OPTIONS preflight and a POST from a browser page on another origin: the CORS
/// headers of the access API, present or absent.
async fn cors_headers(s: &relay_server::RunningServer) -> (u16, Option<String>, Option<String>) {
    let client = reqwest::Client::new();
    let url = format!("{}/session/expt", s.access_url());
    let preflight = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://lab.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    let post = client
        .post(&url)
        .header("Origin", "https://lab.example.org")
        .header("Authorization", token(&claims(s, "expt", &["read"])))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let origin = |r: &reqwest::Response| {
        let all: Vec<_> = r
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(all.len() <= 1, "{all:?}");
        all.into_iter().next()
    };
    (
        preflight.status().as_u16(),
        origin(&preflight),
        origin(&post),
    )
}

/// Issue 14 item 2: CORS is on by default; `RELAY_CORS=false` (`cors = false`) sends no
/// CORS header at all, as the reference, for deployments whose proxy adds its own.
#[tokio::test]
async fn cors_is_on_by_default_and_can_be_turned_off() {
    let on = start(|c| c.allow_no_booking_id = true).await;
    let (status, preflight, post) = cors_headers(&on).await;
    assert!((200..300).contains(&status), "{status}");
    assert_eq!(preflight.as_deref(), Some("*"));
    assert_eq!(post.as_deref(), Some("*"));

    let off = start(|c| {
        c.allow_no_booking_id = true;
        c.cors = false;
    })
    .await;
    let (status, preflight, post) = cors_headers(&off).await;
    assert_eq!(status, 405, "the reference answers OPTIONS with 405");
    assert_eq!(preflight, None);
    assert_eq!(post, None);
}

/// Issue 14 item 4: the wrong-audience message lists the audiences as Go prints a slice.
#[tokio::test]
async fn a_wrong_audience_is_reported_with_go_list_formatting() {
    let s = start(|_| {}).await;
    let bad = token(&Claims {
        aud: Audience(vec!["https://a.example".into(), "https://b.example".into()]),
        ..claims(&s, "expt", &["read"])
    });
    let (status, body) = post(&format!("{}/session/expt", s.access_url()), Some(&bad)).await;
    assert_eq!(status, 401);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"],
        format!(
            "aud [https://a.example https://b.example] does not match this host {}",
            s.access_url()
        )
    );
}

/// Issue 14 item 4: a wrong method on an access route gets 405 with `Allow` and a body in
/// the reference's error shape.
#[tokio::test]
async fn a_wrong_method_gets_a_405_body_in_the_reference_shape() {
    let s = start(|_| {}).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/session/expt", s.access_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let body = resp.text().await.unwrap();
    assert_eq!(
        body,
        r#"{"code":405,"message":"method GET is not allowed, but [POST] are"}"#
    );
}
