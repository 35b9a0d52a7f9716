//! A throw-away NATS server with JetStream for cluster tests: Debian's `nats-server -js`
//! on 127.0.0.1 and a port it picks itself (read back from its log), its JetStream store
//! in a temporary directory, stopped on drop. [`NatsServer::kill`] and
//! [`NatsServer::restart`] (same port, same store) are for fault tests.

use crate::process::Killed;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The program, as Debian's `nats-server` package installs it.
pub const NATS_SERVER: &str = "nats-server";

/// How to get it when it is missing; named in every "not installed" panic.
pub const INSTALL_HINT: &str = "apt-get install nats-server (scripts/test.sh installs it)";

/// How long the server may take to say it is ready.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What nats-server logs once its client port is bound, before the address.
const LISTENING: &str = "Listening for client connections on ";

/// What nats-server logs once JetStream and the client port are up.
const READY: &str = "Server is ready";

/// A running `nats-server -js`; killed on drop, its store removed with its directory.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    starts: u32,
    process: Option<Killed>,
    // Declared last: removed after the server has stopped.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` on a port of its own choosing. Panics (naming
    /// `apt-get install nats-server`) when it is not installed, and with its log when it
    /// does not start.
    pub fn start() -> NatsServer {
        crate::require(NATS_SERVER, INSTALL_HINT);
        let dir = tempfile::Builder::new()
            .prefix("relay-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the NATS temporary directory: {e}"));
        let mut server = NatsServer {
            port: 0,
            starts: 0,
            process: None,
            dir,
        };
        server.launch(None);
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs (for CPU accounting), `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Killed::id)
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Kills the server if it runs, then starts it again on the same port with the same
    /// store. Panics if the port was taken meanwhile or it does not start.
    pub fn restart(&mut self) {
        self.kill();
        self.launch(Some(self.port));
    }

    /// The log of the latest start.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("nats-{start}.log"))
    }

    /// Starts the server (`port` None: any free port) and waits until it is ready.
    fn launch(&mut self, port: Option<u16>) {
        self.starts += 1;
        let log = self.log_path(self.starts);
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
            .arg(self.store_dir())
            .arg("-l")
            .arg(&log)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NATS_SERVER}: {e}"));
        let mut process = Killed(child);
        self.port = wait_ready(&mut process, &log);
        self.process = Some(process);
    }
}

/// Waits until the log says the server is ready and returns its client port; panics with
/// the log if it exits or takes longer than [`START_DEADLINE`].
fn wait_ready(process: &mut Killed, log: &Path) -> u16 {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(READY) {
            if let Some(port) = listening_port(&text) {
                return port;
            }
        }
        assert!(
            !process.exited(),
            "{NATS_SERVER} exited during start-up; log:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "{NATS_SERVER} was not ready within {START_DEADLINE:?}; log:\n{text}"
        );
        std::thread::sleep(crate::wait::POLL);
    }
}

/// The port in the "Listening for client connections on 127.0.0.1:PORT" log line.
fn listening_port(log: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let (_, address) = line.split_once(LISTENING)?;
        address.trim().rsplit(':').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::port_open;

    #[test]
    fn the_port_is_read_from_the_log_line() {
        let log = "[1] 2026/11/28 [INF] Listening for client connections on 127.0.0.1:33319\n";
        assert_eq!(listening_port(log), Some(33319));
        assert_eq!(listening_port("[INF] Server is ready"), None);
    }

    #[test]
    fn a_server_starts_is_killed_and_restarts_on_its_port_with_its_store() {
        let mut nats = NatsServer::start();
        let port = nats.port();
        assert!(nats.url().ends_with(&format!(":{port}")));
        assert!(port_open(port));
        assert!(nats.log().contains("Starting JetStream"));
        nats.kill();
        assert!(nats.pid().is_none());
        assert!(!port_open(port));
        nats.restart();
        assert_eq!(nats.port(), port);
        assert!(port_open(port));
        assert!(nats.store_dir().is_dir());
        let dir = nats.dir.path().to_path_buf();
        drop(nats);
        assert!(!dir.exists());
    }
}
