//! `weir rollout …`: steer a rollout by hand, and read its history.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, ClientArgs, Failure};
use super::status::step;
use super::table::{Table, millis, percent, text};

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

/// Percent-encodes a path segment (canary names are DNS-like, but a typo
/// should reach the server as the typo, not as another path).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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
            let mut path = format!("/v1/rollouts/{}/history", segment(name));
            if *limit > 0 {
                path.push_str(&format!("?limit={limit}"));
            }
            let history = client.get(&path)?;
            return Ok(if args.client.json {
                format!("{history:#}\n")
            } else {
                history_text(&history)
            });
        }
    };
    let answer = client.post(&format!("/v1/rollouts/{}/{verb}", segment(name)))?;
    let decision = &answer["decision"];
    Ok(if args.client.json {
        format!("{decision:#}\n")
    } else {
        format!(
            "{}: {} at {} (step {}): {}\n",
            text(&decision["canary"]),
            text(&decision["to"]).replace('_', " "),
            percent(&decision["weight_bp"]),
            decision["step"].as_u64().map_or(0, |s| s + 1),
            text(&decision["reason"]),
        )
    })
}

fn phases(decision: &Value) -> String {
    let (from, to) = (text(&decision["from"]), text(&decision["to"]));
    if from == to {
        to
    } else {
        format!("{from} → {to}")
    }
}

fn weights(decision: &Value) -> String {
    let (from, to) = (
        percent(&decision["from_weight_bp"]),
        percent(&decision["weight_bp"]),
    );
    if from == to {
        to
    } else {
        format!("{from} → {to}")
    }
}

/// The evidence a decision was based on, a line each.
fn evidence_lines(evidence: &Value) -> Vec<String> {
    let variant = |name: &str, v: &Value| {
        let rate = v["error_rate"].as_f64().unwrap_or(0.0) * 100.0;
        format!(
            "{name}: {} requests, {} errors ({:.2} %), p95 {}, p99 {}",
            v["requests"].as_u64().unwrap_or(0),
            v["errors"].as_u64().unwrap_or(0),
            rate,
            millis(&v["p95_ms"]),
            millis(&v["p99_ms"]),
        )
    };
    let window = evidence["window_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    let mut lines = vec![
        format!("verdict: {} (over {window} s)", text(&evidence["verdict"])),
        variant("canary", &evidence["canary"]),
        variant("stable", &evidence["stable"]),
    ];
    if let Some(at) = evidence["stable_baseline_at_ms"].as_u64() {
        lines.push(format!(
            "stable figures: its last window with enough traffic, at {}",
            crate::xds::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))
        ));
    }
    let test = &evidence["error_test"];
    if !test.is_null() {
        let p = test["p_value"].as_f64().unwrap_or(0.0);
        let p = if p > 0.0 && p < 0.001 {
            format!("{p:.2e}")
        } else {
            format!("{p:.4}")
        };
        lines.push(format!(
            "error test: +{:.2} pp, z {:.2}, p {p}",
            test["increase_pp"].as_f64().unwrap_or(0.0),
            test["z"].as_f64().unwrap_or(0.0),
        ));
    }
    let ratio = &evidence["latency_ratio"];
    if !ratio.is_null() {
        lines.push(format!(
            "latency: p95 ×{:.2}, p99 ×{:.2} (at 99 % confidence ×{:.2}, ×{:.2})",
            ratio["p95"].as_f64().unwrap_or(0.0),
            ratio["p99"].as_f64().unwrap_or(0.0),
            ratio["p95_low"].as_f64().unwrap_or(0.0),
            ratio["p99_low"].as_f64().unwrap_or(0.0),
        ));
    }
    for finding in evidence["findings"].as_array().into_iter().flatten() {
        lines.push(format!("- {}", text(finding)));
    }
    lines
}

/// The decisions as an aligned table, each row followed by its reason and evidence.
fn history_text(history: &Value) -> String {
    let decisions = history["decisions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let canary = text(&history["canary"]);
    if decisions.is_empty() {
        return format!("{canary}: no decision recorded\n");
    }
    let steps = &history["rollout"]["steps_bp"];
    let mut table = Table::new(&["TIME", "KIND", "PHASE", "STEP", "WEIGHT"]);
    for d in decisions {
        table.row(vec![
            text(&d["at"]),
            text(&d["kind"]),
            phases(d),
            step(&d["step"], steps),
            weights(d),
        ]);
    }
    let mut out = String::new();
    let total = history["total"].as_u64().unwrap_or(0);
    let shown = decisions.len() as u64;
    if total > shown {
        out.push_str(&format!(
            "{canary}: the newest {shown} of {total} decisions (--limit 0 shows all)\n"
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
        out.push_str(&format!("    {}\n", text(&d["reason"])));
        for evidence in evidence_lines(&d["evidence"]) {
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
    fn segments_are_encoded() {
        assert_eq!(segment("app-canary"), "app-canary");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn history_shows_each_decision_with_its_evidence() {
        let history = json!({
            "canary": "app-canary", "total": 3,
            "rollout": {"steps_bp": [5000, 10000]},
            "decisions": [{
                "at": "2026-01-01T00:00:00Z", "kind": "pause", "from": "progressing", "to": "paused",
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
        });
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
}
