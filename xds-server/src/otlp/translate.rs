//! OTLP metrics → each cluster's totals per kind of source: the rules
//! listed in the documentation of [`crate::otlp`].

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, metric::Data,
    number_data_point,
};

mod application;
mod attributes;
mod envoy;
mod filter;
mod histograms;

use attributes::{canonical, find, int_attr, string_attr};

use super::admission::{self, Kind, WASM_CUSTOM_PREFIX};
use super::cumulative::{Delta, Streams};
use super::exponential::{self, Buckets};
use super::totals::{Bounds, Totals, tidy};
use crate::metrics_store::{AdmissionPoint, SourceKind};
use weir_policy::segments::{self, Measure};

/// Envoy's request counter by response class (a sum).
pub const ENVOY_REQUESTS: &str = "cluster.upstream_rq_xx";
/// Envoy's upstream request time (a histogram, in milliseconds).
pub const ENVOY_LATENCY: &str = "cluster.upstream_rq_time";
/// Envoy's upstream connect time (a histogram, in milliseconds): the
/// measured RTT from the reporting Envoy's region to the cluster.
pub const ENVOY_CONNECT: &str = "cluster.upstream_cx_connect_ms";
/// The resource attribute naming the reporting Envoy's region (the
/// OpenTelemetry semantic conventions' cloud region).
pub const RESOURCE_REGION: &str = "cloud.region";
/// The OpenTelemetry HTTP server duration (a histogram).
pub const APP_DURATION: &str = "http.server.request.duration";

/// Envoy's tag naming the cluster.
pub const ENVOY_CLUSTER: &str = "envoy.cluster_name";
/// Envoy's tag holding the response class, `1` to `5`.
pub const ENVOY_RESPONSE_CLASS: &str = "envoy.response_code_class";
/// Names the cluster of an application's data point or resource.
pub const WEIR_CLUSTER: &str = "weir.cluster";
/// The resource attribute naming the service, the last resort for the cluster.
pub const SERVICE_NAME: &str = "service.name";
/// The response status of an HTTP server duration data point.
pub const STATUS_CODE: &str = "http.response.status_code";
/// Set on an HTTP server duration data point that ended in error.
pub const ERROR_TYPE: &str = "error.type";

/// Explicit bucket bounds a histogram data point may have at most.
pub const MAX_EXPLICIT_BOUNDS: usize = 256;

/// The most requests (or latency observations) one export request may add
/// to one cluster: 2^40, far beyond any real reporting interval, and small
/// enough that sums over many requests stay far from overflowing.
pub const MAX_COUNT: u64 = 1 << 40;

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;

/// Distinct problems kept for the error message.
const MAX_PROBLEMS: usize = 8;

/// What one export request amounts to.
#[derive(Debug, Default)]
pub(crate) struct Translation<'r> {
    /// Each cluster's totals, per kind of source.
    pub(crate) totals: Totals<'r>,
    /// The filter's admission data points, per source (resource key).
    pub(crate) admission: Vec<(String, Vec<AdmissionPoint>)>,
    /// Applications' data points counted, with their attributes, for the
    /// device segments the store's plan reads from them.
    pub(crate) app_points: Vec<AppPoint<'r>>,
    /// The bucket counts of `app_points`' latencies, one after another.
    pub(crate) app_counts: Vec<u64>,
    /// Data points of metrics weir uses, counted (or remembered, for the
    /// first value of a cumulative stream).
    pub(crate) used: u64,
    /// Data points accepted and not used.
    pub(crate) ignored: u64,
    /// Data points refused.
    pub(crate) rejected: u64,
    pub(crate) problems: Problems,
}

/// An application's data point as counted: its cluster, its attributes,
/// the requests it added and whether they failed.
#[derive(Debug)]
pub(crate) struct AppPoint<'r> {
    pub(crate) cluster: &'r str,
    pub(crate) attributes: &'r [KeyValue],
    pub(crate) requests: u64,
    pub(crate) failed: bool,
    /// Its latency: bounds (ms), and where its counts are in
    /// [`Translation::app_counts`].
    pub(crate) latency: Option<(Bounds<'r>, std::ops::Range<usize>)>,
}

impl<'r> AppPoint<'r> {
    /// An attribute's text: a string, or the first string of an array (the
    /// form of the semantic conventions' `http.request.header.<key>`).
    pub(crate) fn attribute(&self, key: &str) -> Option<&'r str> {
        attributes::text_attr(self.attributes, key)
    }

    /// Its latency histogram, counts read from `app_counts`.
    pub(crate) fn latency<'a>(&'a self, app_counts: &'a [u64]) -> Option<(&'a [f64], &'a [u64])> {
        let (bounds, range) = self.latency.as_ref()?;
        Some((&bounds[..], app_counts.get(range.clone())?))
    }
}

/// Why data points were rejected: distinct messages with how many points
/// each, the first few.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    entries: Vec<(String, u64)>,
    more: u64,
}

impl Problems {
    fn add(&mut self, message: String) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == message) {
            entry.1 += 1;
        } else if self.entries.len() < MAX_PROBLEMS {
            self.entries.push((message, 1));
        } else {
            self.more += 1;
        }
    }

    /// One line, or `None` if nothing was rejected.
    pub(crate) fn summary(&self) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        let mut out = String::new();
        for (i, (message, n)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            let points = if *n == 1 { "data point" } else { "data points" };
            let _ = write!(out, "{message} ({n} {points})");
        }
        if self.more > 0 {
            let _ = write!(out, "; and {} more data points", self.more);
        }
        Some(out)
    }
}

/// Turns `request` into totals received at `now_ms`, using and updating
/// the cumulative streams (locked only while needed).
pub(crate) fn translate<'r>(
    request: &'r ExportMetricsServiceRequest,
    streams: &Mutex<Streams>,
    now_ms: u64,
) -> Translation<'r> {
    let resources: Vec<Resource<'r>> = request
        .resource_metrics
        .iter()
        .map(|rm| Resource::new(rm.resource.as_ref().map_or(&[], |r| &r.attributes)))
        .collect();
    {
        // Every request makes its sources known, whatever it holds: a stream
        // first seen in a later request began after this one.
        let mut streams = lock(streams);
        streams.begin_request();
        for resource in &resources {
            resource
                .known
                .set(streams.known_source(resource.key(), now_ms))
                .ok();
        }
    }
    let mut run = Run {
        out: Translation::default(),
        streams: LazyStreams {
            mutex: streams,
            guard: None,
        },
        now_ms,
        admission: Vec::new(),
        key: String::new(),
        added: Vec::new(),
        converted: None,
        app_latency: None,
    };
    for (resource, resource_metrics) in resources.iter().zip(&request.resource_metrics) {
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                run.metric(resource, metric);
            }
        }
        if !run.admission.is_empty() {
            let points = std::mem::take(&mut run.admission);
            run.out.admission.push((resource.key().to_owned(), points));
        }
    }
    run.out
}

fn lock(streams: &Mutex<Streams>) -> MutexGuard<'_, Streams> {
    streams.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The cumulative streams, locked on first use and until the request is done.
struct LazyStreams<'m> {
    mutex: &'m Mutex<Streams>,
    guard: Option<MutexGuard<'m, Streams>>,
}

impl LazyStreams<'_> {
    fn get(&mut self) -> &mut Streams {
        let mutex = self.mutex;
        self.guard.get_or_insert_with(|| lock(mutex))
    }
}

/// The resource a metric came from.
struct Resource<'r> {
    attributes: &'r [KeyValue],
    /// Its attributes in canonical form, for stream keys; built when needed.
    key: OnceCell<String>,
    /// Whether it reported in an earlier request.
    known: OnceCell<bool>,
}

impl<'r> Resource<'r> {
    fn new(attributes: &'r [KeyValue]) -> Self {
        Self {
            attributes,
            key: OnceCell::new(),
            known: OnceCell::new(),
        }
    }

    fn key(&self) -> &str {
        self.key.get_or_init(|| {
            let mut key = String::new();
            canonical(self.attributes, &mut key);
            key
        })
    }

    fn known(&self) -> bool {
        self.known.get().copied().unwrap_or(false)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Temporality {
    Delta,
    Cumulative,
    Invalid(i32),
}

impl Temporality {
    fn of(value: i32) -> Self {
        match value {
            1 => Self::Delta,
            2 => Self::Cumulative,
            other => Self::Invalid(other),
        }
    }

    fn check(self) -> Result<Self, String> {
        match self {
            Self::Invalid(0) => Err("aggregation temporality unspecified".to_owned()),
            Self::Invalid(other) => Err(format!("unknown aggregation temporality {other}")),
            valid => Ok(valid),
        }
    }
}

/// One data point's stream, for cumulative values.
#[derive(Clone, Copy)]
struct Stream<'a> {
    resource: &'a Resource<'a>,
    metric: &'a str,
    attributes: &'a [KeyValue],
}

impl<'a> Stream<'a> {
    fn new(resource: &'a Resource<'a>, metric: &'a str, attributes: &'a [KeyValue]) -> Self {
        Self {
            resource,
            metric,
            attributes,
        }
    }

    /// Writes the stream's key into `out`: its source's, its metric's name
    /// and its attributes.
    fn key(&self, out: &mut String) {
        out.clear();
        out.push_str(self.resource.key());
        out.push('\u{1f}');
        out.push_str(self.metric);
        out.push('\u{1f}');
        canonical(self.attributes, out);
    }
}

/// Where a histogram point's observations go: the cluster and kind of
/// source, and whether they also count as requests (an application's
/// durations do; Envoy's requests come from its counters), failed ones.
#[derive(Clone, Copy)]
struct Target<'r> {
    cluster: &'r str,
    /// The reporting Envoy's region, for connect times; else empty.
    origin: &'r str,
    kind: SourceKind,
    requests: bool,
    failed: bool,
}

/// What became of one data point.
enum Point {
    Used,
    Ignored,
    Rejected(String),
}

struct Run<'m, 'r> {
    out: Translation<'r>,
    streams: LazyStreams<'m>,
    now_ms: u64,
    /// The current resource's admission data points.
    admission: Vec<AdmissionPoint>,
    /// Scratch space: a stream key, and a cumulative histogram's increase.
    key: String,
    added: Vec<u64>,
    /// The last bounds converted to milliseconds: (bounds, ms per unit,
    /// converted); applications send the same bounds in every data point.
    converted: Option<Converted<'r>>,
    /// The latency an application's data point just added, for its segments.
    app_latency: Option<(Bounds<'r>, std::ops::Range<usize>)>,
}

/// Bounds converted to milliseconds: (bounds, ms per unit, converted).
type Converted<'r> = (&'r [f64], f64, Rc<[f64]>);

impl<'r> Run<'_, 'r> {
    fn metric(&mut self, resource: &Resource<'r>, metric: &'r Metric) {
        match metric.name.as_str() {
            ENVOY_REQUESTS => self.envoy_requests(resource, metric),
            ENVOY_LATENCY => self.envoy_latency(resource, metric),
            ENVOY_CONNECT => self.envoy_connect(resource, metric),
            APP_DURATION => self.app_duration(resource, metric),
            name => {
                let bare = name.strip_prefix(WASM_CUSTOM_PREFIX).unwrap_or(name);
                let segment = segments::is_segment_metric(bare)
                    .then(|| segments::split_metric_name(bare))
                    .flatten();
                if let Some((series, measure)) = segment {
                    return self.segment(resource, metric, series, measure);
                }
                match admission::kind(name) {
                    Some(kind) => self.admission(kind, metric),
                    None => self.out.ignored += points(metric.data.as_ref()),
                }
            }
        }
    }

    fn tally(&mut self, metric: &str, point: Point) {
        match point {
            Point::Used => self.out.used += 1,
            Point::Ignored => self.out.ignored += 1,
            Point::Rejected(why) => {
                self.out.rejected += 1;
                self.out.problems.add(format!("{metric}: {why}"));
            }
        }
    }

    fn reject_all(&mut self, metric: &Metric, why: &str) {
        for _ in 0..points(metric.data.as_ref()) {
            self.tally(&metric.name, Point::Rejected(why.to_owned()));
        }
    }

    /// Whether the first value of a cumulative stream counts in full: its
    /// source reported before (the stream began since), or the stream's
    /// start time is within the last window.
    fn counts_first(&self, resource: &Resource<'_>, (start_ns, time_ns): (u64, u64)) -> bool {
        resource.known() || started_recently(start_ns, time_ns, self.now_ms)
    }

    /// Whether a point is flagged "no recorded value" (its source lost the
    /// series): then its stream is forgotten, and the point ignored.
    fn no_recorded_value(&mut self, stream: &Stream<'_>, flags: u32) -> bool {
        if flags & NO_RECORDED_VALUE == 0 {
            return false;
        }
        stream.key(&mut self.key);
        self.streams.get().forget(&self.key);
        true
    }
}

fn implausible(count: u64) -> String {
    format!(
        "{count} more requests for one cluster in one report is implausible (at most {MAX_COUNT})"
    )
}

fn too_many_streams() -> String {
    format!(
        "more than {} cumulative streams are being tracked",
        super::cumulative::MAX_STREAMS
    )
}

/// Data points in a metric.
fn points(data: Option<&Data>) -> u64 {
    let n = match data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    };
    n as u64
}

/// How recent a cumulative stream's start must be for its first value to
/// count in full: the controller's window.
pub const RECENT_START_MS: u64 = crate::metrics_store::WINDOW_MS;

/// Whether a data point's series started within [`RECENT_START_MS`] of the
/// point's own time (`time_ns`, on the source's clock, so that clocks need
/// not agree), or of `now_ms` if the point has no time. `start_ns` 0 means
/// unknown. Envoy 1.40's stats sink gives start times in microseconds (its
/// times in nanoseconds): a start more than 100 times smaller than the time
/// (before 1988 in nanoseconds) is read as microseconds.
fn started_recently(start_ns: u64, time_ns: u64, now_ms: u64) -> bool {
    if start_ns == 0 {
        return false;
    }
    let reference_ns = if time_ns > 0 {
        time_ns
    } else {
        now_ms.saturating_mul(1_000_000)
    };
    let start_ns = if start_ns < reference_ns / 100 {
        start_ns.saturating_mul(1_000)
    } else {
        start_ns
    };
    reference_ns.saturating_sub(start_ns) <= RECENT_START_MS.saturating_mul(1_000_000)
}

/// A counter's value: a non-negative integer, or a finite non-negative
/// double (rounded).
fn counter_value(point: &NumberDataPoint) -> Result<u64, String> {
    match point.value {
        Some(number_data_point::Value::AsInt(v)) => {
            u64::try_from(v).map_err(|_| format!("negative value {v}"))
        }
        Some(number_data_point::Value::AsDouble(v)) if v.is_finite() && v >= 0.0 => {
            Ok(v.round() as u64)
        }
        Some(number_data_point::Value::AsDouble(v)) => Err(format!("value {v} is not a count")),
        None => Err("no value".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram as OtlpHistogram, ResourceMetrics, ScopeMetrics,
        Sum, exponential_histogram_data_point::Buckets as OtlpBuckets,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;

    const DELTA: i32 = 1;
    const CUMULATIVE: i32 = 2;

    fn s(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn i(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(value)),
            }),
            ..KeyValue::default()
        }
    }

    fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(OtlpResource {
                    attributes: resource,
                    ..OtlpResource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    fn metric(name: &str, unit: &str, data: Data) -> Metric {
        Metric {
            name: name.to_owned(),
            unit: unit.to_owned(),
            data: Some(data),
            ..Metric::default()
        }
    }

    fn rq_xx(temporality: i32, points: &[(&str, &str, i64)]) -> Metric {
        let data_points = points
            .iter()
            .map(|&(cluster, class, value)| NumberDataPoint {
                attributes: vec![s(ENVOY_CLUSTER, cluster), s(ENVOY_RESPONSE_CLASS, class)],
                value: Some(number_data_point::Value::AsInt(value)),
                ..NumberDataPoint::default()
            })
            .collect();
        metric(
            ENVOY_REQUESTS,
            "",
            Data::Sum(Sum {
                data_points,
                aggregation_temporality: temporality,
                is_monotonic: true,
            }),
        )
    }

    fn hist_point(attributes: Vec<KeyValue>, bounds: &[f64], counts: &[u64]) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            count: counts.iter().sum(),
            explicit_bounds: bounds.to_vec(),
            bucket_counts: counts.to_vec(),
            ..HistogramDataPoint::default()
        }
    }

    fn histogram(
        name: &str,
        unit: &str,
        temporality: i32,
        points: Vec<HistogramDataPoint>,
    ) -> Metric {
        metric(
            name,
            unit,
            Data::Histogram(OtlpHistogram {
                data_points: points,
                aggregation_temporality: temporality,
            }),
        )
    }

    /// A translation's outcome, owned.
    struct Translated {
        samples: std::collections::BTreeMap<String, crate::metrics_store::Sample>,
        used: u64,
        ignored: u64,
        rejected: u64,
        problems: Problems,
    }

    fn run(streams: &mut Streams, request: &ExportMetricsServiceRequest) -> Translated {
        let mutex = std::sync::Mutex::new(std::mem::take(streams));
        let t = translate(request, &mutex, 42);
        let translated = Translated {
            samples: t.totals.samples(42),
            used: t.used,
            ignored: t.ignored,
            rejected: t.rejected,
            problems: t.problems,
        };
        *streams = mutex.into_inner().unwrap();
        translated
    }

    #[test]
    fn envoy_delta_sums_and_histograms() {
        let bounds = [0.5, 1.0, 5.0, 10.0, 25.0, 50.0];
        let request = request(
            vec![s(SERVICE_NAME, "envoy")],
            vec![
                rq_xx(
                    DELTA,
                    &[("a", "2", 90), ("a", "5", 10), ("a", "4", 5), ("b", "2", 7)],
                ),
                histogram(
                    ENVOY_LATENCY,
                    "",
                    DELTA,
                    vec![hist_point(
                        vec![s(ENVOY_CLUSTER, "a")],
                        &bounds,
                        &[0, 10, 50, 30, 10, 5, 0],
                    )],
                ),
                metric(
                    "cluster.upstream_rq_active",
                    "",
                    Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default(); 3],
                    }),
                ),
            ],
        );
        let t = run(&mut Streams::default(), &request);
        assert_eq!((t.used, t.ignored, t.rejected), (5, 3, 0));
        let a = &t.samples["a"];
        assert_eq!((a.at_ms, a.requests, a.errors), (42, 105, 10));
        let latency = a.latency.as_ref().unwrap();
        assert_eq!(latency.bounds, bounds.to_vec());
        assert_eq!(latency.count(), 105);
        assert_eq!(latency.quantile(0.5), Some(4.4));
        let b = &t.samples["b"];
        assert_eq!((b.requests, b.errors, b.latency.is_none()), (7, 0, true));
    }

    #[test]
    fn the_filters_segment_counts_are_recorded_by_series() {
        use weir_policy::model::Variant;
        use weir_policy::segments::{Measure, metric_name};
        let name = |measure| {
            let bare = metric_name("c", "header:x-fw", "2.1", Variant::Canary, measure);
            format!("{WASM_CUSTOM_PREFIX}{bare}")
        };
        let sum = |measure, value| {
            metric(
                &name(measure),
                "",
                Data::Sum(Sum {
                    data_points: vec![NumberDataPoint {
                        value: Some(number_data_point::Value::AsInt(value)),
                        ..NumberDataPoint::default()
                    }],
                    aggregation_temporality: DELTA,
                    is_monotonic: true,
                }),
            )
        };
        let request = request(
            vec![s(SERVICE_NAME, "envoy")],
            vec![
                sum(Measure::Ok, 90),
                sum(Measure::Errors, 10),
                histogram(
                    &name(Measure::LatencyMs),
                    "",
                    DELTA,
                    vec![hist_point(vec![], &[10.0, 12.0], &[60, 40, 0])],
                ),
                // A latency that is not a histogram is refused.
                sum(Measure::LatencyMs, 1),
            ],
        );
        let t = run(&mut Streams::default(), &request);
        assert_eq!((t.used, t.rejected), (3, 1), "{:?}", t.problems.summary());
        let series = "weir.segment.c.header%3Ax-fw.2%2E1.canary";
        let sample = &t.samples[series];
        assert_eq!((sample.requests, sample.errors), (100, 10));
        assert_eq!(sample.latency.as_ref().unwrap().count(), 100);
    }

    #[test]
    fn envoy_connect_times_are_kept_by_the_reporting_envoys_region() {
        let bounds = [1.0, 5.0, 10.0, 50.0];
        let connect = || {
            histogram(
                ENVOY_CONNECT,
                "",
                DELTA,
                vec![hist_point(
                    vec![s(ENVOY_CLUSTER, "ingest-us")],
                    &bounds,
                    &[0, 0, 2, 6, 0],
                )],
            )
        };
        let mut store = crate::metrics_store::MetricsStore::new(60_000);
        store.know_clusters(["ingest-us"]);
        let streams = std::sync::Mutex::new(Streams::default());
        let with_region = request(
            vec![s(SERVICE_NAME, "envoy"), s(RESOURCE_REGION, "eu-west")],
            vec![connect()],
        );
        let t = translate(&with_region, &streams, 1_000);
        assert_eq!((t.used, t.ignored, t.rejected), (1, 0, 0));
        assert!(t.totals.clusters().is_empty(), "no request counts");
        t.totals.apply(&mut store, 1_000);
        // From an Envoy that does not say where it is, connect times mean nothing.
        let without = request(vec![s(SERVICE_NAME, "envoy")], vec![connect()]);
        let t = translate(&without, &streams, 1_000);
        assert_eq!((t.used, t.ignored, t.rejected), (0, 1, 0));
        t.totals.apply(&mut store, 1_000);

        let windows = store.connect_windows(1_000, 10_000);
        let [window] = windows.as_slice() else {
            panic!("one pair: {windows:?}");
        };
        assert_eq!(
            (
                window.region.as_str(),
                window.cluster.as_str(),
                window.connects
            ),
            ("eu-west", "ingest-us", 8)
        );
        // The 4th of 8: 2 below 10 ms, then a third of the way through (10, 50].
        assert_eq!(window.times.quantile(0.5).map(f64::round), Some(23.0));
        assert_eq!(store.window("ingest-us", 1_000, 10_000).requests, 0);
        assert_eq!(store.connect_pairs(), (1, 0));
    }

    #[test]
    fn envoy_points_without_what_is_needed_are_rejected() {
        let mut no_cluster = rq_xx(DELTA, &[("x", "5", 3)]);
        if let Some(Data::Sum(sum)) = &mut no_cluster.data {
            sum.data_points[0].attributes.remove(0);
        }
        let request = request(
            vec![],
            vec![
                no_cluster,
                rq_xx(
                    DELTA,
                    &[("a", "6", 1), ("a", "x", 1), ("a", "2", -4), ("a", "2", 1)],
                ),
                rq_xx(0, &[("a", "2", 1)]),
                metric(
                    ENVOY_REQUESTS,
                    "",
                    Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default(); 2],
                    }),
                ),
            ],
        );
        let t = run(&mut Streams::default(), &request);
        assert_eq!((t.used, t.ignored, t.rejected), (1, 0, 7));
        assert_eq!(t.samples["a"].requests, 1);
        let summary = t.problems.summary().unwrap();
        for expected in [
            "cluster.upstream_rq_xx: no attribute envoy.cluster_name (1 data point)",
            "envoy.response_code_class must be 1 to 5 (2 data points)",
            "negative value -4",
            "aggregation temporality unspecified",
            "expected a sum (2 data points)",
        ] {
            assert!(summary.contains(expected), "{expected} in {summary}");
        }
    }

    #[test]
    fn cumulative_sums_become_deltas_with_restarts() {
        let mut streams = Streams::default();
        let first = run(
            &mut streams,
            &request(
                vec![],
                vec![rq_xx(CUMULATIVE, &[("a", "2", 100), ("a", "5", 4)])],
            ),
        );
        assert_eq!(first.used, 2);
        assert!(first.samples.is_empty(), "the first value is a baseline");
        let second = run(
            &mut streams,
            &request(
                vec![],
                vec![rq_xx(CUMULATIVE, &[("a", "2", 150), ("a", "5", 6)])],
            ),
        );
        assert_eq!(
            (second.samples["a"].requests, second.samples["a"].errors),
            (52, 2)
        );
        // Envoy restarted: its counters start again from zero.
        let third = run(
            &mut streams,
            &request(
                vec![],
                vec![rq_xx(CUMULATIVE, &[("a", "2", 20), ("a", "5", 6)])],
            ),
        );
        assert_eq!(
            (third.samples["a"].requests, third.samples["a"].errors),
            (20, 0)
        );
        // Another resource is another source, new to weir: a baseline.
        let other = run(
            &mut streams,
            &request(
                vec![s("host", "2")],
                vec![rq_xx(CUMULATIVE, &[("a", "2", 500)])],
            ),
        );
        assert!(other.samples.is_empty());
        assert_eq!(streams.len(), 3);
        // A new stream from a source weir knows began since its last report:
        // Envoy reports a counter once it is used, so its first value counts.
        let first_errors = run(
            &mut streams,
            &request(
                vec![s("host", "2")],
                vec![rq_xx(CUMULATIVE, &[("a", "2", 510), ("b", "5", 3)])],
            ),
        );
        assert_eq!(first_errors.samples["a"].requests, 10);
        assert_eq!(
            (
                first_errors.samples["b"].requests,
                first_errors.samples["b"].errors
            ),
            (3, 3)
        );
    }

    #[test]
    fn a_series_that_started_within_the_window_counts_its_first_value() {
        const NOW_NS: u64 = 1_795_576_280_339_637_000;
        let sums = |start_ns: u64, time_ns: u64, value| {
            let mut metric = rq_xx(CUMULATIVE, &[("a", "2", value)]);
            if let Some(Data::Sum(sum)) = &mut metric.data {
                sum.data_points[0].start_time_unix_nano = start_ns;
                sum.data_points[0].time_unix_nano = time_ns;
            }
            request(vec![s("host", "new")], vec![metric])
        };
        let first = |request| run(&mut Streams::default(), &request).samples;
        // Started 2 s before the point: counted.
        let t = first(sums(NOW_NS - 2_000_000_000, NOW_NS, 30));
        assert_eq!(t["a"].requests, 30);
        // Envoy 1.40: the start in microseconds.
        let t = first(sums((NOW_NS - 3_000_000_000) / 1_000, NOW_NS, 7));
        assert_eq!(t["a"].requests, 7);
        // Started an hour ago, or not said: a baseline.
        assert!(first(sums(NOW_NS - 3_600_000_000_000, NOW_NS, 30)).is_empty());
        assert!(first(sums((NOW_NS - 3_600_000_000_000) / 1_000, NOW_NS, 30)).is_empty());
        assert!(first(sums(0, NOW_NS, 30)).is_empty());
        // No time on the point: weir's clock (42 ms after the epoch here).
        assert_eq!(first(sums(40_000_000, 0, 5))["a"].requests, 5);
        // A histogram's first value too.
        let mut histogram = histogram(
            ENVOY_LATENCY,
            "ms",
            CUMULATIVE,
            vec![hist_point(vec![s(ENVOY_CLUSTER, "a")], &[10.0], &[4, 1])],
        );
        if let Some(Data::Histogram(h)) = &mut histogram.data {
            h.data_points[0].start_time_unix_nano = NOW_NS - 1_000_000_000;
            h.data_points[0].time_unix_nano = NOW_NS;
        }
        let t = first(request(vec![], vec![histogram]));
        assert_eq!(t["a"].latency.as_ref().unwrap().counts, vec![4, 1]);
        // Later values count what they added, as before.
        let mut streams = Streams::default();
        run(&mut streams, &sums(NOW_NS - 1_000_000_000, NOW_NS, 10));
        let t = run(&mut streams, &sums(NOW_NS - 1_000_000_000, NOW_NS + 1, 25));
        assert_eq!(t.samples["a"].requests, 15);
    }

    #[test]
    fn cumulative_histograms_become_deltas() {
        let bounds = [10.0, 100.0];
        let point = |counts: &[u64]| {
            request(
                vec![],
                vec![histogram(
                    ENVOY_LATENCY,
                    "ms",
                    CUMULATIVE,
                    vec![hist_point(vec![s(ENVOY_CLUSTER, "a")], &bounds, counts)],
                )],
            )
        };
        let mut streams = Streams::default();
        assert!(run(&mut streams, &point(&[5, 5, 0])).samples.is_empty());
        let t = run(&mut streams, &point(&[8, 5, 1]));
        assert_eq!(
            t.samples["a"].latency.as_ref().unwrap().counts,
            vec![3, 0, 1]
        );
        let t = run(&mut streams, &point(&[1, 0, 0]));
        assert_eq!(
            t.samples["a"].latency.as_ref().unwrap().counts,
            vec![1, 0, 0]
        );
        // Nothing new: a sample with no latency.
        let t = run(&mut streams, &point(&[1, 0, 0]));
        assert_eq!(t.samples["a"].latency, None);
    }

    #[test]
    fn each_application_point_keeps_its_own_latency_for_its_segments() {
        let bounds = [0.01, 0.1];
        let header = |value: &str| s("http.request.header.x-device-type", value);
        let request = request(
            vec![s(WEIR_CLUSTER, "ingest-eu")],
            vec![histogram(
                APP_DURATION,
                "s",
                DELTA,
                vec![
                    hist_point(
                        vec![header("camera"), i(STATUS_CODE, 200)],
                        &bounds,
                        &[0, 1, 4],
                    ),
                    hist_point(
                        vec![header("sensor"), i(STATUS_CODE, 200)],
                        &bounds,
                        &[7, 0, 0],
                    ),
                ],
            )],
        );
        let streams = std::sync::Mutex::new(Streams::default());
        let t = translate(&request, &streams, 42);
        let [camera, sensor] = t.app_points.as_slice() else {
            panic!("two points: {:?}", t.app_points);
        };
        assert_eq!(
            camera.attribute("http.request.header.x-device-type"),
            Some("camera")
        );
        let (camera_bounds, camera_counts) = camera.latency(&t.app_counts).unwrap();
        assert_eq!(
            (camera_bounds, camera_counts),
            (&[10.0, 100.0][..], &[0, 1, 4][..])
        );
        assert_eq!(sensor.latency(&t.app_counts).unwrap().1, &[7, 0, 0]);
    }

    #[test]
    fn application_histograms_in_seconds_with_status_codes() {
        let bounds = [0.005, 0.01, 0.025, 0.05, 0.1];
        let request = request(
            vec![s(SERVICE_NAME, "checkout"), s(WEIR_CLUSTER, "ingest-eu")],
            vec![histogram(
                APP_DURATION,
                "s",
                DELTA,
                vec![
                    hist_point(vec![i(STATUS_CODE, 200)], &bounds, &[10, 60, 20, 5, 5, 0]),
                    hist_point(vec![i(STATUS_CODE, 503)], &bounds, &[0, 0, 0, 0, 2, 8]),
                    hist_point(
                        vec![s(STATUS_CODE, "500"), s(WEIR_CLUSTER, "ingest-us")],
                        &bounds,
                        &[0, 1, 0, 0, 0, 0],
                    ),
                    hist_point(vec![s(ERROR_TYPE, "timeout")], &bounds, &[0, 0, 0, 0, 0, 3]),
                    hist_point(vec![s(STATUS_CODE, "teapot")], &bounds, &[1, 0, 0, 0, 0, 0]),
                ],
            )],
        );
        let t = run(&mut Streams::default(), &request);
        assert_eq!((t.used, t.rejected), (4, 1));
        let eu = &t.samples["ingest-eu"];
        assert_eq!((eu.requests, eu.errors), (113, 13));
        let latency = eu.latency.as_ref().unwrap();
        assert_eq!(latency.bounds, vec![5.0, 10.0, 25.0, 50.0, 100.0]);
        assert_eq!(latency.counts, vec![10, 60, 20, 5, 7, 11]);
        let us = &t.samples["ingest-us"];
        assert_eq!((us.requests, us.errors), (1, 1));
        assert!(
            t.problems
                .summary()
                .unwrap()
                .contains("http.response.status_code is not an integer")
        );
        // No weir.cluster anywhere: service.name; nothing at all: rejected.
        let by_service = run(
            &mut Streams::default(),
            &super::tests::request(
                vec![s(SERVICE_NAME, "checkout")],
                vec![histogram(
                    APP_DURATION,
                    "ms",
                    DELTA,
                    vec![hist_point(vec![], &[1.0], &[1, 1])],
                )],
            ),
        );
        assert_eq!(
            by_service.samples["checkout"]
                .latency
                .as_ref()
                .unwrap()
                .bounds,
            vec![1.0]
        );
        let nowhere = run(
            &mut Streams::default(),
            &super::tests::request(
                vec![],
                vec![histogram(
                    APP_DURATION,
                    "ms",
                    DELTA,
                    vec![hist_point(vec![], &[1.0], &[1, 1])],
                )],
            ),
        );
        assert_eq!(nowhere.rejected, 1);
    }

    #[test]
    fn exponential_histograms_are_converted() {
        let point = |attributes, zero, offset, counts: &[u64]| ExponentialHistogramDataPoint {
            attributes,
            count: zero + counts.iter().sum::<u64>(),
            scale: 3,
            zero_count: zero,
            positive: Some(OtlpBuckets {
                offset,
                bucket_counts: counts.to_vec(),
            }),
            ..ExponentialHistogramDataPoint::default()
        };
        // Scale 3 (base 2^(1/8)): index -56 is (2^-7, 2^-6.875] s ≈ (7.8, 8.5] ms.
        let exp = |temporality, points| {
            request(
                vec![s(WEIR_CLUSTER, "c")],
                vec![metric(
                    APP_DURATION,
                    "s",
                    Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: points,
                        aggregation_temporality: temporality,
                    }),
                )],
            )
        };
        let t = run(
            &mut Streams::default(),
            &exp(
                DELTA,
                vec![
                    point(vec![i(STATUS_CODE, 200)], 2, -56, &[40]),
                    point(vec![i(STATUS_CODE, 500)], 0, -56, &[1]),
                ],
            ),
        );
        let c = &t.samples["c"];
        assert_eq!((c.requests, c.errors), (43, 1));
        let latency = c.latency.as_ref().unwrap();
        assert_eq!(latency.bounds, crate::otlp::EXPONENTIAL_BOUNDS_MS.to_vec());
        assert_eq!(latency.counts[0], 2);
        // (7.4, 8.8] ms holds it whole.
        let at = latency.bounds.iter().position(|&b| b == 8.8).unwrap();
        assert_eq!(latency.counts[at], 41, "{:?}", latency.counts);

        let mut streams = Streams::default();
        assert!(
            run(
                &mut streams,
                &exp(CUMULATIVE, vec![point(vec![], 0, -56, &[10])])
            )
            .samples
            .is_empty()
        );
        let t = run(
            &mut streams,
            &exp(CUMULATIVE, vec![point(vec![], 1, -56, &[14, 2])]),
        );
        assert_eq!(t.samples["c"].requests, 7);
        assert_eq!(t.samples["c"].latency.as_ref().unwrap().count(), 7);

        let mut bad = point(vec![], 0, 0, &[1]);
        bad.negative = Some(OtlpBuckets {
            offset: 0,
            bucket_counts: vec![1],
        });
        bad.count = 2;
        let mut wrong_count = point(vec![], 0, 0, &[1]);
        wrong_count.count = 5;
        let mut wrong_scale = point(vec![], 0, 0, &[1]);
        wrong_scale.scale = 21;
        let t = run(
            &mut Streams::default(),
            &exp(DELTA, vec![bad, wrong_count, wrong_scale]),
        );
        assert_eq!(t.rejected, 3);
        let summary = t.problems.summary().unwrap();
        assert!(summary.contains("negative durations"), "{summary}");
        assert!(summary.contains("scale 21"), "{summary}");
    }

    #[test]
    fn malformed_histograms_are_rejected() {
        let cluster = || vec![s(ENVOY_CLUSTER, "a")];
        let mut wrong_count = hist_point(cluster(), &[1.0], &[1, 1]);
        wrong_count.count = 3;
        let mut no_value = hist_point(cluster(), &[1.0], &[1, 1]);
        no_value.flags = NO_RECORDED_VALUE;
        let request = request(
            vec![],
            vec![
                histogram(
                    ENVOY_LATENCY,
                    "",
                    DELTA,
                    vec![
                        hist_point(cluster(), &[1.0, 2.0], &[1, 1]),
                        hist_point(cluster(), &[2.0, 1.0], &[1, 1, 1]),
                        hist_point(cluster(), &[f64::NAN], &[1, 1]),
                        hist_point(cluster(), &vec![1.0; 300], &[]),
                        wrong_count,
                        no_value,
                        hist_point(vec![], &[1.0], &[1, 1]),
                        hist_point(cluster(), &[1.0], &[0, 2]),
                    ],
                ),
                histogram(
                    APP_DURATION,
                    "{request}",
                    DELTA,
                    vec![hist_point(cluster(), &[1.0], &[1, 1])],
                ),
            ],
        );
        let t = run(&mut Streams::default(), &request);
        assert_eq!((t.used, t.ignored, t.rejected), (1, 1, 7));
        assert_eq!(t.samples["a"].latency.as_ref().unwrap().counts, vec![0, 2]);
        let summary = t.problems.summary().unwrap();
        for expected in [
            "2 bucket_counts for 2 explicit_bounds (expected 3)",
            "explicit_bounds must be finite and strictly increasing (2 data points)",
            "more than 256 explicit_bounds",
            "count 3 is not the sum of bucket_counts",
            "no attribute envoy.cluster_name",
            "http.server.request.duration: unit \"{request}\"",
        ] {
            assert!(summary.contains(expected), "{expected} in {summary}");
        }
    }

    #[test]
    fn problems_are_summarised_briefly() {
        let mut p = Problems::default();
        for n in 0..20 {
            p.add(format!("problem {}", n % 10));
        }
        let summary = p.summary().unwrap();
        assert!(
            summary.starts_with("problem 0 (2 data points); problem 1"),
            "{summary}"
        );
        assert!(summary.ends_with("; and 4 more data points"), "{summary}");
        assert_eq!(Problems::default().summary(), None);
    }
}
