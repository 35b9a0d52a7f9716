//! A 20-second `relay-bench soak` on real processes (the `relay` binary of this target
//! directory, which `cargo build --workspace` builds; scripts/test.sh does that first): it
//! writes its CSV, plots and summary, and every invariant holds (the run exits 0).
//! Nothing here is timed; the load is small so the run fits in seconds on a busy machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test: a failure should stop loudly
use std::path::Path;
use std::process::Command;

#[test]
fn a_short_soak_writes_samples_plots_and_a_summary_and_its_invariants_hold() {
    let bench = Path::new(env!("CARGO_BIN_EXE_relay-bench"));
    let relay = bench.with_file_name("relay");
    assert!(
        relay.exists(),
        "{} is missing: build it first (cargo build -p relay-cli)",
        relay.display()
    );
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(bench)
        .args(["--no-pin", "--relay-bin"])
        .arg(&relay)
        .args([
            "soak",
            "--duration",
            "20s",
            "--sample-every",
            "2s",
            "--viewers",
            "20",
            "--writers",
            "1",
            "--mbps",
            "0.5",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "soak failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for file in [
        "samples.csv",
        "soak-rss.png",
        "soak-fds.png",
        "soak-connections.png",
        "summary.md",
    ] {
        let path = out.path().join(file);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} missing or empty:\n{stdout}\n{stderr}");
    }
    let png = std::fs::read(out.path().join("soak-rss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "soak-rss.png is not a PNG");
    let csv = std::fs::read_to_string(out.path().join("samples.csv")).unwrap();
    let processes = [
        "relay",
        "book-sqlite",
        "soak-http-serve",
        "soak-http-client",
        "soak-shell-host",
        "soak-shell-client",
    ];
    for process in processes {
        let rows = csv
            .lines()
            .filter(|l| l.split(',').nth(1) == Some(process))
            .count();
        assert!(rows >= 5, "{process}: {rows} samples in\n{csv}");
    }
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    assert!(summary.contains("RSS slope after warm-up"), "{summary}");
    assert!(!summary.contains("FAILED"), "{summary}");
    assert!(
        summary.contains("| no panics in any process's log | ok |"),
        "{summary}"
    );
}
