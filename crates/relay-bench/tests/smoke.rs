//! A seconds-long smoke run of some scenarios against an in-process relay: they complete and
//! produce tables with real numbers. Not a performance test: nothing here is timed.

#![allow(clippy::unwrap_used)] // test and bench set-up: a failure should stop loudly
use relay_bench::scenarios::{b2_latency, b3_throughput, b5_handshakes};

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

/// B5 against the in-process relay with `generators` load generators (worker processes of
/// the real relay-bench binary when more than one); returns the table's only row.
async fn b5_row(generators: usize) -> (Vec<String>, String) {
    let (server, lab) = lab().await;
    let opts = b5_handshakes::Options {
        concurrency: vec![3],
        seconds: 1.0,
        runs: 1,
        generators,
        worker_bin: Some(env!("CARGO_BIN_EXE_relay-bench").into()),
    };
    let table = b5_handshakes::run(&lab, &opts).await.unwrap();
    server.shutdown().await;
    let md = table.to_markdown();
    assert_eq!(table.rows.len(), 1, "{md}");
    (table.rows[0].clone(), md)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_with_two_generator_processes_merges_their_handshakes() {
    let (row, md) = b5_row(2).await;
    assert_eq!(row[0], "relay");
    assert_eq!(row[1], "3");
    assert_eq!(
        row[2], "2",
        "two worker processes for three connections:\n{md}"
    );
    let rate: f64 = row[3].parse().unwrap();
    assert!(rate > 0.0, "{md}");
    assert!(
        row[4].ends_with("µs") || row[4].ends_with("ms"),
        "p50 cell {:?} in\n{md}",
        row[4]
    );
    assert_eq!(row[6], "0", "no handshake may fail:\n{md}");
    // The in-process relay has no pid of its own to read CPU time from.
    assert_eq!(row[7], "n/a", "{md}");
    assert!(md.contains("--generators 2"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b5_with_one_generator_stays_in_process() {
    let (row, md) = b5_row(1).await;
    assert_eq!(row[2], "1 (in-process)", "{md}");
    let rate: f64 = row[3].parse().unwrap();
    assert!(rate > 0.0, "{md}");
    assert_eq!(row[6], "0", "no handshake may fail:\n{md}");
}
