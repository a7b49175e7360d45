//! `weir status`: rollouts, clusters and connected Envoys of a running `weir
//! serve`, from its admin API.

use serde_json::json;

use super::client::{Client, ClientArgs, Failure};
use super::rollout::phase_name;
use super::table::{Table, ago, millis, percent};
use crate::api::{
    ClusterView, Clusters, LimitView, NodeSummary, NodeTypeView, NodesAnswer, ReplicationView,
    RolloutSummary, Rollouts, StatusReplication,
};
use crate::controller::Verdict;
use crate::replication::Role;
use crate::snapshot::type_url;
use crate::xds::type_name;

/// The Envoys `weir status` lists, the first by id; a fleet's are counted.
const SHOWN_NODES: usize = 50;

/// Runs `weir status`; what it prints, or the one-line failure.
pub(crate) fn run(args: &ClientArgs) -> Result<String, Failure> {
    let client = Client::new(args)?;
    let rollouts: Rollouts = client.get_as("/v1/rollouts")?;
    let clusters: Clusters = client.get_as("/v1/clusters")?;
    let nodes: NodesAnswer = client.get_as(&format!("/v1/nodes?limit={SHOWN_NODES}"))?;
    let status: StatusReplication = client.get_as("/v1/status")?;
    let replication = &status.replication;
    if args.json {
        let all = json!({
            "replication": replication,
            "rollouts": rollouts.rollouts,
            "clusters": clusters.clusters,
            "limit": clusters.limit,
            "snapshot": nodes.snapshot,
            "nodes": nodes.nodes,
        });
        return Ok(format!("{:#}\n", all));
    }
    let mut out = String::new();
    out.push_str(&rollout_table(&rollouts.rollouts));
    out.push('\n');
    out.push_str(&cluster_table(&clusters.clusters));
    out.push_str(&limit_line(&clusters.limit));
    out.push('\n');
    out.push_str(&node_table(&nodes.nodes));
    if nodes.next.is_some() {
        let envoys = &status.envoys;
        out.push_str(&format!(
            "… the first {} of {} Envoys ({} connected, {} streams); GET /v1/nodes?after=ID pages through all\n",
            nodes.nodes.len(),
            envoys.connected + envoys.disconnected,
            envoys.connected,
            envoys.streams,
        ));
    }
    if replication.role != Role::Single {
        out.push('\n');
        out.push_str(&replica_table(replication));
    }
    Ok(out)
}

/// Every replica with its role, the policy and snapshot it serves and its
/// Envoys, under a line on the leader and its lease.
fn replica_table(replication: &ReplicationView) -> String {
    let leader = replication
        .leader
        .as_deref()
        .unwrap_or("none (an election is under way)");
    let role = serde_json::to_value(replication.role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let ttl = replication
        .lease
        .as_ref()
        .map_or_else(|| "-".to_owned(), |l| l.ttl_seconds.to_string());
    let mut out = format!(
        "REPLICAS (asked {}, a {role}; leader {leader}; lease TTL {ttl} s)\n",
        replication.replica.as_deref().unwrap_or("-"),
    );
    let mut table = Table::new(&[
        "REPLICA", "ROLE", "ADMIN", "XDS", "POLICY", "SNAPSHOT", "ENVOYS",
    ]);
    for r in &replication.replicas {
        let role = if r.leader { "leader" } else { "follower" };
        table.row(vec![
            r.id.clone(),
            role.to_owned(),
            r.admin.clone(),
            r.xds.clone(),
            r.policy.clone(),
            r.snapshot.clone(),
            r.envoys.to_string(),
        ]);
    }
    for line in table.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    out
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
            if s.mirroring() {
                format!("mirrored {}", percent(s.mirror_bp))
            } else {
                percent(s.weight_bp)
            },
            verdict,
            decision,
        ]);
    }
    let mut out = lines("ROLLOUTS", &table);
    for line in inconclusive_why(rollouts) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Why each inconclusive rollout is: its findings other than the checks
/// that passed (too few requests, latency its buckets cannot resolve, …).
fn inconclusive_why(rollouts: &[RolloutSummary]) -> Vec<String> {
    rollouts
        .iter()
        .filter(|r| r.verdict == Some(Verdict::Inconclusive))
        .flat_map(|r| {
            r.findings
                .iter()
                .flatten()
                .filter(|f| !f.ends_with(": ok") && !f.starts_with("segments:"))
                .map(move |f| format!("{} inconclusive: {f}", r.state.canary))
        })
        .collect()
}

fn cluster_table(clusters: &[ClusterView]) -> String {
    if clusters.is_empty() {
        return "CLUSTERS\nnone\n".to_owned();
    }
    let mut table = Table::new(&["CLUSTER", "SLA SCORE", "P99", "P99 TARGET"]);
    for c in clusters {
        table.row(vec![
            c.cluster.clone(),
            format!("{:.2}", c.score),
            millis(c.p99_ms),
            millis(c.target_p99_ms),
        ]);
    }
    lines("CLUSTERS", &table)
}

/// The concurrency limit each Envoy admits under, and where it comes from.
fn limit_line(limit: &LimitView) -> String {
    let Some(served) = limit.served else {
        return String::new();
    };
    let status = &limit.status;
    let how = if status.adaptive {
        let pressure = status.pressure.map_or_else(
            || "no latency data".to_owned(),
            |p| format!("p99/target {p:.2}"),
        );
        format!(
            "adaptive between {} and {}, {pressure}",
            status.min, status.max
        )
    } else {
        "fixed by the policy".to_owned()
    };
    let pinned = if status.published != served {
        ", pinned through the admin API"
    } else {
        ""
    };
    format!("CONCURRENCY LIMIT  {served} per Envoy ({how}{pinned})\n")
}

/// One type's state on one node: `ok` (runs the version served), `old` (an
/// earlier one), `NACK` (rejected the latest), `-` (never accepted one).
fn type_cell(entry: Option<&NodeTypeView>) -> &'static str {
    match entry {
        None => "-",
        Some(t) if t.nack.is_some() => "NACK",
        Some(t) if t.in_sync => "ok",
        Some(t) if t.acked.is_none() => "-",
        Some(_) => "old",
    }
}

fn node_table(nodes: &[NodeSummary]) -> String {
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
        let state = if !node.connected {
            "disconnected"
        } else if node.types.values().any(|t| t.nack.is_some()) {
            "NACK"
        } else if node.in_sync {
            "in sync"
        } else {
            "updating"
        };
        let mut row = vec![node.id.clone(), node.streams.to_string(), state.to_owned()];
        row.extend(
            names
                .iter()
                .map(|n| type_cell(node.types.get(*n)).to_owned()),
        );
        row.push(node.last_request.clone());
        table.row(row);
        for name in &names {
            if let Some(nack) = node.types.get(*name).and_then(|t| t.nack.as_ref()) {
                nacks.push(format!(
                    "{} rejected {} version {}: {}",
                    node.id,
                    name.to_uppercase(),
                    nack.version,
                    nack.message.trim()
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

    fn limit(adaptive: bool, pressure: Option<f64>, published: u32, served: u32) -> LimitView {
        serde_json::from_value(json!({
            "adaptive": adaptive, "min": if adaptive { 40 } else { 200 }, "max": 200,
            "pressure": pressure, "ratio": 1.0, "computed": 1.0, "published": published,
            "served": served
        }))
        .unwrap()
    }

    #[test]
    fn the_limit_says_where_it_comes_from() {
        assert_eq!(
            limit_line(&limit(false, None, 200, 200)),
            "CONCURRENCY LIMIT  200 per Envoy (fixed by the policy)\n"
        );
        assert_eq!(
            limit_line(&limit(true, Some(1.318), 120, 120)),
            "CONCURRENCY LIMIT  120 per Envoy (adaptive between 40 and 200, p99/target 1.32)\n"
        );
        assert!(
            limit_line(&limit(false, None, 200, 80))
                .ends_with("(fixed by the policy, pinned through the admin API)\n")
        );
        let mut unserved = limit(false, None, 200, 200);
        unserved.served = None;
        assert_eq!(limit_line(&unserved), "");
    }

    #[test]
    fn an_inconclusive_rollout_says_why() {
        let rollouts: Vec<RolloutSummary> = serde_json::from_value(json!([{
            "canary": "app-canary", "stable": "app", "salt": "app-canary",
            "steps_bp": [5000, 10000], "phase": "progressing", "step": 0, "weight_bp": 5000,
            "started_ms": 0, "step_since_ms": 0, "healthy_ms": 0,
            "verdict": "inconclusive",
            "findings": [
                "errors: canary 0.00 % vs stable 0.00 %: ok",
                "latency: p95 not resolvable: canary's in (0, 5000] ms, stable's in (0, 5000] ms; buckets that wide cannot decide a ×1.5 limit"
            ],
            "last_decision": null
        }]))
        .unwrap();
        let text = rollout_table(&rollouts);
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with(
                "  app-canary inconclusive: latency: p95 not resolvable: canary's in (0, 5000] ms"
            ),
            "{text}"
        );
        assert!(!text.contains("errors: canary"), "{text}");
    }

    #[test]
    fn nodes_show_each_type() {
        let at = "2026-01-01T00:00:00Z";
        let ack = |version: &str| json!({"version": version, "nonce": "1", "at": at});
        let nodes: Vec<NodeSummary> = serde_json::from_value(json!([{
            "id": "envoy-1", "connected": true, "streams": 1, "in_sync": false,
            "last_request": at, "last_nack": null,
            "types": {
                "cds": {"type_url": "c", "in_sync": true, "acked": ack("a"), "nack": null},
                "lds": {"type_url": "l", "in_sync": false, "acked": ack("b"), "nack": {
                    "type_url": "l", "version": "c", "nonce": "2", "message": "bad\n", "at": at}},
                "rds": {"type_url": "r", "in_sync": false, "acked": ack("d"), "nack": null}
            }
        }]))
        .unwrap();
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
