//! Prometheus metrics of the relay server, with the reference's names and labels (the Cloud
//! Robotics dashboard queries them), plus gauges for connected backends and in-flight
//! requests that the reference lacked.
//!
//! `/metrics` serves the plain Prometheus text format 0.0.4, whatever the `Accept` header
//! says, as the reference's `promhttp.Handler()` does: counters are named as registered
//! (`broker_requests`, not `broker_requests_total`), which is what the dashboards query.
//! `prometheus-client` only encodes OpenMetrics, so [`encode_text`] encodes that and
//! rewrites it into the text format ([`openmetrics_to_text`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;

/// The `Content-Type` of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of `broker_requests` and the duration histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// Which kind of call: one of the `METHOD_*` values.
    pub method: String,
    /// The server name (backend) the call was for.
    pub backend: String,
}

/// Labels of `broker_responses`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Which kind of call: one of the `METHOD_*` values.
    pub method: String,
    /// How the call ended: one of the `RESULT_*` values.
    pub result: String,
    /// The server name (backend) the call was for.
    pub backend: String,
}

/// `method` label of user requests and of the response messages they receive.
pub const METHOD_CLIENT: &str = "client";
/// `method` label of relay-client polls (`GET /server/request`).
pub const METHOD_SERVER_REQUEST: &str = "server_request";
/// `method` label of response messages posted by relay-clients (`POST /server/response`).
pub const METHOD_SERVER_RESPONSE: &str = "server_response";
/// `result` label: the call succeeded (a request handed out, a message delivered).
pub const RESULT_OK: &str = "ok";
/// `result` label: a poll found no request within the poll timeout (answered 408).
pub const RESULT_TIMEOUT: &str = "timeout";
/// `result` label: a user request got no first response message before it was reaped
/// (answered 504).
pub const RESULT_MISSING_MESSAGE: &str = "missing_message";
/// `result` label: the first response message had no `status_code` (answered 500).
pub const RESULT_MISSING_HEADER: &str = "missing_header";
/// `result` label: a posted response named an ID that is not in flight (unknown, finished
/// or reaped); the reference's exact text.
pub const RESULT_NOT_RECOGNIZED: &str = "not recognized or reaches the inactivity timeout";

/// Every (method, result) pair we emit, so all series of a backend can be deleted.
const RESULT_SERIES: [(&str, &str); 7] = [
    (METHOD_CLIENT, RESULT_OK),
    (METHOD_CLIENT, RESULT_MISSING_MESSAGE),
    (METHOD_CLIENT, RESULT_MISSING_HEADER),
    (METHOD_SERVER_REQUEST, RESULT_OK),
    (METHOD_SERVER_REQUEST, RESULT_TIMEOUT),
    (METHOD_SERVER_RESPONSE, RESULT_OK),
    (METHOD_SERVER_RESPONSE, RESULT_NOT_RECOGNIZED),
];

/// Go's `prometheus.DefBuckets`.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn default_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// The broker's metrics; cheap to clone (every family is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    /// `broker_requests`: calls seen, per method and backend.
    pub requests: Family<MethodLabels, Counter>,
    /// `broker_responses`: call outcomes, per method, result and backend.
    pub responses: Family<ResultLabels, Counter>,
    /// `broker_responses_durations`: seconds from the start of a user request to each of
    /// its delivered response messages.
    pub response_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `broker_backend_responses_durations`: seconds the backend took as the relay-client
    /// reports it (`backend_duration_ms`), observed at the final message.
    pub backend_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `broker_overhead_durations`: seconds the relay added on top of the backend (total
    /// minus backend time), observed at the final message.
    pub overhead_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// `broker_backends`: server names currently known (polled for and not yet reaped).
    pub backends: Gauge,
    /// `broker_pending_requests`: user requests currently in flight.
    pub pending_requests: Gauge,
    /// `http_relay_connections_open`: TCP connections currently served.
    pub connections_open: Gauge,
    /// `http_relay_connections_refused`: connections refused with 503 because
    /// `--max_connections` were open.
    pub connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            responses: Family::default(),
            response_durations: Family::new_with_constructor(default_histogram),
            backend_durations: Family::new_with_constructor(default_histogram),
            overhead_durations: Family::new_with_constructor(default_histogram),
            backends: Gauge::default(),
            pending_requests: Gauge::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
        }
    }
}

impl Metrics {
    /// Register every metric under the reference's names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "broker_requests",
            "Requests seen by the broker",
            self.requests.clone(),
        );
        registry.register(
            "broker_responses",
            "Responses given by the broker",
            self.responses.clone(),
        );
        registry.register(
            "broker_responses_durations",
            "Seconds from request start to each delivered response message",
            self.response_durations.clone(),
        );
        registry.register(
            "broker_backend_responses_durations",
            "Seconds the relay-client reported the backend took (backend_duration_ms)",
            self.backend_durations.clone(),
        );
        registry.register(
            "broker_overhead_durations",
            "Seconds the relay added on top of the backend (total minus backend duration)",
            self.overhead_durations.clone(),
        );
        registry.register(
            "broker_backends",
            "Backends (server names) currently known",
            self.backends.clone(),
        );
        registry.register(
            "broker_pending_requests",
            "User requests currently in flight through the relay",
            self.pending_requests.clone(),
        );
        registry.register(
            "http_relay_connections_open",
            "TCP connections currently served",
            self.connections_open.clone(),
        );
        registry.register(
            "http_relay_connections_refused",
            "Connections refused with 503 because --max_connections were open",
            self.connections_refused.clone(),
        );
    }

    /// Count one `method` call for `backend` in `broker_requests`.
    pub fn count_request(&self, method: &str, backend: &str) {
        self.requests
            .get_or_create(&method_labels(method, backend))
            .inc();
    }

    /// Count one `method` call for `backend` that ended with `result` in
    /// `broker_responses`.
    pub fn count_response(&self, method: &str, result: &str, backend: &str) {
        let labels = ResultLabels {
            method: method.into(),
            result: result.into(),
            backend: backend.into(),
        };
        self.responses.get_or_create(&labels).inc();
    }

    /// Delete every series labelled with `backend` (it was reaped).
    pub fn forget_backend(&self, backend: &str) {
        for method in [METHOD_CLIENT, METHOD_SERVER_REQUEST, METHOD_SERVER_RESPONSE] {
            let labels = method_labels(method, backend);
            self.requests.remove(&labels);
            self.response_durations.remove(&labels);
            self.backend_durations.remove(&labels);
            self.overhead_durations.remove(&labels);
        }
        for (method, result) in RESULT_SERIES {
            let labels = ResultLabels {
                method: method.into(),
                result: result.into(),
                backend: backend.into(),
            };
            self.responses.remove(&labels);
        }
    }
}

/// Labels for a (method, backend) series.
pub fn method_labels(method: &str, backend: &str) -> MethodLabels {
    MethodLabels {
        method: method.into(),
        backend: backend.into(),
    }
}

/// Encode `registry` in the Prometheus text format 0.0.4 (see [`openmetrics_to_text`]).
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, registry)?;
    Ok(openmetrics_to_text(&openmetrics))
}

/// Rewrite OpenMetrics text, as `prometheus-client` writes it for counters, gauges and
/// histograms, into the Prometheus text format 0.0.4: a counter family's `_total` samples
/// take the family's own name and its `_created` samples are dropped, a histogram bucket's
/// whole-number bound is written as Go writes it (`le="1"`, not `le="1.0"`), `unknown`
/// becomes `untyped`, and the `# UNIT` and `# EOF` lines are dropped. Everything else (HELP, TYPE,
/// labels, gauge and histogram samples) is the same in both formats.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut counters: HashSet<&str> = HashSet::new();
    let mut histograms: HashSet<&str> = HashSet::new();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            match declared.split_once(' ') {
                Some((name, "counter")) => {
                    counters.insert(name);
                }
                Some((name, "histogram")) => {
                    histograms.insert(name);
                }
                Some((name, "unknown")) => {
                    text.push_str("# TYPE ");
                    text.push_str(name);
                    text.push_str(" untyped\n");
                    continue;
                }
                _ => {}
            }
            text.push_str(line);
            text.push('\n');
            continue;
        }
        if !line.starts_with('#') {
            let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap_or(line.len()));
            if let Some(family) = name.strip_suffix("_total") {
                if counters.contains(family) {
                    text.push_str(family);
                    text.push_str(rest);
                    text.push('\n');
                    continue;
                }
            }
            if let Some(bound) = name
                .strip_suffix("_bucket")
                .filter(|family| histograms.contains(family))
                .and_then(|_| rest.strip_prefix("{le=\""))
                .and_then(|labels| labels.split_once('"'))
                .and_then(|(bound, after)| Some((bound.strip_suffix(".0")?, after)))
            {
                text.push_str(name);
                text.push_str("{le=\"");
                text.push_str(bound.0);
                text.push('"');
                text.push_str(bound.1);
                text.push('\n');
                continue;
            }
            if name
                .strip_suffix("_created")
                .is_some_and(|family| counters.contains(family))
            {
                continue;
            }
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_lose_total_and_the_trailer_goes() {
        let openmetrics = "# HELP broker_requests Requests seen by the broker.\n\
            # TYPE broker_requests counter\n\
            broker_requests_total{method=\"client\",backend=\"a b\"} 3\n\
            broker_requests_created{method=\"client\",backend=\"a b\"} 1.0\n\
            # TYPE http_relay_connections_refused counter\n\
            http_relay_connections_refused_total 0\n\
            # TYPE broker_backends gauge\n\
            broker_backends 1\n\
            # TYPE odd_total gauge\n\
            odd_total 2\n\
            # TYPE thing unknown\n\
            # UNIT thing seconds\n\
            thing 1\n\
            # EOF\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# HELP broker_requests Requests seen by the broker.\n\
            # TYPE broker_requests counter\n\
            broker_requests{method=\"client\",backend=\"a b\"} 3\n\
            # TYPE http_relay_connections_refused counter\n\
            http_relay_connections_refused 0\n\
            # TYPE broker_backends gauge\n\
            broker_backends 1\n\
            # TYPE odd_total gauge\n\
            odd_total 2\n\
            # TYPE thing untyped\n\
            thing 1\n"
        );
    }

    /// Go writes bucket bounds as `le="1"`, `le="10"`; a query that selects one bucket by
    /// its bound must keep matching.
    #[test]
    fn bucket_bounds_are_written_as_go_writes_them() {
        let openmetrics = "# TYPE d histogram\n\
            d_sum{method=\"m\"} 1.0\n\
            d_bucket{le=\"0.005\",method=\"m\"} 0\n\
            d_bucket{le=\"1.0\",method=\"m\"} 1\n\
            d_bucket{le=\"10.0\",method=\"m\"} 1\n\
            d_bucket{le=\"+Inf\",method=\"m\"} 1\n\
            # TYPE g gauge\n\
            g_bucket{le=\"1.0\"} 1\n";
        assert_eq!(
            openmetrics_to_text(openmetrics),
            "# TYPE d histogram\n\
            d_sum{method=\"m\"} 1.0\n\
            d_bucket{le=\"0.005\",method=\"m\"} 0\n\
            d_bucket{le=\"1\",method=\"m\"} 1\n\
            d_bucket{le=\"10\",method=\"m\"} 1\n\
            d_bucket{le=\"+Inf\",method=\"m\"} 1\n\
            # TYPE g gauge\n\
            g_bucket{le=\"1.0\"} 1\n"
        );
    }

    #[test]
    fn the_registered_families_encode_with_reference_names() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.count_request(METHOD_CLIENT, "robot");
        metrics.count_response(METHOD_SERVER_RESPONSE, RESULT_NOT_RECOGNIZED, "robot");
        let text = encode_text(&registry).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l == "broker_requests{method=\"client\",backend=\"robot\"} 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l
                == "broker_responses{method=\"server_response\",\
                    result=\"not recognized or reaches the inactivity timeout\",backend=\"robot\"} 1"),
            "{text}"
        );
        assert!(!text.contains("_total"), "{text}");
    }
}
