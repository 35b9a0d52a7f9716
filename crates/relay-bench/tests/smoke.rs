//! A seconds-long smoke run of two scenarios against an in-process relay: they complete and
//! produce tables with real numbers. Not a performance test: nothing here is timed.

#![allow(clippy::unwrap_used)] // test and bench set-up: a failure should stop loudly
use relay_bench::scenarios::{b2_latency, b3_throughput};

mod common;
use common::lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_against_an_in_process_relay_produces_a_latency_row() {
    let (server, lab) = lab().await;
    let opts = b2_latency::Options {
        sizes: vec![64],
        rates: vec![200],
        readers: vec![2],
        seconds: 0.3,
        runs: 1,
    };
    let table = b2_latency::run(&lab, &opts).await.unwrap();
    server.shutdown().await;
    let md = table.to_markdown();
    assert_eq!(table.rows.len(), 1, "{md}");
    let row = &table.rows[0];
    assert_eq!(row[0], "relay");
    assert!(
        row[5].ends_with("µs") || row[5].ends_with("ms"),
        "p50 cell {:?} in\n{md}",
        row[5]
    );
    assert_eq!(row[9], "0", "no message may go missing at 200 msg/s:\n{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_against_an_in_process_relay_moves_bytes() {
    let (server, lab) = lab().await;
    let opts = b3_throughput::Options {
        sizes: vec![16 * 1024],
        seconds: 0.3,
        runs: 1,
    };
    let table = b3_throughput::run(&lab, &opts).await.unwrap();
    server.shutdown().await;
    let md = table.to_markdown();
    assert_eq!(table.rows.len(), 2, "{md}");
    let gbps: f64 = table.rows[1][2].parse().unwrap();
    assert!(gbps > 0.0, "{md}");
}
