//! The shell relay in process: a real relay server, `ShellHost` in front of a local
//! "server speaks first" TCP service, and the shell client's listener. Covers the
//! reference's lifecycle bugs (shell spec §1.12, §4): early client bytes lost, disconnects
//! ignored, tunnels outliving their TCP connections, reconnect loops, coalescing/truncation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use relay_auth::{mint, Claims};
use relay_server::{RunningServer, ServerConfig};
use relay_shell::client::{self, ClientConfig};
use relay_shell::host::{HostConfig, ShellHost};
use relay_testkit::wait_until;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"shell-secret";
const WAIT: Duration = Duration::from_secs(10);
const BANNER: &[u8] = b"SSH-2.0-FakeSSH\r\n";

fn token(server: &RunningServer, topic: &str, scope: &str) -> String {
    let claims = Claims::grant(
        "shell",
        topic,
        &[scope],
        server.access_url(),
        relay_auth::unix_now(),
        600,
    );
    mint(&claims, SECRET)
}

/// A service that speaks first (a banner), then echoes everything, counting connections.
async fn banner_echo_service() -> (u16, tokio::sync::watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open_tx, open_rx) = tokio::sync::watch::channel(0usize);
    let open_tx = std::sync::Arc::new(open_tx);
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let open = open_tx.clone();
            open.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let _ = tcp.write_all(BANNER).await;
                let mut buf = vec![0u8; 65536];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                open.send_modify(|n| *n -= 1);
            });
        }
    });
    (port, open_rx)
}

struct Rig {
    server: RunningServer,
    client_port: u16,
    service_open: tokio::sync::watch::Receiver<usize>,
    host: tokio::task::JoinHandle<()>,
}

async fn rig() -> Rig {
    let server = RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap();
    let (service_port, service_open) = banner_echo_service().await;
    let access = format!("{}/shell/expt", server.access_url());
    let mut host = ShellHost::start(HostConfig {
        access_url: access.clone(),
        token: token(&server, "expt", "host"),
        target: format!("127.0.0.1:{service_port}"),
        extra_ca_file: None,
        timeouts: Default::default(),
    });
    let mut state = host.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.is_connected()))
        .await
        .unwrap()
        .unwrap();
    let host = tokio::spawn(async move { host.run().await });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client_port = listener.local_addr().unwrap().port();
    let config = ClientConfig {
        access_url: access,
        token: token(&server, "expt", "client"),
        extra_ca_file: None,
        max_connections: 64,
        timeouts: Default::default(),
    };
    tokio::spawn(client::serve(listener, config));
    Rig {
        server,
        client_port,
        service_open,
        host,
    }
}

async fn read_exactly(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    buf
}

#[tokio::test]
async fn early_client_bytes_wait_for_the_banner_and_nothing_is_lost() {
    let rig = rig().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", rig.client_port))
        .await
        .unwrap();
    // Written before the host has even dialled: the reference lost these.
    tcp.write_all(b"SSH-2.0-Client\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, BANNER.len()).await, BANNER);
    assert_eq!(read_exactly(&mut tcp, 16).await, b"SSH-2.0-Client\r\n");
    // A large write is neither truncated nor corrupted (the reference cut at 1 MiB).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tcp.into_split();
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr
    });
    let mut echoed = vec![0u8; big.len()];
    tokio::time::timeout(WAIT, rd.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert!(echoed == big, "echo differs");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn closing_the_admin_connection_frees_everything() {
    let rig = rig().await;
    let baseline = rig.server.connection_count();
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(("127.0.0.1", rig.client_port))
            .await
            .unwrap();
        assert_eq!(read_exactly(&mut tcp, BANNER.len()).await, BANNER);
        conns.push(tcp);
    }
    wait_until("5 pairs at the relay", WAIT, || {
        rig.server.connection_count() == baseline + 10
    })
    .await;
    assert_eq!(*rig.service_open.borrow(), 5);
    drop(conns);
    // The relay pairs, the host's websockets and the host's TCP connections to the
    // service all go away (the reference kept them until token expiry or process exit).
    wait_until("relay pairs freed", WAIT, || {
        rig.server.connection_count() == baseline
    })
    .await;
    let mut open = rig.service_open.clone();
    tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_service_closing_closes_the_admin_connection() {
    let rig = rig().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", rig.client_port))
        .await
        .unwrap();
    assert_eq!(read_exactly(&mut tcp, BANNER.len()).await, BANNER);
    // The echo service closes when it reads EOF; half-close our side to trigger it.
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn without_a_host_the_admin_connection_closes_promptly_and_once() {
    let server = RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(client::serve(
        listener,
        ClientConfig {
            access_url: format!("{}/shell/nobody", server.access_url()),
            token: token(&server, "nobody", "client"),
            extra_ca_file: None,
            max_connections: 4,
            timeouts: Default::default(),
        },
    ));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    // No zombie reconnect loop: nothing is left at the relay.
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn shell_access_applies_the_scope_rules() {
    let server = RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap();
    let post = |path: &str, token: String| {
        let url = format!("{}{path}", server.access_url());
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "-H",
                ])
                .arg(format!("Authorization: {token}"))
                .arg(url)
                .output()
                .await
                .expect("curl is required (scripts/test.sh installs it)");
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert_eq!(
        post("/shell/expt", token(&server, "expt", "host")).await,
        "200"
    );
    assert_eq!(
        post("/shell/expt", token(&server, "expt", "client")).await,
        "200"
    );
    assert_eq!(
        post("/shell/other", token(&server, "expt", "host")).await,
        "401"
    );
    assert_eq!(
        post("/shell/expt", token(&server, "expt", "read")).await,
        "401"
    );
    assert_eq!(
        post("/shell/stats", token(&server, "stats", "host")).await,
        "401"
    );
    assert_eq!(
        post("/shell/expt", token(&server, "expt", "stats")).await,
        "401"
    );
    assert_eq!(
        post("/shell/stats", token(&server, "stats", "stats")).await,
        "200"
    );
    // A shell token cannot be used on a session topic, where its scopes would become
    // read/write.
    assert_eq!(
        post("/session/expt", token(&server, "expt", "client")).await,
        "401"
    );
}

#[tokio::test]
async fn a_disconnect_action_hangs_up_the_host_side() {
    // The relay sends `disconnect` when the admin's side leaves; the host acts on it (the
    // reference ignored it). Checked through the host's open-connection count staying
    // consistent with the service's.
    let rig = rig().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", rig.client_port))
        .await
        .unwrap();
    assert_eq!(read_exactly(&mut tcp, BANNER.len()).await, BANNER);
    assert_eq!(*rig.service_open.borrow(), 1);
    drop(tcp);
    let mut open = rig.service_open.clone();
    tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    assert!(!rig.host.is_finished());
}

#[tokio::test]
async fn a_client_speaks_first_service_works_too() {
    // The reference held the admin's bytes until the service spoke, which hangs any
    // protocol where the client speaks first (HTTP, a plain echo).
    let server = RunningServer::start(ServerConfig::local(SECRET.to_vec()))
        .await
        .unwrap();
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut rd, mut wr) = tcp.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    let access = format!("{}/shell/quiet", server.access_url());
    let mut host = ShellHost::start(HostConfig {
        access_url: access.clone(),
        token: token(&server, "quiet", "host"),
        target: format!("127.0.0.1:{echo_port}"),
        extra_ca_file: None,
        timeouts: Default::default(),
    });
    let mut state = host.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| s.is_connected()))
        .await
        .unwrap()
        .unwrap();
    tokio::spawn(async move { host.run().await });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(client::serve(
        listener,
        ClientConfig {
            access_url: access,
            token: token(&server, "quiet", "client"),
            extra_ca_file: None,
            max_connections: 4,
            timeouts: Default::default(),
        },
    ));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, 18).await, b"GET / HTTP/1.0\r\n\r\n");
}
