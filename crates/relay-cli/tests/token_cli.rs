//! `relay token` as a user runs it: the reference's environment, defaults, scope order,
//! `iat = now − 1`, token + newline on stdout, one line per problem and exit 1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod support;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use std::process::{Command, Output};
use support::{jwt_claims, WithoutEnv};

fn relay_token(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
    cmd.arg("token").args(args);
    cmd.without_env(&["RELAY_"]);
    cmd.envs(env.iter().copied());
    cmd.output().expect("relay runs")
}

fn now() -> i64 {
    relay_common::clock::unix_now()
}

const BASE: [(&str, &str); 4] = [
    ("RELAY_TOKEN_AUDIENCE", "https://relay.example.io"),
    ("RELAY_TOKEN_SECRET", "somesecret"),
    ("RELAY_TOKEN_LIFETIME", "3600"),
    ("RELAY_TOKEN_TOPIC", "expt00"),
];

#[test]
fn defaults_follow_the_reference() {
    let before = now();
    let out = relay_token(&BASE, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.ends_with('\n') && stdout.matches('\n').count() == 1);
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(stdout.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    let p = jwt_claims(&stdout);
    assert_eq!(p["booking_id"], "relay-token-cli");
    assert_eq!(p["topic"], "expt00");
    assert_eq!(p["prefix"], "session");
    assert_eq!(p["scopes"], serde_json::json!(["write", "read"]));
    assert_eq!(p["aud"], serde_json::json!(["https://relay.example.io"]));
    let iat = p["iat"].as_i64().unwrap();
    assert!(iat >= before - 1 && iat < now());
    assert_eq!(p["nbf"].as_i64(), Some(iat));
    assert_eq!(p["exp"].as_i64(), Some(iat + 3600));
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 8);
}

#[test]
fn admin_token_scope_order_other_scope_and_flags() {
    let mut env: Vec<(&str, &str)> = BASE
        .iter()
        .copied()
        .filter(|(k, _)| *k != "RELAY_TOKEN_TOPIC")
        .collect();
    env.push(("RELAY_TOKEN_SCOPE_ADMIN", "true"));
    env.push(("RELAY_TOKEN_SCOPE_OTHER", "relay:stats"));
    let out = relay_token(&env, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = jwt_claims(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        p["scopes"],
        serde_json::json!(["relay:admin", "write", "read", "relay:stats"])
    );
    assert_eq!(p["topic"], "");

    let out = relay_token(
        &BASE,
        &[
            "--scope-write=false",
            "--booking-id",
            "b42",
            "--connection-type",
            "shell",
        ],
    );
    let p = jwt_claims(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(p["scopes"], serde_json::json!(["read"]));
    assert_eq!(p["booking_id"], "b42");
    assert_eq!(p["prefix"], "shell");
}

#[test]
fn every_missing_variable_gets_a_line_and_exit_1() {
    let out = relay_token(&[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    for name in [
        "RELAY_TOKEN_AUDIENCE",
        "RELAY_TOKEN_SECRET",
        "RELAY_TOKEN_LIFETIME",
        "RELAY_TOKEN_TOPIC",
    ] {
        assert!(stderr.contains(&format!("{name} not set")), "{stderr}");
    }
    let mut env = BASE.to_vec();
    env.push(("RELAY_TOKEN_SCOPE_READ", "false"));
    env.push(("RELAY_TOKEN_SCOPE_WRITE", "false"));
    let out = relay_token(&env, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no scopes"));
}

#[test]
fn a_negative_lifetime_gives_an_expired_token() {
    let mut env = BASE.to_vec();
    env[2] = ("RELAY_TOKEN_LIFETIME", "-10");
    let out = relay_token(&env, &[]);
    assert!(out.status.success());
    let p = jwt_claims(&String::from_utf8(out.stdout).unwrap());
    assert!(p["exp"].as_i64().unwrap() < now());
}
