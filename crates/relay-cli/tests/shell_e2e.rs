//! End to end with real OpenSSH: sshd on a loopback port (key auth, test-only keys),
//! `relay serve`, `relay shell host`, `relay shell client`; ssh runs a command, scp moves a
//! 50 MB file both ways, 20 sessions run at once, and afterwards neither the relay nor the
//! host holds anything. sshd, ssh, scp and ssh-keygen must be installed (`scripts/test.sh`
//! installs openssh); the test fails if they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod support;
use support::sshd::{run, Sshd, SSHD};
use support::{
    relay_token, require, serve_on_free_ports, spawn_and_read, wait_until_blocking as wait_until,
    Killed, RELAY,
};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "shell-e2e-secret";

/// Established TCP connections whose local or remote port is `port` (from /proc/net/tcp).
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && (cols[1].ends_with(&hex) || cols[2].ends_with(&hex))
        })
        .count()
}

fn mint(access: &str, topic: &str, role: &str) -> String {
    relay_token(SECRET, access, topic, &["--role", role], &[])
}

fn sha(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn openssh_through_the_relay() {
    for program in [SSHD, "ssh", "scp", "ssh-keygen", "sha256sum", "curl"] {
        require(program, "run scripts/test.sh, which installs openssh");
    }
    let dir = std::env::temp_dir().join(format!("relay-shell-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sshd = Sshd::start(&dir);
    let sshd_port = sshd.port;

    // The shell host dials the uri the relay hands out, so the relay's public URL must be
    // known before it starts: it gets free ports (retried if one is lost), not port 0.
    let relay = serve_on_free_ports(|command, pa, pr| {
        command
            .args(["--bind", "127.0.0.1", "--log-file", "stderr"])
            .env("RELAY_AUDIENCE", format!("http://127.0.0.1:{pa}"))
            .env("RELAY_URL", format!("ws://127.0.0.1:{pr}"))
            .env("RELAY_SECRET", SECRET)
            .env("RELAY_PORT_ACCESS", pa.to_string())
            .env("RELAY_PORT_RELAY", pr.to_string())
            .stderr(Stdio::null());
    });
    let access = format!("http://{}", relay.access);
    let session = format!("{access}/shell/expt");
    let _host = Killed(
        Command::new(RELAY)
            .args(["shell", "host"])
            .env("SHELLHOST_RELAYSESSION", &session)
            .env("SHELLHOST_TOKEN", mint(&access, "expt", "host"))
            .env("SHELLHOST_LOCALPORT", sshd_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (_client, client_address) = spawn_and_read(
        Command::new(RELAY)
            .args(["shell", "client"])
            .env("SHELLCLIENT_RELAYSESSION", &session)
            .env("SHELLCLIENT_TOKEN", mint(&access, "expt", "client"))
            .env("SHELLCLIENT_LOCALPORT", "0")
            .stderr(Stdio::null()),
        &["relay shell client listening on "],
    );
    let client_port = client_address
        .and_then(|lines| lines.first()?.parse::<std::net::SocketAddr>().ok())
        .expect("relay shell client prints the address it listens on")
        .port();
    let stats = {
        let out = run(Command::new(RELAY)
            .arg("token")
            .env("RELAY_TOKEN_AUDIENCE", &access)
            .env("RELAY_TOKEN_SECRET", SECRET)
            .env("RELAY_TOKEN_LIFETIME", "3600")
            .env("RELAY_TOKEN_TOPIC", "stats")
            .env("RELAY_TOKEN_SCOPE_OTHER", "relay:stats"));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let status = || {
        let out = run(Command::new("curl")
            .args(["-s", "-H"])
            .arg(format!("Authorization: {stats}"))
            .arg(format!("{access}/status")));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["topic"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    wait_until(
        "host management connection",
        Duration::from_secs(15),
        || status().iter().any(|t| t == "shell/expt"),
    );

    let ssh = sshd.client(client_port);
    let out = run(&mut ssh.command("echo hello from $(hostname)"));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("hello from"),
        "{out:?}"
    );

    // scp of 50 MB of random bytes, both ways.
    let original = dir.join("random.bin");
    run(Command::new("head")
        .args(["-c", "52428800", "/dev/urandom"])
        .stdout(std::fs::File::create(&original).unwrap()));
    let remote_copy = dir.join("uploaded.bin");
    let started = Instant::now();
    ssh.scp(
        &original.display().to_string(),
        &format!("{}@127.0.0.1:{}", ssh.user, remote_copy.display()),
    );
    let up = started.elapsed();
    let downloaded = dir.join("downloaded.bin");
    let started = Instant::now();
    ssh.scp(
        &format!("{}@127.0.0.1:{}", ssh.user, remote_copy.display()),
        &downloaded.display().to_string(),
    );
    let down = started.elapsed();
    let want = sha(&original);
    assert_eq!(sha(&remote_copy), want, "upload corrupted");
    assert_eq!(sha(&downloaded), want, "download corrupted");
    eprintln!("scp 50 MB through the relay: up {up:?}, down {down:?}");

    // 20 concurrent sessions.
    let children: Vec<Child> = (0..20)
        .map(|i| {
            ssh.command(&format!("sleep 1; echo session-{i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "session {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("session-{i}")
        );
    }

    // Nothing left over: only the host's management connection (and the stats reporter)
    // at the relay, and no TCP connection between the host and sshd.
    wait_until(
        "relay shell connections freed",
        Duration::from_secs(15),
        || status().iter().all(|t| t == "shell/expt" || t == "stats"),
    );
    wait_until(
        "host's sshd connections closed",
        Duration::from_secs(15),
        || established_on(sshd_port) == 0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
