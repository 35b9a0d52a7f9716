//! https/wss through a real relay with a private CA: trusted with the extra CA file,
//! refused without it. Needs the `openssl` command (Debian: `apt-get install -y openssl`) to
//! make the test certificates; the test fails, it does not skip, when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use relay_client::session::{Message, Session, SessionConfig, SessionError};
use relay_server::{RunningServer, ServerConfig, TlsFiles};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command is required by this test: apt-get install -y openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=relay test CA",
    ]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
        ]
        .into_iter()
        .chain(["-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"])
        .collect::<Vec<_>>(),
    );
}

#[tokio::test]
async fn wss_works_with_the_extra_ca_and_is_refused_without_it() {
    let dir = temp_dir("tls");
    make_certificates(&dir);
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }),
        ..ServerConfig::local(SECRET.to_vec())
    };
    let server = RunningServer::start(config).await.unwrap();
    assert!(
        server.access_url().starts_with("https://"),
        "{}",
        server.access_url()
    );

    let trusted = || session_config(&server, "secure").with_extra_ca_file(dir.join("ca.pem"));
    let a = Session::spawn(trusted());
    let mut b = Session::spawn(trusted());
    tokio::time::timeout(Duration::from_secs(10), async {
        a.wait_connected().await.unwrap();
        b.wait_connected().await.unwrap();
    })
    .await
    .expect("both sessions connect over https/wss");
    a.send(Message::Text("over tls".into())).await.unwrap();
    assert_eq!(b.recv().await, Some(Message::Text("over tls".into())));

    let untrusted: SessionConfig = session_config(&server, "secure");
    let refused = Session::spawn(untrusted);
    let state = first_error(&refused).await;
    match state.last_error {
        Some(SessionError::Access { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    assert_eq!(state.connects, 0);
    refused.close().await;
    a.close().await;
    b.close().await;
    server.shutdown().await;
}

/// `RELAY_DIRECT_WRITES` does not apply through TLS: the relay falls back to the queued
/// path, and messages cross as before.
#[tokio::test]
async fn with_direct_writes_on_tls_connections_keep_the_queued_path() {
    let dir = temp_dir("tls-direct");
    make_certificates(&dir);
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }),
        direct_writes: true,
        ..ServerConfig::local(SECRET.to_vec())
    };
    let server = RunningServer::start(config).await.unwrap();
    let trusted = || session_config(&server, "secure").with_extra_ca_file(dir.join("ca.pem"));
    let a = Session::spawn(trusted());
    let mut b = Session::spawn(trusted());
    tokio::time::timeout(Duration::from_secs(10), async {
        a.wait_connected().await.unwrap();
        b.wait_connected().await.unwrap();
    })
    .await
    .expect("both sessions connect over https/wss");
    a.send(Message::Text("over tls".into())).await.unwrap();
    assert_eq!(b.recv().await, Some(Message::Text("over tls".into())));
    assert_eq!(server.direct_connection_count(), 0);
    a.close().await;
    b.close().await;
    server.shutdown().await;
}
