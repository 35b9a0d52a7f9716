//! An existing shell deployment swaps binaries and keeps its environment files: the
//! reference's `shell relay` (`SHELLRELAY_*`) and `shell token` (`SHELLTOKEN_*`) variables,
//! written one `NAME=value` a line (shell spec §1.2) and loaded the way a shell script or a
//! systemd `EnvironmentFile=` loads them, run `relay shell relay` and `relay shell token`;
//! then `relay shell host` / `relay shell client` (their own `SHELLHOST_*` /
//! `SHELLCLIENT_*` files) carry TCP to an echo server through that relay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use support::{
    jwt_claims, require, serve_on_free_ports_with, spawn_and_read,
    wait_until_blocking as wait_until, Killed, WithoutEnv, RELAY,
};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "shell-reference-env-secret";

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `program args…` with the variables of `env_file` exported, as `set -a; . file` (or
/// systemd's `EnvironmentFile=`) does, and no `RELAY_*` variable of the test's own.
fn with_env_file(env_file: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"set -a && . "$0" && set +a && exec "$@""#)
        .arg(env_file)
        .arg(RELAY)
        .args(args);
    command.without_env(&["RELAY_", "SHELL"]);
    command
}

/// `relay shell token` with the variables of `env_file`: the token, or the exit code and
/// stderr.
fn shell_token(env_file: &Path) -> Result<String, (Option<i32>, String)> {
    let out = with_env_file(env_file, &["shell", "token"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    } else {
        Err((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// The token file the reference's documentation describes: every variable set.
fn token_file(
    dir: &Path,
    role: &str,
    topic: &str,
    connection_type: &str,
    audience: &str,
) -> PathBuf {
    let path = dir.join(format!("token-{role}-{topic}.env"));
    std::fs::write(
        &path,
        format!(
            "SHELLTOKEN_LIFETIME=3600\nSHELLTOKEN_ROLE={role}\nSHELLTOKEN_SECRET={SECRET}\n\
             SHELLTOKEN_TOPIC={topic}\nSHELLTOKEN_CONNECTIONTYPE={connection_type}\n\
             SHELLTOKEN_AUDIENCE={audience}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn shell_token_mints_every_reference_role() {
    let dir = scratch("shell-token-roles");
    let audience = "https://access.example.io";
    for (role, connection_type, scopes) in [
        ("host", "shell", &["host"][..]),
        ("client", "shell", &["client"]),
        ("stats", "shell", &["stats"]),
        ("read", "session", &["read"]),
        ("write", "session", &["write"]),
        ("readwrite", "session", &["read", "write"]),
        ("readwrite", "shell", &["read", "write"]),
    ] {
        let file = token_file(&dir, role, "pendulum-01", connection_type, audience);
        let before = relay_common::clock::unix_now();
        let token = shell_token(&file).unwrap_or_else(|e| panic!("{role}: {e:?}"));
        let claims = jwt_claims(&token);
        assert_eq!(claims["scopes"], serde_json::json!(scopes), "{role}");
        assert_eq!(claims["prefix"], connection_type, "{role}");
        assert_eq!(claims["topic"], "pendulum-01");
        assert_eq!(claims["aud"], serde_json::json!([audience]));
        let iat = claims["iat"].as_i64().unwrap();
        assert!(
            iat >= before - 1 && iat < before + 60,
            "iat = now - 1: {claims}"
        );
        assert_eq!(claims["nbf"].as_i64(), Some(iat));
        assert_eq!(claims["exp"].as_i64(), Some(iat + 3600));
    }
    // Every variable is required, and each missing one is named; an unknown role is refused.
    let empty = dir.join("empty.env");
    std::fs::write(&empty, "").unwrap();
    let (code, stderr) = shell_token(&empty).unwrap_err();
    assert_eq!(code, Some(1), "{stderr}");
    for name in ["SHELLTOKEN_ROLE", "SHELLTOKEN_CONNECTIONTYPE"] {
        assert!(stderr.contains(name), "{name} in {stderr:?}");
    }
    let unknown = token_file(&dir, "admin", "pendulum-01", "shell", audience);
    let (code, stderr) = shell_token(&unknown).unwrap_err();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SHELLTOKEN_ROLE"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shell_relay_refuses_to_start_without_its_required_settings() {
    let dir = scratch("shell-relay-missing");
    let file = dir.join("shellrelay.env");
    std::fs::write(&file, "SHELLRELAY_ACCESSPORT=0\nSHELLRELAY_RELAYPORT=0\n").unwrap();
    let out = with_env_file(&file, &["shell", "relay"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "SHELLRELAY_ACCESSFQDN",
        "SHELLRELAY_RELAYFQDN",
        "SHELLRELAY_SECRET",
    ] {
        assert!(stderr.contains(name), "{name} in {stderr:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP echo server on a free loopback port, for the life of the test.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = stream;
                let Ok(mut writer) = reader.try_clone() else {
                    return;
                };
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    port
}

/// One TCP connection through the shell client: `message` comes back from the echo
/// server. False if the tunnel is not up yet (the host not yet connected).
fn echoes(client_port: u16, message: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", client_port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(message).is_err() {
        return false;
    }
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).is_ok() && back == message
}

#[test]
fn a_reference_shell_deployment_runs_unchanged() {
    require("curl", support::INSTALL_HINT);
    let dir = scratch("shell-reference-env");
    let relay_env = dir.join("shellrelay.env");
    let relay = serve_on_free_ports_with(
        &with_env_file(&relay_env, &["shell", "relay"]),
        |command, access_port, relay_port| {
            command.stderr(Stdio::null());
            // Exactly the reference's variables: its ports, FQDNs, secret and log mode.
            std::fs::write(
                &relay_env,
                format!(
                    "SHELLRELAY_ACCESSPORT={access_port}\nSHELLRELAY_RELAYPORT={relay_port}\n\
                     SHELLRELAY_ACCESSFQDN=http://127.0.0.1:{access_port}\n\
                     SHELLRELAY_RELAYFQDN=ws://127.0.0.1:{relay_port}\n\
                     SHELLRELAY_SECRET={SECRET}\nSHELLRELAY_DEVELOPMENT=false\n"
                ),
            )
            .unwrap();
        },
    );
    let access = format!("http://127.0.0.1:{}", relay.access.port());
    let relay_base = format!("ws://127.0.0.1:{}", relay.relay.port());
    let host_token = shell_token(&token_file(&dir, "host", "echo-01", "shell", &access)).unwrap();
    let client_token =
        shell_token(&token_file(&dir, "client", "echo-01", "shell", &access)).unwrap();

    // The access API answers the reference's route with a URI on RELAYFQDN.
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-H"])
        .arg(format!("Authorization: {host_token}"))
        .arg(format!("{access}/shell/echo-01"))
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let uri = answer["uri"].as_str().unwrap_or_default();
    assert!(
        uri.starts_with(&format!("{relay_base}/shell/echo-01?code=")),
        "{answer}"
    );

    // Host and client, each from its own reference env file, tunnel TCP through it.
    let session = format!("{access}/shell/echo-01");
    let host_env = dir.join("shellhost.env");
    std::fs::write(
        &host_env,
        format!(
            "SHELLHOST_LOCALPORT={}\nSHELLHOST_RELAYSESSION={session}\nSHELLHOST_TOKEN={host_token}\n\
             SHELLHOST_DEVELOPMENT=false\n",
            echo_server()
        ),
    )
    .unwrap();
    let _host = Killed(
        with_env_file(&host_env, &["shell", "host"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client_env = dir.join("shellclient.env");
    std::fs::write(
        &client_env,
        format!(
            "SHELLCLIENT_LOCALPORT=0\nSHELLCLIENT_RELAYSESSION={session}\n\
             SHELLCLIENT_TOKEN={client_token}\nSHELLCLIENT_DEVELOPMENT=false\n"
        ),
    )
    .unwrap();
    let (_client, client_address) = spawn_and_read(
        with_env_file(&client_env, &["shell", "client"]).stderr(Stdio::null()),
        &["relay shell client listening on "],
    );
    let client_port = client_address
        .and_then(|lines| lines.first()?.parse::<std::net::SocketAddr>().ok())
        .expect("relay shell client prints the address it listens on")
        .port();
    wait_until(
        "a TCP round trip through relay shell relay",
        Duration::from_secs(20),
        || echoes(client_port, b"hello through the shell relay\n"),
    );
    assert!(echoes(client_port, b"and again, on a new connection\n"));

    // It stops as `relay serve` does: SIGTERM closes every socket, exit 0. (`sh` exec'd
    // into the relay, so the child's pid is the relay's.)
    let mut relay = relay.process;
    let pid = relay.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_until(
        "relay shell relay to exit after SIGTERM",
        Duration::from_secs(15),
        || relay.0.try_wait().is_ok_and(|s| s.is_some()),
    );
    assert_eq!(relay.0.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
