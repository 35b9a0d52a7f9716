//! A deny must hold: against session requests and websocket opens racing it (issue 13,
//! item 1) and across a restart of the relay (item 7).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure
mod common;
use common::*;
use relay_auth::Claims;
use relay_server::RunningServer;
use relay_testkit::wait_until;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);
/// Far beyond any wait of these tests: a timer set to this never fires during one.
const NEVER: Duration = Duration::from_secs(3600);
const DENIED_BODY: &str = "{\"code\":\"400\",\"message\":\"bookingID has been deny-listed, probably because the session was cancelled\"}\n";

fn booking(server: &RunningServer, bid: &str) -> Claims {
    Claims {
        booking_id: bid.into(),
        ..claims(server, "t", &["read", "write"])
    }
}

async fn deny(server: &RunningServer, bid: &str) {
    let url = format!(
        "{}/bids/deny?bid={bid}&exp={}",
        server.access_url(),
        now() + 600
    );
    let (status, body) = post(&url, Some(&admin_token(server))).await;
    assert_eq!((status, body.as_str()), (204, ""));
}

async fn session(server: &RunningServer, c: &Claims) -> (u16, String) {
    let url = format!("{}/session/{}", server.access_url(), c.topic);
    post(&url, Some(&token(c))).await
}

async fn deny_list(server: &RunningServer) -> Vec<String> {
    let url = format!("{}/bids/deny", server.access_url());
    let (status, body) = get(&url, Some(&admin_token(server))).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["booking_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect()
}

/// Many session requests race each deny; afterwards every denied booking is still denied
/// (the reference's check-then-`allow` could take it off the deny list for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_requests_racing_a_deny_never_undo_it() {
    let s = start(|c| c.allow_no_booking_id = false).await;
    const ROUNDS: usize = 40;
    const REQUESTS: usize = 40;
    for round in 0..ROUNDS {
        let bid = format!("race-{round}");
        let c = booking(&s, &bid);
        let mut set = JoinSet::new();
        for i in 0..REQUESTS {
            let (url, tok) = (format!("{}/session/t", s.access_url()), token(&c));
            set.spawn(async move {
                if i == REQUESTS / 2 {
                    tokio::task::yield_now().await;
                }
                post(&url, Some(&tok)).await.0
            });
        }
        deny(&s, &bid).await;
        while let Some(status) = set.join_next().await {
            let status = status.unwrap();
            assert!(status == 200 || status == 400, "status {status}");
        }
        assert_eq!(
            session(&s, &c).await,
            (400, DENIED_BODY.to_owned()),
            "round {round}: the deny of {bid} was undone"
        );
    }
    let listed = deny_list(&s).await;
    for round in 0..ROUNDS {
        assert!(listed.contains(&format!("race-{round}")), "{listed:?}");
    }
}

/// Websocket opens race a deny: a socket that passed admission before the deny but joined
/// the hub after the deny closed the booking's sockets must be closed too (4003). In the
/// end no socket of the booking is open, and a new session request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websockets_racing_a_deny_are_all_closed() {
    let s = start(|c| {
        c.allow_no_booking_id = false;
        c.ping_interval = NEVER;
        c.pong_timeout = NEVER;
    })
    .await;
    // The stats reporter is the one member of a fresh relay.
    let baseline = 1;
    wait_until("the stats reporter", WAIT, || {
        s.connection_count() == baseline
    })
    .await;
    const ROUNDS: usize = 15;
    const SOCKETS: usize = 24;
    for round in 0..ROUNDS {
        let bid = format!("ws-race-{round}");
        let c = booking(&s, &bid);
        let mut uris = Vec::new();
        for _ in 0..SOCKETS {
            uris.push(access_uri(&s, &c).await);
        }
        let mut set = JoinSet::new();
        for uri in uris {
            set.spawn(async move {
                match tokio_tungstenite::connect_async(uri.as_str()).await {
                    // Refused at admission: denied (403) or its code deleted (401).
                    Err(_) => None,
                    Ok((mut ws, _)) => Some(close_code(&mut ws, WAIT).await),
                }
            });
        }
        deny(&s, &bid).await;
        while let Some(outcome) = set.join_next().await {
            if let Some(code) = outcome.unwrap() {
                assert_eq!(
                    code,
                    Some(4003),
                    "round {round}: a socket of the denied booking stayed open"
                );
            }
        }
        assert_eq!(session(&s, &c).await, (400, DENIED_BODY.to_owned()));
        wait_until("no socket of the denied booking left", WAIT, || {
            s.connection_count() == baseline
        })
        .await;
    }
    let listed = deny_list(&s).await;
    assert!(listed.contains(&"ws-race-0".to_owned()), "{listed:?}");
    // The relay still serves other bookings.
    let mut a = join(&s, "after", &["read", "write"]).await;
    let mut b = join(&s, "after", &["read", "write"]).await;
    wait_until("both joined", WAIT, || s.connection_count() == baseline + 2).await;
    send_text(&mut a, "hi").await;
    assert_eq!(next_frame(&mut b, WAIT).await, Some(Message::text("hi")));
}

/// Issue 13, item 7: a deny survives a restart of the relay with the same state directory;
/// other bookings are unaffected, and an allow is remembered too.
#[tokio::test]
async fn a_deny_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let with_state = |c: &mut relay_server::ServerConfig| {
        c.allow_no_booking_id = false;
        c.state_dir = Some(state_dir.clone());
    };
    let s = start(with_state).await;
    let c = booking(&s, "cancelled");
    let mut live = dial(&access_uri(&s, &c).await).await;
    deny(&s, "cancelled").await;
    deny(&s, "allowed-again").await;
    assert_eq!(close_code(&mut live, WAIT).await, Some(4003));
    let url = format!(
        "{}/bids/allow?bid=allowed-again&exp={}",
        s.access_url(),
        now() + 600
    );
    assert_eq!(post(&url, Some(&admin_token(&s))).await.0, 204);
    s.shutdown().await;

    let s = start(with_state).await;
    let c = booking(&s, "cancelled");
    assert_eq!(session(&s, &c).await, (400, DENIED_BODY.to_owned()));
    assert_eq!(deny_list(&s).await, ["cancelled"]);
    // The shell route refuses it as well, so no websocket code can be had for it.
    let shell = Claims {
        scopes: vec!["client".into()],
        prefix: "shell".into(),
        ..c.clone()
    };
    let (status, body) = post(&format!("{}/shell/t", s.access_url()), Some(&token(&shell))).await;
    assert_eq!((status, body.as_str()), (400, DENIED_BODY));
    // Allowed again before the restart: admitted after it.
    let back = booking(&s, "allowed-again");
    let mut a = dial(&access_uri(&s, &back).await).await;
    let mut b = join(&s, "t", &["read", "write"]).await;
    send_text(&mut b, "hello").await;
    assert_eq!(next_frame(&mut a, WAIT).await, Some(Message::text("hello")));
    s.shutdown().await;
}

/// A state file that cannot be parsed stops the start-up with its path in the error; it
/// is never silently replaced.
#[tokio::test]
async fn a_corrupt_state_file_is_a_start_up_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(relay_server::deny_file::FILE_NAME);
    std::fs::write(&file, b"not json").unwrap();
    let mut cfg = relay_server::ServerConfig::local(SECRET.to_vec());
    cfg.state_dir = Some(dir.path().to_owned());
    let err = RunningServer::start(cfg)
        .await
        .err()
        .expect("start refused");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not json");
}
