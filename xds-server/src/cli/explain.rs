//! `weir explain`: what the filter would decide for a request, from the same
//! engine the filter runs.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use weir_policy::engine::Verdict;
use weir_policy::model::Variant;
use weir_policy::{Decision, Engine, Feed, Request};

#[derive(Debug, Args)]
pub(super) struct ExplainArgs {
    /// The policy file.
    file: PathBuf,
    /// The request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request host (`:authority`).
    #[arg(long, default_value = "")]
    host: String,
    /// A request header, as NAME=VALUE; repeat for more.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Requests already in flight, for the admission stage.
    #[arg(long, default_value_t = 0)]
    in_flight: u64,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_ascii_lowercase(), value.to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

#[derive(Serialize)]
struct Explained<'a> {
    request: RequestShown<'a>,
    #[serde(flatten)]
    decision: &'a Decision,
}

#[derive(Serialize)]
struct RequestShown<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    headers: &'a [(String, String)],
}

pub(super) fn run(args: &ExplainArgs) -> bool {
    let Some(policy) = super::policy_file::load(&args.file) else {
        return false;
    };
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let request = Request {
        method: &args.method,
        host: &args.host,
        path: &args.path,
        headers: &args.headers,
    };
    // Requests without a device id are spread by a counter in the filter; 0 here.
    let decision = engine.decide(&request, args.in_flight, 0);
    if args.json {
        let explained = Explained {
            request: RequestShown {
                method: &args.method,
                host: &args.host,
                path: &args.path,
                headers: &args.headers,
            },
            decision: &decision,
        };
        return super::print_json(&explained, false);
    }
    super::emit(&render(args, &engine, &decision))
}

fn render(args: &ExplainArgs, engine: &Engine, decision: &Decision) -> String {
    let mut out = String::new();
    let headers: Vec<String> = args
        .headers
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let host = if args.host.is_empty() {
        "(any)"
    } else {
        &args.host
    };
    let _ = writeln!(
        out,
        "request    {} {}  host {host}  headers [{}]",
        args.method,
        args.path,
        headers.join(", ")
    );

    let class = &decision.class;
    let why = match class.rule {
        Some(rule) => format!("matched priority.rules[{rule}]"),
        None => "no rule matched: the default class".to_owned(),
    };
    let _ = writeln!(
        out,
        "classify   {} (rank {} of {}), {why}",
        class.name,
        class.rank + 1,
        engine.classes().len()
    );

    let a = &decision.admission;
    let verdict = match a.verdict {
        Verdict::Admit => format!(
            "admit: {} in flight < threshold {}",
            a.in_flight, a.threshold
        ),
        Verdict::Queue { max_wait_ms } => format!(
            "queue: {} in flight ≥ threshold {}; waits at most {max_wait_ms} ms, then shed",
            a.in_flight, a.threshold
        ),
        Verdict::Shed { retry_after_s } => format!(
            "shed: {} in flight ≥ threshold {} and the class may not wait; 503, retry-after {retry_after_s}",
            a.in_flight, a.threshold
        ),
    };
    let _ = writeln!(out, "admit      {verdict} (limit {})", a.limit);

    let Some(route) = &decision.route else {
        let _ = writeln!(
            out,
            "route      no service matches: the request is not steered"
        );
        return out;
    };
    let _ = writeln!(out, "service    {}", route.service);
    let _ = writeln!(
        out,
        "score      {:<24} {:>8} {:>6} {:>7} {:>6} {:>7}",
        "cluster", "rtt", "geo", "device", "sla", "score"
    );
    for c in &route.candidates {
        let rtt = c
            .rtt_ms
            .map_or("unknown".to_owned(), |ms| format!("{ms} ms"));
        let near = if route.near_best.contains(&c.cluster) {
            "  near best"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "           {:<24} {:>8} {:>6.3} {:>7.3} {:>6.3} {:>7.3}{near}",
            c.cluster, rtt, c.geo, c.device, c.sla, c.score
        );
    }
    let _ = writeln!(
        out,
        "route      {} (among {})",
        route.placement,
        route.near_best.join(", ")
    );
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
        let _ = writeln!(
            out,
            "split      canary {} at {:.2}% ({} bp): bucket {} ({keyed}) → {variant}",
            split.canary_cluster,
            f64::from(split.weight_bp) / 100.0,
            split.weight_bp,
            split.bucket
        );
    }
    let _ = writeln!(out, "cluster    {}", route.cluster());
    out
}
