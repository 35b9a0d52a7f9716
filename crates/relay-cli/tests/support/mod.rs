//! Helpers shared by the end-to-end tests that drive the real `relay` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support may panic

use std::process::{Child, Command};

/// Fail loudly (never skip) when a program a test needs is missing.
pub fn require(program: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{program} is required for this test: run scripts/test.sh, which installs it"
    );
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
