//! `weir rollout …`: steer a rollout by hand, and read its history.

use clap::{Args, Subcommand};

use super::client::{Client, ClientArgs, Failure};
use super::status::step;
use super::table::{Table, millis, percent};
use crate::api::{CommandAnswer, DecisionView, History, path_segment};
use crate::controller::{Decision, Evidence, Phase, VariantStats};

/// `weir rollout`.
#[derive(Debug, Args)]
pub(crate) struct RolloutArgs {
    #[command(subcommand)]
    action: Action,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Freeze a progressing rollout at its weight; analysis moves nothing until `resume`.
    Pause {
        /// The rollout, named by its canary cluster.
        name: String,
    },
    /// Let a paused rollout progress again, with a fresh hold.
    Resume {
        /// The rollout, named by its canary cluster.
        name: String,
    },
    /// Send the canary all its placement's traffic, for good.
    Promote {
        /// The rollout, named by its canary cluster.
        name: String,
    },
    /// Send the canary no traffic, for good (rolled back).
    Abort {
        /// The rollout, named by its canary cluster.
        name: String,
    },
    /// Each decision on a rollout, oldest first, with its evidence.
    History {
        /// The rollout, named by its canary cluster.
        name: String,
        /// Show only the newest N decisions (0: all that weir keeps).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// Runs `weir rollout …`; what it prints, or the one-line failure.
pub(crate) fn run(args: &RolloutArgs) -> Result<String, Failure> {
    let client = Client::new(&args.client)?;
    let (name, verb) = match &args.action {
        Action::Pause { name } => (name, "pause"),
        Action::Resume { name } => (name, "resume"),
        Action::Promote { name } => (name, "promote"),
        Action::Abort { name } => (name, "abort"),
        Action::History { name, limit } => {
            let mut path = format!("/v1/rollouts/{}/history", path_segment(name));
            if *limit > 0 {
                path.push_str(&format!("?limit={limit}"));
            }
            let history: History = client.get_as(&path)?;
            return Ok(if args.client.json {
                json_text(&history)
            } else {
                history_text(&history)
            });
        }
    };
    let answer: CommandAnswer =
        client.post_as(&format!("/v1/rollouts/{}/{verb}", path_segment(name)))?;
    let decision = &answer.decision.decision;
    Ok(if args.client.json {
        json_text(&answer.decision)
    } else {
        let mut text = format!(
            "{}: {} at {} (step {}): {}\n",
            decision.canary,
            phase_name(decision.to).replace('_', " "),
            percent(decision.weight_bp),
            decision.step + 1,
            decision.reason,
        );
        if let Some(unsaved) = &answer.unsaved {
            text.push_str(&format!("warning: {unsaved}\n"));
        }
        text
    })
}

/// Pretty JSON, as `--json` prints it.
fn json_text(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).map_or_else(|err| format!("{err}\n"), |t| t + "\n")
}

/// A phase as the API spells it (`rolled_back`).
pub(crate) fn phase_name(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn phases(decision: &Decision) -> String {
    let (from, to) = (phase_name(decision.from), phase_name(decision.to));
    if from == to {
        to
    } else {
        format!("{from} → {to}")
    }
}

fn weights(decision: &Decision) -> String {
    let (from, to) = (
        percent(decision.from_weight_bp),
        percent(decision.weight_bp),
    );
    if from == to {
        to
    } else {
        format!("{from} → {to}")
    }
}

/// The evidence a decision was based on, a line each.
fn evidence_lines(evidence: &Evidence) -> Vec<String> {
    let variant = |name: &str, v: &VariantStats| {
        format!(
            "{name}: {} requests, {} errors ({:.2} %), p95 {}, p99 {}",
            v.requests,
            v.errors,
            v.error_rate * 100.0,
            millis(v.p95_ms),
            millis(v.p99_ms),
        )
    };
    let window = evidence.window_ms as f64 / 1000.0;
    let verdict = serde_json::to_value(evidence.verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut lines = vec![
        format!("verdict: {verdict} (over {window} s)"),
        variant("canary", &evidence.canary),
        variant("stable", &evidence.stable),
    ];
    if let Some(at) = evidence.stable_baseline_at_ms {
        lines.push(format!(
            "stable figures: its last window with enough traffic, at {}",
            crate::xds::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))
        ));
    }
    if let Some(test) = &evidence.error_test {
        let p = test.p_value;
        let p = if p > 0.0 && p < 0.001 {
            format!("{p:.2e}")
        } else {
            format!("{p:.4}")
        };
        lines.push(format!(
            "error test: +{:.2} pp, z {:.2}, p {p}",
            test.increase_pp, test.z,
        ));
    }
    if let Some(ratio) = &evidence.latency_ratio {
        lines.push(format!(
            "latency: p95 ×{:.2}, p99 ×{:.2} (at 99 % confidence ×{:.2}, ×{:.2})",
            ratio.p95, ratio.p99, ratio.p95_low, ratio.p99_low,
        ));
    }
    for finding in &evidence.findings {
        lines.push(format!("- {finding}"));
    }
    lines
}

/// The decisions as an aligned table, each row followed by its reason and evidence.
fn history_text(history: &History) -> String {
    let decisions: &[DecisionView] = &history.decisions;
    let canary = &history.canary;
    if decisions.is_empty() {
        return format!("{canary}: no decision recorded\n");
    }
    let steps = history.rollout.as_ref().map(|r| r.steps_bp.len());
    let mut table = Table::new(&["TIME", "KIND", "PHASE", "STEP", "WEIGHT"]);
    for d in decisions {
        table.row(vec![
            d.at.clone(),
            d.kind.clone(),
            phases(&d.decision),
            step(d.decision.step, steps),
            weights(&d.decision),
        ]);
    }
    let mut out = String::new();
    let shown = decisions.len();
    if history.total > shown {
        out.push_str(&format!(
            "{canary}: the newest {shown} of {} decisions (--limit 0 shows all)\n",
            history.total
        ));
    }
    let mut lines = table.lines().into_iter();
    if let Some(header) = lines.next() {
        out.push_str(&header);
        out.push('\n');
    }
    for (line, d) in lines.zip(decisions) {
        out.push_str(&line);
        out.push('\n');
        out.push_str(&format!("    {}\n", d.decision.reason));
        for evidence in evidence_lines(&d.decision.evidence) {
            out.push_str(&format!("      {evidence}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn history_shows_each_decision_with_its_evidence() {
        let history: History = serde_json::from_value(json!({
            "canary": "app-canary", "total": 3,
            "rollout": {
                "canary": "app-canary", "stable": "app", "salt": "s", "steps_bp": [5000, 10000],
                "phase": "paused", "step": 0, "weight_bp": 5000, "started_ms": 0, "step_since_ms": 0
            },
            "decisions": [{
                "at": "2026-01-01T00:00:00Z", "kind": "pause", "at_ms": 0, "canary": "app-canary",
                "from": "progressing", "to": "paused",
                "step": 0, "from_weight_bp": 5000, "weight_bp": 5000,
                "reason": "paused by an operator at 50 %",
                "evidence": {
                    "window_ms": 10000, "verdict": "healthy",
                    "canary": {"requests": 100, "errors": 1, "error_rate": 0.01, "p95_ms": 12.0, "p99_ms": null},
                    "stable": {"requests": 90, "errors": 0, "error_rate": 0.0, "p95_ms": 11.0, "p99_ms": null},
                    "error_test": {"z": -1.0, "p_value": 0.8, "increase_pp": 1.0},
                    "latency_ratio": null,
                    "findings": ["errors: fine"]
                }
            }]
        }))
        .unwrap();
        let text = history_text(&history);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "app-canary: the newest 1 of 3 decisions (--limit 0 shows all)"
        );
        assert_eq!(
            lines[1],
            "TIME                  KIND   PHASE                 STEP  WEIGHT"
        );
        assert_eq!(
            lines[2],
            "2026-01-01T00:00:00Z  pause  progressing → paused  1/2   50 %"
        );
        assert_eq!(lines[3], "    paused by an operator at 50 %");
        assert_eq!(lines[4], "      verdict: healthy (over 10 s)");
        assert_eq!(
            lines[5],
            "      canary: 100 requests, 1 errors (1.00 %), p95 12 ms, p99 -"
        );
        assert!(
            text.contains("      error test: +1.00 pp, z -1.00, p 0.8000\n"),
            "{text}"
        );
        assert!(text.ends_with("      - errors: fine\n"), "{text}");
    }

    #[test]
    fn an_answer_the_cli_does_not_know_is_refused_not_shown_as_zeros() {
        let renamed = json!({"canary": "app-canary", "total": 1, "rollout": null, "decisions": [{
            "at": "…", "kind": "pause", "at_ms": 0, "canary": "app-canary",
            "from": "progressing", "to": "paused", "step": 0,
            "weight_basis_points": 5000, "reason": "r", "evidence": null
        }]});
        assert!(serde_json::from_value::<History>(renamed).is_err());
    }
}
