//! Child processes a test starts: killed when the test ends however it ends, and read for
//! the lines a program prints once it listens (its bound address), with the rest of its
//! output drained so it never blocks on a full pipe.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a started program may take to say where it listens.
pub const STARTUP: Duration = Duration::from_secs(15);

/// What `relay serve` prints on stdout once its access API is bound, before the address.
pub const SERVE_ACCESS_LINE: &str = "relay: access API listening on ";
/// What `relay serve` prints on stdout once its relay port is bound, before the address.
pub const SERVE_RELAY_LINE: &str = "relay: relay listening on ";

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process has exited (and was reaped).
    pub fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` with stdout piped and returns the rest of the first stdout line
/// starting with each of `prefixes`, in order of `prefixes`; `None` if the program exits
/// first (e.g. because it could not bind). Panics after [`STARTUP`] or if the program
/// cannot be spawned. Later output is drained, so the child never blocks on a full pipe.
pub fn spawn_and_read(command: &mut Command, prefixes: &[&str]) -> (Killed, Option<Vec<String>>) {
    let mut child = match command.stdout(Stdio::piped()).spawn() {
        Ok(child) => Killed(child),
        Err(e) => panic!("cannot start {command:?}: {e}"),
    };
    let Some(stdout) = child.0.stdout.take() else {
        panic!("{command:?} has no stdout pipe");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    let deadline = Instant::now() + STARTUP;
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                for (prefix, slot) in prefixes.iter().zip(found.iter_mut()) {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        slot.get_or_insert_with(|| rest.trim().to_owned());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return (child, None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{command:?} did not print {prefixes:?} within {STARTUP:?}")
            }
        }
    }
    (child, Some(found.into_iter().flatten().collect()))
}

/// A loopback port that was free a moment ago. Only a candidate: another process may take
/// it before the program it is meant for binds it, so callers retry on another port when
/// that program exits instead of listening.
pub fn candidate_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
