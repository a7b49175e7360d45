//! `weir explain`: what the filter would decide for a request, from the same
//! engine the filter runs.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use weir_policy::explain;
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
    request: &'a Request<'a>,
    #[serde(flatten)]
    decision: &'a Decision,
}

pub(super) fn run(args: &ExplainArgs) -> bool {
    let Some(policy) = super::policy_file::load(&args.file) else {
        return false;
    };
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let headers: Vec<(&str, &str)> = args
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let request = Request {
        method: &args.method,
        host: &args.host,
        path: &args.path,
        headers: &headers,
    };
    // Requests without a device id are spread by a counter in the filter; 0 here.
    let decision = engine.decide(&request, args.in_flight, 0);
    if args.json {
        let explained = Explained {
            request: &request,
            decision: &decision,
        };
        return super::print_json(&explained, false);
    }
    super::emit(&explain::text(&explain::stages(
        &request, &engine, &decision,
    )))
}
