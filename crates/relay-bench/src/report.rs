//! Latency histograms, median-and-spread over repeated runs, and markdown tables.

use hdrhistogram::Histogram;

/// A latency histogram in nanoseconds (1 ns .. 60 s, 3 significant digits).
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    // The bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        Latency(
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid"),
        )
    }

    /// Record one sample; values outside the range are clamped into it.
    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.max(1));
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; ignore if it ever did.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `q` (0..=1) in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn max(&self) -> u64 {
        self.0.max()
    }

    /// The recorded buckets as (value, count) pairs, lowest first: enough to rebuild the
    /// histogram exactly in another process with [`Latency::from_buckets`].
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram holding `buckets` (as [`Latency::buckets`] returns them).
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut h = Latency::new();
        for &(value, count) in buckets {
            h.0.saturating_record_n(value.max(1), count);
        }
        h
    }
}

/// Nanoseconds as a short human unit (µs below 10 ms, ms above).
pub fn fmt_ns(ns: f64) -> String {
    if ns < 10_000_000.0 {
        format!("{:.0} µs", ns / 1_000.0)
    } else {
        format!("{:.1} ms", ns / 1_000_000.0)
    }
}

/// Median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// "median (min–max)" over repeated runs, or just the value for one run; "n/a" if none.
pub fn agg(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let ok: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    match ok.len() {
        0 => "n/a".into(),
        1 => fmt(ok[0]),
        _ => {
            let lo = ok.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ok.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{} ({}–{})", fmt(median(&ok)), fmt(lo), fmt(hi))
        }
    }
}

/// Format with a fixed number of decimals.
pub fn dec(places: usize) -> impl Fn(f64) -> String {
    move |x| format!("{x:.places$}")
}

/// A markdown table.
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.headers.join(" | "));
        for _ in &self.headers {
            out.push_str("---|");
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_recorded_values() {
        let mut h = Latency::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 1_000.0, "{p50}");
        assert!(h.quantile(0.99) >= 989_000);
        let mut all = Latency::new();
        all.add(&h);
        all.add(&h);
        assert_eq!(all.count(), 2000);
        assert_eq!(Latency::new().quantile(0.5), 0);
    }

    #[test]
    fn buckets_rebuild_the_same_histogram() {
        let mut h = Latency::new();
        for v in [1u64, 7, 7, 999, 1_000_001, 59_000_000_000] {
            h.record(v);
        }
        let back = Latency::from_buckets(&h.buckets());
        assert_eq!(back.count(), h.count());
        assert_eq!(back.buckets(), h.buckets());
        for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(back.quantile(q), h.quantile(q), "q={q}");
        }
        assert!(Latency::from_buckets(&[]).buckets().is_empty());
    }

    #[test]
    fn median_and_spread_ignore_missing_runs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(agg(&[2.0, 1.0, 3.0], dec(1)), "2.0 (1.0–3.0)");
        assert_eq!(agg(&[f64::NAN, 5.0], dec(0)), "5");
        assert_eq!(agg(&[], dec(0)), "n/a");
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new("B0 demo", &["peer", "value"]);
        t.row(vec!["relay".into(), "1".into()]);
        t.notes.push("note".into());
        let md = t.to_markdown();
        assert!(md.starts_with("### B0 demo\n\n| peer | value |\n|---|---|\n| relay | 1 |\n"));
        assert!(md.ends_with("\nnote\n"));
        assert_eq!(fmt_ns(1_500.0), "2 µs");
        assert_eq!(fmt_ns(25_000_000.0), "25.0 ms");
    }
}
