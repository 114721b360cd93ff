//! Reading `/metrics` the way Prometheus does: the text is parsed by a
//! strict OpenMetrics parser (invalid text fails the test), then a sample
//! is looked up by its series name and its exact label set.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use openmetrics_parser::{MetricNumber, MetricsExposition, OpenMetricsType, OpenMetricsValue};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// The body of `/metrics` on the admin port `admin`.
pub async fn metrics_at(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One sample's value on the admin port `admin`; 0 if absent.
pub async fn metric_at(admin: SocketAddr, sample: &str) -> f64 {
    sample_value(&metrics_at(admin).await, sample)
}

/// One sample's value, e.g. `herald_edge_closes_total{reason="slow_consumer"}`
/// or `herald_edge_delivery_latency_seconds_count`; 0 if absent. The labels
/// must be the sample's all, in any order.
pub fn sample_value(text: &str, sample: &str) -> f64 {
    let (name, labels) = series_key(sample);
    for family in parse(text).families.values() {
        for point in family.iter_samples() {
            let Some(value) = series_value(&family.family_name, &point.value, name) else {
                continue;
            };
            let set = point
                .get_labelset()
                .expect("a family's sample has its labels");
            let have: BTreeMap<&str, &str> =
                set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if have == labels {
                return value;
            }
        }
    }
    0.0
}

/// Every family in `text`: name → type.
pub fn families(text: &str) -> HashMap<String, OpenMetricsType> {
    parse(text)
        .families
        .into_iter()
        .map(|(name, family)| (name, family.family_type))
        .collect()
}

fn parse(text: &str) -> Exposition {
    openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("invalid OpenMetrics ({e:?}):\n{text}"))
}

/// A point's value under the series name `name`, if `name` is one of the
/// series of family `family` (a counter's `_total`, a histogram's `_count`
/// and `_sum`, a gauge's own name).
fn series_value(family: &str, value: &OpenMetricsValue, name: &str) -> Option<f64> {
    let suffix = name.strip_prefix(family)?;
    match (value, suffix) {
        (OpenMetricsValue::Counter(counter), "_total") => Some(counter.value.as_f64()),
        (OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n), "") => Some(n.as_f64()),
        (OpenMetricsValue::Histogram(h), "_count") => h.count.map(|count| count as f64),
        (OpenMetricsValue::Histogram(h), "_sum") => h.sum.as_ref().map(MetricNumber::as_f64),
        _ => None,
    }
}

/// `name{a="x",b="y"}` as the series name and its labels.
fn series_key(sample: &str) -> (&str, BTreeMap<&str, &str>) {
    let Some((name, labels)) = sample.split_once('{') else {
        return (sample, BTreeMap::new());
    };
    let labels = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (label, value) = pair.split_once('=').expect("label=\"value\"");
            (label.trim(), value.trim().trim_matches('"'))
        })
        .collect();
    (name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE herald_edge_closes counter\n\
        herald_edge_closes_total{reason=\"slow_consumer\"} 2\n\
        herald_edge_closes_total{reason=\"client_gone\"} 5\n\
        # TYPE herald_edge_connections gauge\n\
        herald_edge_connections 3\n\
        # TYPE herald_edge_delivery_latency_seconds histogram\n\
        herald_edge_delivery_latency_seconds_sum 0.5\n\
        herald_edge_delivery_latency_seconds_count 4\n\
        herald_edge_delivery_latency_seconds_bucket{le=\"+Inf\"} 4\n\
        # EOF\n";

    #[test]
    fn samples_are_found_by_series_and_exact_labels() {
        let value = |sample| sample_value(TEXT, sample);
        assert_eq!(
            value("herald_edge_closes_total{reason=\"client_gone\"}"),
            5.0
        );
        assert_eq!(
            value("herald_edge_closes_total{reason=\"slow_consumer\"}"),
            2.0
        );
        assert_eq!(value("herald_edge_closes_total{reason=\"other\"}"), 0.0);
        assert_eq!(value("herald_edge_closes_total"), 0.0, "labels must match");
        assert_eq!(
            value("herald_edge_closes"),
            0.0,
            "a counter's series is _total"
        );
        assert_eq!(value("herald_edge_connections"), 3.0);
        assert_eq!(value("herald_edge_delivery_latency_seconds_count"), 4.0);
        assert_eq!(value("herald_edge_delivery_latency_seconds_sum"), 0.5);
        assert_eq!(
            families(TEXT)["herald_edge_connections"],
            OpenMetricsType::Gauge
        );
    }
}
