//! Issue 13 item 4 for the host's local server: a client that sends its request headers one
//! byte per second is dropped at the header-read timeout, while other clients are served
//! throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use relay_host::HostConfig;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_slowloris_client_is_dropped_while_others_are_served() {
    let config = HostConfig {
        header_timeout: Duration::from_secs(2),
        ..local_config()
    };
    let host = start_host(
        config,
        Arc::new(relay_host::link::ChannelConnector::default()),
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(host.local_addr())
        .await
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let slow_task = {
        let dropped = dropped.clone();
        tokio::spawn(async move {
            // One header byte per second, never finishing the headers.
            let request = b"GET /healthcheck HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
            let mut bytes = request.iter().chain(std::iter::repeat(&b'a'));
            let mut buf = [0u8; 256];
            loop {
                let byte = *bytes.next().unwrap();
                if slow.write_all(&[byte]).await.is_err() {
                    break;
                }
                // A read that ends (EOF, an error, or a 408 reply) means the host dropped us.
                match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => break,
                    Ok(Ok(_reply)) => break,
                    Err(_still_open) => {}
                }
            }
            dropped.store(true, Ordering::SeqCst);
        })
    };
    // Real clients are served while the slow one trickles, until it is dropped.
    let client = http_client();
    let served = Arc::new(AtomicUsize::new(0));
    relay_testkit::wait_until_async("the slowloris client to be dropped", WAIT * 3, || {
        let client = client.clone();
        let url = format!("{}/healthcheck", host.url());
        let dropped = dropped.clone();
        let served = served.clone();
        async move {
            // Read before asking, so the request that sees the drop was served after it too.
            let done = dropped.load(Ordering::SeqCst);
            let body = client.get(url).send().await.unwrap().text().await.unwrap();
            assert_eq!(body, "\"ok\"\n");
            served.fetch_add(1, Ordering::SeqCst);
            done
        }
    })
    .await;
    assert!(
        served.load(Ordering::SeqCst) > 1,
        "real clients were served throughout"
    );
    slow_task.await.unwrap();
    host.shutdown().await;
}
