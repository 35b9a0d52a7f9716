//! The bench's lean websocket client ([`relay_bench::lean_ws`], behind every plain `ws://`
//! [`relay_bench::peers::Target::open`]) against an in-process relay: messages of every
//! length encoding cross from one connection to another, closes carry the server's code,
//! and a refused upgrade reports the relay's HTTP status and reason. Nothing here is timed
//! beyond generous timeouts that stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test set-up: a failure should stop loudly
use bytes::Bytes;
use relay_bench::lean_ws;
use relay_bench::peers::{Rx, Tx};
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

mod common;
use common::lab;

async fn recv(rx: &mut Rx) -> Option<Bytes> {
    timeout(WAIT, rx.recv())
        .await
        .expect("receive timed out")
        .unwrap()
}

/// Send probes from `tx` until `rx` hears one: the reader's membership is then live. Then
/// a marker sent after every probe is read up to, so that no late probe is left for the
/// test to trip over.
async fn until_joined(tx: &mut Tx, rx: &mut Rx) {
    timeout(WAIT, async {
        loop {
            tx.send(Bytes::from_static(b"probe")).await.unwrap();
            if let Ok(got) = timeout(Duration::from_millis(100), rx.recv()).await {
                assert_eq!(got.unwrap().as_deref(), Some(&b"probe"[..]));
                return;
            }
        }
    })
    .await
    .expect("the second connection never received a probe");
    tx.send(Bytes::from_static(b"joined")).await.unwrap();
    loop {
        match recv(rx).await.as_deref() {
            Some(b"probe") => continue,
            Some(b"joined") => return,
            other => panic!("expected probes then the joined marker, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_connections_exchange_messages_of_every_length_and_see_closes() {
    let (server, lab) = lab().await;
    let target = lab.start("relay", &[]).await.unwrap();
    let (mut a_tx, mut a_rx) = target.open("lean-pair").await.unwrap();
    let (mut b_tx, mut b_rx) = target.open("lean-pair").await.unwrap();
    until_joined(&mut a_tx, &mut b_rx).await;

    // 7-, 16- and 64-bit length encodings, both ways; `feed` + `flush` as well as `send`.
    let sizes = [1usize, 125, 126, 9212, 65535, 65536, 300_000];
    for &size in &sizes {
        let msg = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        a_tx.send(msg.clone()).await.unwrap();
        let mut got = recv(&mut b_rx).await.expect("b closed");
        while got.as_ref() == b"probe" {
            got = recv(&mut b_rx).await.expect("b closed");
        }
        assert_eq!(got.len(), size);
        assert_eq!(got, msg, "a to b, {size} bytes");
        b_tx.feed(msg.clone()).await.unwrap();
        b_tx.feed(Bytes::from_static(b"second")).await.unwrap();
        b_tx.flush().await.unwrap();
        assert_eq!(
            recv(&mut a_rx).await.expect("a closed"),
            msg,
            "b to a, {size} bytes"
        );
        assert_eq!(recv(&mut a_rx).await.as_deref(), Some(&b"second"[..]));
    }

    // Our close (1000) is answered by the relay's close with the same code.
    a_tx.close().await;
    while recv(&mut a_rx).await.is_some() {}
    assert_eq!(a_rx.close_code, Some(1000));

    // A close the server starts: shutdown says 1001 "going away" to everyone left.
    server.shutdown().await;
    while recv(&mut b_rx).await.is_some() {}
    assert_eq!(b_rx.close_code, Some(1001));
    drop(b_tx);
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_reports_the_status_and_reason() {
    let (server, _lab) = lab().await;
    let url = format!(
        "{}/session/lean-refused?code=not-a-code",
        server.relay_url()
    );
    let err = lean_ws::connect(&url)
        .await
        .expect_err("a made-up code must be refused");
    let text = format!("{err:#}");
    assert!(text.contains("HTTP/1.1 4"), "{text}");
    assert!(
        text.contains('{'),
        "the relay's JSON reason is included: {text}"
    );
    server.shutdown().await;
}
