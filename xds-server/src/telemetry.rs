//! Weir's own metrics, in the Prometheus text format (`GET /metrics` on the
//! admin API): xDS pushes, ACKs and NACKs, connected Envoys, OTLP ingestion,
//! controller decisions, canary weights, SLA scores, policy reloads, and the
//! fleet's admission counts. `docs/metrics.md` describes each one.
//!
//! This is the one table of their names: [`render`] builds every metric of a
//! scrape. Most are read at scrape time from where they already live (the
//! node registry, the OTLP counters, the controller, the metrics store);
//! only events that leave no other trace — decisions, policy reloads — are
//! counted here, by [`Telemetry`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;
use weir_policy::Feed;

use crate::controller::{Decision, Phase, RolloutState, SlaStatus, Verdict};
use crate::metrics_store::Admission;
use crate::xds::{AckLatency, XdsCounts, type_name};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A metric's labels, in order.
type Labels = Vec<(&'static str, String)>;

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Who took a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The controller, from the metrics (or from a policy change).
    Controller,
    /// An operator, through the admin API.
    Operator,
}

impl Origin {
    fn name(self) -> &'static str {
        match self {
            Origin::Controller => "controller",
            Origin::Operator => "operator",
        }
    }
}

/// The events `serve` reports as they happen. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    events: Arc<Events>,
}

#[derive(Debug, Default)]
struct Events {
    decisions: Family<Labels, Counter>,
    policy_reloads: Counter,
    policy_rejections: Counter,
    state_save_failures: Counter,
    /// Whether the controller's last save failed.
    state_unsaved: AtomicBool,
}

impl Telemetry {
    /// Rollout decisions were taken (and persisted).
    pub fn decisions(&self, decisions: &[Decision], origin: Origin) {
        for decision in decisions {
            let labels = vec![
                ("canary", decision.canary.clone()),
                ("kind", decision_kind(decision).to_owned()),
                ("phase", phase_name(decision.to).to_owned()),
                ("origin", origin.name().to_owned()),
            ];
            self.events.decisions.get_or_create(&labels).inc();
        }
    }

    /// An edit of the policy file was applied.
    pub fn policy_applied(&self) {
        self.events.policy_reloads.inc();
    }

    /// An edit of the policy file was refused (the last good one keeps serving).
    pub fn policy_rejected(&self) {
        self.events.policy_rejections.inc();
    }

    /// The controller's state was saved; whether the save before had failed.
    pub fn state_saved(&self) -> bool {
        self.events.state_unsaved.swap(false, Ordering::Relaxed)
    }

    /// The controller's state could not be saved; whether the save before
    /// had succeeded (a new failure, worth a log line).
    pub fn state_not_saved(&self) -> bool {
        self.events.state_save_failures.inc();
        !self.events.state_unsaved.swap(true, Ordering::Relaxed)
    }
}

/// What kind of move a decision is: `start` (a rollout started, or the
/// policy restarted or re-stepped it), `advance` (to a higher step),
/// `promote`, `rollback` (by analysis or an operator's abort), `pause` or
/// `resume`.
pub fn decision_kind(decision: &Decision) -> &'static str {
    match (decision.from, decision.to) {
        (_, Phase::Promoted) => "promote",
        (_, Phase::RolledBack) => "rollback",
        (_, Phase::Paused) => "pause",
        (Phase::Paused, Phase::Progressing) => "resume",
        (Phase::Progressing, Phase::Progressing)
            if decision.weight_bp > decision.from_weight_bp =>
        {
            "advance"
        }
        _ => "start",
    }
}

/// The decisions a rollout can take: kind, phase entered, and by whom.
const DECISION_SERIES: [(&str, &str, Origin); 8] = [
    ("start", "progressing", Origin::Controller),
    ("advance", "progressing", Origin::Controller),
    ("promote", "promoted", Origin::Controller),
    ("rollback", "rolled_back", Origin::Controller),
    ("pause", "paused", Origin::Operator),
    ("resume", "progressing", Origin::Operator),
    ("promote", "promoted", Origin::Operator),
    ("rollback", "rolled_back", Origin::Operator),
];

/// A phase as the API spells it.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "progressing",
        Phase::Paused => "paused",
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled_back",
    }
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Healthy => "healthy",
        Verdict::Bad => "bad",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// Everything a scrape reads, gathered by the admin API.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// The node registry's counts.
    pub xds: XdsCounts,
    /// The OTLP receivers' counters (`Ingest::status`).
    pub otlp: Value,
    /// Every rollout.
    pub rollouts: Vec<RolloutState>,
    /// Each rollout's latest verdict, by canary.
    pub verdicts: Vec<(String, Verdict)>,
    /// The feed served (the controller's, with pinned values over it).
    pub feed: Option<Feed>,
    /// Every cluster's SLA figures.
    pub sla: Vec<SlaStatus>,
    /// Whether the policy file's last edit (or snapshot) failed.
    pub policy_error: bool,
    /// The fleet's admission counts, as its filters report them.
    pub admission: Option<Admission>,
    /// The xDS ACK latency histograms.
    pub ack_latency: Option<AckLatency>,
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, FloatGauge> {
    let family = Family::<Labels, FloatGauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = FloatGauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

/// Every metric, in the Prometheus text format (version 0.0.4).
pub fn render(telemetry: &Telemetry, scrape: &Scrape) -> String {
    // A registry per scrape: values read now, and no series left behind by
    // a canary or a cluster the policy no longer has.
    let mut registry = Registry::default();
    let r = &mut registry;
    gauge_family(
        r,
        "weir_build_info",
        "The weir binary: 1, labelled with its version",
    )
    .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
    .set(1.0);

    // xDS.
    let pushes = counter_family(r, "weir_xds_pushes", "xDS responses sent, by type");
    let acks = counter_family(r, "weir_xds_acks", "xDS responses Envoys accepted, by type");
    let nacks = counter_family(
        r,
        "weir_xds_nacks",
        "xDS responses Envoys rejected, by type",
    );
    for (type_url, counts) in &scrape.xds.types {
        let labels = label("type", type_name(type_url).unwrap_or(type_url));
        pushes.get_or_create(&labels).inc_by(counts.pushes);
        acks.get_or_create(&labels).inc_by(counts.acks);
        nacks.get_or_create(&labels).inc_by(counts.nacks);
    }
    counter(
        r,
        "weir_xds_streams_opened",
        "ADS streams opened",
        scrape.xds.streams_opened,
    );
    gauge(
        r,
        "weir_xds_streams",
        "ADS streams open now",
        scrape.xds.streams as f64,
    );
    gauge(
        r,
        "weir_xds_nodes_connected",
        "Envoy nodes with an ADS stream open now",
        scrape.xds.nodes_connected as f64,
    );
    gauge(
        r,
        "weir_xds_nodes_stale",
        "Connected Envoy nodes that have left a response unanswered for over 30 s",
        scrape.xds.nodes_stale as f64,
    );
    if let Some(latency) = &scrape.ack_latency {
        r.register(
            "weir_xds_ack_latency_seconds",
            "From an xDS response sent to an Envoy (the oldest it had not answered) to its ACK, by type",
            latency.clone(),
        );
    }

    // OTLP ingestion.
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let requests = counter_family(
        r,
        "weir_otlp_requests",
        "OTLP export requests received, by transport",
    );
    for transport in ["grpc", "http", "in_process"] {
        requests
            .get_or_create(&label("transport", transport))
            .inc_by(count(&scrape.otlp["requests"][transport]));
    }
    let refused = counter_family(
        r,
        "weir_otlp_refused_requests",
        "OTLP export requests refused as a whole, by reason",
    );
    for reason in ["malformed", "too_large", "unsupported"] {
        refused
            .get_or_create(&label("reason", reason))
            .inc_by(count(&scrape.otlp["refused_requests"][reason]));
    }
    let points = counter_family(
        r,
        "weir_otlp_data_points",
        "OTLP data points received, by outcome: used, ignored (accepted, not used) or rejected",
    );
    for outcome in ["used", "ignored", "rejected"] {
        points
            .get_or_create(&label("outcome", outcome))
            .inc_by(count(&scrape.otlp["data_points"][outcome]));
    }

    counter_family(
        r,
        "weir_otlp_cluster_reports_refused",
        "Reports of a cluster the policy does not name, refused because the store keeps at most 1024 of those",
    )
    .get_or_create(&Labels::default())
    .inc_by(count(&scrape.otlp["cluster_reports_refused"]));
    counter_family(
        r,
        "weir_otlp_segment_reports_refused",
        "Reports of a device segment refused: not of a canary the policy names, or past 8 dimensions per canary",
    )
    .get_or_create(&Labels::default())
    .inc_by(count(&scrape.otlp["segment_reports_refused"]));
    counter_family(
        r,
        "weir_otlp_connect_reports_refused",
        "Connect times refused: to a cluster the policy does not name, from a region name over 64 bytes, or past 1024 (region, cluster) pairs",
    )
    .get_or_create(&Labels::default())
    .inc_by(count(&scrape.otlp["connect_reports_refused"]));

    // Rollouts. Each rollout's decision series exist from the start, at 0:
    // `increase()` over a series that appears at 1 would miss that first
    // decision (a rollback alert would not fire for a canary's first).
    for rollout in &scrape.rollouts {
        for (kind, phase, origin) in DECISION_SERIES {
            let labels = vec![
                ("canary", rollout.canary.clone()),
                ("kind", kind.to_owned()),
                ("phase", phase.to_owned()),
                ("origin", origin.name().to_owned()),
            ];
            drop(telemetry.events.decisions.get_or_create(&labels));
        }
    }
    let decisions = telemetry.events.decisions.clone();
    r.register(
        "weir_rollout_decisions",
        "Rollout decisions since weir started, by canary, kind, phase entered and origin",
        decisions,
    );
    let weight = gauge_family(
        r,
        "weir_canary_weight_basis_points",
        "Each canary's weight in the feed served, in basis points (10000 = 100 %)",
    );
    let feed = scrape.feed.as_ref();
    for (canary, bp) in feed.iter().flat_map(|f| &f.canary_weights) {
        weight
            .get_or_create(&label("canary", canary.clone()))
            .set(f64::from(*bp));
    }
    let step = gauge_family(r, "weir_rollout_step", "Each rollout's step (0 = first)");
    let phase = gauge_family(
        r,
        "weir_rollout_phase",
        "Each rollout's phase: 1 for the phase it is in, 0 for the others",
    );
    for rollout in &scrape.rollouts {
        step.get_or_create(&label("canary", rollout.canary.clone()))
            .set(rollout.step as f64);
        for p in [
            Phase::Progressing,
            Phase::Paused,
            Phase::Promoted,
            Phase::RolledBack,
        ] {
            let labels = vec![
                ("canary", rollout.canary.clone()),
                ("phase", phase_name(p).to_owned()),
            ];
            phase
                .get_or_create(&labels)
                .set(if p == rollout.phase { 1.0 } else { 0.0 });
        }
    }
    let verdict = gauge_family(
        r,
        "weir_rollout_verdict",
        "Each rollout's latest verdict: 1 for the verdict, 0 for the others",
    );
    for (canary, v) in &scrape.verdicts {
        for candidate in [Verdict::Healthy, Verdict::Bad, Verdict::Inconclusive] {
            let labels = vec![
                ("canary", canary.clone()),
                ("verdict", verdict_name(candidate).to_owned()),
            ];
            verdict
                .get_or_create(&labels)
                .set(if candidate == *v { 1.0 } else { 0.0 });
        }
    }

    // Clusters.
    let score = gauge_family(
        r,
        "weir_cluster_sla_score",
        "Each cluster's SLA score in the feed served (0.2 to 1)",
    );
    for (cluster, s) in feed.iter().flat_map(|f| &f.sla_scores) {
        score
            .get_or_create(&label("cluster", cluster.clone()))
            .set(*s);
    }
    let p99 = gauge_family(
        r,
        "weir_cluster_p99_milliseconds",
        "Each cluster's p99 latency over the analysis window, when it has data",
    );
    let target = gauge_family(
        r,
        "weir_cluster_p99_target_milliseconds",
        "Each cluster's p99 target (its service's SLA)",
    );
    for sla in &scrape.sla {
        let labels = label("cluster", sla.cluster.clone());
        if let Some(v) = sla.p99_ms.filter(|v| v.is_finite()) {
            p99.get_or_create(&labels).set(v);
        }
        if let Some(v) = sla.target_p99_ms.filter(|v| v.is_finite()) {
            target.get_or_create(&labels).set(v);
        }
    }
    if let Some(limit) = feed.and_then(|f| f.concurrency_limit) {
        gauge(
            r,
            "weir_concurrency_limit",
            "The concurrency limit in the feed served",
            f64::from(limit),
        );
    }

    // Policy.
    r.register(
        "weir_policy_reloads",
        "Edits of the policy file applied",
        telemetry.events.policy_reloads.clone(),
    );
    r.register(
        "weir_policy_rejections",
        "Edits of the policy file refused (the last good policy kept serving)",
        telemetry.events.policy_rejections.clone(),
    );
    gauge(
        r,
        "weir_policy_error",
        "1 while the policy file's last edit is refused, else 0",
        if scrape.policy_error { 1.0 } else { 0.0 },
    );

    // Faults.
    r.register(
        "weir_state_save_failures",
        "Saves of the controller's state that failed (disk full, lost store)",
        telemetry.events.state_save_failures.clone(),
    );
    gauge(
        r,
        "weir_state_unsaved",
        "1 while the controller's state cannot be saved (moves toward stable are still served), else 0",
        if telemetry.events.state_unsaved.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    counter(
        r,
        "weir_panics",
        "Panics since weir started (see GET /healthz)",
        crate::health::panics(),
    );

    // The fleet's admission, as its filters report it.
    if let Some(admission) = &scrape.admission {
        let requests = counter_family(
            r,
            "weir_fleet_admission_requests",
            "Requests by priority class and admission outcome (admitted, queued, released, shed), as the filters report them",
        );
        for (class, counts) in &admission.classes {
            for (outcome, value) in [
                ("admitted", counts.admitted),
                ("queued", counts.queued),
                ("released", counts.released),
                ("shed", counts.shed),
            ] {
                let labels = vec![("class", class.clone()), ("outcome", outcome.to_owned())];
                requests.get_or_create(&labels).inc_by(value);
            }
        }
        gauge(
            r,
            "weir_fleet_admission_sources",
            "Sources (Envoys) whose admission reports are summed",
            admission.sources as f64,
        );
        gauge(
            r,
            "weir_fleet_in_flight",
            "Requests in flight across the fleet's filters",
            admission.in_flight as f64,
        );
        gauge(
            r,
            "weir_fleet_queue_depth",
            "Requests waiting in the fleet's admission queues",
            admission.queue_depth as f64,
        );
    }

    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    sort_series(&text)
}

/// The same exposition with each metric's series in label order (families
/// keep them in a hash map), so that readers and diffs see a stable page.
fn sort_series(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<&str> = Vec::new();
    let flush = |series: &mut Vec<&str>, out: &mut String| {
        series.sort_unstable();
        for line in series.drain(..) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut series, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            series.push(line);
        }
    }
    flush(&mut series, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Evidence;

    fn decision(from: Phase, to: Phase, from_weight_bp: u32, weight_bp: u32) -> Decision {
        Decision {
            at_ms: 0,
            canary: "c".into(),
            from,
            to,
            step: 0,
            from_weight_bp,
            weight_bp,
            reason: String::new(),
            evidence: Evidence::none(1),
            policy: String::new(),
        }
    }

    #[test]
    fn decisions_are_classified() {
        use Phase::*;
        let kind = |from, to, a, b| decision_kind(&decision(from, to, a, b));
        assert_eq!(kind(Progressing, Progressing, 100, 500), "advance");
        assert_eq!(kind(Progressing, Progressing, 100, 100), "start");
        assert_eq!(kind(Promoted, Progressing, 10_000, 100), "start");
        assert_eq!(kind(Progressing, Paused, 100, 100), "pause");
        assert_eq!(kind(Paused, Progressing, 100, 100), "resume");
        assert_eq!(kind(Paused, Promoted, 100, 10_000), "promote");
        assert_eq!(kind(Progressing, RolledBack, 100, 0), "rollback");
    }

    #[test]
    fn renders_counters_and_gauges_with_their_labels() {
        let telemetry = Telemetry::default();
        telemetry.decisions(
            &[decision(Phase::Progressing, Phase::Paused, 100, 100)],
            Origin::Operator,
        );
        telemetry.policy_rejected();
        let feed = Feed {
            canary_mirrors: Default::default(),
            rtt_ms: Default::default(),
            canary_weights: [("c".to_owned(), 2_500)].into(),
            sla_scores: [("a".to_owned(), 0.75)].into(),
            concurrency_limit: None,
        };
        let rollout = RolloutState::for_tests("c", 2_500, Phase::Paused);
        let scrape = Scrape {
            otlp: serde_json::json!({"requests": {"http": 3}, "data_points": {"rejected": 2}}),
            feed: Some(feed),
            rollouts: vec![rollout],
            ..Scrape::default()
        };
        let text = render(&telemetry, &scrape);
        for line in [
            "# TYPE weir_rollout_decisions_total counter",
            r#"weir_rollout_decisions_total{canary="c",kind="pause",phase="paused",origin="operator"} 1"#,
            // A rollback not taken yet is there at 0, for increase() to see the first.
            r#"weir_rollout_decisions_total{canary="c",kind="rollback",phase="rolled_back",origin="controller"} 0"#,
            "weir_policy_rejections_total 1",
            "weir_policy_reloads_total 0",
            r#"weir_canary_weight_basis_points{canary="c"} 2500.0"#,
            r#"weir_cluster_sla_score{cluster="a"} 0.75"#,
            r#"weir_otlp_requests_total{transport="http"} 3"#,
            r#"weir_otlp_data_points_total{outcome="rejected"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
