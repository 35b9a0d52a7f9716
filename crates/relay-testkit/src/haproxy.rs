//! A TCP load balancer for cluster tests: Debian's `haproxy` in the foreground (`-db`),
//! its configuration, admin socket and everything else in a temporary directory (no pid
//! file, no `user` directive, nothing system-wide), one frontend per balanced port, round
//! robin over the backends, with HTTP health checks on `/healthz` so a dead backend is
//! skipped within a few hundred milliseconds. Stopped on drop.

use crate::process::{candidate_port, port_open, Killed};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The program, as Debian's `haproxy` package installs it.
pub const HAPROXY: &str = "haproxy";

/// How to get it when it is missing; named in every "not installed" panic.
pub const INSTALL_HINT: &str = "apt-get install haproxy (scripts/test.sh installs it)";

/// How long haproxy may take to listen on its frontends.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// How many sets of candidate ports [`Haproxy::start`] tries.
const ATTEMPTS: usize = 5;

/// One balanced port: connections to it are spread round robin over `servers`.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// A name for the frontend and its backend (letters, digits, `-`, `_`).
    pub name: String,
    /// Each backend's name (shown in [`Haproxy::servers`]) and address.
    pub servers: Vec<(String, SocketAddr)>,
}

/// What haproxy's health checks say about one backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// The frontend (and backend) name.
    pub frontend: String,
    /// The server's name.
    pub server: String,
    /// `UP`, `DOWN`, `UP 1/2`, … as haproxy reports it.
    pub status: String,
}

impl ServerState {
    /// Whether haproxy sends new connections to this server.
    pub fn up(&self) -> bool {
        self.status.starts_with("UP")
    }
}

/// A running haproxy; killed on drop.
#[derive(Debug)]
pub struct Haproxy {
    ports: Vec<u16>,
    process: Option<Killed>,
    // Declared last: removed after haproxy has stopped.
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts haproxy with one listening port per frontend, on free ports (retried on
    /// other ports if one is taken meanwhile). Panics (naming `apt-get install haproxy`)
    /// when it is not installed.
    pub fn start(frontends: &[Frontend]) -> Haproxy {
        for _ in 0..ATTEMPTS {
            let ports: Vec<u16> = frontends.iter().map(|_| candidate_port()).collect();
            if let Some(haproxy) = Haproxy::start_on(frontends, &ports) {
                return haproxy;
            }
        }
        panic!("{HAPROXY} could not listen on free ports in {ATTEMPTS} attempts")
    }

    /// Starts haproxy listening on `ports` (one per frontend, in order); `None` if it exits
    /// instead (a port was taken). Panics when it is not installed or its configuration is
    /// refused.
    pub fn start_on(frontends: &[Frontend], ports: &[u16]) -> Option<Haproxy> {
        crate::require(HAPROXY, INSTALL_HINT);
        assert_eq!(frontends.len(), ports.len(), "one port per frontend");
        let dir = tempfile::Builder::new()
            .prefix("relay-haproxy-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the haproxy temporary directory: {e}"));
        let mut haproxy = Haproxy {
            ports: ports.to_vec(),
            process: None,
            dir,
        };
        let config = haproxy.config_path();
        std::fs::write(
            &config,
            config_text(frontends, ports, &haproxy.socket_path()),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = std::fs::File::create(haproxy.log_path())
            .unwrap_or_else(|e| panic!("cannot create the haproxy log: {e}"));
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .current_dir(haproxy.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {HAPROXY}: {e}"));
        let mut process = Killed(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if process.exited() {
                let log = haproxy.log();
                assert!(
                    log.contains("cannot bind") || log.contains("Address already in use"),
                    "{HAPROXY} refused its configuration:\n{log}"
                );
                return None;
            }
            if ports.iter().all(|&port| port_open(port)) {
                haproxy.process = Some(process);
                return Some(haproxy);
            }
            assert!(
                Instant::now() < deadline,
                "{HAPROXY} did not listen on {ports:?} within {START_DEADLINE:?}:\n{}",
                haproxy.log()
            );
            std::thread::sleep(crate::wait::POLL);
        }
    }

    /// The listening port of frontend `index` (in the order given to `start`).
    pub fn port(&self, index: usize) -> u16 {
        self.ports[index]
    }

    /// The health of every backend server, from haproxy's admin socket (empty if the
    /// socket does not answer).
    pub fn servers(&self) -> Vec<ServerState> {
        self.admin("show stat")
            .map(|csv| parse_stat(&csv))
            .unwrap_or_default()
    }

    /// Whether every backend server of every frontend is up.
    pub fn all_up(&self) -> bool {
        let servers = self.servers();
        !servers.is_empty() && servers.iter().all(ServerState::up)
    }

    /// What haproxy printed (warnings, alerts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends one command to the admin socket and returns the answer.
    fn admin(&self, command: &str) -> Option<String> {
        let mut socket = UnixStream::connect(self.socket_path()).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }
}

/// The configuration: TCP mode, long timeouts for websockets, round robin, a health check
/// every 200 ms (two failures mark a server down, one success brings it back), and
/// connections to a dead server redispatched to another one.
fn config_text(frontends: &[Frontend], ports: &[u16], socket: &std::path::Path) -> String {
    let mut text = format!(
        "global\n\
         \tstats socket {} mode 600 level admin\n\
         \n\
         defaults\n\
         \tmode tcp\n\
         \ttimeout connect 1s\n\
         \ttimeout client 1h\n\
         \ttimeout server 1h\n\
         \ttimeout tunnel 1h\n\
         \ttimeout client-fin 5s\n\
         \ttimeout check 1s\n\
         \toption redispatch\n\
         \tretries 3\n\
         \tdefault-server inter 200ms fastinter 100ms downinter 200ms rise 1 fall 2 on-marked-down shutdown-sessions\n",
        socket.display()
    );
    for (frontend, port) in frontends.iter().zip(ports) {
        let name = &frontend.name;
        let _ = write!(
            text,
            "\nfrontend {name}\n\
             \tbind 127.0.0.1:{port}\n\
             \tdefault_backend {name}\n\
             \n\
             backend {name}\n\
             \tbalance roundrobin\n\
             \toption httpchk GET /healthz\n\
             \thttp-check expect status 200\n"
        );
        for (server, address) in &frontend.servers {
            let _ = writeln!(text, "\tserver {server} {address} check");
        }
    }
    text
}

/// The servers in a `show stat` CSV answer (frontend and backend summary rows left out).
fn parse_stat(csv: &str) -> Vec<ServerState> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(status)) = (column("pxname"), column("svname"), column("status"))
    else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let server = *fields.get(sv)?;
            if server == "FRONTEND" || server == "BACKEND" {
                return None;
            }
            Some(ServerState {
                frontend: fields.get(px)?.to_string(),
                server: server.to_owned(),
                status: fields.get(status)?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn stat_rows_become_server_states() {
        let csv = "# pxname,svname,qcur,status\nweb,FRONTEND,,OPEN\nweb,n1,0,UP\nweb,n2,0,DOWN\nweb,BACKEND,0,UP\n";
        let servers = parse_stat(csv);
        assert_eq!(servers.len(), 2);
        assert!(servers[0].up());
        assert_eq!(servers[1].server, "n2");
        assert!(!servers[1].up());
    }

    /// A backend that answers every connection with `HTTP/1.0 200` and its own name.
    fn backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let mut stream = stream;
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = write!(stream, "HTTP/1.0 200 OK\r\n\r\n{name}");
            }
        });
        address
    }

    fn fetch(port: u16) -> String {
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn connections_are_spread_round_robin_and_a_dead_backend_is_reported_down() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("{e}")); // closed again at once: nobody listens
        let frontends = [Frontend {
            name: "web".to_owned(),
            servers: vec![
                ("a".to_owned(), backend("a")),
                ("b".to_owned(), backend("b")),
                ("dead".to_owned(), dead),
            ],
        }];
        let haproxy = Haproxy::start(&frontends);
        crate::wait_until_blocking("the dead backend to be marked down", START_DEADLINE, || {
            let servers = haproxy.servers();
            servers.len() == 3
                && servers
                    .iter()
                    .all(|s| s.up() == (s.server != "dead") && !s.status.contains('/'))
        });
        let answers: Vec<String> = (0..4).map(|_| fetch(haproxy.port(0))).collect();
        assert!(answers.iter().any(|a| a.ends_with('a')), "{answers:?}");
        assert!(answers.iter().any(|a| a.ends_with('b')), "{answers:?}");
        assert!(!haproxy.all_up());
        let dir = haproxy.dir.path().to_path_buf();
        drop(haproxy);
        assert!(!dir.exists());
    }
}
