//! Ports of the reference's `server/broker_test.go` plus tests of our fixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::proto::HttpResponse;

fn broker() -> Arc<Broker> {
    Broker::new(
        BrokerTimeouts {
            relay: Duration::from_millis(100),
            poll: Duration::from_millis(200),
            response_post: Duration::from_millis(300),
        },
        Metrics::default(),
    )
}

fn dispatch(id: &str) -> Dispatch {
    Dispatch {
        request: HttpRequest {
            id: Some(id.into()),
            url: Some("http://invalid/".into()),
            ..Default::default()
        },
        body_rest: None,
    }
}

fn response(id: &str, body: &str, eof: bool) -> HttpResponse {
    HttpResponse {
        body: Some(Bytes::from(body.to_owned())),
        eof: eof.then_some(true),
        ..HttpResponse::for_id(id)
    }
}

/// Start a user request for `id` on `backend` and hand it to a poll.
async fn relay_and_pick_up(b: &Arc<Broker>, backend: &str, id: &str) -> RelayedRequest {
    let poller = {
        let b = Arc::clone(b);
        let backend = backend.to_owned();
        tokio::spawn(async move { b.get_request(&backend, &CancellationToken::new()).await })
    };
    tokio::task::yield_now().await;
    let relayed = b.relay_request(backend, dispatch(id)).await.unwrap();
    let got = poller.await.unwrap().unwrap();
    assert_eq!(got.request.id.as_deref(), Some(id));
    relayed
}

#[tokio::test(start_paused = true)]
async fn normal_case_three_concurrent_pairs() {
    let b = broker();
    b.register_backend("foo");
    b.register_backend("bar");
    let mut users = Vec::new();
    for (backend, id) in [("foo", "foo:one"), ("foo", "foo:two"), ("bar", "bar:three")] {
        users.push((id, relay_and_pick_up(&b, backend, id).await));
    }
    for (id, _) in &users {
        let b = Arc::clone(&b);
        let id = id.to_string();
        tokio::spawn(async move { b.send_response(response(&id, &id, true)).await.unwrap() });
    }
    for (id, mut relayed) in users {
        match relayed.next_message().await {
            NextMessage::Message(m) => assert_eq!(m.body_bytes(), id.as_bytes()),
            NextMessage::Ended => panic!("no message for {id}"),
        }
    }
    assert_eq!(b.pending_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn response_stream_delivers_messages_in_order() {
    let b = broker();
    b.register_backend("foo");
    let mut relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    let sender = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            b.send_response(response("foo:1", "a", false))
                .await
                .unwrap();
            b.send_response(response("foo:1", "b", true)).await.unwrap();
        })
    };
    let mut bodies = Vec::new();
    for _ in 0..2 {
        match relayed.next_message().await {
            NextMessage::Message(m) => bodies.push(m.body_bytes()),
            NextMessage::Ended => panic!("ended early"),
        }
    }
    sender.await.unwrap();
    assert_eq!(bodies, [Bytes::from("a"), Bytes::from("b")]);
    assert!(!b.is_pending("foo:1"));
}

#[tokio::test]
async fn missing_and_unknown_ids_are_errors() {
    let b = broker();
    assert_eq!(
        b.send_response(HttpResponse::default()).await,
        Err(BrokerError::MissingId)
    );
    assert_eq!(
        b.send_response(response("foo:nope", "", true)).await,
        Err(BrokerError::UnknownId("foo:nope".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn duplicate_after_eof_is_rejected() {
    let b = broker();
    b.register_backend("foo");
    let mut relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    let b2 = Arc::clone(&b);
    let first = tokio::spawn(async move { b2.send_response(response("foo:1", "x", true)).await });
    assert!(matches!(
        relayed.next_message().await,
        NextMessage::Message(_)
    ));
    assert_eq!(first.await.unwrap(), Ok(Delivered::Delivered));
    assert_eq!(
        b.send_response(response("foo:1", "x", true)).await,
        Err(BrokerError::UnknownId("foo:1".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn request_stream_put_then_get() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    assert!(b.put_upstream("foo:1", Bytes::from("hello")).await);
    assert_eq!(
        b.get_upstream("foo:1").await,
        UpstreamPull::Data(Bytes::from("hello"))
    );
}

#[tokio::test]
async fn request_stream_unknown_id() {
    let b = broker();
    assert!(!b.put_upstream("foo:x", Bytes::from("hello")).await);
    assert_eq!(b.get_upstream("foo:x").await, UpstreamPull::Gone);
}

#[tokio::test(start_paused = true)]
async fn reaping_closes_the_user_stream_without_a_message() {
    let b = broker();
    b.register_backend("foo");
    let mut relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    let reaped = b.reap_inactive_requests(Instant::now() + Duration::from_secs(10));
    assert_eq!(reaped, ["foo:1"]);
    assert!(matches!(relayed.next_message().await, NextMessage::Ended));
}

/// A broker whose request `foo:1` has one message queued and a second delivery blocked
/// (nobody reads the user side); the response-post timeout is long enough not to fire.
async fn broker_with_blocked_delivery() -> (
    Arc<Broker>,
    RelayedRequest,
    tokio::task::JoinHandle<Result<Delivered, BrokerError>>,
) {
    let b = Broker::new(
        BrokerTimeouts {
            response_post: Duration::from_secs(3600),
            ..BrokerTimeouts::default()
        },
        Metrics::default(),
    );
    b.register_backend("foo");
    let relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    b.send_response(response("foo:1", "a", false))
        .await
        .unwrap();
    let b2 = Arc::clone(&b);
    let blocked =
        tokio::spawn(async move { b2.send_response(response("foo:1", "b", false)).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    (b, relayed, blocked)
}

#[tokio::test(start_paused = true)]
async fn reap_while_sending_response_returns_closed() {
    let (b, _relayed, blocked) = broker_with_blocked_delivery().await;
    b.reap_inactive_requests(Instant::now() + Duration::from_secs(10));
    assert_eq!(blocked.await.unwrap(), Err(BrokerError::ClosedInactivity));
}

#[tokio::test(start_paused = true)]
async fn reap_while_sending_request_bytes_returns_ok() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    // Fill the upstream queue so the next put blocks.
    for _ in 0..b.upstream_queue {
        assert!(b.put_upstream("foo:1", Bytes::from("x")).await);
    }
    let b2 = Arc::clone(&b);
    let blocked = tokio::spawn(async move { b2.put_upstream("foo:1", Bytes::from("y")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.reap_inactive_requests(Instant::now() + Duration::from_secs(10));
    assert!(blocked.await.unwrap());
}

#[tokio::test]
async fn url_parse_error_comes_before_the_backend_check() {
    let b = broker();
    let mut d = dispatch("unknown:1");
    // Go's case (`http://[fe80::%31]/`) is valid for `http::Uri`; a space is not.
    d.request.url = Some("http://invalid/bad path".into());
    assert!(matches!(
        b.relay_request("unknown", d).await,
        Err(BrokerError::UrlParse(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn same_id_twice_is_multiple_clients() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    assert!(matches!(
        b.relay_request("foo", dispatch("foo:1")).await,
        Err(BrokerError::MultipleClients { .. })
    ));
}

#[tokio::test]
async fn poll_with_cancelled_context_is_server_restarting() {
    let b = broker();
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert!(matches!(
        b.get_request("foo", &cancel).await,
        Err(BrokerError::ServerRestarting)
    ));
}

#[tokio::test(start_paused = true)]
async fn no_poller_is_relay_timeout_and_leaves_no_record() {
    let b = broker();
    b.register_backend("foo");
    assert!(matches!(
        b.relay_request("foo", dispatch("foo:1")).await,
        Err(BrokerError::RelayTimeout(_))
    ));
    // The reference leaked the record until the reaper; we remove it at once.
    assert_eq!(b.pending_count(), 0);
}

#[tokio::test]
async fn unknown_backend_is_rejected_immediately() {
    let b = broker();
    assert_eq!(
        b.relay_request("ghost", dispatch("ghost:1")).await.err(),
        Some(BrokerError::UnknownBackend("ghost".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn poll_times_out() {
    let b = broker();
    assert!(matches!(
        b.get_request("foo", &CancellationToken::new()).await,
        Err(BrokerError::PollTimeout)
    ));
    assert!(b.is_known_backend("foo"), "a poll registers the backend");
}

#[tokio::test(start_paused = true)]
async fn request_stream_times_out_with_keepalive() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    assert_eq!(b.get_upstream("foo:1").await, UpstreamPull::KeepAlive);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_user_side_stops_the_request() {
    let b = broker();
    b.register_backend("foo");
    let relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    let record = Arc::clone(&relayed.record);
    drop(relayed);
    assert!(!b.is_pending("foo:1"));
    assert!(record.is_stopped());
    assert_eq!(b.get_upstream("foo:1").await, UpstreamPull::Gone);
    assert_eq!(
        b.send_response(response("foo:1", "late", false)).await,
        Err(BrokerError::UnknownId("foo:1".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn reap_inactive_backends_keeps_fresh_ones() {
    let b = broker();
    b.register_backend("old");
    b.metrics
        .count_request(crate::metrics::METHOD_SERVER_REQUEST, "old");
    tokio::time::advance(Duration::from_secs(15 * 60)).await;
    b.register_backend("fresh");
    let reaped = b.reap_inactive_backends(Instant::now() - Duration::from_secs(10 * 60));
    assert_eq!(reaped, ["old"]);
    assert!(b.is_known_backend("fresh"));
    assert!(!b.is_known_backend("old"));
}

/// Fix for §14.7: a retried message (same sequence) is acknowledged, not delivered twice.
#[tokio::test(start_paused = true)]
async fn retried_message_with_same_sequence_is_not_delivered_twice() {
    let b = broker();
    b.register_backend("foo");
    let mut relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    let first = HttpResponse {
        status_code: Some(200),
        sequence: Some(0),
        ..response("foo:1", "a", false)
    };
    assert_eq!(
        b.send_response(first.clone()).await,
        Ok(Delivered::Delivered)
    );
    assert_eq!(b.send_response(first).await, Ok(Delivered::Duplicate));
    let last = HttpResponse {
        sequence: Some(1),
        ..response("foo:1", "b", true)
    };
    let b2 = Arc::clone(&b);
    let sender = tokio::spawn(async move { b2.send_response(last).await });
    let mut bodies = Vec::new();
    for _ in 0..2 {
        if let NextMessage::Message(m) = relayed.next_message().await {
            bodies.push(m.body_bytes());
        }
    }
    assert_eq!(sender.await.unwrap(), Ok(Delivered::Delivered));
    assert_eq!(bodies, [Bytes::from("a"), Bytes::from("b")]);
}

/// Fix for §14.7: a user that does not read makes the post answer "busy" (retryable)
/// without delivering, instead of blocking past the client's timeout.
#[tokio::test(start_paused = true)]
async fn post_to_a_stalled_user_times_out_without_delivery() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    b.send_response(response("foo:1", "a", false))
        .await
        .unwrap();
    assert!(matches!(
        b.send_response(response("foo:1", "b", false)).await,
        Err(BrokerError::ResponseBusy(_))
    ));
}

/// Fix for §14.7: a request blocked on its own delivery does not block the broker.
#[tokio::test(start_paused = true)]
async fn blocked_delivery_does_not_hold_the_global_lock() {
    let (b, _relayed, _blocked) = broker_with_blocked_delivery().await;
    assert!(b.health() < Duration::from_secs(1));
    b.register_backend("other");
    assert!(b.is_known_backend("other"));
}

#[test]
fn ids_carry_the_backend_and_32_hex() {
    let id = new_request_id("foo");
    let (name, hex) = id.split_once(':').unwrap();
    assert_eq!(name, "foo");
    assert_eq!(hex.len(), 32);
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_ne!(new_request_id("foo"), id);
    assert_eq!(backend_of("a:b:c"), "a:b");
}

/// Regression (fuzz target `http_relay`): a backend name with a `:` (`/client/a%3Ab/`)
/// is the name its request IDs give back, so its responses are authorised for it.
#[test]
fn a_backend_name_with_a_colon_survives_its_request_id() {
    for name in ["a:b", "lab o:", ":", "x::y"] {
        assert_eq!(backend_of(&new_request_id(name)), name);
    }
    assert_eq!(backend_of("plain"), "plain");
}

/// A streamed upload keeps its request alive while bytes are pulled.
#[tokio::test(start_paused = true)]
async fn pulling_upstream_bytes_counts_as_activity() {
    let b = broker();
    b.register_backend("foo");
    let _relayed = relay_and_pick_up(&b, "foo", "foo:1").await;
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(b.put_upstream("foo:1", Bytes::from("x")).await);
    assert_eq!(
        b.get_upstream("foo:1").await,
        UpstreamPull::Data(Bytes::from("x"))
    );
    assert!(b
        .reap_inactive_requests(Instant::now() - Duration::from_secs(10))
        .is_empty());
}
