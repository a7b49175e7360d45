//! Applications reporting their request durations through the OpenTelemetry
//! Python SDK's own OTLP/HTTP exporter (`.tools/otel-venv`, made by
//! `scripts/setup.sh`), as a running service does.

use crate::paths;

/// The OpenTelemetry Python SDK's own OTLP/HTTP exporter, as running
/// applications use it: one per `(cluster, seconds)`, each recording
/// `seconds`-long requests for `rounds` of 0.35 s and exporting every 300 ms
/// (cumulative, the SDK's default), with the SDK's default histogram buckets
/// (0, 5, 10, 25, … in the instrument's unit, seconds here).
pub fn report(admin: &str, apps: &[(&str, f64)], rounds: u32) {
    let python = paths::repo_root().join(".tools/otel-venv/bin/python");
    assert!(
        python.exists(),
        "run `make setup` for the OpenTelemetry SDK"
    );
    let apps = apps
        .iter()
        .map(|(cluster, seconds)| format!("(\"{cluster}\", {seconds})"))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        r#"
import time
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
apps = []
for cluster, seconds in [{apps}]:
    exporter = OTLPMetricExporter(endpoint="http://{admin}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=300)
    provider = MeterProvider(resource=Resource.create({{"service.name": cluster}}), metric_readers=[reader])
    histogram = provider.get_meter("app").create_histogram("http.server.request.duration", unit="s")
    apps.append((provider, histogram, seconds))
for _ in range({rounds}):
    for _, histogram, seconds in apps:
        for _ in range(20):
            histogram.record(seconds, {{"http.response.status_code": 200}})
    time.sleep(0.35)
for provider, _, _ in apps:
    provider.shutdown()
"#
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
