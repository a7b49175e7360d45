//! Targets `otlp_protobuf` and `otlp_json`: an OTLP export request's body,
//! as OTLP/gRPC or OTLP/HTTP delivers it → decoding → translation into the
//! metrics store, twice (the second export meets the cumulative streams
//! the first one opened, a report interval later).
//!
//! Properties: a body decodes or is refused, never a panic; every data
//! point of a decoded request is counted once, as used, ignored or
//! rejected; no cluster's window, nor any device segment's, holds more
//! errors than requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use weir::metrics_store::MetricsStore;
use weir::otlp::{self, Ingest};

/// One minute of history, as `weir serve` keeps by default and more.
const RETENTION_MS: u64 = 120_000;

/// The canary whose device segments the store keeps (the seeds' name).
const CANARY: &str = "app-canary";

/// Envoy's default stats flush interval.
const REPORT_INTERVAL_MS: u64 = 5_000;

static NOW_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    NOW_MS.load(Ordering::Relaxed)
}

pub fn run_protobuf(data: &[u8]) {
    if let Ok(request) = otlp::decode_protobuf(data) {
        ingest(&request);
    }
}

pub fn run_json(data: &[u8]) {
    if let Ok(request) = otlp::decode_json(data) {
        ingest(&request);
    }
}

fn ingest(request: &ExportMetricsServiceRequest) {
    // A time in 2026, so that timestamps in the input land before, inside
    // and after the store's window.
    NOW_MS.store(1_796_000_000_000, Ordering::Relaxed);
    let store = Arc::new(Mutex::new(MetricsStore::new(RETENTION_MS)));
    store
        .lock()
        .expect("the store's lock")
        .know_clusters([CANARY]);
    let ingest = Ingest::new(store.clone(), now_ms);
    let points = data_points(request);
    for _ in 0..2 {
        let outcome = ingest.ingest(request);
        assert_eq!(
            outcome.used + outcome.ignored + outcome.rejected,
            points,
            "every data point is counted once: {outcome:?}"
        );
        let store = store.lock().expect("the store's lock");
        for cluster in &outcome.clusters {
            let window = store.window(cluster, now_ms(), RETENTION_MS);
            assert!(
                window.errors <= window.requests,
                "{cluster}: {} errors in {} requests",
                window.errors,
                window.requests
            );
        }
        for segment in store.segment_windows(CANARY, now_ms(), RETENTION_MS) {
            for window in [&segment.canary, &segment.stable] {
                assert!(
                    window.errors <= window.requests,
                    "{}={}: {} errors in {} requests",
                    segment.dimension,
                    segment.value,
                    window.errors,
                    window.requests
                );
            }
        }
        drop(store);
        NOW_MS.fetch_add(REPORT_INTERVAL_MS, Ordering::Relaxed);
    }
}

fn data_points(request: &ExportMetricsServiceRequest) -> u64 {
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    metrics
        .map(|metric| match &metric.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use prost::Message;

    /// Writes `corpus/otlp_protobuf/` from the JSON seeds, which are the
    /// ones edited: `cargo test -- --ignored protobuf_seeds`.
    #[test]
    #[ignore = "writes the committed seeds"]
    fn protobuf_seeds_are_the_json_seeds_encoded() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for entry in std::fs::read_dir(corpus.join("otlp_json")).unwrap() {
            let path = entry.unwrap().path();
            let request = weir::otlp::decode_json(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.with_extension("pb");
            let name = name.file_name().unwrap();
            std::fs::write(
                corpus.join("otlp_protobuf").join(name),
                request.encode_to_vec(),
            )
            .unwrap();
        }
    }
}
