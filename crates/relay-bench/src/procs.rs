//! Child processes the runner starts (relays, peers, the TCP echo floor): spawn pinned to
//! a core, wait until listening, read CPU time and RSS from /proc, stop by pid.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A started child process; killed when stopped or dropped.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Child,
    pub log: PathBuf,
}

/// CPU time (user + system, seconds) and resident memory (bytes) of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss: u64,
}

impl Proc {
    /// Start `program args`, pinned to `core` with `taskset` when given (taskset execs the
    /// program, so the pid stays the program's). Output goes to a log file in /tmp.
    pub fn spawn(name: &str, program: &str, args: &[String], core: Option<usize>) -> Result<Proc> {
        Proc::spawn_with_env(name, program, args, &[], core)
    }

    /// [`Proc::spawn`] with `env` added to the inherited environment (for servers set up
    /// through variables, such as `relay book serve`).
    pub fn spawn_with_env(
        name: &str,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        core: Option<usize>,
    ) -> Result<Proc> {
        let log = std::env::temp_dir().join(format!("relay-bench-{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| {
            format!("cannot start {name} ({program}); is it installed? see scripts/bench-peers.sh")
        })?;
        let pid = child.id().context("child has no pid")?;
        Ok(Proc {
            name: name.to_owned(),
            pid,
            child,
            log,
        })
    }

    /// Current CPU time and RSS.
    pub fn usage(&self) -> Result<Usage> {
        usage_of(self.pid)
    }

    /// Fail with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
            bail!(
                "{} exited ({status}); log {}:\n{tail}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// The rest of the first line of the log that starts with `prefix` (a server started on
    /// port 0 printing its address); fails if the process exits first or after `within`.
    pub async fn printed(&mut self, prefix: &str, within: Duration) -> Result<String> {
        let mut found = None;
        let mut exited = None;
        let waited = relay_testkit::wait::try_wait_until(
            &format!("{} to print {prefix:?}", self.name),
            within,
            || {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                found = log
                    .lines()
                    .find_map(|line| line.strip_prefix(prefix))
                    .map(|rest| rest.trim().to_owned());
                if found.is_none() {
                    exited = self.check_alive().err();
                }
                found.is_some() || exited.is_some()
            },
        )
        .await;
        if let Some(e) = exited {
            return Err(e);
        }
        waited.with_context(|| format!("log {}", self.log.display()))?;
        found.context("no line found")
    }

    /// Kill (SIGKILL by pid) and reap.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// CPU time and RSS of `pid` from /proc.
pub fn usage_of(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("bad /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    let cpu_s = (tick(11)? + tick(12)?) / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Usage {
        cpu_s,
        rss: rss_kb * 1024,
    })
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A port that was free on 127.0.0.1 a moment ago. Only a candidate: another process may
/// bind it before the server it was picked for does, so start servers through
/// [`spawn_listening`], which retries, unless a port must be reused (a restart).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How many sets of fresh ports a server that lost one of its ports gets.
pub const PORT_ATTEMPTS: usize = 5;

/// Starts a server that must be told its ports (third-party peers cannot report a port they
/// chose, and the relay's public URL must be known before it starts): `spawn` starts it on
/// `count` fresh ports, and it must then accept on each. A server that exits before it does
/// (most likely because another process took a port between the pick and its bind) is
/// retried on other ports; any other failure is returned. Returns the server and its ports.
pub async fn spawn_listening(
    count: usize,
    mut spawn: impl FnMut(&[u16]) -> Result<Proc>,
) -> Result<(Proc, Vec<u16>)> {
    let mut exited = None;
    for _ in 0..PORT_ATTEMPTS {
        let ports = (0..count)
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let mut proc = spawn(&ports)?;
        let mut listening = Ok(());
        for &port in &ports {
            listening = wait_listening(&mut proc, port).await;
            if listening.is_err() {
                break;
            }
        }
        match listening {
            Ok(()) => return Ok((proc, ports)),
            Err(e) if proc.check_alive().is_err() => exited = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(exited
        .unwrap_or_else(|| anyhow::anyhow!("no attempt"))
        .context(format!("no free ports in {PORT_ATTEMPTS} attempts")))
}

/// Wait until something accepts TCP connections on `port` (at most 15 s); fails at once if
/// `proc` exits meanwhile.
pub async fn wait_listening(proc: &mut Proc, port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut exited = None;
    let listening = relay_testkit::wait::try_wait_until(
        &format!("{} to listen on {port}", proc.name),
        Duration::from_secs(15),
        || {
            if std::net::TcpStream::connect(addr).is_ok() {
                return true;
            }
            exited = proc.check_alive().err();
            exited.is_some()
        },
    )
    .await;
    if let Some(e) = exited {
        return Err(e);
    }
    listening.with_context(|| format!("log {}", proc.log.display()))
}

/// The soft limit on open files of this process (children inherit it).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        let u = usage_of(std::process::id()).unwrap();
        assert!(u.rss > 1024 * 1024, "{u:?}");
        assert!(u.cpu_s >= 0.0);
        assert!(open_files_limit().unwrap() > 0);
    }
}
