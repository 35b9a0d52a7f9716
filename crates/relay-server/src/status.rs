//! Connection reports in the two formats clients read: the `stats` topic's array
//! (v0.6.2 camelCase with per-client `stats`, plus the later `scopes`) and `GET /status`
//! (v0.7.0 snake_case, plus traffic counters).

use crate::cluster::Cluster;
use crate::hub::{ConnInfo, Hub, Traffic};
use crate::state::AppState;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One entry of a `stats` topic report (field order as the reference writes it).
#[derive(Serialize)]
pub struct StatsReport {
    /// `canRead`: the connection receives the topic's messages.
    #[serde(rename = "canRead")]
    pub can_read: bool,
    /// `canWrite`: the connection may send to the topic.
    #[serde(rename = "canWrite")]
    pub can_write: bool,
    /// When the connection joined, RFC 3339 with nanoseconds.
    pub connected: String,
    /// `expiresAt`: token expiry, RFC 3339; Go's zero time (`0001-01-01T00:00:00Z`) when
    /// the connection never expires.
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
    /// `remoteAddr`: `X-Forwarded-For` or the peer's IP.
    #[serde(rename = "remoteAddr")]
    pub remote_addr: String,
    /// The token's scopes.
    pub scopes: Vec<String>,
    /// Traffic in each direction.
    pub stats: RxTx,
    /// The topic as the client named it.
    pub topic: String,
    /// `userAgent`: the client's `User-Agent` header, empty when absent.
    #[serde(rename = "userAgent")]
    pub user_agent: String,
}

/// Per-direction statistics of a stats report.
#[derive(Serialize)]
pub struct RxTx {
    /// What the connection sent to the topic.
    pub tx: TrafficReport,
    /// What the relay wrote to the connection.
    pub rx: TrafficReport,
}

/// `{"last":"2.9s","size":5,"fps":20.17}`.
#[derive(Serialize)]
pub struct TrafficReport {
    /// Go duration since the last message, or `Never`.
    pub last: String,
    /// Mean bytes per message, rounded.
    pub size: u64,
    /// Messages per second since connecting.
    pub fps: f64,
}

/// One entry of `GET /status`.
#[derive(Serialize)]
pub struct StatusReport {
    /// The connection receives the topic's messages.
    pub can_read: bool,
    /// The connection may send to the topic.
    pub can_write: bool,
    /// When the connection joined, RFC 3339 to the second.
    pub connected_at: String,
    /// Token expiry, RFC 3339; left out when the connection never expires.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
    /// `X-Forwarded-For` or the peer's IP; left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_addr: String,
    /// The token's scopes; left out when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The topic as the client named it.
    pub topic: String,
    /// The client's `User-Agent`; left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// Messages the connection sent to the topic.
    pub messages_in: u64,
    /// Payload bytes the connection sent to the topic.
    pub bytes_in: u64,
    /// Messages written to the connection.
    pub messages_out: u64,
    /// Payload bytes written to the connection.
    pub bytes_out: u64,
    /// Messages dropped for this connection because its queue was full.
    pub drops: u64,
}

/// The stats-topic report of every connection.
pub fn stats_reports(hub: &Hub) -> Vec<StatsReport> {
    hub.connections()
        .iter()
        .map(|s| &s.info)
        .map(|c| StatsReport {
            can_read: c.can_read,
            can_write: c.can_write,
            connected: rfc3339(c.connected_at, true),
            expires_at: unix_rfc3339(c.expires_at.unwrap_or(ZERO_TIME_UNIX)),
            remote_addr: c.remote_addr.clone(),
            scopes: c.scopes.clone(),
            stats: RxTx {
                tx: traffic_report(c, &c.tx),
                rx: traffic_report(c, &c.rx),
            },
            topic: c.topic.clone(),
            user_agent: c.user_agent.clone(),
        })
        .collect()
}

/// The `GET /status` report of every connection.
pub fn status_reports(hub: &Hub) -> Vec<StatusReport> {
    hub.connections()
        .iter()
        .map(|s| (&s.info, s.drops()))
        .map(|(c, drops)| StatusReport {
            can_read: c.can_read,
            can_write: c.can_write,
            connected_at: rfc3339(c.connected_at, false),
            expires_at: c.expires_at.map(unix_rfc3339).unwrap_or_default(),
            remote_addr: c.remote_addr.clone(),
            scopes: c.scopes.clone(),
            topic: c.topic.clone(),
            user_agent: c.user_agent.clone(),
            messages_in: c.tx.messages.load(Ordering::Relaxed),
            bytes_in: c.tx.bytes.load(Ordering::Relaxed),
            messages_out: c.rx.messages.load(Ordering::Relaxed),
            bytes_out: c.rx.bytes.load(Ordering::Relaxed),
            drops,
        })
        .collect()
}

/// Drop reasons listed in a node's cluster summary (`relay_cluster_dropped_total`).
const DROP_REASONS: [&str; 4] = [
    "outbound_full",
    "disconnected",
    "publish_error",
    "slow_consumer",
];

/// What one clustered node tells the others: its summary and its connections (`/status`
/// entries, or `stats` entries when `stats`), each labelled with `"node"`.
pub fn node_report(state: &AppState, stats: bool) -> serde_json::Value {
    let node = state.node_name().unwrap_or_default();
    let connections = if stats {
        labelled(stats_reports(&state.hub), node)
    } else {
        labelled(status_reports(&state.hub), node)
    };
    let mut summary = node_summary(state);
    summary["connections"] = serde_json::Value::Array(connections);
    summary
}

/// One node's cluster health: name, NATS connection, drops by reason, traffic to and from
/// the other nodes, connection count.
fn node_summary(state: &AppState) -> serde_json::Value {
    let Some(cluster) = &state.cluster else {
        return serde_json::json!({});
    };
    let m = cluster.metrics();
    let dropped: serde_json::Map<String, serde_json::Value> = DROP_REASONS
        .iter()
        .map(|r| ((*r).to_owned(), m.dropped(r).into()))
        .collect();
    serde_json::json!({
        "node": cluster.node(),
        "nats_connected": cluster.is_connected(),
        "dropped": dropped,
        "messages_to_cluster": m.messages_out.get(),
        "messages_from_cluster": m.messages_in.get(),
        "connection_count": state.hub.connection_count(),
    })
}

/// Serialize `reports` with an added `"node"` field each.
fn labelled<T: Serialize>(reports: Vec<T>, node: &str) -> Vec<serde_json::Value> {
    reports
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.insert("node".into(), node.into());
            }
            v
        })
        .collect()
}

/// The whole cluster's connections in one list: this node's and every peer that answered
/// in time (`/status` entries, or `stats` entries when `stats`), sorted by topic then
/// node, each with its `"node"`.
pub async fn cluster_connections(
    state: &AppState,
    cluster: &Cluster,
    stats: bool,
) -> Vec<serde_json::Value> {
    let mine = node_report(state, stats);
    let peers = cluster.gather(if stats { "stats" } else { "status" }).await;
    let mut all: Vec<serde_json::Value> = std::iter::once(mine)
        .chain(peers)
        .flat_map(|mut report| match report["connections"].take() {
            serde_json::Value::Array(list) => list,
            _ => Vec::new(),
        })
        .collect();
    let key = |v: &serde_json::Value| {
        (
            v["topic"].as_str().unwrap_or_default().to_owned(),
            v["node"].as_str().unwrap_or_default().to_owned(),
        )
    };
    all.sort_by_key(key);
    all
}

/// `GET /status` on a clustered node.
pub async fn cluster_status(state: &AppState, cluster: &Cluster) -> Vec<serde_json::Value> {
    cluster_connections(state, cluster, false).await
}

/// `GET /status/cluster`: `{"node": <this node>, "nodes": [<summary of each node>]}`,
/// this node first, then the peers that answered, by name.
pub async fn cluster_nodes(state: &AppState, cluster: &Cluster) -> serde_json::Value {
    let mut peers: Vec<serde_json::Value> = cluster
        .gather("status")
        .await
        .into_iter()
        .map(|mut report| {
            if let Some(o) = report.as_object_mut() {
                o.remove("connections");
            }
            report
        })
        .collect();
    peers.sort_by_key(|v| v["node"].as_str().unwrap_or_default().to_owned());
    let mut nodes = vec![node_summary(state)];
    nodes.extend(peers);
    serde_json::json!({ "node": cluster.node(), "nodes": nodes })
}

fn traffic_report(conn: &ConnInfo, traffic: &Traffic) -> TrafficReport {
    let count = traffic.messages.load(Ordering::Relaxed);
    let bytes = traffic.bytes.load(Ordering::Relaxed);
    let last = traffic.last_nanos.load(Ordering::Relaxed);
    if count == 0 || last == 0 {
        return TrafficReport {
            last: "Never".into(),
            size: 0,
            fps: 0.0,
        };
    }
    let since_connect = conn.connected_instant.elapsed();
    let ago = since_connect.saturating_sub(Duration::from_nanos(last));
    // Mean interval with the first one measured from connect time, as the reference.
    let span_secs = Duration::from_nanos(last).as_secs_f64();
    let fps = if span_secs > 0.0 {
        count as f64 / span_secs
    } else {
        0.0
    };
    TrafficReport {
        last: relay_common::goduration::format(ago),
        size: (bytes as f64 / count as f64).round() as u64,
        fps: if fps.is_finite() {
            (fps * 100.0).round() / 100.0
        } else {
            0.0
        },
    }
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`) in unix seconds.
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

fn unix_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn rfc3339(at: SystemTime, with_nanos: bool) -> String {
    let t = OffsetDateTime::from(at);
    let t = if with_nanos {
        t
    } else {
        t.replace_nanosecond(0).unwrap_or(t)
    };
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_expiry_prints_as_go_zero_time() {
        assert_eq!(unix_rfc3339(ZERO_TIME_UNIX), "0001-01-01T00:00:00Z");
    }
}
