//! Prometheus metrics for `/metrics`: connections, traffic, drops, slow-reader
//! disconnects and handshakes by result.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of `relay_handshakes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `ok`, or the short reason a handshake was refused.
    pub result: &'static str,
}

/// All the server's metrics; cheap atomics, safe to touch on the hot path.
pub struct Metrics {
    registry: Registry,
    /// `relay_connections`: hub members right now (websockets plus the internal `stats`
    /// reporter).
    pub connections: Gauge,
    /// `relay_messages_in_total`: messages received from writers.
    pub messages_in: Counter,
    /// `relay_bytes_in_total`: payload bytes received from writers.
    pub bytes_in: Counter,
    /// `relay_messages_out_total`: messages written to readers.
    pub messages_out: Counter,
    /// `relay_bytes_out_total`: payload bytes written to readers.
    pub bytes_out: Counter,
    /// `relay_drops_total`: messages dropped because a reader's queue was full.
    pub drops: Counter,
    /// `relay_slow_reader_disconnects_total`: readers disconnected for staying behind.
    pub slow_disconnects: Counter,
    /// `relay_access_requests_total{result}`: access API session requests by outcome.
    pub access_requests: Family<HandshakeLabels, Counter>,
    /// `relay_handshakes_total{result}`: websocket admissions on the relay port by outcome.
    pub handshakes: Family<HandshakeLabels, Counter>,
    /// The cluster's metrics (`relay_cluster_*`); `None` on a single node, whose
    /// `/metrics` then lists none of them.
    pub cluster: Option<ClusterMetrics>,
}

/// Label of `relay_cluster_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `outbound_full`, `disconnected`, `publish_error` or `slow_consumer`.
    pub reason: &'static str,
}

/// This node's view of the cluster (`relay serve --nats`), per node like every metric.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    /// `relay_cluster_connected`: 1 while the NATS connection is up, else 0.
    pub connected: Gauge,
    /// `relay_cluster_dropped_total{reason}`: messages that did not cross to or from the
    /// other nodes: the outbound buffer was full (`outbound_full`), NATS was unreachable
    /// (`disconnected`), the client refused the publish (`publish_error`), or NATS called
    /// this node a slow consumer (`slow_consumer`, one per report).
    pub dropped: Family<DropLabels, Counter>,
    /// `relay_cluster_messages_out_total`: messages published to the other nodes.
    pub messages_out: Counter,
    /// `relay_cluster_messages_in_total`: messages received from the other nodes.
    pub messages_in: Counter,
    /// `relay_cluster_subscriptions`: topic subjects this node listens on (topics with
    /// local readers).
    pub subscriptions: Gauge,
    /// `relay_cluster_peers`: other nodes heard from in the last few seconds.
    pub peers: Gauge,
}

impl ClusterMetrics {
    /// Count one message lost for `reason`.
    pub fn drop_one(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// How many messages were lost for `reason` so far.
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&DropLabels { reason }).get()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `relay_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("relay");
        let m = Metrics {
            connections: Gauge::default(),
            messages_in: Counter::default(),
            bytes_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_out: Counter::default(),
            drops: Counter::default(),
            slow_disconnects: Counter::default(),
            access_requests: Family::default(),
            handshakes: Family::default(),
            cluster: None,
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open websocket connections",
            m.connections.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from writers",
            m.messages_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from writers",
            m.bytes_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages written to readers",
            m.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes written to readers",
            m.bytes_out.clone(),
        );
        registry.register(
            "drops",
            "Messages dropped because a reader's queue was full",
            m.drops.clone(),
        );
        registry.register(
            "slow_reader_disconnects",
            "Readers disconnected for staying behind",
            m.slow_disconnects.clone(),
        );
        registry.register(
            "access_requests",
            "Access API session requests by result",
            m.access_requests.clone(),
        );
        registry.register(
            "handshakes",
            "Websocket admissions by result",
            m.handshakes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// [`Metrics::new`] plus the `relay_cluster_*` metrics.
    pub fn clustered() -> Self {
        let mut m = Self::new();
        let c = ClusterMetrics::default();
        let r = m.registry.sub_registry_with_prefix("cluster");
        r.register(
            "connected",
            "1 while the NATS connection is up",
            c.connected.clone(),
        );
        r.register(
            "dropped",
            "Messages that did not cross between nodes, by reason",
            c.dropped.clone(),
        );
        r.register(
            "messages_out",
            "Messages published to the other nodes",
            c.messages_out.clone(),
        );
        r.register(
            "messages_in",
            "Messages received from the other nodes",
            c.messages_in.clone(),
        );
        r.register(
            "subscriptions",
            "Topic subjects this node listens on",
            c.subscriptions.clone(),
        );
        r.register("peers", "Other nodes heard from recently", c.peers.clone());
        m.cluster = Some(c);
        m
    }

    /// Count a websocket admission outcome.
    pub fn handshake(&self, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels { result })
            .inc();
    }

    /// Count an access API session request outcome.
    pub fn access(&self, result: &'static str) {
        self.access_requests
            .get_or_create(&HandshakeLabels { result })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
