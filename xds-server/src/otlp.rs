//! OTLP metrics in: Envoy's OpenTelemetry stats sink and applications send
//! metrics over OTLP/gRPC or OTLP/HTTP, and weir adds them up per cluster
//! and kind of source, per request, in the [`MetricsStore`].
//!
//! # Endpoints
//!
//! - **OTLP/gRPC**: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//!   ([`Ingest::grpc_service`]); gzip-compressed messages are accepted.
//! - **OTLP/HTTP**: `POST /v1/metrics` ([`Ingest::http_router`]) with
//!   `Content-Type: application/x-protobuf` (binary protobuf) or
//!   `application/json` (OTLP/JSON), optionally `Content-Encoding: gzip`. The
//!   response is encoded like the request.
//!
//! # What is used
//!
//! **Envoy** (`envoy.stat_sinks.open_telemetry` with `use_tag_extracted_name`
//! and `emit_tags_as_attributes` on — their defaults — and no `prefix`):
//!
//! - `cluster.upstream_rq_xx`, a sum, with the data point attributes
//!   `envoy.cluster_name` (the cluster) and `envoy.response_code_class`
//!   (`1` to `5`, a string or an integer): its value adds to the cluster's
//!   requests, and to its errors when the class is `5`. The value is an
//!   integer or a non-negative double (rounded).
//! - `cluster.upstream_rq_time`, a histogram with explicit buckets, with
//!   `envoy.cluster_name`: the cluster's latency. Its bounds are taken as
//!   milliseconds whatever its unit; its count is not used (requests come
//!   from `cluster.upstream_rq_xx`).
//! - `cluster.upstream_cx_connect_ms`, a histogram with explicit buckets,
//!   with `envoy.cluster_name`, from an Envoy whose resource has the
//!   attribute `cloud.region`: the connect times from that region to the
//!   cluster, which the measured RTT is made of (`controller::rtt`). Kept
//!   only for the policy's clusters, and for at most
//!   [`MAX_CONNECT_PAIRS`](crate::metrics_store::MAX_CONNECT_PAIRS)
//!   (region, cluster) pairs; from an Envoy without `cloud.region` they are
//!   accepted and ignored.
//! - The filter's admission metrics, which Envoy names after the filter's
//!   own (`weir_policy::metrics`) with the prefix `wasmcustom.` (taken with
//!   or without it): the counters `wasmcustom.weir.class.<class>.<outcome>`
//!   (`outcome`: `admitted`, `queued`, `released`, `shed`), sums without
//!   attributes, and the gauges `wasmcustom.weir.in_flight` and
//!   `wasmcustom.weir.queue.depth`. They are kept per source (the resource's
//!   attributes) as totals: a delta adds to the source's total, a cumulative
//!   value replaces it; a gauge's last value is kept. Their sum over the
//!   sources heard from within the store's retention is
//!   [`MetricsStore::admission`]. Several Envoys with the same resource
//!   attributes are one source: with deltas (as `envoy/bootstrap.yaml`
//!   configures) their counters still add up, but their gauges and
//!   cumulative counters overwrite each other.
//! - Every other metric (gauges such as `cluster.upstream_rq_active`, the
//!   filter's other `wasmcustom.*`, …) is accepted and ignored: its data
//!   points count as accepted but unused, never as rejected.
//!
//! **Applications** (the OpenTelemetry HTTP semantic conventions):
//!
//! - `http.server.request.duration`, a histogram with explicit buckets or an
//!   exponential histogram, in `s` (or no unit: seconds, as the conventions
//!   say), `ms`, `us` or `ns`, converted to milliseconds. Each data point's
//!   count adds to its cluster's requests, and to its errors when the data
//!   point failed: `http.response.status_code` ≥ 500 or, without a status
//!   code, an `error.type` attribute (a request that ended before any
//!   response). Its buckets are the cluster's latency.
//! - The cluster is the data point attribute `weir.cluster`, else the
//!   resource attribute `weir.cluster`, else the resource attribute
//!   `service.name`.
//! - An exponential histogram's buckets (bucket `i` at scale `s` covers
//!   `(base^i, base^(i+1)]`, `base = 2^(2^-s)`) are converted to
//!   millisecond buckets: from scale 2 (buckets ×1.19 wide) up, the fixed
//!   bounds [`EXPONENTIAL_BOUNDS_MS`] (steps of at most ×1.2 from 1 ms to
//!   62 s, as the shipped Envoy bootstraps use); at coarser scales the
//!   histogram's own bucket edges from 0.5 ms to 62 s, so that it is never
//!   made to look finer than it was measured. The zero bucket goes to the
//!   first, and each other bucket's count is spread over the millisecond
//!   buckets it overlaps in proportion to the overlap on a logarithmic
//!   scale (whole observations; totals are exact). More than 512 populated
//!   buckets are first merged pairwise (a lower scale).
//!
//! **Temporality.** Delta points count as they are. Cumulative points are
//! turned into deltas per stream — the metric's name, the data point's
//! attributes and the resource's attributes (the source):
//!
//! - the first value of a stream counts in full if its source already sent
//!   an earlier request (with anything in it): the stream began since —
//!   Envoy reports a counter only once it is used, an SDK a series only once
//!   it is recorded;
//! - it also counts in full if the data point's `start_time_unix_nano` is set
//!   and at most [`RECENT_START_MS`] (the controller's window, 10 s) before
//!   its `time_unix_nano` (before weir's clock if it has none): the series
//!   began recently — a newly started Envoy or application — so all of its
//!   value is recent. Envoy 1.40 sends start times in microseconds (and
//!   times in nanoseconds): a start more than 100 times smaller than the
//!   time is read as microseconds;
//! - otherwise, from a source weir has not heard from before (after weir
//!   starts, say) the first value is only remembered, so a source that has
//!   run for days does not look like one burst;
//! - each later value counts what it added since the previous one;
//! - a value that went down — the sum, the count, or any bucket — means the
//!   source started over: it counts in full;
//! - a histogram whose bounds changed starts its stream again (remembered,
//!   nothing counted); an exponential histogram whose scale changed is
//!   compared at the lower of the two scales;
//! - a data point flagged "no recorded value" is ignored and ends its stream;
//! - at most 20,000 streams (and as many sources) are remembered; those not
//!   seen for 10 minutes are forgotten when room is needed, and a new stream
//!   that finds no room is rejected.
//!
//! Several sources with the same resource attributes would share their
//! streams and spoil each other's differences: Envoy's stats sink sets only
//! `telemetry.sdk.*` unless `resource_detectors` add more, so Envoys should
//! report deltas (`report_counters_as_deltas`, `report_histograms_as_deltas`)
//! and be told apart by a resource attribute (`envoy/bootstrap.yaml` sets
//! `service.instance.id`).
//!
//! **Totals.** All the data points of one export request are added up per
//! cluster and kind of source — [`SourceKind::Envoy`] for Envoy's metrics,
//! [`SourceKind::Application`] for `http.server.request.duration` — and
//! recorded in the store ([`MetricsStore::record`]) as received at the time
//! weir received the request (the data points' own timestamps are not
//! used): requests and errors summed, latency histograms merged (by
//! [`Histogram::merge`]'s rules). A cluster is recorded if one of its data
//! points counted something, even zero; a remembered first value alone
//! records nothing. The store keeps the two kinds apart, so a cluster that
//! both Envoy and an application report is not counted twice (see
//! [`MetricsStore::window`]). One export request adds at most [`MAX_COUNT`]
//! (2^40) requests and as many latencies to one cluster; a data point that
//! would pass that is rejected.
//!
//! Translating a request allocates per request and per cluster, not per
//! data point: names and bounds are borrowed from the decoded request,
//! bucket counts go into one buffer, and bounds converted to milliseconds
//! are converted once per request. The cumulative streams are locked only
//! when a request has cumulative points, and the store only to add the
//! request's totals.
//!
//! # What is refused
//!
//! - A request that does not decode (protobuf, or JSON that is not OTLP/JSON)
//!   is refused as a whole: gRPC `INVALID_ARGUMENT`, HTTP `400`.
//! - A request larger than [`MAX_REQUEST_BYTES`] (4 MiB; after gzip
//!   decompression too): gRPC `RESOURCE_EXHAUSTED`, HTTP `413`.
//! - Over HTTP, a `Content-Type` other than `application/x-protobuf`,
//!   `application/protobuf` or `application/json` (parameters such as
//!   `charset` are ignored), or a `Content-Encoding` other than `gzip` or
//!   `identity`: `415`. Other methods than `POST`: `405`.
//! - HTTP error bodies are a `google.rpc.Status` (protobuf, or JSON
//!   `{"code": …, "message": …}` for a JSON request).
//! - Data points of the metrics above that cannot be used are rejected and
//!   the rest of the request is accepted; the response (gRPC `OK`, HTTP
//!   `200`) carries `partial_success` with the number of rejected data points
//!   and why: a sum without a value or with a negative or non-finite one;
//!   an Envoy data point without `envoy.cluster_name`, a response class
//!   other than 1–5; an application data point with no cluster or a
//!   non-integer status code; an unspecified (or unknown) aggregation
//!   temporality; a histogram whose
//!   `bucket_counts` are not one more than its `explicit_bounds`, whose bounds
//!   are not finite and strictly increasing, with more than 256 bounds, or
//!   whose count is not the sum of its buckets; an exponential histogram
//!   with a scale outside −10..=20, with negative values, or whose count is
//!   not its zero count plus its buckets; a duration in another unit; a used
//!   metric of the wrong kind (e.g. `cluster.upstream_rq_xx` as a gauge);
//!   a new cumulative stream when 20,000 are already tracked; a data point
//!   that would take its cluster past [`MAX_COUNT`] in one request. The
//!   message lists the first 8 distinct reasons with how many data points
//!   each.
//!
//! Everything is counted in [`Ingest::status`].
//!
//! # OTLP/JSON
//!
//! The JSON reader ([`decode_json`]) follows the OTLP/JSON rules: lowerCamelCase
//! keys (the proto's snake_case names are accepted too), 64-bit integers as
//! strings or numbers, enums as integers or names, `"NaN"`, `"Infinity"`,
//! `"-Infinity"`, unknown keys ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use serde_json::json;

use crate::metrics_store::MetricsStore;
#[cfg(doc)]
use crate::metrics_store::{Histogram, SourceKind};

mod admission;
mod cumulative;
mod exponential;
mod grpc;
mod http;
mod json;
mod totals;
mod translate;

pub use admission::WASM_CUSTOM_PREFIX;
pub use exponential::BOUNDS_MS as EXPONENTIAL_BOUNDS_MS;
pub use grpc::GrpcService;
pub use http::METRICS_PATH;
pub use json::JsonError;
pub use translate::{
    APP_DURATION, ENVOY_CLUSTER, ENVOY_CONNECT, ENVOY_LATENCY, ENVOY_REQUESTS,
    ENVOY_RESPONSE_CLASS, ERROR_TYPE, MAX_COUNT, MAX_EXPLICIT_BOUNDS, RECENT_START_MS,
    RESOURCE_REGION, SERVICE_NAME, STATUS_CODE, WEIR_CLUSTER,
};

/// The largest export request accepted, in bytes (after decompression).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Decodes a binary protobuf `ExportMetricsServiceRequest`, and nothing else.
pub fn decode_protobuf(bytes: &[u8]) -> Result<ExportMetricsServiceRequest, prost::DecodeError> {
    ExportMetricsServiceRequest::decode(bytes)
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest`, and nothing else.
pub fn decode_json(bytes: &[u8]) -> Result<ExportMetricsServiceRequest, JsonError> {
    json::decode(bytes)
}

/// The OTLP receivers, sharing one store, one set of cumulative streams
/// and one set of counters. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Mutex<MetricsStore>>,
    clock: fn() -> u64,
    streams: Mutex<cumulative::Streams>,
    counters: Counters,
    last_error: Mutex<Option<LastError>>,
    /// A follower's way to the leader, which decides on every replica's metrics.
    forwarder: std::sync::OnceLock<crate::replication::Forwarder>,
}

#[derive(Default)]
struct Counters {
    grpc: AtomicU64,
    http: AtomicU64,
    in_process: AtomicU64,
    replicas: AtomicU64,
    malformed: AtomicU64,
    too_large: AtomicU64,
    unsupported: AtomicU64,
    used: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    partial_successes: AtomicU64,
    /// 0: none yet.
    last_request_ms: AtomicU64,
}

struct LastError {
    at_ms: u64,
    transport: Transport,
    message: String,
}

/// How a request arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Grpc,
    Http,
    InProcess,
    /// Forwarded by a follower (OTLP/HTTP from another replica).
    Replica,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::InProcess => "in_process",
            Transport::Replica => "replica",
        }
    }
}

/// Why a whole request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed,
    TooLarge,
    Unsupported,
}

/// What became of one export request's data points.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Data points of metrics weir uses, counted.
    pub used: u64,
    /// Data points accepted but not used (other metrics).
    pub ignored: u64,
    /// Data points rejected.
    pub rejected: u64,
    /// Why they were rejected, if any were.
    pub error_message: Option<String>,
    /// Clusters that received a sample.
    pub clusters: Vec<String>,
}

impl ExportOutcome {
    /// Data points accepted: used or ignored.
    pub fn accepted(&self) -> u64 {
        self.used + self.ignored
    }

    /// The OTLP response: `partial_success` set when something was rejected.
    pub fn response(&self) -> ExportMetricsServiceResponse {
        let partial_success = (self.rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.error_message.clone().unwrap_or_default(),
        });
        ExportMetricsServiceResponse { partial_success }
    }
}

impl Ingest {
    /// Receivers adding to `store`; `clock` gives milliseconds since the epoch.
    pub fn new(store: Arc<Mutex<MetricsStore>>, clock: fn() -> u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                streams: Mutex::default(),
                counters: Counters::default(),
                last_error: Mutex::default(),
                forwarder: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Hands every export that does not come from another replica to
    /// `forwarder` as well (a follower's, for the leader).
    pub(crate) fn forward_to(&self, forwarder: crate::replication::Forwarder) {
        let _ = self.inner.forwarder.set(forwarder);
    }

    /// The OTLP/gRPC metrics service, to add to a tonic server.
    pub fn grpc_service(&self) -> GrpcService {
        GrpcService::new(self.clone())
    }

    /// `POST /v1/metrics` (OTLP/HTTP), to merge into an axum router.
    pub fn http_router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Decodes a binary protobuf export request and ingests it, as if it
    /// had arrived over the network: `(accepted, rejected)` data points.
    /// A payload that does not decode is counted as malformed and gives
    /// `(0, 0)`.
    pub fn ingest_bytes(&self, bytes: &[u8]) -> (u64, u64) {
        self.count_request(Transport::InProcess);
        if bytes.len() > MAX_REQUEST_BYTES {
            let message = format!("the request is larger than {MAX_REQUEST_BYTES} bytes");
            self.refused(Refusal::TooLarge, Transport::InProcess, &message);
            return (0, 0);
        }
        match decode_protobuf(bytes) {
            Ok(request) => {
                let outcome = self.export(&request, Transport::InProcess);
                (outcome.accepted(), outcome.rejected)
            }
            Err(err) => {
                let message = format!("the request does not decode: {err}");
                self.refused(Refusal::Malformed, Transport::InProcess, &message);
                (0, 0)
            }
        }
    }

    /// Ingests an export request given in-process.
    pub fn ingest(&self, request: &ExportMetricsServiceRequest) -> ExportOutcome {
        self.count_request(Transport::InProcess);
        self.export(request, Transport::InProcess)
    }

    /// Counters for `/v1/status`.
    pub fn status(&self) -> serde_json::Value {
        let c = &self.inner.counters;
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (used, ignored) = (n(&c.used), n(&c.ignored));
        let last_error = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|e| json!({"at_ms": e.at_ms, "transport": e.transport.name(), "message": e.message}));
        let streams = self
            .inner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let last_request = n(&c.last_request_ms);
        let (unknown_clusters, refused_reports, segments, connects) = {
            let store = self
                .inner
                .store
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (
                store.unknown_clusters(),
                store.refused_reports(),
                store.segment_series(),
                store.connect_pairs(),
            )
        };
        let ((segment_series, segment_refused), (connect_pairs, connect_refused)) =
            (segments, connects);
        json!({
            "requests": {
                "grpc": n(&c.grpc),
                "http": n(&c.http),
                "in_process": n(&c.in_process),
                "replicas": n(&c.replicas),
            },
            "forwarding": self.inner.forwarder.get().map(crate::replication::Forwarder::status),
            "refused_requests": {
                "malformed": n(&c.malformed),
                "too_large": n(&c.too_large),
                "unsupported": n(&c.unsupported),
            },
            "data_points": {
                "accepted": used + ignored,
                "used": used,
                "ignored": ignored,
                "rejected": n(&c.rejected),
            },
            "partial_successes": n(&c.partial_successes),
            "cumulative_streams": streams,
            "clusters_not_in_policy": unknown_clusters,
            "cluster_reports_refused": refused_reports,
            "segment_series": segment_series,
            "segment_reports_refused": segment_refused,
            "connect_pairs": connect_pairs,
            "connect_reports_refused": connect_refused,
            "last_request_at_ms": (last_request > 0).then_some(last_request),
            "last_error": last_error,
        })
    }

    pub(crate) fn count_request(&self, transport: Transport) {
        let c = &self.inner.counters;
        let counter = match transport {
            Transport::Grpc => &c.grpc,
            Transport::Http => &c.http,
            Transport::InProcess => &c.in_process,
            Transport::Replica => &c.replicas,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.last_request_ms
            .store((self.inner.clock)(), Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal, transport: Transport, message: &str) {
        let c = &self.inner.counters;
        let counter = match why {
            Refusal::Malformed => &c.malformed,
            Refusal::TooLarge => &c.too_large,
            Refusal::Unsupported => &c.unsupported,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.record_error(transport, message);
    }

    fn record_error(&self, transport: Transport, message: &str) {
        let mut last = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Log each new problem once, not every second while a source repeats it.
        if last.as_ref().is_none_or(|e| e.message != message) {
            tracing::warn!(transport = transport.name(), "OTLP metrics: {message}");
        }
        *last = Some(LastError {
            at_ms: (self.inner.clock)(),
            transport,
            message: message.to_owned(),
        });
    }

    /// Translates a decoded request and adds its samples to the store.
    pub(crate) fn export(
        &self,
        request: &ExportMetricsServiceRequest,
        transport: Transport,
    ) -> ExportOutcome {
        if transport != Transport::Replica
            && let Some(forwarder) = self.inner.forwarder.get()
        {
            forwarder.offer(request);
        }
        let now_ms = (self.inner.clock)();
        let translation = translate::translate(request, &self.inner.streams, now_ms);
        let clusters = translation.totals.clusters();
        if !translation.totals.is_empty()
            || !translation.admission.is_empty()
            || !translation.app_points.is_empty()
        {
            let mut store = self
                .inner
                .store
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            translation.totals.apply(&mut store, now_ms);
            for point in &translation.app_points {
                let counts = crate::metrics_store::Counts {
                    requests: point.requests,
                    errors: if point.failed { point.requests } else { 0 },
                    latency: point.latency(&translation.app_counts),
                };
                store.record_app_segments(point.cluster, |k| point.attribute(k), counts, now_ms);
            }
            for (source, points) in &translation.admission {
                store.add_admission(source, now_ms, points);
            }
        }
        let c = &self.inner.counters;
        c.used.fetch_add(translation.used, Ordering::Relaxed);
        c.ignored.fetch_add(translation.ignored, Ordering::Relaxed);
        c.rejected
            .fetch_add(translation.rejected, Ordering::Relaxed);
        let error_message = translation.problems.summary();
        if translation.rejected > 0 {
            c.partial_successes.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "{} data points rejected: {}",
                translation.rejected,
                error_message.as_deref().unwrap_or("")
            );
            self.record_error(transport, &message);
        }
        ExportOutcome {
            used: translation.used,
            ignored: translation.ignored,
            rejected: translation.rejected,
            error_message,
            clusters,
        }
    }
}
