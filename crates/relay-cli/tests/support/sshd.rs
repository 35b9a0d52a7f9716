//! A throw-away OpenSSH server for the shell relay's end-to-end tests: host and client
//! keys made by ssh-keygen in a scratch directory, sshd on a loopback port with key
//! authentication only, and the ssh/scp command lines that reach it through a local port.

use super::{on_a_free_port, port_open, require, Killed};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where Debian's openssh-server installs sshd.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Runs `cmd` to completion and panics with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// sshd on a free loopback port, killed on drop; its keys live in `dir`.
pub struct Sshd {
    /// The scratch directory holding the keys and the configuration.
    pub dir: PathBuf,
    /// The port sshd listens on.
    pub port: u16,
    /// The user the client logs in as (the test's own user).
    pub user: String,
    _process: Killed,
}

impl Sshd {
    /// Makes the keys in `dir` (created if missing) and starts sshd. Fails loudly when
    /// sshd, ssh or ssh-keygen is missing.
    pub fn start(dir: &Path) -> Sshd {
        for program in [SSHD, "ssh", "ssh-keygen"] {
            require(program, "run scripts/test.sh, which installs openssh");
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all("/run/sshd").ok(); // sshd's privilege separation directory
        for key in ["host_key", "client_key"] {
            let _ = std::fs::remove_file(dir.join(key));
            let _ = std::fs::remove_file(dir.join(format!("{key}.pub")));
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let user = String::from_utf8(run(Command::new("id").arg("-un")).stdout)
            .unwrap()
            .trim()
            .to_owned();
        let config = |port: u16| {
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPidFile none\nSubsystem sftp internal-sftp\n\
                 MaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n",
                hk = dir.join("host_key").display(),
                ak = dir.join("authorized_keys").display(),
            )
        };
        // sshd cannot report a port it chose, so it is given one and retried if it loses it.
        let (process, port) = on_a_free_port(
            "sshd",
            |port| {
                std::fs::write(dir.join("sshd_config"), config(port)).unwrap();
                Some(Killed(
                    Command::new(SSHD)
                        .args(["-D", "-e", "-f"])
                        .arg(dir.join("sshd_config"))
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                ))
            },
            port_open,
        );
        Sshd {
            dir: dir.to_path_buf(),
            port,
            user,
            _process: process,
        }
    }

    /// A client of this server that connects through `port` (a shell client's local port).
    pub fn client(&self, port: u16) -> Ssh {
        Ssh {
            dir: self.dir.clone(),
            port,
            user: self.user.clone(),
        }
    }
}

/// ssh and scp with the test's client key, reaching the server through `port`.
pub struct Ssh {
    /// The directory holding `client_key`.
    pub dir: PathBuf,
    /// The port ssh connects to on 127.0.0.1.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
}

impl Ssh {
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let key = self.dir.join("client_key");
        let mut args: Vec<String> = vec![
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `ssh … user@127.0.0.1 remote`.
    pub fn command(&self, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.args(&["-p", &self.port.to_string()]))
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(remote);
        cmd
    }

    /// `scp from to`, panicking unless it succeeds.
    pub fn scp(&self, from: &str, to: &str) {
        let mut cmd = Command::new("scp");
        cmd.args(self.args(&["-P", &self.port.to_string()]))
            .arg(from)
            .arg(to);
        run(&mut cmd);
    }
}
