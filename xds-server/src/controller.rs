//! The controller closes the loop: from the metrics store's windows to the
//! live feed. It judges each canary against its stable cluster, walks the
//! rollout along the policy's steps (or rolls it back), scores every
//! cluster's SLA health, and records each decision with its evidence.
//!
//! It is pure logic: time is passed in (ms since the epoch), nothing is read
//! from a clock, and nothing is written anywhere — `serve` persists
//! [`Controller::rollouts`] and the decisions through the
//! [`crate::store::Store`] before it pushes the feed.
//!
//! Behaviour (each part is detailed where it is implemented):
//! - **Window**: every analysis and SLA measurement reads the last
//!   [`WINDOW_MS`] (10 s) of samples, whatever the hold; a new step's first
//!   windows still include traffic from the step before.
//! - **Analysis** (`controller/analysis.rs`): `min_samples` requests in both
//!   variants or the verdict is inconclusive; errors by a one-sided z-test
//!   against the allowed increase, latency by p95/p99 ratios at 99 %
//!   confidence.
//! - **Rollout** (`controller/rollout.rs`): starts progressing at the first
//!   step. A step advances once it has been *healthy* for the canary's `hold`
//!   in total: an inconclusive evaluation pauses that clock (credits nothing,
//!   resets nothing), a gap of more than 5 s between evaluations is not
//!   credited, and a bad verdict rolls back at once (weight 0). The last step
//!   held healthy promotes (weight 10,000). Paused freezes the weight and
//!   analysis moves nothing, not even a rollback; resume starts a fresh hold.
//!   Promoted and rolled back are terminal until the policy changes the
//!   canary (see [`Controller::set_policy`]).
//! - **Full weight**: at 100 % the stable cluster gets none of the
//!   placement's traffic, so once its live window has fewer than
//!   `min_samples` requests the canary is compared with the stable's last
//!   window that had enough (kept in the rollout state, so it survives a
//!   restart).
//! - **SLA** (`controller/sla.rs`): per-evaluation EWMA, hysteresis on what is
//!   published, a slow drift back to 1 without data.
//! - **Concurrency limit** (`controller/limit.rs`): the policy's, or with
//!   `admission.adaptive_limit`, moved each second by the fleet's p99 against
//!   the SLA targets — multiplicative decrease, additive increase, a dead
//!   band and hysteresis.
//! - **Decisions**: every change of phase, step or weight, with the evidence
//!   in force; the last [`HISTORY`] are kept in memory.

mod analysis;
mod limit;
mod rollout;
mod rtt;
mod sla;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use weir_policy::{Feed, Policy};

pub use analysis::{
    Bucket, ErrorTest, Evidence, LatencyRatio, SegmentVerdict, Unresolved, VariantStats, Verdict,
};
pub use limit::LimitStatus;
pub use rollout::{Baseline, Command, Decision, Phase, RolloutState};
pub use rtt::RttStatus;
pub use sla::SlaStatus;

use crate::metrics_store::MetricsStore;
use limit::ConcurrencyLimit;
use rollout::CanaryConfig;
use rtt::MeasuredRtt;
use sla::SlaScores;

pub use crate::metrics_store::WINDOW_MS;

/// Decisions kept in memory for the admin API.
pub const HISTORY: usize = 1_000;

/// What one evaluation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The feed to serve.
    pub feed: Feed,
    /// Decisions taken since the last evaluation (this one's, and those a
    /// policy change made): persist them before pushing the feed.
    pub decisions: Vec<Decision>,
    /// Whether the feed differs from the one the previous evaluation returned
    /// (for the first, from the one at construction).
    pub changed: bool,
}

struct Rollout {
    config: CanaryConfig,
    state: RolloutState,
    evidence: Evidence,
}

/// What the controller smooths over time and last saw, persisted so that a
/// restart neither resets routing nor the limit, and so that a follower
/// replica shows the leader's latest verdicts.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Every cluster's SLA score.
    #[serde(default)]
    pub sla: Vec<SlaStatus>,
    /// The concurrency limit's state.
    #[serde(default)]
    pub limit: Option<LimitStatus>,
    /// Each rollout's latest evidence, by canary cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, Evidence>,
}

/// The canary and SLA controller of one policy.
pub struct Controller {
    limit: ConcurrencyLimit,
    rollouts: BTreeMap<String, Rollout>,
    sla: SlaScores,
    rtt: MeasuredRtt,
    history: Vec<Decision>,
    /// Decisions taken outside an evaluation (a policy change), handed out by
    /// the next one so that they are persisted with it.
    pending: Vec<Decision>,
    last_feed: Feed,
}

fn canaries(policy: &Policy) -> BTreeMap<String, CanaryConfig> {
    policy
        .services
        .iter()
        .flat_map(|s| &s.placements)
        .filter_map(|p| {
            let canary = p.canary.as_ref()?;
            Some((canary.cluster.clone(), CanaryConfig::of(&p.cluster, canary)))
        })
        .collect()
}

impl Controller {
    /// A controller for `policy`, resuming the `restored` rollouts that are
    /// still the same rollouts of the policy's canaries (see
    /// [`Controller::set_policy`]); others start at their first step.
    pub fn new(policy: &Policy, restored: Vec<RolloutState>, now_ms: u64) -> Self {
        let mut controller = Self {
            limit: ConcurrencyLimit::new(policy),
            rollouts: BTreeMap::new(),
            sla: SlaScores::default(),
            rtt: MeasuredRtt::default(),
            history: Vec::new(),
            pending: Vec::new(),
            last_feed: Feed::initial(policy),
        };
        controller.adopt(policy, restored, now_ms);
        controller.last_feed = controller.feed();
        controller
    }

    /// Adopts an edited policy. A rollout continues when its canary cluster,
    /// stable cluster, salt and steps are unchanged. If only the steps
    /// changed, an active rollout (progressing or paused) continues at the
    /// step with its current weight if there is one, and restarts at the
    /// first step otherwise; a promoted or rolled-back one starts anew. A
    /// changed stable cluster or salt starts a new rollout. Hold and analysis
    /// edits apply to the running rollout.
    pub fn set_policy(&mut self, policy: &Policy, now_ms: u64) {
        let previous = std::mem::take(&mut self.rollouts)
            .into_values()
            .map(|r| r.state)
            .collect();
        self.limit.set_policy(policy);
        self.adopt(policy, previous, now_ms);
    }

    fn adopt(&mut self, policy: &Policy, previous: Vec<RolloutState>, now_ms: u64) {
        let mut previous: BTreeMap<String, RolloutState> = previous
            .into_iter()
            .map(|s| (s.canary.clone(), s))
            .collect();
        for (canary, config) in canaries(policy) {
            let (state, decision) =
                rollout::reconcile(&canary, &config, previous.remove(&canary), now_ms);
            if let Some(decision) = decision {
                self.record(decision.clone());
                self.pending.push(decision);
            }
            let evidence = Evidence::none(WINDOW_MS);
            self.rollouts.insert(
                canary,
                Rollout {
                    config,
                    state,
                    evidence,
                },
            );
        }
        self.sla.set_policy(policy);
        self.rtt.set_policy(policy);
    }

    fn record(&mut self, decision: Decision) {
        self.history.push(decision);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
    }

    /// Marks the decisions taken since the last call as made under the policy
    /// whose digest is `digest`.
    pub fn stamp_policy(&mut self, digest: &str) {
        for decision in self.history.iter_mut().rev() {
            if !decision.policy.is_empty() {
                break;
            }
            decision.policy = digest.to_owned();
        }
    }

    /// Puts decisions read from the state store back into the history
    /// (oldest first), before those taken since.
    pub fn restore_history(&mut self, decisions: Vec<Decision>) {
        let mut history = decisions;
        history.append(&mut self.history);
        self.history = history;
        self.trim_history();
    }

    /// One evaluation at `now_ms`: analysis of every rollout, SLA scores, and
    /// the feed.
    pub fn evaluate(&mut self, store: &MetricsStore, now_ms: u64) -> Evaluation {
        let mut decisions = std::mem::take(&mut self.pending);
        let mut fresh = Vec::new();
        for rollout in self.rollouts.values_mut() {
            let Rollout {
                config,
                state,
                evidence,
            } = rollout;
            let min = u64::from(config.analysis.min_samples.max(1));
            let canary = store.window(&state.canary, now_ms, WINDOW_MS);
            let stable = store.window(&config.stable, now_ms, WINDOW_MS);
            let active = !state.phase.is_terminal();
            if active && stable.requests >= min {
                state.baseline = Some(Baseline::of(&stable, now_ms));
            }
            let full_weight = state.feed_weight() >= weir_policy::split::BUCKETS;
            let baseline = state.baseline.as_ref().filter(|_| full_weight);
            *evidence = match baseline {
                Some(b) if stable.requests < min => analysis::analyse(
                    &canary,
                    &b.window(),
                    Some(b.at_ms),
                    &config.analysis,
                    WINDOW_MS,
                ),
                _ => analysis::analyse(&canary, &stable, None, &config.analysis, WINDOW_MS),
            };
            if let Some(segments) = &config.analysis.segments {
                let windows = store.segment_windows(&state.canary, now_ms, WINDOW_MS);
                analysis::judge_segments(evidence, windows, &config.analysis, segments);
            }
            if let Some(decision) = state.observe(config, evidence, now_ms) {
                fresh.push(decision);
            }
        }
        for decision in &fresh {
            self.record(decision.clone());
        }
        decisions.extend(fresh);
        self.sla.update(store, now_ms, WINDOW_MS);
        self.rtt.update(store, now_ms);
        self.limit.update(store, now_ms);
        let feed = self.feed();
        let changed = feed != self.last_feed;
        self.last_feed = feed.clone();
        Evaluation {
            feed,
            decisions,
            changed,
        }
    }

    /// The current feed: each canary's weight, each cluster's published SLA
    /// score, and the concurrency limit.
    pub fn feed(&self) -> Feed {
        Feed {
            canary_weights: self
                .rollouts
                .iter()
                .map(|(name, r)| (name.clone(), r.state.feed_weight()))
                .collect(),
            canary_mirrors: self
                .rollouts
                .iter()
                .filter_map(|(name, r)| {
                    let share = r.state.feed_mirror();
                    (share > 0).then(|| (name.clone(), share))
                })
                .collect(),
            sla_scores: self.sla.published(),
            rtt_ms: self.rtt.published(),
            concurrency_limit: Some(self.limit.published()),
        }
    }

    /// The concurrency limit and what it came from.
    pub fn limit(&self) -> LimitStatus {
        self.limit.status().clone()
    }

    /// The smoothed state to persist.
    pub fn scores(&self) -> Scores {
        Scores {
            sla: self.sla.status(),
            limit: Some(self.limit.status().clone()),
            evidence: self.evidence(),
        }
    }

    /// Puts persisted scores back (after a restart) and makes the feed
    /// reflect them without counting as a change.
    pub fn restore_scores(&mut self, scores: &Scores) {
        self.sla.restore(&scores.sla);
        if let Some(limit) = &scores.limit {
            self.limit.restore(limit);
        }
        for (canary, evidence) in &scores.evidence {
            if let Some(rollout) = self.rollouts.get_mut(canary) {
                rollout.evidence = evidence.clone();
            }
        }
        self.last_feed = self.feed();
    }

    /// Every rollout's state, by canary cluster (to persist, and to show).
    pub fn rollouts(&self) -> Vec<RolloutState> {
        self.rollouts.values().map(|r| r.state.clone()).collect()
    }

    /// The latest evidence of each canary, by canary cluster.
    pub fn evidence(&self) -> BTreeMap<String, Evidence> {
        self.rollouts
            .iter()
            .map(|(name, r)| (name.clone(), r.evidence.clone()))
            .collect()
    }

    /// Every cluster's SLA score and what it came from.
    pub fn sla(&self) -> Vec<SlaStatus> {
        self.sla.status()
    }

    /// Takes over `other`'s measured RTTs, which no saved state holds (this
    /// controller being `other` rebuilt from its saved state).
    pub(crate) fn take_measurements(&mut self, other: &mut Controller) {
        std::mem::swap(&mut self.rtt, &mut other.rtt);
        self.last_feed.rtt_ms = self.rtt.published();
    }

    /// Takes back the RTTs a saved feed carried (see [`MeasuredRtt::restore`])
    /// and makes the feed reflect them without counting as a change.
    pub(crate) fn restore_rtt(
        &mut self,
        published: &BTreeMap<String, BTreeMap<String, f64>>,
        now_ms: u64,
    ) {
        self.rtt.restore(published, now_ms);
        self.last_feed.rtt_ms = self.rtt.published();
    }

    /// Every measured RTT from a region to a cluster, and what it came from.
    pub fn rtt(&self) -> Vec<RttStatus> {
        self.rtt.status()
    }

    /// Recent decisions, oldest first (at most [`HISTORY`]).
    pub fn decisions(&self) -> &[Decision] {
        &self.history
    }

    /// An operator's command on the rollout of `canary`. The decision is in
    /// the history but not in the next evaluation's: persist it yourself.
    pub fn command(
        &mut self,
        canary: &str,
        command: Command,
        now_ms: u64,
    ) -> Result<Decision, String> {
        let Some(rollout) = self.rollouts.get_mut(canary) else {
            let known: Vec<&str> = self.rollouts.keys().map(String::as_str).collect();
            return Err(format!(
                "`{canary}` is not the canary of any placement; canaries are: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        };
        let decision = rollout.state.command(command, &rollout.evidence, now_ms)?;
        self.record(decision.clone());
        Ok(decision)
    }
}
