//! `weir status`: rollouts, clusters and connected Envoys of a running `weir
//! serve`, from its admin API.

use serde_json::{Value, json};

use super::client::{Client, ClientArgs, Failure};
use super::rollout::phase_name;
use super::table::{Table, ago, millis, percent, text};
use crate::api::{RolloutSummary, Rollouts};
use crate::snapshot::type_url;
use crate::xds::type_name;

/// Runs `weir status`; what it prints, or the one-line failure.
pub(crate) fn run(args: &ClientArgs) -> Result<String, Failure> {
    let client = Client::new(args)?;
    let rollouts: Rollouts = client.get_as("/v1/rollouts")?;
    let clusters = client.get("/v1/clusters")?;
    let nodes = client.get("/v1/nodes")?;
    let status = client.get("/v1/status")?;
    let replication = &status["replication"];
    if args.json {
        let all = json!({
            "replication": replication,
            "rollouts": rollouts.rollouts,
            "clusters": clusters["clusters"],
            "limit": clusters["limit"],
            "snapshot": nodes["snapshot"],
            "nodes": nodes["nodes"],
        });
        return Ok(format!("{:#}\n", all));
    }
    let mut out = String::new();
    out.push_str(&rollout_table(&rollouts.rollouts));
    out.push('\n');
    out.push_str(&cluster_table(&clusters["clusters"]));
    out.push_str(&limit_line(&clusters["limit"]));
    out.push('\n');
    out.push_str(&node_table(&nodes["nodes"]));
    if !replication.is_null() && replication["role"] != "single" {
        out.push('\n');
        out.push_str(&replica_table(replication));
    }
    Ok(out)
}

fn number(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Every replica with its role, the policy and snapshot it serves and its
/// Envoys, under a line on the leader and its lease.
fn replica_table(replication: &Value) -> String {
    let leader = replication["leader"]
        .as_str()
        .unwrap_or("none (an election is under way)");
    let lease = &replication["lease"];
    let mut out = format!(
        "REPLICAS (asked {}, a {}; leader {leader}; lease TTL {} s)\n",
        text(&replication["replica"]),
        text(&replication["role"]),
        number(&lease["ttl_seconds"]),
    );
    let mut table = Table::new(&[
        "REPLICA", "ROLE", "ADMIN", "XDS", "POLICY", "SNAPSHOT", "ENVOYS",
    ]);
    for r in items(&replication["replicas"]) {
        let role = if r["leader"] == true {
            "leader"
        } else {
            "follower"
        };
        table.row(vec![
            text(&r["id"]),
            role.to_owned(),
            text(&r["admin"]),
            text(&r["xds"]),
            text(&r["policy"]),
            text(&r["snapshot"]),
            number(&r["envoys"]),
        ]);
    }
    for line in table.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn items(list: &Value) -> &[Value] {
    list.as_array().map_or(&[], Vec::as_slice)
}

fn lines(title: &str, table: &Table) -> String {
    let mut out = format!("{title}\n");
    for line in table.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `step/steps`, counting from 1.
pub(crate) fn step(step: usize, steps: Option<usize>) -> String {
    match steps {
        Some(steps) => format!("{}/{steps}", step + 1),
        None => format!("{}", step + 1),
    }
}

fn rollout_table(rollouts: &[RolloutSummary]) -> String {
    if rollouts.is_empty() {
        return "ROLLOUTS\nnone: no placement of the policy has a canary\n".to_owned();
    }
    let mut table = Table::new(&[
        "CANARY",
        "STABLE",
        "PHASE",
        "STEP",
        "WEIGHT",
        "VERDICT",
        "LAST DECISION",
    ]);
    for r in rollouts {
        let decision = r.last_decision.as_ref().map_or_else(
            || "-".to_owned(),
            |last| format!("{}: {}", ago(last.decision.at_ms), last.decision.reason),
        );
        let verdict = r
            .verdict
            .and_then(|v| serde_json::to_value(v).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "-".to_owned());
        let s = &r.state;
        table.row(vec![
            s.canary.clone(),
            s.stable.clone(),
            phase_name(s.phase),
            step(s.step, Some(s.steps_bp.len())),
            percent(s.weight_bp),
            verdict,
            decision,
        ]);
    }
    lines("ROLLOUTS", &table)
}

fn cluster_table(clusters: &Value) -> String {
    let clusters = items(clusters);
    if clusters.is_empty() {
        return "CLUSTERS\nnone\n".to_owned();
    }
    let mut table = Table::new(&["CLUSTER", "SLA SCORE", "P99", "P99 TARGET"]);
    for c in clusters {
        table.row(vec![
            text(&c["cluster"]),
            c["score"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
            millis(c["p99_ms"].as_f64()),
            millis(c["target_p99_ms"].as_f64()),
        ]);
    }
    lines("CLUSTERS", &table)
}

/// The concurrency limit each Envoy admits under, and where it comes from.
fn limit_line(limit: &Value) -> String {
    let Some(served) = limit["served"].as_u64() else {
        return String::new();
    };
    let how = if limit["adaptive"] == true {
        let pressure = limit["pressure"].as_f64().map_or_else(
            || "no latency data".to_owned(),
            |p| format!("p99/target {p:.2}"),
        );
        format!(
            "adaptive between {} and {}, {pressure}",
            limit["min"], limit["max"]
        )
    } else {
        "fixed by the policy".to_owned()
    };
    let pinned = if limit["published"].as_u64().is_some_and(|p| p != served) {
        ", pinned through the admin API"
    } else {
        ""
    };
    format!("CONCURRENCY LIMIT  {served} per Envoy ({how}{pinned})\n")
}

/// One type's state on one node: `ok` (runs the version served), `old` (an
/// earlier one), `NACK` (rejected the latest), `-` (never accepted one).
fn type_cell(entry: &Value) -> &'static str {
    if entry.is_null() {
        "-"
    } else if !entry["nack"].is_null() {
        "NACK"
    } else if entry["in_sync"] == true {
        "ok"
    } else if entry["acked"].is_null() {
        "-"
    } else {
        "old"
    }
}

fn node_table(nodes: &Value) -> String {
    let nodes = items(nodes);
    if nodes.is_empty() {
        return "ENVOYS\nnone has connected since weir started\n".to_owned();
    }
    let names: Vec<&str> = type_url::ALL.iter().filter_map(|t| type_name(t)).collect();
    let mut header = vec!["NODE", "STREAMS", "STATE"];
    let upper: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
    header.extend(upper.iter().map(String::as_str));
    header.push("LAST REQUEST");
    let mut table = Table::new(&header);
    let mut nacks = Vec::new();
    for node in nodes {
        let types = &node["types"];
        let state = if node["connected"] != true {
            "disconnected"
        } else if names.iter().any(|n| !types[n]["nack"].is_null()) {
            "NACK"
        } else if node["in_sync"] == true {
            "in sync"
        } else {
            "updating"
        };
        let mut row = vec![
            text(&node["id"]),
            node["streams"].as_u64().unwrap_or(0).to_string(),
            state.to_owned(),
        ];
        row.extend(names.iter().map(|n| type_cell(&types[n]).to_owned()));
        row.push(text(&node["last_request"]));
        table.row(row);
        for name in &names {
            let nack = &types[name]["nack"];
            if !nack.is_null() {
                nacks.push(format!(
                    "{} rejected {} version {}: {}",
                    text(&node["id"]),
                    name.to_uppercase(),
                    text(&nack["version"]),
                    text(&nack["message"]).trim()
                ));
            }
        }
    }
    let mut out = lines("ENVOYS", &table);
    for nack in nacks {
        out.push_str(&format!("  {nack}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_says_where_it_comes_from() {
        let fixed =
            json!({"adaptive": false, "min": 200, "max": 200, "published": 200, "served": 200});
        assert_eq!(
            limit_line(&fixed),
            "CONCURRENCY LIMIT  200 per Envoy (fixed by the policy)\n"
        );
        let adaptive = json!({"adaptive": true, "min": 40, "max": 200, "pressure": 1.318,
                              "published": 120, "served": 120});
        assert_eq!(
            limit_line(&adaptive),
            "CONCURRENCY LIMIT  120 per Envoy (adaptive between 40 and 200, p99/target 1.32)\n"
        );
        let pinned =
            json!({"adaptive": false, "min": 200, "max": 200, "published": 200, "served": 80});
        assert!(
            limit_line(&pinned).ends_with("(fixed by the policy, pinned through the admin API)\n")
        );
        assert_eq!(limit_line(&json!(null)), "");
    }

    #[test]
    fn nodes_show_each_type() {
        let nodes = json!([{
            "id": "envoy-1", "connected": true, "streams": 1, "in_sync": false,
            "last_request": "2026-01-01T00:00:00Z",
            "types": {
                "cds": {"in_sync": true, "acked": {"version": "a"}, "nack": null},
                "lds": {"in_sync": false, "acked": {"version": "b"}, "nack": {"version": "c", "message": "bad\n"}},
                "rds": {"in_sync": false, "acked": {"version": "d"}, "nack": null}
            }
        }]);
        let text = node_table(&nodes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ENVOYS");
        assert!(
            lines[1]
                .starts_with("NODE     STREAMS  STATE  CDS  EDS  LDS   RDS  ECDS  LAST REQUEST"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("envoy-1  1        NACK   ok   -    NACK  old  -     2026"),
            "{text}"
        );
        assert_eq!(lines[3], "  envoy-1 rejected LDS version c: bad");
    }
}
