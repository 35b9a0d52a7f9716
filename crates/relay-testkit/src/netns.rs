//! A network namespace joined to the root namespace by one veth pair, whose link a test can
//! cut silently and heal again: the rig of the silent-cut fault tests (RELIABILITY.md).
//!
//! [`Netns::create`] makes a namespace with a unique name, a veth pair (one end in the
//! namespace) and a /30 from `10.213.0.0/16` chosen from the process id and a counter.
//! A process started with [`Netns::command`] (`ip netns exec`) lives inside it and reaches
//! the root namespace at [`Netns::host_ip`]; the root namespace reaches it at
//! [`Netns::ns_ip`].
//!
//! [`Netns::cut`] adds an nftables rule on each side that drops every packet arriving over
//! the veth (the input hook, so no sender gets an error and no FIN or RST is ever seen:
//! the link just goes quiet, as when Wi-Fi drops); [`Netns::heal`] removes both rules.
//! Dropping the [`Netns`] (also while unwinding from a panic) removes the rules, the veth
//! pair and the namespace; a namespace left behind by a killed test run is removed by
//! the next [`Netns::create`].
//!
//! Needs root and the `ip` (iproute2) and `nft` (nftables) programs; without them
//! [`Netns::create`] fails loudly, never skips. `scripts/test.sh` installs both.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Prefix of every namespace this module makes (`relay-t<pid>-<n>`).
const NAME_PREFIX: &str = "relay-t";

/// Namespaces made by this process so far (part of each name and subnet).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test namespace with its veth link to the root namespace. See the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    cut: Mutex<bool>,
}

impl Netns {
    /// Creates the namespace, its veth pair and addresses, with loopback up inside.
    /// Panics (with what is missing) without root, `ip` or `nft`, or if a step fails.
    pub fn create() -> Netns {
        require_root_and_tools();
        remove_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("{NAME_PREFIX}{pid}-{n}");
        // Interface names have at most 15 bytes: "rl" + up to 7 pid digits + "x" + n + side.
        let tag = format!("rl{}x{n}", pid % 10_000_000);
        let host_if = format!("{tag}h");
        let ns_if = format!("{tag}n");
        let subnet = (pid.wrapping_mul(64).wrapping_add(n)) % (1 << 14);
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + subnet * 4;
        let host_ip = Ipv4Addr::from(base + 1);
        let ns_ip = Ipv4Addr::from(base + 2);
        let netns = Netns {
            name,
            host_if,
            ns_if,
            host_ip,
            ns_ip,
            cut: Mutex::new(false),
        };
        // From here on, Drop cleans up whatever was made.
        let (name, host_if, ns_if) = (&netns.name, &netns.host_if, &netns.ns_if);
        run("ip", &["netns", "add", name]);
        run(
            "ip",
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", host_if],
        );
        run("ip", &["link", "set", host_if, "up"]);
        netns.run_inside("ip", &["addr", "add", &format!("{ns_ip}/30"), "dev", ns_if]);
        netns.run_inside("ip", &["link", "set", ns_if, "up"]);
        netns.run_inside("ip", &["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root namespace's address on the link: where a process inside reaches servers
    /// of the root namespace (bind those servers to it, or to 0.0.0.0).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's address on the link: where the root namespace reaches a server
    /// inside.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts the link silently: every packet arriving over the veth, on either side, is
    /// dropped. Nothing is closed and no one is told. Cutting a cut link does nothing.
    pub fn cut(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        if *cut {
            return;
        }
        run_with_input("nft", &["-f", "-"], &drop_rules(&self.host_if));
        let inside = ["netns", "exec", &self.name, "nft", "-f", "-"];
        run_with_input("ip", &inside, &drop_rules(&self.ns_if));
        *cut = true;
    }

    /// Heals a cut link: removes both drop rules. Healing a working link does nothing.
    pub fn heal(&self) {
        let mut cut = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        if !*cut {
            return;
        }
        run(
            "nft",
            &["delete", "table", "inet", &cut_table(&self.host_if)],
        );
        self.run_inside("nft", &["delete", "table", "inet", &cut_table(&self.ns_if)]);
        *cut = false;
    }

    /// Whether the link is cut now.
    pub fn is_cut(&self) -> bool {
        *self.cut.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run_inside(&self, program: &str, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort, never panicking (this may run while unwinding): the root side's
        // rule, then the veth pair (deleting one end deletes both), then the namespace
        // (its rules go with it).
        if self.is_cut() {
            let _ = quiet(
                "nft",
                &["delete", "table", "inet", &cut_table(&self.host_if)],
            );
        }
        let _ = quiet("ip", &["link", "del", &self.host_if]);
        let _ = quiet("ip", &["netns", "del", &self.name]);
    }
}

/// The nftables table of a cut on interface `ifname` (one per interface, so that healing
/// one test's link never heals another's).
fn cut_table(ifname: &str) -> String {
    format!("relay_cut_{ifname}")
}

/// An nftables script: a table whose input chain drops every packet arriving on `ifname`
/// (the input hook: nothing sent locally is refused, so no sender sees an error).
fn drop_rules(ifname: &str) -> String {
    let table = cut_table(ifname);
    format!(
        "table inet {table} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    iifname \"{ifname}\" drop\n  }}\n}}\n"
    )
}

/// Runs `program args` to completion; panics with its stderr if it fails.
fn run(program: &str, args: &[&str]) {
    run_with_input(program, args, "");
}

/// Runs `program args` with `stdin` as its input; panics with its stderr if it fails.
fn run_with_input(program: &str, args: &[&str], stdin: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {program} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Runs a clean-up command, ignoring its output; whether it succeeded.
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails loudly unless this process is root and `ip` and `nft` are installed.
fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "the network namespace tests must run as root (CI does): effective uid is {uid}"
    );
    let hint = "run scripts/test.sh, which installs iproute2 and nftables";
    crate::require("ip", hint);
    crate::require("nft", hint);
}

/// Removes namespaces (and their veth pairs) left by test processes that no longer run.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = quiet("ip", &["netns", "del", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one `GET` with a 200 on `listener`, in a thread.
    fn answer_once(listener: &std::net::TcpListener) -> std::thread::JoinHandle<()> {
        use std::io::{Read, Write};
        let listener = listener.try_clone().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            }
        })
    }

    /// curl from inside the namespace: its exit code (0 ok, 28 timed out).
    fn curl_inside(ns: &Netns, url: &str, max_time: &str) -> Option<i32> {
        ns.command("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", max_time, url])
            .status()
            .ok()
            .and_then(|s| s.code())
    }

    #[test]
    fn a_cut_link_goes_quiet_and_a_healed_one_works_and_drop_removes_everything() {
        crate::require("curl", "install curl");
        let ns = Netns::create();
        let listener =
            std::net::TcpListener::bind((ns.host_ip(), 0)).unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}/",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let served = answer_once(&listener);
        assert_eq!(curl_inside(&ns, &url, "10"), Some(0));
        let _ = served.join();
        ns.cut();
        assert!(ns.is_cut());
        // Not refused (exit 7): nothing comes back at all, so curl times out (exit 28).
        assert_eq!(curl_inside(&ns, &url, "1"), Some(28));
        ns.heal();
        let served = answer_once(&listener);
        assert_eq!(curl_inside(&ns, &url, "10"), Some(0));
        let _ = served.join();
        ns.cut();
        let (name, host_if) = (ns.name().to_owned(), ns.host_if.clone());
        drop(ns);
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&list).contains(&name));
        assert!(!quiet("ip", &["link", "show", &host_if]));
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        assert!(!String::from_utf8_lossy(&tables).contains(&cut_table(&host_if)));
    }

    #[test]
    fn the_drop_rules_name_the_interface_on_the_input_hook() {
        let rules = drop_rules("rl1x0h");
        assert!(rules.contains("hook input"));
        assert!(rules.contains("iifname \"rl1x0h\" drop"));
    }
}
