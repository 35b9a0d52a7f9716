//! Helpers shared by the end-to-end tests that drive the real `relay` binary: children
//! killed on drop, reading the addresses a started program prints, starting third-party
//! servers on a free port without losing a port race, and websocat clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support may panic

pub mod sshd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

#[allow(unused_imports)] // each test file uses some of them
pub use relay_testkit::{require, wait_until, wait_until_blocking};

/// The `relay` binary under test.
pub const RELAY: &str = env!("CARGO_BIN_EXE_relay");

/// Clearing the developer's own settings from a command a test starts.
pub trait WithoutEnv {
    /// Removes every inherited variable whose name starts with one of `prefixes`, so a
    /// test sees only the settings it gives.
    fn without_env(&mut self, prefixes: &[&str]) -> &mut Self;
}

impl WithoutEnv for Command {
    fn without_env(&mut self, prefixes: &[&str]) -> &mut Self {
        for (key, _) in std::env::vars() {
            if prefixes.iter().any(|prefix| key.starts_with(prefix)) {
                self.env_remove(key);
            }
        }
        self
    }
}

/// The claims of a JWT (its middle part), decoded without checking the signature.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let part = token.trim_end().split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

/// A token from the real `relay token` with `args` (e.g. `--role host`) and extra `env`,
/// signed with `secret` for `audience` and `topic`, valid for an hour.
pub fn relay_token(
    secret: &str,
    audience: &str,
    topic: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let out = Command::new(RELAY)
        .arg("token")
        .args(args)
        .env("RELAY_TOKEN_AUDIENCE", audience)
        .env("RELAY_TOKEN_SECRET", secret)
        .env("RELAY_TOKEN_LIFETIME", "3600")
        .env("RELAY_TOKEN_TOPIC", topic)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relay token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// How a missing program is installed for these tests.
pub const INSTALL_HINT: &str = "run scripts/test.sh, which installs it";

pub use relay_testkit::process::{
    spawn_and_read, Killed, SERVE_ACCESS_LINE, SERVE_RELAY_LINE, STARTUP,
};

/// A started `relay serve` and the addresses it printed.
pub struct Served {
    /// The process (killed on drop).
    pub process: Killed,
    /// Where its access API listens.
    pub access: SocketAddr,
    /// Where its relay listens.
    pub relay: SocketAddr,
}

/// Starts `relay serve` as `command` describes and reads the bound addresses it prints;
/// `None` if it exits first (a port given to it was taken).
pub fn serve(command: &mut Command) -> Option<Served> {
    let (process, lines) = spawn_and_read(command, &[SERVE_ACCESS_LINE, SERVE_RELAY_LINE]);
    let lines = lines?;
    let address = |i: usize| -> SocketAddr {
        lines[i]
            .parse()
            .unwrap_or_else(|e| panic!("relay serve printed {:?}: {e}", lines[i]))
    };
    Some(Served {
        access: address(0),
        relay: address(1),
        process,
    })
}

/// Starts `relay serve` on two free ports when its public URLs must be known before it
/// starts (a program other than the test dials the `uri` it hands out): `configure` sets
/// up the command for the access and relay ports given. The addresses it prints prove it
/// bound them; if it exits instead (a parallel test took a port), it is retried.
pub fn serve_on_free_ports(configure: impl Fn(&mut Command, u16, u16)) -> Served {
    serve_on_free_ports_with(Command::new(RELAY).arg("serve"), configure)
}

/// [`serve_on_free_ports`] for any command that serves as `relay serve` does and prints
/// the same lines (e.g. `sh -c '. file; exec relay shell relay'`): `base` is cloned for
/// each attempt.
pub fn serve_on_free_ports_with(
    base: &Command,
    configure: impl Fn(&mut Command, u16, u16),
) -> Served {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let mut command = Command::new(base.get_program());
        command.args(base.get_args());
        for (key, value) in base.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        configure(&mut command, candidate_port(), candidate_port());
        if let Some(served) = serve(&mut command) {
            return served;
        }
    }
    panic!("{base:?} could not listen on free ports in {ATTEMPTS} attempts")
}

pub use relay_testkit::process::{candidate_port, port_open};

/// Starts a server that must be told its port (sshd, a relay whose public URL must be
/// known before it starts, websocat): `start` spawns it on the given port, and
/// `listening` says whether it is ready there. If the program exits instead (a parallel
/// test took the port), it is retried on another port. Returns the process and its port.
pub fn on_a_free_port(
    what: &str,
    mut start: impl FnMut(u16) -> Option<Killed>,
    listening: impl Fn(u16) -> bool,
) -> (Killed, u16) {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let port = candidate_port();
        let Some(mut child) = start(port) else {
            continue;
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if child.0.try_wait().unwrap().is_some() {
                break; // it could not bind: try another port
            }
            if listening(port) {
                // Most likely ours: a program that lost the port exits at once. (A small
                // window remains if the other holder bound it just before this check.)
                if child.0.try_wait().unwrap().is_none() {
                    return (child, port);
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {port} within {STARTUP:?}"
            );
            std::thread::sleep(relay_testkit::wait::POLL);
        }
    }
    panic!("{what} could not listen on a free port in {ATTEMPTS} attempts")
}

/// websocat in text mode connected to `url` (with `extra` flags), its output lines
/// delivered on a channel.
pub fn websocat(url: &str, extra: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let mut child = Command::new("websocat")
        .arg("--text")
        .args(extra)
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Killed(child), rx)
}

/// Runs `command` (stderr piped) to completion: its exit code and stderr. Panics if it is
/// still running after [`STARTUP`], e.g. because a setting it should refuse was accepted.
pub fn run_to_exit(command: &mut Command) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Killed(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_blocking(&format!("{command:?} to exit"), STARTUP, || {
        child.0.try_wait().is_ok_and(|s| s.is_some())
    });
    let code = child.0.wait().unwrap().code();
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}
