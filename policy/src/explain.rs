//! A decision in words, stage by stage: what `weir explain` prints and the
//! dashboard's simulator shows, from one renderer.

use serde::Serialize;

use crate::admission::Arrival;
use crate::engine::Targeted;
use crate::model::Variant;
use crate::{Decision, Engine, Request};

/// One stage of the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// `policy`, `request`, `classify`, `admit`, `route`, `split` or `cluster`.
    pub name: &'static str,
    /// Its outcome in a word or a name: the class, `admit`/`queue`/`shed`,
    /// the placement, the variant, the cluster.
    pub outcome: String,
    /// What `weir explain` prints for it.
    pub lines: Vec<String>,
}

impl Stage {
    /// A stage with its outcome and lines.
    pub fn new(name: &'static str, outcome: impl Into<String>, lines: Vec<String>) -> Self {
        Self {
            name,
            outcome: outcome.into(),
            lines,
        }
    }
}

/// The stages of `decision` for `request`: request, classify, admit, route,
/// and split and cluster when the request is steered.
/// An empty `request.host` is shown as "(any)".
pub fn stages(request: &Request<'_>, engine: &Engine, decision: &Decision) -> Vec<Stage> {
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
        Arrival::Admit => (
            "admit",
            format!("admit: {} in flight < limit {}", a.in_flight, a.limit),
        ),
        Arrival::Queue { max_wait_ms } => (
            "queue",
            format!(
                "queue: {} in flight, the limit is {}; waits at most {max_wait_ms} ms for the next free slot (highest class first), then shed",
                a.in_flight, a.limit
            ),
        ),
        Arrival::Shed { retry_after_s, .. } => (
            "shed",
            format!(
                "shed: {} in flight, the limit is {}, and the class may not wait; 503, retry-after {retry_after_s}",
                a.in_flight, a.limit
            ),
        ),
    };
    stages.push(Stage::new(
        "admit",
        outcome,
        vec![format!("admit      {verdict}")],
    ));

    let Some(route) = &decision.route else {
        stages.push(Stage::new(
            "route",
            "not steered",
            vec!["route      no service matches: the request is not steered".to_owned()],
        ));
        return stages;
    };
    let candidates = if route.targeted {
        "the placements whose `match` the request satisfies"
    } else {
        "the placements without a `match`"
    };
    let mut lines = vec![
        format!("service    {}", route.service),
        format!("target     {candidates}"),
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
        let measured = if c.rtt_measured {
            "  (rtt measured)"
        } else {
            ""
        };
        lines.push(format!(
            "           {:<24} {:>8} {:>6.3} {:>7.3} {:>6.3} {:>7.3}{near}{measured}",
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
        let why = match split.targeted {
            Some(Targeted::Always) => "the canary's `always` conditions hold".to_owned(),
            Some(Targeted::Never) => "the canary's `never` conditions hold".to_owned(),
            None => format!("bucket {} ({keyed})", split.bucket),
        };
        let mut lines = vec![format!(
            "split      canary {} at {:.2}% ({} bp): {why} → {variant}",
            split.canary_cluster,
            f64::from(split.weight_bp) / 100.0,
            split.weight_bp,
        )];
        if split.mirror_bp > 0 {
            let copied = if split.mirrored {
                "a copy goes to the canary, its response dropped"
            } else {
                "not mirrored"
            };
            lines.push(format!(
                "mirror     {:.2}% ({} bp) of the devices mirrored to {}: bucket {} → {copied}",
                f64::from(split.mirror_bp) / 100.0,
                split.mirror_bp,
                split.canary_cluster,
                split.bucket
            ));
        }
        stages.push(Stage::new("split", variant, lines));
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
pub fn text(stages: &[Stage]) -> String {
    let mut out = String::new();
    for line in stages.iter().flat_map(|s| &s.lines) {
        out.push_str(line);
        out.push('\n');
    }
    out
}
