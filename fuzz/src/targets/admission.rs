//! Websocket path parsing plus admission on the relay port (relay-server
//! `crossbar::admit_request`): the path split into connection type and topic, the `code`
//! query, the origin allow list, the code exchange and every ticket check.
//!
//! The input is a request: the target (`/session/expt00?code=@0`) on the first line, then
//! `name: value` header lines. Before parsing, `@0` to `@7` are replaced by real one-time
//! codes, issued for this input, whose tickets each reach a different check:
//!
//! | code | ticket |
//! |---|---|
//! | `@0` | session `expt00`, read and write |
//! | `@1` | shell client of host `h1` (refused while the host is offline) |
//! | `@2` | shell host end for `h1` |
//! | `@3` | session `stats`, read only (the relay requires `relay:stats`) |
//! | `@4` | session `expt00`, expired |
//! | `@5` | session `expt00`, denied booking |
//! | `@6` | session `expt00`, no read or write scope |
//! | `@7` | session `expt00`, not valid yet |

use std::sync::Arc;

use axum::http::Uri;
use relay_auth::{Claims, CodeLimits, CodeStore, DenyStore, Ticket, Verifier};
use relay_common::connection::ConnectionType;
use relay_common::shutdown::{CancellationToken, TaskTracker};
use relay_server::cluster::codes::Codes;
use relay_server::config::ServerConfig;
use relay_server::crossbar::{admit_request, parse_path};
use relay_server::hub::Hub;
use relay_server::limits::{AccessRates, ConnectionCaps, Limits};
use relay_server::metrics::Metrics;
use relay_server::state::AppState;

use super::header_lines;

const RELAY: &str = "ws://relay.test";
const ORIGIN: &str = "https://lab.test";

/// Admits the request the input describes against a fresh relay. An admitted request's
/// ticket must be for the topic and connection type of the path it came in on.
pub fn run(data: &[u8]) {
    RUNTIME.with(|runtime| runtime.block_on(admit(data)));
}

thread_local! {
    /// Admission is async (codes may live in a cluster); one runtime per fuzzing thread.
    #[allow(clippy::expect_used)] // no runtime, no fuzzing: fail at once
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

async fn admit(data: &[u8]) {
    let state = relay();
    let now = state.now_unix();
    let at = state.now_instant();
    let mut codes = Vec::new();
    for ticket in tickets(now) {
        codes.push(state.codes.submit(ticket, at).await.unwrap_or_default());
    }
    let mut text = String::from_utf8_lossy(data).into_owned();
    for (i, code) in codes.iter().enumerate() {
        text = text.replace(&format!("@{i}"), code);
    }
    let mut lines = text.lines();
    let Ok(uri) = lines.next().unwrap_or_default().parse::<Uri>() else {
        return;
    };
    let headers = header_lines(lines);
    let Ok(ticket) = admit_request(&state, &uri, &headers).await else {
        return;
    };
    let (prefix, topic) = parse_path(uri.path());
    assert_eq!(ticket.topic(), topic);
    assert_eq!(ticket.connection().to_string(), prefix);
    assert!(!state.deny.is_denied(ticket.booking_id()));
}

/// A relay as `RunningServer::start` builds one, with an origin allow list and the stats
/// scope required, and booking `denied` on the deny list.
fn relay() -> AppState {
    let mut config = ServerConfig::new(b"fuzz-secret".to_vec());
    config.allowed_origins = vec![ORIGIN.to_owned()];
    config.stats_require_scope = true;
    config.limits = Limits::defaults();
    let metrics = Arc::new(Metrics::new());
    let deny = DenyStore::new();
    deny.deny("denied", i64::MAX);
    AppState {
        verifier: Verifier::new(&config.secret, config.leeway_secs),
        codes: Codes::Local(CodeStore::with_limits(
            config.code_ttl,
            CodeLimits {
                per_booking: config.max_codes_per_booking,
                total: config.max_codes,
            },
        )),
        deny,
        deny_file: None,
        hub: Hub::new(config.queue_limits(), metrics.clone()),
        metrics,
        rates: AccessRates::new(&config.limits),
        caps: ConnectionCaps::new(&config.limits),
        audience: "http://access.test".to_owned(),
        relay_url: RELAY.to_owned(),
        config,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        cluster: None,
    }
}

/// The tickets behind `@0` to `@7`, in order.
fn tickets(now: i64) -> Vec<Ticket> {
    let claims = |booking: &str, scopes: &[&str], nbf: i64, exp: i64| Claims {
        booking_id: booking.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        nbf: Some(nbf),
        exp: Some(exp),
        ..Claims::default()
    };
    let valid = claims("b1", &["read", "write"], now - 1, now + 3600);
    let session = |c: &Claims, topic: &str| Ticket::grant(c, ConnectionType::Session, topic, RELAY);
    let shell = Ticket::grant(&valid, ConnectionType::Shell, "h1", RELAY);
    vec![
        session(&valid, "expt00"),
        shell.clone().shell_client("salt"),
        shell.shell_client("salt").host_end(),
        session(&claims("b1", &["read"], now - 1, now + 3600), "stats"),
        session(&claims("b1", &["read"], now - 7200, now - 3600), "expt00"),
        session(&claims("denied", &["read"], now - 1, now + 3600), "expt00"),
        session(
            &claims("b1", &["relay:stats"], now - 1, now + 3600),
            "expt00",
        ),
        session(&claims("b1", &["read"], now + 3600, now + 7200), "expt00"),
    ]
}
