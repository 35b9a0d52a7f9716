//! Helpers shared by the booking end-to-end tests: starting the real `relay book serve` on
//! SQLite or PostgreSQL (port 0, address read from its stdout), killing it with SIGKILL,
//! and an admin token for it. The API client and the manifest are `relay_testkit::book`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support may panic

use crate::support::{spawn_and_read, Killed, WithoutEnv, RELAY};
use relay_testkit::book::BookApi;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `BOOK_ADMIN_SECRET` of every server started here.
pub const ADMIN_SECRET: &str = "book-e2e-admin-secret-0123456789abcdef";
/// `BOOK_RELAY_SECRET` of every server started here (and `RELAY_SECRET` of the relay).
pub const RELAY_SECRET: &str = "book-e2e-relay-secret-0123456789abcdef";
/// `BOOK_AUDIENCE`: the server listens on port 0, so its audience is a name, not its address.
pub const AUDIENCE: &str = "http://book.test";
/// What `relay book serve` prints on stdout once its API is bound, before the address.
pub const LISTENING_LINE: &str = "relay book: API listening on ";
/// How long a test waits for anything but the 1 s close of the end-to-end test: a debug
/// build on a loaded 2-core machine is slow.
pub const WAIT: Duration = Duration::from_secs(60);

/// Where a server keeps its bookings.
#[derive(Debug, Clone)]
pub enum Database<'a> {
    /// `BOOK_PERSIST_DIR`: SQLite in this directory.
    Sqlite(&'a Path),
    /// `BOOK_DATABASE_URL`: this PostgreSQL database.
    Postgres(&'a str),
}

/// A started `relay book serve` (killed with SIGKILL on drop) and a client of its API.
pub struct BookServer {
    pub process: Killed,
    pub api: BookApi,
}

impl BookServer {
    /// `kill -9`: no chance to flush or close anything.
    pub fn kill9(mut self) {
        self.process.0.kill().unwrap();
        self.process.0.wait().unwrap();
    }
}

/// Starts `relay book serve` on 127.0.0.1 port 0 with `database`, grace checks every
/// 100 ms and pruning hourly, plus `extra` settings (which win).
pub fn book_serve(database: &Database, extra: &[(&str, &str)]) -> BookServer {
    let mut command = Command::new(RELAY);
    command.args(["book", "serve"]);
    command.without_env(&["BOOK_"]);
    command
        .env("BOOK_AUDIENCE", AUDIENCE)
        .env("BOOK_ADMIN_SECRET", ADMIN_SECRET)
        .env("BOOK_RELAY_SECRET", RELAY_SECRET)
        .env("BOOK_BIND", "127.0.0.1")
        .env("BOOK_PORT", "0")
        .env("BOOK_CHECK_EVERY", "100ms")
        .env("BOOK_TIDY_EVERY", "1h")
        .env("BOOK_LOG_FILE", "stderr")
        .env("BOOK_LOG_LEVEL", "warn");
    match database {
        Database::Sqlite(dir) => command.env("BOOK_PERSIST_DIR", dir),
        Database::Postgres(url) => command.env("BOOK_DATABASE_URL", url),
    };
    command
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let (process, lines) = spawn_and_read(&mut command, &[LISTENING_LINE]);
    let lines = lines.unwrap_or_else(|| panic!("{command:?} exited before it listened"));
    let address: SocketAddr = lines[0]
        .parse()
        .unwrap_or_else(|e| panic!("relay book serve printed {:?}: {e}", lines[0]));
    BookServer {
        process,
        api: BookApi::new(format!("http://{address}/api/v1")),
    }
}

/// A `booking:admin` token for every server started here, valid for an hour.
pub fn admin() -> String {
    relay_testkit::book::admin_token(ADMIN_SECRET, AUDIENCE, Duration::from_secs(3600))
}
