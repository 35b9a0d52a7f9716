//! `relay-bench`: the load generator and side-by-side benchmark runner for the relay.
//!
//! Each scenario of docs PERFORMANCE.md (B1 video fan-out, B2 small-message latency, B3
//! single-stream throughput, B4 memory per idle connection, B5 handshakes per second, B8
//! slow reader, relay restart and deny; and issue 15's B9 booking rush against `relay book
//! serve`) starts the relay and its peers as child processes (pinned to one core,
//! stopped by pid), drives them with the same load from this process (B5 also from several
//! worker processes of this binary, `--generators`), reads their CPU time
//! and RSS from /proc, and prints a markdown table with medians and spread over runs.
//!
//! - [`peers`]: starting the relay, the Node `ws` relay, websocat and nats-server, and one
//!   send/receive interface over all of them.
//! - [`scenarios`]: the scenarios and the load pieces they share.
//! - [`lean_ws`]: the lean websocket client behind every plain `ws://` connection, so the
//!   load generator is not the bottleneck.
//! - [`floor`]: direct TCP round trip and stream throughput, the physical floor.
//! - [`plot`]: PNG line charts (the soak's RSS, fds and connections over time).
//! - [`procs`]: child processes, /proc CPU and RSS, ports.
//! - [`report`]: HDR latency histograms, median/spread, markdown tables.
//! - [`wire`]: the sequence-number-and-timestamp message format.
//! - [`machine`]: what the run happened on (CPU, cores, rustc, load).

pub mod floor;
pub mod lean_ws;
pub mod machine;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod wire;
