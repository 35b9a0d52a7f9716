//! Helpers shared by the end-to-end tests that drive the real `relay` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support may panic

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

/// Fail loudly (never skip) when a program a test needs is missing.
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{program} is required for this test: run scripts/test.sh, which installs it"
    );
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
