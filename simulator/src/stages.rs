//! The stages of a decision, in words: line for line what `weir explain`
//! prints (`xds-server/src/cli/explain.rs`), grouped by stage so that the
//! dashboard can show each with its outcome.

use serde::Serialize;
use weir_policy::engine::Verdict;
use weir_policy::model::Variant;
use weir_policy::{Decision, Engine, Policy};

use crate::Problem;

/// One stage of the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// `policy`, `request`, `classify`, `admit`, `route`, `split` or `cluster`.
    pub name: &'static str,
    /// Its outcome in a word or a name: the class, `admit`/`queue`/`shed`,
    /// the placement, the variant, the cluster.
    pub outcome: String,
    /// What `weir explain` prints for it (the `policy` stage is the
    /// simulator's own).
    pub lines: Vec<String>,
}

impl Stage {
    fn new(name: &'static str, outcome: impl Into<String>, lines: Vec<String>) -> Self {
        Self {
            name,
            outcome: outcome.into(),
            lines,
        }
    }
}

/// The request as shown.
pub(crate) struct Shown<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a [(String, String)],
}

pub(crate) fn policy_invalid(problems: &[Problem]) -> Stage {
    let n = problems.len();
    let mut lines: Vec<String> = problems.iter().map(|p| p.text.clone()).collect();
    lines.push(format!("{n} error{}", if n == 1 { "" } else { "s" }));
    let kind = problems.first().map_or("invalid", |p| p.kind);
    Stage::new("policy", format!("{kind} error"), lines)
}

pub(crate) fn policy_valid(policy: &Policy, feed_ok: bool) -> Stage {
    let canaries = policy
        .services
        .iter()
        .flat_map(|s| &s.placements)
        .filter(|p| p.canary.is_some())
        .count();
    let line = format!(
        "policy     valid: {} classes, {} services, {} clusters, {} canar{}",
        policy.priority.classes.len(),
        policy.services.len(),
        policy.clusters.len(),
        canaries,
        if canaries == 1 { "y" } else { "ies" }
    );
    let outcome = if feed_ok { "valid" } else { "feed rejected" };
    Stage::new("policy", outcome, vec![line])
}

/// The stages after the policy's, exactly as `weir explain` renders them.
pub(crate) fn explain(request: &Shown<'_>, engine: &Engine, decision: &Decision) -> Vec<Stage> {
    let mut stages = Vec::new();
    let headers: Vec<String> = request
        .headers
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let host = if request.host.is_empty() {
        "(any)"
    } else {
        request.host
    };
    stages.push(Stage::new(
        "request",
        format!("{} {}", request.method, request.path),
        vec![format!(
            "request    {} {}  host {host}  headers [{}]",
            request.method,
            request.path,
            headers.join(", ")
        )],
    ));

    let class = &decision.class;
    let why = match class.rule {
        Some(rule) => format!("matched priority.rules[{rule}]"),
        None => "no rule matched: the default class".to_owned(),
    };
    stages.push(Stage::new(
        "classify",
        class.name.clone(),
        vec![format!(
            "classify   {} (rank {} of {}), {why}",
            class.name,
            class.rank + 1,
            engine.classes().len()
        )],
    ));

    let a = &decision.admission;
    let (outcome, verdict) = match a.verdict {
        Verdict::Admit => (
            "admit",
            format!(
                "admit: {} in flight < threshold {}",
                a.in_flight, a.threshold
            ),
        ),
        Verdict::Queue { max_wait_ms } => (
            "queue",
            format!(
                "queue: {} in flight ≥ threshold {}; waits at most {max_wait_ms} ms, then shed",
                a.in_flight, a.threshold
            ),
        ),
        Verdict::Shed { retry_after_s } => (
            "shed",
            format!(
                "shed: {} in flight ≥ threshold {} and the class may not wait; 503, retry-after {retry_after_s}",
                a.in_flight, a.threshold
            ),
        ),
    };
    stages.push(Stage::new(
        "admit",
        outcome,
        vec![format!("admit      {verdict} (limit {})", a.limit)],
    ));

    let Some(route) = &decision.route else {
        stages.push(Stage::new(
            "route",
            "not steered",
            vec!["route      no service matches: the request is not steered".to_owned()],
        ));
        return stages;
    };
    let mut lines = vec![
        format!("service    {}", route.service),
        format!(
            "score      {:<24} {:>8} {:>6} {:>7} {:>6} {:>7}",
            "cluster", "rtt", "geo", "device", "sla", "score"
        ),
    ];
    for c in &route.candidates {
        let rtt = c
            .rtt_ms
            .map_or("unknown".to_owned(), |ms| format!("{ms} ms"));
        let near = if route.near_best.contains(&c.cluster) {
            "  near best"
        } else {
            ""
        };
        lines.push(format!(
            "           {:<24} {:>8} {:>6.3} {:>7.3} {:>6.3} {:>7.3}{near}",
            c.cluster, rtt, c.geo, c.device, c.sla, c.score
        ));
    }
    lines.push(format!(
        "route      {} (among {})",
        route.placement,
        route.near_best.join(", ")
    ));
    stages.push(Stage::new("route", route.placement.clone(), lines));

    if let Some(split) = &route.split {
        let keyed = if split.sticky {
            "sticky on the device id"
        } else {
            "no device id: not sticky"
        };
        let variant = match split.variant {
            Variant::Canary => "canary",
            Variant::Stable => "stable",
        };
        stages.push(Stage::new(
            "split",
            variant,
            vec![format!(
                "split      canary {} at {:.2}% ({} bp): bucket {} ({keyed}) → {variant}",
                split.canary_cluster,
                f64::from(split.weight_bp) / 100.0,
                split.weight_bp,
                split.bucket
            )],
        ));
    }
    let cluster = route.cluster().to_owned();
    stages.push(Stage::new(
        "cluster",
        cluster.clone(),
        vec![format!("cluster    {cluster}")],
    ));
    stages
}

/// The stages' lines as one text, as `weir explain` prints it.
pub(crate) fn text(stages: &[Stage]) -> String {
    let mut out = String::new();
    for line in stages.iter().flat_map(|s| &s.lines) {
        out.push_str(line);
        out.push('\n');
    }
    out
}
