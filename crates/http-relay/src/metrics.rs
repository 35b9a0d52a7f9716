//! Prometheus metrics of the relay server, with the reference's names and labels (the Cloud
//! Robotics dashboard queries them), plus gauges for connected backends and in-flight
//! requests that the reference lacked.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `broker_requests` and the duration histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
    pub backend: String,
}

/// Labels of `broker_responses`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub method: String,
    pub result: String,
    pub backend: String,
}

/// `method` label values.
pub const METHOD_CLIENT: &str = "client";
pub const METHOD_SERVER_REQUEST: &str = "server_request";
pub const METHOD_SERVER_RESPONSE: &str = "server_response";
/// `result` label values.
pub const RESULT_OK: &str = "ok";
pub const RESULT_TIMEOUT: &str = "timeout";
pub const RESULT_MISSING_MESSAGE: &str = "missing_message";
pub const RESULT_MISSING_HEADER: &str = "missing_header";
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
    pub requests: Family<MethodLabels, Counter>,
    pub responses: Family<ResultLabels, Counter>,
    pub response_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub backend_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub overhead_durations: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub backends: Gauge,
    pub pending_requests: Gauge,
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
    }

    pub fn count_request(&self, method: &str, backend: &str) {
        self.requests
            .get_or_create(&method_labels(method, backend))
            .inc();
    }

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
