//! Shared set-up of relay-bench's integration tests: an in-process relay and a [`Lab`]
//! that points the runner at it instead of starting a relay process.

#![allow(clippy::expect_used)] // test set-up: a failure should stop loudly
use relay_bench::peers::Lab;

pub async fn lab() -> (relay_server::RunningServer, Lab) {
    let secret = b"relay-bench-secret".to_vec();
    let server =
        relay_server::RunningServer::start(relay_server::ServerConfig::local(secret.clone()))
            .await
            .expect("in-process relay starts");
    let lab = Lab {
        relay_bin: "unused".into(),
        bench_dir: "unused".into(),
        server_core: None,
        peers: vec!["relay".into()],
        external_relay: Some((server.access_url().to_owned(), secret)),
        echo_bin: None,
        relay_limits: false,
    };
    (server, lab)
}
