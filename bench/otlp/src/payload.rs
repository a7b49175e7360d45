//! Export requests shaped like one flush of Envoy's OpenTelemetry stats sink
//! as `envoy/bootstrap.yaml` configures it (deltas, tags as attributes,
//! tag-extracted names, no custom metric conversions).
//!
//! Envoy 1.40's sink (`source/extensions/stat_sinks/open_telemetry`) puts
//! every flush in one `ResourceMetrics` with one `ScopeMetrics`, and — without
//! `custom_metric_conversions` — every stat in a `Metric` of its own with one
//! data point: a counter is a monotonic `Sum` (`as_int`, start and end time,
//! the tags as string attributes), a histogram a `Histogram` with count, sum,
//! the supported bucket bounds and disjoint bucket counts. Per cluster the
//! request carries `cluster.upstream_rq_xx` for the response classes 2, 3, 4
//! and 5 and one `cluster.upstream_rq_time`: five data points, all of which
//! weir uses (the costliest kind; Envoy's many other stats are only counted
//! and ignored).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

/// Envoy's default histogram bucket bounds (`supportedBuckets()`), in ms.
pub(crate) const ENVOY_BOUNDS_MS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// The response classes each cluster reports a counter for.
pub(crate) const CLASSES: [u8; 4] = [2, 3, 4, 5];

/// Data points per cluster: one sum per class and the histogram.
pub(crate) const POINTS_PER_CLUSTER: usize = CLASSES.len() + 1;

/// A pre-encoded export request.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    pub(crate) bytes: prost::bytes::Bytes,
    pub(crate) data_points: u64,
}

/// `variants` distinct flushes of `clusters` clusters each (the values
/// differ, the shape does not).
pub(crate) fn payloads(clusters: usize, variants: usize) -> Vec<Payload> {
    (0..variants.max(1))
        .map(|i| {
            let request = envoy_flush(clusters, i as u64 + 1);
            Payload {
                data_points: data_points(&request),
                bytes: request.encode_to_vec().into(),
            }
        })
        .collect()
}

/// Data points in a request, counted as OTLP counts them (each number point,
/// each histogram point, each summary point is one).
pub(crate) fn data_points(request: &ExportMetricsServiceRequest) -> u64 {
    let mut n = 0;
    for resource in &request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                n += match &metric.data {
                    None => 0,
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                };
            }
        }
    }
    n as u64
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// The name of the `i`th cluster.
pub(crate) fn cluster_name(i: usize) -> String {
    format!("bench-cluster-{i:04}")
}

/// xorshift64: reproducible values without a dependency.
struct Values(u64);

impl Values {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// One flush: `clusters` clusters, each with its four counters and its histogram.
pub(crate) fn envoy_flush(clusters: usize, seed: u64) -> ExportMetricsServiceRequest {
    const START_NS: u64 = 1_764_000_000_000_000_000;
    let now_ns = START_NS + seed * 1_000_000_000;
    let mut values = Values(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut metrics = Vec::with_capacity(clusters * POINTS_PER_CLUSTER);
    for c in 0..clusters {
        let cluster = cluster_name(c);
        let ok = 500 + values.next(1_500);
        for class in CLASSES {
            let value = match class {
                2 => ok,
                3 => values.next(3),
                4 => values.next(20),
                _ => values.next(5),
            };
            metrics.push(Metric {
                name: weir::otlp::ENVOY_REQUESTS.to_owned(),
                data: Some(Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        attributes: vec![
                            string_kv(weir::otlp::ENVOY_CLUSTER, &cluster),
                            string_kv(weir::otlp::ENVOY_RESPONSE_CLASS, &class.to_string()),
                        ],
                        start_time_unix_nano: now_ns - 1_000_000_000,
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(value as i64)),
                        ..NumberDataPoint::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                })),
                ..Metric::default()
            });
        }
        // Latencies mostly between 1 and 250 ms, a few slower.
        let mut bucket_counts = vec![0u64; ENVOY_BOUNDS_MS.len() + 1];
        let mut left = ok;
        for (i, count) in bucket_counts.iter_mut().enumerate().take(12) {
            let share = match i {
                0 | 1 => left / 50,
                2..=7 => left / 3,
                _ => left / 20,
            };
            *count = share;
            left -= share;
        }
        bucket_counts[12] += left;
        let count: u64 = bucket_counts.iter().sum();
        let sum = bucket_counts
            .iter()
            .zip(ENVOY_BOUNDS_MS)
            .map(|(&n, bound)| n as f64 * bound * 0.7)
            .sum::<f64>();
        metrics.push(Metric {
            name: weir::otlp::ENVOY_LATENCY.to_owned(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![string_kv(weir::otlp::ENVOY_CLUSTER, &cluster)],
                    start_time_unix_nano: now_ns - 1_000_000_000,
                    time_unix_nano: now_ns,
                    count,
                    sum: Some(sum),
                    bucket_counts,
                    explicit_bounds: ENVOY_BOUNDS_MS.to_vec(),
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            })),
            ..Metric::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string_kv("telemetry.sdk.language", "cpp"),
                    string_kv("telemetry.sdk.name", "envoy"),
                    string_kv(
                        "telemetry.sdk.version",
                        "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL",
                    ),
                ],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use weir::metrics_store::MetricsStore;
    use weir::otlp::Ingest;

    #[test]
    fn a_flush_has_five_points_per_cluster_all_used() {
        let request = envoy_flush(200, 1);
        assert_eq!(data_points(&request), 1_000);
        let store = Arc::new(Mutex::new(MetricsStore::new(60_000)));
        let ingest = Ingest::new(store, weir::serving::now_ms);
        let outcome = ingest.ingest(&request);
        assert_eq!(
            (outcome.used, outcome.ignored, outcome.rejected),
            (1_000, 0, 0)
        );
        assert_eq!(outcome.clusters.len(), 200);
        let bytes = request.encode_to_vec();
        assert_eq!(ingest.ingest_bytes(&bytes), (1_000, 0));
        assert_eq!(weir::otlp::decode_protobuf(&bytes).unwrap(), request);
    }

    #[test]
    fn payloads_differ_in_values_not_in_shape() {
        let p = payloads(10, 3);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| p.data_points == 50));
        assert_ne!(p[0].bytes, p[1].bytes);
    }
}
