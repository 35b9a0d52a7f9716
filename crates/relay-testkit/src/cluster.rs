//! A relay cluster for end-to-end tests: [`NatsServer`] (`nats-server -js`), three
//! `relay serve --nats … --node-name n1..n3` processes on loopback ports, and a
//! [`Haproxy`] in front of both relay ports (access API and websocket relay), round robin
//! with health checks. Every node shares one secret and one audience (the balancer's
//! access URL), as a real deployment behind one public name does.
//!
//! The relay binary is given by the caller (`env!("CARGO_BIN_EXE_relay")` in relay-cli's
//! tests). Nodes can be killed (SIGKILL) and restarted on the same ports, so the
//! balancer's configuration stays valid.

use crate::haproxy::{Frontend, Haproxy};
use crate::nats::NatsServer;
use crate::process::{candidate_port, spawn_and_read, Killed, SERVE_ACCESS_LINE, SERVE_RELAY_LINE};
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How many times a start on candidate ports is tried before giving up.
const ATTEMPTS: usize = 5;

/// How long the balancer may take to see every node healthy.
const HEALTHY: Duration = Duration::from_secs(15);

/// Which websocket URL a node's access API hands out (its `RELAY_URL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicRelay {
    /// The balancer's relay port, as in production: a websocket may land on any node.
    Balancer,
    /// The node's own relay port: whoever asks node A's access API is sent to node A
    /// (tests that need a client on a given node).
    EachNode,
}

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    relay: PathBuf,
    secret: String,
    nodes: usize,
    public_relay: PublicRelay,
    env: Vec<(String, String)>,
}

impl ClusterConfig {
    /// Three nodes of the `relay` binary at `relay`, verifying tokens with `secret`,
    /// handing out the balancer's relay URL.
    pub fn new(relay: impl Into<PathBuf>, secret: &str) -> ClusterConfig {
        ClusterConfig {
            relay: relay.into(),
            secret: secret.to_owned(),
            nodes: 3,
            public_relay: PublicRelay::Balancer,
            env: Vec::new(),
        }
    }

    /// How many relay nodes to start (at least 1).
    pub fn nodes(mut self, nodes: usize) -> ClusterConfig {
        self.nodes = nodes.max(1);
        self
    }

    /// Which websocket URL the nodes hand out.
    pub fn public_relay(mut self, public_relay: PublicRelay) -> ClusterConfig {
        self.public_relay = public_relay;
        self
    }

    /// One more environment variable for every node (e.g. `RELAY_LIMITS=off`).
    pub fn env(mut self, key: &str, value: &str) -> ClusterConfig {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One `relay serve` of the cluster.
#[derive(Debug)]
struct Node {
    name: String,
    access: SocketAddr,
    relay: SocketAddr,
    starts: u32,
    process: Option<Killed>,
}

/// NATS, the relay nodes and the balancer; everything is stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    // Dropped first: the relays stop before NATS and the balancer.
    nodes: Vec<Node>,
    balancer: Haproxy,
    nats: NatsServer,
    /// Balancer ports: (access API, relay).
    public: (u16, u16),
    // Declared last: the nodes' logs, removed after everything has stopped.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts NATS, the nodes and the balancer, and waits until the balancer's health
    /// checks see every node. Panics naming the missing package when `nats-server` or
    /// `haproxy` is not installed, and with the node's log when a node does not start.
    pub fn start(config: ClusterConfig) -> Cluster {
        crate::require(crate::nats::NATS_SERVER, crate::nats::INSTALL_HINT);
        crate::require(crate::haproxy::HAPROXY, crate::haproxy::INSTALL_HINT);
        let nats = NatsServer::start();
        for _ in 0..ATTEMPTS {
            if let Some(cluster) = Cluster::try_start(&config, &nats) {
                return cluster.with_nats(nats);
            }
        }
        panic!("the cluster's balancer could not listen on free ports in {ATTEMPTS} attempts")
    }

    /// One attempt: `None` if the balancer lost one of its candidate ports.
    fn try_start(config: &ClusterConfig, nats: &NatsServer) -> Option<PartialCluster> {
        let dir = tempfile::Builder::new()
            .prefix("relay-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the cluster's temporary directory: {e}"));
        let public = (candidate_port(), candidate_port());
        let mut nodes = Vec::with_capacity(config.nodes);
        for index in 0..config.nodes {
            let name = format!("n{}", index + 1);
            nodes.push(start_node_on_free_ports(config, nats, &dir, public, name));
        }
        let frontends = [
            Frontend {
                name: "access".to_owned(),
                servers: nodes.iter().map(|n| (n.name.clone(), n.access)).collect(),
            },
            Frontend {
                name: "relay".to_owned(),
                servers: nodes.iter().map(|n| (n.name.clone(), n.relay)).collect(),
            },
        ];
        let balancer = Haproxy::start_on(&frontends, &[public.0, public.1])?;
        crate::wait_until_blocking("the balancer to see every node healthy", HEALTHY, || {
            balancer.all_up()
        });
        for node in &nodes {
            wait_joined(node, config.nodes);
        }
        Some(PartialCluster {
            config: config.clone(),
            nodes,
            balancer,
            public,
            dir,
        })
    }

    /// How many relay nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The name of node `index` (`n1`, `n2`, …), as given by `--node-name`.
    pub fn name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// `http://ADDR` of node `index`'s access API.
    pub fn access_url(&self, index: usize) -> String {
        format!("http://{}", self.nodes[index].access)
    }

    /// `ws://ADDR` of node `index`'s relay port.
    pub fn relay_url(&self, index: usize) -> String {
        format!("ws://{}", self.nodes[index].relay)
    }

    /// The balancer's access API: `http://127.0.0.1:PORT`, also every node's audience.
    pub fn balancer_access_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.public.0)
    }

    /// The balancer's relay port: `ws://127.0.0.1:PORT`.
    pub fn balancer_relay_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.public.1)
    }

    /// The audience every node accepts (the balancer's access URL).
    pub fn audience(&self) -> String {
        self.balancer_access_url()
    }

    /// The balancer, for its view of the nodes' health.
    pub fn balancer(&self) -> &Haproxy {
        &self.balancer
    }

    /// The NATS server (kill and restart it for fault tests).
    pub fn nats(&mut self) -> &mut NatsServer {
        &mut self.nats
    }

    /// The process id of node `index`, `None` while it is killed.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].process.as_ref().map(Killed::id)
    }

    /// Kills node `index` with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].process = None;
    }

    /// Kills node `index` if it runs and starts it again on the same ports. Panics if a
    /// port was taken meanwhile or it does not start.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let public = self.public;
        let node = &mut self.nodes[index];
        let (access, relay) = (node.access.port(), node.relay.port());
        node.starts += 1;
        let (name, starts) = (node.name.clone(), node.starts);
        let started = start_node(
            &self.config,
            &self.nats,
            &self.dir,
            public,
            &name,
            starts,
            (access, relay),
        );
        let Some((process, _, _)) = started else {
            panic!(
                "node {name} did not restart on ports {access} and {relay}:\n{}",
                self.log(index)
            );
        };
        self.nodes[index].process = Some(process);
        wait_connected(&self.nodes[index]);
    }

    /// Waits until every running node is connected to NATS and hears from all the other
    /// running nodes (after restarts).
    pub fn wait_joined(&self) {
        let running = self.nodes.iter().filter(|n| n.process.is_some()).count();
        for node in self.nodes.iter().filter(|n| n.process.is_some()) {
            wait_joined(node, running);
        }
    }

    /// The value of the unlabelled metric `name` (e.g. `relay_cluster_peers`) in node
    /// `index`'s `/metrics`; `None` if the node does not answer or has no such metric.
    pub fn metric(&self, index: usize, name: &str) -> Option<f64> {
        metric(&self.nodes[index], name)
    }

    /// Everything node `index` logged, over all its starts.
    pub fn log(&self, index: usize) -> String {
        let node = &self.nodes[index];
        (1..=node.starts)
            .flat_map(|start| {
                ["log", "stderr"].map(|kind| log_path(&self.dir, &node.name, start, kind))
            })
            .map(|path| fs::read_to_string(path).unwrap_or_default())
            .collect()
    }
}

/// Waits until `node` is connected to NATS.
fn wait_connected(node: &Node) {
    let what = format!("node {} to connect to NATS", node.name);
    crate::wait_until_blocking(&what, HEALTHY, || {
        metric(node, "relay_cluster_connected") == Some(1.0)
    });
}

/// Waits until `node` is connected to NATS and hears from all `nodes - 1` others.
fn wait_joined(node: &Node, nodes: usize) {
    let what = format!("node {} to join the cluster of {nodes}", node.name);
    crate::wait_until_blocking(&what, HEALTHY, || {
        metric(node, "relay_cluster_connected") == Some(1.0)
            && metric(node, "relay_cluster_peers").is_some_and(|p| p >= (nodes - 1) as f64)
    });
}

/// An unlabelled metric from `node`'s `/metrics`.
fn metric(node: &Node, name: &str) -> Option<f64> {
    let text = http_get(node.access, "/metrics")?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The body of `GET path` on `address` (HTTP/1.0, so the server closes when done).
fn http_get(address: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, HEALTHY).ok()?;
    stream.set_read_timeout(Some(HEALTHY)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// A cluster before the NATS server is moved in (so retries can reuse one server).
struct PartialCluster {
    config: ClusterConfig,
    nodes: Vec<Node>,
    balancer: Haproxy,
    public: (u16, u16),
    dir: tempfile::TempDir,
}

impl PartialCluster {
    fn with_nats(self, nats: NatsServer) -> Cluster {
        Cluster {
            config: self.config,
            nodes: self.nodes,
            balancer: self.balancer,
            nats,
            public: self.public,
            dir: self.dir,
        }
    }
}

/// `<dir>/<name>-<start>.<kind>`: one file per start, so a restart keeps the old log.
fn log_path(dir: &tempfile::TempDir, name: &str, start: u32, kind: &str) -> PathBuf {
    dir.path().join(format!("{name}-{start}.{kind}"))
}

/// Starts one node on candidate ports, retried on others if it exits (a port was taken).
fn start_node_on_free_ports(
    config: &ClusterConfig,
    nats: &NatsServer,
    dir: &tempfile::TempDir,
    public: (u16, u16),
    name: String,
) -> Node {
    for start in 1..=ATTEMPTS as u32 {
        let ports = (candidate_port(), candidate_port());
        if let Some((process, access, relay)) =
            start_node(config, nats, dir, public, &name, start, ports)
        {
            return Node {
                name,
                access,
                relay,
                starts: start,
                process: Some(process),
            };
        }
        let stderr = fs::read_to_string(log_path(dir, &name, start, "stderr")).unwrap_or_default();
        assert!(
            stderr.contains("in use"),
            "relay node {name} exited during start-up; its stderr:\n{stderr}"
        );
    }
    panic!("relay node {name} could not listen on free ports in {ATTEMPTS} attempts")
}

/// Starts `relay serve` as node `name` on `ports` (access, relay); `None` if it exits
/// before printing both addresses.
fn start_node(
    config: &ClusterConfig,
    nats: &NatsServer,
    dir: &tempfile::TempDir,
    public: (u16, u16),
    name: &str,
    start: u32,
    ports: (u16, u16),
) -> Option<(Killed, SocketAddr, SocketAddr)> {
    let relay_url = match config.public_relay {
        PublicRelay::Balancer => format!("ws://127.0.0.1:{}", public.1),
        PublicRelay::EachNode => format!("ws://127.0.0.1:{}", ports.1),
    };
    let stderr = fs::File::create(log_path(dir, name, start, "stderr"))
        .unwrap_or_else(|e| panic!("cannot create the log of node {name}: {e}"));
    let mut command = Command::new(&config.relay);
    command.arg("serve");
    for (key, _) in std::env::vars() {
        if key.starts_with("RELAY_") {
            command.env_remove(key);
        }
    }
    command
        .env("RELAY_AUDIENCE", format!("http://127.0.0.1:{}", public.0))
        .env("RELAY_URL", relay_url)
        .env("RELAY_SECRET", &config.secret)
        .env("RELAY_BIND", "127.0.0.1")
        .env("RELAY_PORT_ACCESS", ports.0.to_string())
        .env("RELAY_PORT_RELAY", ports.1.to_string())
        .env("RELAY_NATS_URL", nats.url())
        .env("RELAY_NODE_NAME", name)
        .env("RELAY_LOG_FILE", log_path(dir, name, start, "log"))
        .env("RELAY_LOG_LEVEL", "info")
        .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stderr(stderr);
    let (process, lines) = spawn_and_read(&mut command, &[SERVE_ACCESS_LINE, SERVE_RELAY_LINE]);
    let lines = lines?;
    let address = |line: &String| -> SocketAddr {
        line.parse()
            .unwrap_or_else(|e| panic!("node {name} printed {line:?}: {e}"))
    };
    Some((process, address(&lines[0]), address(&lines[1])))
}
