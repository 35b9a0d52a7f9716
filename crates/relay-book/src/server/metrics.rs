//! Prometheus metrics for `/metrics` (prometheus-client): bookings made and refused by
//! reason, cancellations by who, relay deny calls by result, and request latency by route.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set with one `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A short name of the rule that refused (see [`refusal_label`]).
    pub reason: &'static str,
}

/// A label set with one `by`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLabel {
    /// `user`, `admin`, `auto-grace-check` or `replace`.
    pub by: &'static str,
}

/// A label set with one `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `error` (will retry) or `failed` (gave up at the booking's end).
    pub result: &'static str,
}

/// A label set for request latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The HTTP method.
    pub method: String,
    /// The route template (`/api/v1/slots/{slot_name}`), or `unmatched`.
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of the booking server.
pub struct BookMetrics {
    registry: Registry,
    /// `book_bookings_made_total`.
    pub bookings_made: Counter,
    /// `book_bookings_refused_total{reason}`.
    pub bookings_refused: Family<ReasonLabel, Counter>,
    /// `book_cancellations_total{by}`.
    pub cancellations: Family<ByLabel, Counter>,
    /// `book_deny_calls_total{result}`.
    pub deny_calls: Family<ResultLabel, Counter>,
    /// `book_grace_checks_total`: grace check runs completed (a stalled checker shows as a
    /// flat line).
    pub grace_checks: Counter,
    /// `book_http_request_duration_seconds{method,route}`.
    pub request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl BookMetrics {
    /// Register every metric under the `book` prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("book");
        let bookings_made = Counter::default();
        let bookings_refused = Family::<ReasonLabel, Counter>::default();
        let cancellations = Family::<ByLabel, Counter>::default();
        let deny_calls = Family::<ResultLabel, Counter>::default();
        let grace_checks = Counter::default();
        let request_seconds =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "bookings_made",
            "Bookings made by users",
            bookings_made.clone(),
        );
        registry.register(
            "bookings_refused",
            "Booking requests refused, by the rule that refused them",
            bookings_refused.clone(),
        );
        registry.register(
            "cancellations",
            "Bookings cancelled, by who cancelled them",
            cancellations.clone(),
        );
        registry.register(
            "deny_calls",
            "Relay deny call attempts, by result",
            deny_calls.clone(),
        );
        registry.register(
            "grace_checks",
            "Grace check runs completed",
            grace_checks.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        BookMetrics {
            registry: root,
            bookings_made,
            bookings_refused,
            cancellations,
            deny_calls,
            grace_checks,
            request_seconds,
        }
    }

    /// Count a refused booking under its rule's label.
    pub fn refused(&self, message: &str) {
        self.bookings_refused
            .get_or_create(&ReasonLabel {
                reason: refusal_label(message),
            })
            .inc();
    }

    /// Count `n` cancellations by `by`.
    pub fn cancelled(&self, by: &'static str, n: u64) {
        if n > 0 {
            self.cancellations.get_or_create(&ByLabel { by }).inc_by(n);
        }
    }

    /// Count a deny call attempt.
    pub fn deny_call(&self, result: &'static str) {
        self.deny_calls.get_or_create(&ResultLabel { result }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for BookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A short label for a booking refusal, from the rule's message (§3.4): the messages are
/// the reference's texts, which carry names and numbers unfit for a label.
pub fn refusal_label(message: &str) -> &'static str {
    const LABELS: [(&str, &str); 20] = [
        ("not in policy", "slot_not_in_policy"),
        ("belongs to no group", "no_group"),
        ("current/future bookings", "max_bookings"),
        ("outside the window", "window"),
        ("ahead of the current time", "book_ahead"),
        ("in the past", "start_in_past"),
        ("in the future", "starts_within"),
        ("next available", "next_available"),
        ("remaining usage limit", "max_usage"),
        ("shorter than minimum", "min_duration"),
        ("longer than maximum", "max_duration"),
        ("must end after it starts", "end_before_start"),
        ("empty name", "name"),
        ("name already in use", "name"),
        ("conflict with existing", "conflict"),
        ("unavailable", "unavailable"),
        ("slot ", "slot_not_found"),
        ("policy ", "policy_not_found"),
        ("resource ", "resource_not_found"),
        ("user ", "user_not_found"),
    ];
    LABELS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_short_labels() {
        for (message, label) in [
            ("slot sl-x not found", "slot_not_found"),
            ("slot sl-a not in policy p-b", "slot_not_in_policy"),
            ("user u belongs to no group that includes this policy", "no_group"),
            ("you currently have 2 current/future bookings which is at or exceeds the limit of 2 for policy p-a", "max_bookings"),
            ("bookings cannot be made outside the window for the slot", "window"),
            ("bookings cannot be made more than 2h0m0s ahead of the current time", "book_ahead"),
            ("booking cannot start more than 1m0s in the past", "start_in_past"),
            ("booking cannot start more than 1m0s in the future", "starts_within"),
            ("requested duration of 10m0s exceeds remaining usage limit of 0s", "max_usage"),
            ("conflict with existing", "conflict"),
            ("unavailable because foo", "unavailable"),
            ("something new", "other"),
        ] {
            assert_eq!(refusal_label(message), label, "{message}");
        }
    }
}
