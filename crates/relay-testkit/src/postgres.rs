//! A throw-away PostgreSQL cluster for tests that need a real database: `initdb` into a
//! temporary directory, `postgres` on 127.0.0.1 and a free port, one database created, and
//! everything stopped and removed on drop. Nothing relies on a server someone else started.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root the cluster's programs
//! run as the unprivileged `postgres` user that Debian's `postgresql` package creates.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to get PostgreSQL when it is missing; named in every "not installed" panic.
pub const INSTALL_HINT: &str = "apt-get install postgresql (scripts/test.sh installs it)";

/// How long the cluster may take to accept connections after `postgres` starts.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The superuser `initdb` creates; local connections are trusted.
const SUPERUSER: &str = "postgres";

/// A running throw-away PostgreSQL cluster with one database; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    database: String,
    run_as: Option<(u32, u32)>,
    /// Another address to listen on besides 127.0.0.1, trusted for its own subnet.
    also_listen: Option<std::net::IpAddr>,
    postmaster: Option<Child>,
    // Declared last: removed after the server has stopped.
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Start a fresh cluster and create the database `test`. Panics (naming
    /// `apt-get install postgresql`) when PostgreSQL is not installed, and with the server
    /// log when it does not start.
    pub fn start() -> PgCluster {
        match PgCluster::try_start() {
            Ok(cluster) => cluster,
            Err(problem) => panic!("{problem}"),
        }
    }

    /// [`PgCluster::start`], with the problem as text instead of a panic.
    pub fn try_start() -> Result<PgCluster, String> {
        PgCluster::try_start_also_on(None)
    }

    /// [`PgCluster::start`], also listening on `addr` (e.g. the root side of a test
    /// namespace's link, [`crate::netns::Netns::host_ip`]) and trusting clients on that
    /// address's subnet, so a program in another network namespace can connect.
    pub fn start_also_on(addr: std::net::IpAddr) -> PgCluster {
        match PgCluster::try_start_also_on(Some(addr)) {
            Ok(cluster) => cluster,
            Err(problem) => panic!("{problem}"),
        }
    }

    fn try_start_also_on(also_listen: Option<std::net::IpAddr>) -> Result<PgCluster, String> {
        let bin = newest_bin_dir().ok_or_else(|| {
            format!("PostgreSQL is required for this test but /usr/lib/postgresql/*/bin is missing: {INSTALL_HINT}")
        })?;
        let run_as = if running_as_root() {
            Some(postgres_user().ok_or_else(|| {
                format!("running as root, but there is no `postgres` user to run PostgreSQL as: {INSTALL_HINT}")
            })?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("relay-pg-")
            .tempdir()
            .map_err(context("create the cluster's temporary directory"))?;
        let data = dir.path().join("data");
        let mut cluster = PgCluster {
            bin,
            data,
            port: free_port().map_err(context("find a free port"))?,
            database: "test".to_owned(),
            run_as,
            also_listen,
            postmaster: None,
            dir,
        };
        cluster.hand_over(cluster.dir.path())?;
        cluster.init()?;
        cluster.trust_other_subnet()?;
        cluster.launch()?;
        cluster.wait_until_ready()?;
        cluster.try_create_database("test")?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/test`.
    pub fn url(&self) -> String {
        self.url_of(&self.database)
    }

    /// The URL of another database on this cluster.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create another empty database and return its URL.
    pub fn create_database(&self, name: &str) -> String {
        match self.try_create_database(name) {
            Ok(url) => url,
            Err(problem) => panic!("{problem}"),
        }
    }

    fn try_create_database(&self, name: &str) -> Result<String, String> {
        let output = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, name])
            .output()
            .map_err(context("run createdb"))?;
        if !output.status.success() {
            return Err(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(self.url_of(name))
    }

    /// Give a path to the postgres user when running as root.
    fn hand_over(&self, path: &Path) -> Result<(), String> {
        match self.run_as {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(context("hand a cluster path to the postgres user")),
            None => Ok(()),
        }
    }

    fn init(&self) -> Result<(), String> {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C.UTF-8"])
            .output()
            .map_err(context("run initdb"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// `127.0.0.1`, plus the other address when there is one.
    fn listen_addresses(&self) -> String {
        match self.also_listen {
            Some(addr) => format!("127.0.0.1,{addr}"),
            None => "127.0.0.1".to_owned(),
        }
    }

    /// With another listen address, trust clients on the subnets the server is on
    /// (`samenet`), as initdb's `--auth=trust` does for 127.0.0.1.
    fn trust_other_subnet(&self) -> Result<(), String> {
        if self.also_listen.is_none() {
            return Ok(());
        }
        use std::io::Write;
        let mut hba = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("pg_hba.conf"))
            .map_err(context("open pg_hba.conf"))?;
        writeln!(hba, "host all all samenet trust").map_err(context("write pg_hba.conf"))
    }

    fn launch(&mut self) -> Result<(), String> {
        let sockets = self.dir.path().join("sockets");
        fs::create_dir(&sockets).map_err(context("create the socket directory"))?;
        self.hand_over(&sockets)?;
        let log = fs::File::create(self.log_path()).map_err(context("create the server log"))?;
        self.hand_over(&self.log_path())?;
        let log_err = log
            .try_clone()
            .map_err(context("clone the server log handle"))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-h",
                &self.listen_addresses(),
                "-k",
            ])
            .arg(&sockets)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(context("start postgres"))?;
        self.postmaster = Some(child);
        Ok(())
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .postmaster
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not accept connections on port {} within {START_DEADLINE:?} (exited: {exited:?}); log:\n{}",
                    self.port,
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the cluster's programs, run as the postgres user when root.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.env("PGCONNECT_TIMEOUT", "5");
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).current_dir(self.dir.path());
        }
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if let Some(mut child) = self.postmaster.take() {
            if !stopped {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `postgres` and `initdb`.
fn newest_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether this process runs as root (owner of `/proc/self` is the effective uid).
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// `(uid, gid)` of the `postgres` user, from `/etc/passwd`.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != "postgres" {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// A port that was free a moment ago (the kernel's pick for 127.0.0.1:0).
fn free_port() -> io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}

/// Turns an I/O error into text that says what was being done.
fn context(doing: &'static str) -> impl Fn(io::Error) -> String {
    move |error| format!("could not {doing}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_accepts_a_second_database_and_is_removed_on_drop() {
        let cluster = PgCluster::start();
        assert!(cluster.url().ends_with("/test"));
        let other = cluster.create_database("second");
        assert_eq!(other, cluster.url_of("second"));
        let dir = cluster.dir.path().to_path_buf();
        assert!(dir.join("data").join("PG_VERSION").is_file());
        drop(cluster);
        assert!(!dir.exists());
    }
}
