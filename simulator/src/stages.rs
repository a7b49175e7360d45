//! The simulator's own stage: the policy, valid or not. The decision's
//! stages come from `weir_policy::explain`, as `weir explain` prints them.

use weir_policy::Policy;
use weir_policy::explain::Stage;

use crate::Problem;

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
