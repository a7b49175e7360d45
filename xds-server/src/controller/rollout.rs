//! One canary rollout's walk along its steps: the state that is persisted,
//! the transitions, and the decisions they produce.
//!
//! A canary with a mirror phase starts Progressing at weight 0 with a share
//! of its placement mirrored to it; held healthy, it enters the first step.
//!
//! ```text
//!              ┌── held healthy at the last step, or `promote` ──▶ Promoted
//!  Progressing ┤
//!     │   ▲    └── bad evidence, or `abort` ─────────────────────▶ RolledBack
//!  pause resume
//!     ▼   │
//!    Paused ──── `promote` ▶ Promoted, `abort` ▶ RolledBack
//! ```

use serde::{Deserialize, Serialize};
use weir_policy::feed::percent_to_basis_points;
use weir_policy::model::{Analysis, Canary};
use weir_policy::split::BUCKETS;

use super::analysis::{Evidence, Verdict};
use crate::metrics_store::{Histogram, WindowStats};

/// Longest gap between two healthy evaluations that counts toward the hold:
/// evaluations run every ~250 ms, so a longer gap means `weir` was not
/// watching (stopped, restarted, stalled) and that time is not credited.
pub(crate) const MAX_CREDITED_GAP_MS: u64 = 5_000;

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Walking the steps: analysis moves it forward or rolls it back.
    Progressing,
    /// Frozen by an operator at its weight; analysis moves nothing.
    Paused,
    /// At 100 % for good (terminal until the policy changes the canary).
    Promoted,
    /// At 0 % for good (terminal until the policy changes the canary).
    RolledBack,
}

impl Phase {
    /// Promoted or rolled back: nothing but a policy change moves it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }
}

/// A manual command on a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Freeze the weight (from Progressing).
    Pause,
    /// Progress again, with a fresh hold (from Paused).
    Resume,
    /// Jump to 100 % and Promoted (from Progressing or Paused).
    Promote,
    /// Weight 0 and RolledBack (from Progressing or Paused).
    Abort,
}

impl std::str::FromStr for Command {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pause" => Ok(Command::Pause),
            "resume" => Ok(Command::Resume),
            "promote" => Ok(Command::Promote),
            "abort" => Ok(Command::Abort),
            _ => Err(format!(
                "unknown command `{s}`: pause, resume, promote or abort"
            )),
        }
    }
}

/// The stable cluster's last window with enough samples: the comparison at
/// full weight, where the stable cluster gets none of the placement's traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// When it was taken (ms since the epoch).
    pub at_ms: u64,
    /// Requests in that window.
    pub requests: u64,
    /// Errors in that window.
    pub errors: u64,
    /// Latency histogram bounds (ms).
    #[serde(default)]
    pub latency_bounds: Vec<f64>,
    /// Latency histogram counts.
    #[serde(default)]
    pub latency_counts: Vec<u64>,
}

impl Baseline {
    pub(crate) fn of(window: &WindowStats, at_ms: u64) -> Self {
        Self {
            at_ms,
            requests: window.requests,
            errors: window.errors,
            latency_bounds: window.latency.bounds.clone(),
            latency_counts: window.latency.counts.clone(),
        }
    }

    pub(crate) fn window(&self) -> WindowStats {
        // A record whose histogram does not fit its bounds is read as no latency.
        let latency = if self.latency_counts.len() == self.latency_bounds.len() + 1 {
            Histogram {
                bounds: self.latency_bounds.clone(),
                counts: self.latency_counts.clone(),
            }
        } else {
            Histogram::default()
        };
        WindowStats {
            requests: self.requests,
            errors: self.errors,
            latency,
        }
    }
}

/// A rollout's state: what is persisted, and what the admin API shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The canary cluster (a rollout's identity).
    pub canary: String,
    /// The placement's stable cluster it is compared with.
    pub stable: String,
    /// The sticky-hash salt in force when the rollout started.
    pub salt: String,
    /// The steps in basis points when the rollout started.
    pub steps_bp: Vec<u32>,
    /// Where the rollout is.
    pub phase: Phase,
    /// Index of the current step in `steps_bp`.
    pub step: usize,
    /// The canary's weight now, in basis points (what the feed carries).
    pub weight_bp: u32,
    /// When the rollout started (ms since the epoch).
    pub started_ms: u64,
    /// When the current step (or phase) was entered.
    pub step_since_ms: u64,
    /// Healthy time credited at this step (the hold clock, ms).
    #[serde(default)]
    pub healthy_ms: u64,
    /// When the current unbroken run of healthy verdicts began; `None` when the
    /// latest verdict was not healthy.
    #[serde(default)]
    pub healthy_since_ms: Option<u64>,
    /// When analysis last ran on this rollout.
    #[serde(default)]
    pub evaluated_ms: Option<u64>,
    /// The stable cluster's last window with enough samples.
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// The share of the placement mirrored to the canary, in basis points,
    /// during its mirror phase (at weight 0, before the first step); 0 after.
    #[serde(default, skip_serializing_if = "weir_policy::split::is_zero")]
    pub mirror_bp: u32,
}

/// A state or weight change, with what it was based on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The canary cluster.
    pub canary: String,
    /// The phase before.
    pub from: Phase,
    /// The phase after.
    pub to: Phase,
    /// The step index after.
    pub step: usize,
    /// The weight before, in basis points.
    #[serde(default)]
    pub from_weight_bp: u32,
    /// The weight after, in basis points.
    pub weight_bp: u32,
    /// Why, in words.
    pub reason: String,
    /// The analysis in force when it was decided.
    pub evidence: Evidence,
    /// The digest of the policy text it was decided under (see `weir status`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
}

/// What the policy says about one canary.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CanaryConfig {
    pub(crate) stable: String,
    pub(crate) salt: String,
    pub(crate) steps_bp: Vec<u32>,
    /// `None` if the policy's duration cannot be read (never the case for a
    /// validated policy): the hold then never elapses.
    pub(crate) hold_ms: Option<u64>,
    pub(crate) analysis: Analysis,
    /// The mirror phase's share in basis points; 0 without one.
    pub(crate) mirror_bp: u32,
    /// How long the mirror phase must stay healthy (as `hold_ms`).
    pub(crate) mirror_hold_ms: Option<u64>,
}

impl CanaryConfig {
    pub(crate) fn of(stable: &str, canary: &Canary) -> Self {
        Self {
            stable: stable.to_owned(),
            salt: canary
                .salt
                .clone()
                .unwrap_or_else(|| canary.cluster.clone()),
            steps_bp: canary
                .steps
                .iter()
                .map(|&s| percent_to_basis_points(s))
                .collect(),
            hold_ms: canary.hold.millis(),
            analysis: canary.analysis.clone(),
            mirror_bp: canary
                .mirror
                .as_ref()
                .map_or(0, |m| percent_to_basis_points(m.percent).min(BUCKETS)),
            mirror_hold_ms: canary
                .mirror
                .as_ref()
                .and_then(|m| m.hold.as_ref())
                .map_or(canary.hold.millis(), |hold| hold.millis()),
        }
    }

    fn step_weight(&self, step: usize) -> u32 {
        self.steps_bp.get(step).copied().unwrap_or(0).min(BUCKETS)
    }
}

fn percent(bp: u32) -> String {
    let p = f64::from(bp) / 100.0;
    format!("{p} %")
}

fn seconds(ms: u64) -> String {
    let s = ms as f64 / 1000.0;
    format!("{s} s")
}

impl RolloutState {
    /// A new rollout: in its mirror phase if it has one, else at the first step.
    pub(crate) fn start(canary: &str, config: &CanaryConfig, now_ms: u64) -> Self {
        let mirroring = config.mirror_bp > 0;
        Self {
            canary: canary.to_owned(),
            stable: config.stable.clone(),
            salt: config.salt.clone(),
            steps_bp: config.steps_bp.clone(),
            phase: Phase::Progressing,
            step: 0,
            weight_bp: if mirroring { 0 } else { config.step_weight(0) },
            started_ms: now_ms,
            step_since_ms: now_ms,
            healthy_ms: 0,
            healthy_since_ms: None,
            evaluated_ms: None,
            baseline: None,
            mirror_bp: config.mirror_bp,
        }
    }

    /// A rollout of `canary` against `app`, steps 50 % and 100 %, at its
    /// first step with `weight_bp`, in `phase`: for tests of what shows it.
    #[cfg(test)]
    pub(crate) fn for_tests(canary: &str, weight_bp: u32, phase: Phase) -> Self {
        Self {
            canary: canary.to_owned(),
            stable: "app".to_owned(),
            salt: canary.to_owned(),
            steps_bp: vec![5_000, 10_000],
            phase,
            step: 0,
            weight_bp,
            started_ms: 0,
            step_since_ms: 0,
            healthy_ms: 0,
            healthy_since_ms: None,
            evaluated_ms: None,
            baseline: None,
            mirror_bp: 0,
        }
    }

    /// Whether the rollout is in its mirror phase.
    pub fn mirroring(&self) -> bool {
        self.mirror_bp > 0 && !self.phase.is_terminal()
    }

    /// The mirrored share the feed carries for this rollout.
    pub fn feed_mirror(&self) -> u32 {
        if self.mirroring() {
            self.mirror_bp.min(BUCKETS)
        } else {
            0
        }
    }

    /// Where the rollout stands, in words: `mirrored at 10 %` or `at 5 %`.
    fn position(&self) -> String {
        if self.mirroring() {
            format!("mirrored at {}", percent(self.mirror_bp))
        } else {
            format!("at {}", percent(self.weight_bp))
        }
    }

    /// The weight the feed carries for this rollout.
    pub fn feed_weight(&self) -> u32 {
        match self.phase {
            Phase::Promoted => BUCKETS,
            Phase::RolledBack => 0,
            Phase::Progressing | Phase::Paused => self.weight_bp.min(BUCKETS),
        }
    }

    /// Moves to `to` at `step` and `weight_bp`; the hold clock restarts.
    fn transition(
        &mut self,
        to: Phase,
        step: usize,
        weight_bp: u32,
        now_ms: u64,
        reason: String,
        evidence: &Evidence,
    ) -> Decision {
        let decision = Decision {
            at_ms: now_ms,
            canary: self.canary.clone(),
            from: self.phase,
            to,
            step,
            from_weight_bp: self.weight_bp,
            weight_bp,
            reason,
            evidence: evidence.clone(),
            policy: String::new(),
        };
        self.phase = to;
        self.step = step;
        self.weight_bp = weight_bp;
        if to.is_terminal() {
            self.mirror_bp = 0;
        }
        self.step_since_ms = now_ms;
        self.healthy_ms = 0;
        self.healthy_since_ms = None;
        decision
    }

    /// Applies one evaluation's evidence; a decision when something moved.
    pub(crate) fn observe(
        &mut self,
        config: &CanaryConfig,
        evidence: &Evidence,
        now_ms: u64,
    ) -> Option<Decision> {
        if self.phase != Phase::Progressing {
            self.evaluated_ms = Some(now_ms);
            return None;
        }
        let previous = self.evaluated_ms.replace(now_ms);
        match evidence.verdict {
            Verdict::Bad => {
                let reason = format!(
                    "canary is bad {}: {}",
                    self.position(),
                    bad_findings(evidence)
                );
                Some(self.transition(Phase::RolledBack, self.step, 0, now_ms, reason, evidence))
            }
            Verdict::Inconclusive => {
                // The hold clock pauses: nothing is credited, nothing is lost.
                self.healthy_since_ms = None;
                None
            }
            Verdict::Healthy => {
                let gap = previous.map(|p| now_ms.saturating_sub(p));
                match gap {
                    Some(gap) if self.healthy_since_ms.is_some() && gap <= MAX_CREDITED_GAP_MS => {
                        self.healthy_ms = self.healthy_ms.saturating_add(gap);
                    }
                    // A new run of healthy verdicts, or one `weir` was not
                    // watching all along: it counts from now.
                    _ => self.healthy_since_ms = Some(now_ms),
                }
                let hold_ms = if self.mirroring() {
                    config.mirror_hold_ms?
                } else {
                    config.hold_ms?
                };
                if self.healthy_ms < hold_ms {
                    return None;
                }
                if self.mirroring() {
                    let weight = config.step_weight(0);
                    let reason = format!(
                        "healthy for {} {}: the split starts, step 1 of {}, {}",
                        seconds(self.healthy_ms),
                        self.position(),
                        config.steps_bp.len(),
                        percent(weight)
                    );
                    let decision =
                        self.transition(Phase::Progressing, 0, weight, now_ms, reason, evidence);
                    self.mirror_bp = 0;
                    self.healthy_since_ms = Some(now_ms);
                    return Some(decision);
                }
                let next = self.step + 1;
                if next < config.steps_bp.len() {
                    let weight = config.step_weight(next).max(self.weight_bp);
                    let reason = format!(
                        "healthy for {} at {}: step {} of {}, {}",
                        seconds(self.healthy_ms),
                        percent(self.weight_bp),
                        next + 1,
                        config.steps_bp.len(),
                        percent(weight)
                    );
                    let decision =
                        self.transition(Phase::Progressing, next, weight, now_ms, reason, evidence);
                    // Still healthy: the next step's clock runs from now.
                    self.healthy_since_ms = Some(now_ms);
                    Some(decision)
                } else {
                    let reason = format!(
                        "healthy for {} at the last step ({}): promoted",
                        seconds(self.healthy_ms),
                        percent(self.weight_bp)
                    );
                    Some(self.transition(
                        Phase::Promoted,
                        self.step,
                        BUCKETS,
                        now_ms,
                        reason,
                        evidence,
                    ))
                }
            }
        }
    }

    /// Applies an operator's command.
    pub(crate) fn command(
        &mut self,
        command: Command,
        evidence: &Evidence,
        now_ms: u64,
    ) -> Result<Decision, String> {
        let refuse = |what: &str| {
            Err(format!(
                "cannot {what} `{}`: it is {}",
                self.canary,
                phase_name(self.phase)
            ))
        };
        match (command, self.phase) {
            (Command::Pause, Phase::Progressing) => Ok(self.transition(
                Phase::Paused,
                self.step,
                self.weight_bp,
                now_ms,
                format!("paused by an operator {}", self.position()),
                evidence,
            )),
            (Command::Pause, _) => refuse("pause"),
            (Command::Resume, Phase::Paused) => Ok(self.transition(
                Phase::Progressing,
                self.step,
                self.weight_bp,
                now_ms,
                format!(
                    "resumed by an operator {}, with a fresh hold",
                    self.position()
                ),
                evidence,
            )),
            (Command::Resume, _) => refuse("resume"),
            (Command::Promote, Phase::Progressing | Phase::Paused) => {
                let last = self.steps_bp.len().saturating_sub(1);
                Ok(self.transition(
                    Phase::Promoted,
                    last,
                    BUCKETS,
                    now_ms,
                    format!("promoted by an operator from {}", self.position()),
                    evidence,
                ))
            }
            (Command::Promote, _) => refuse("promote"),
            (Command::Abort, Phase::Progressing | Phase::Paused) => Ok(self.transition(
                Phase::RolledBack,
                self.step,
                0,
                now_ms,
                format!("aborted by an operator {}", self.position()),
                evidence,
            )),
            (Command::Abort, _) => refuse("abort"),
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "progressing",
        Phase::Paused => "paused",
        Phase::Promoted => "promoted (change the canary in the policy to start a new rollout)",
        Phase::RolledBack => "rolled back (change the canary in the policy to start a new rollout)",
    }
}

fn bad_findings(evidence: &Evidence) -> String {
    let bad: Vec<&str> = evidence
        .findings
        .iter()
        .filter(|f| f.ends_with(": bad"))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        evidence.findings.join("; ")
    } else {
        bad.join("; ")
    }
}

/// The rollout a canary of the policy continues with: the previous state if
/// it still is this rollout, else a new one; with a decision when the state
/// changed (a rollout started, restarted, or moved to another step index).
pub(crate) fn reconcile(
    canary: &str,
    config: &CanaryConfig,
    previous: Option<RolloutState>,
    now_ms: u64,
) -> (RolloutState, Option<Decision>) {
    let evidence = Evidence::none(super::WINDOW_MS);
    let start = |reason: String, from: Option<&RolloutState>| {
        let state = RolloutState::start(canary, config, now_ms);
        let decision = Decision {
            at_ms: now_ms,
            canary: canary.to_owned(),
            from: from.map_or(Phase::Progressing, |p| p.phase),
            to: state.phase,
            step: 0,
            from_weight_bp: from.map_or(state.weight_bp, RolloutState::feed_weight),
            weight_bp: state.weight_bp,
            reason,
            evidence: evidence.clone(),
            policy: String::new(),
        };
        (state, Some(decision))
    };
    let first = if config.mirror_bp > 0 {
        format!(
            "mirrored at {} before step 1 of {}",
            percent(config.mirror_bp),
            config.steps_bp.len()
        )
    } else {
        format!(
            "step 1 of {}, {}",
            config.steps_bp.len(),
            percent(config.step_weight(0))
        )
    };
    let Some(previous) = previous else {
        return start(format!("rollout started: {first}"), None);
    };
    if previous.stable != config.stable || previous.salt != config.salt {
        let what = if previous.stable != config.stable {
            "stable cluster"
        } else {
            "salt"
        };
        return start(
            format!("the policy changed the canary's {what}: new rollout, {first}"),
            Some(&previous),
        );
    }
    if previous.steps_bp == config.steps_bp {
        let mut state = previous;
        if !state.mirroring() {
            return (state, None);
        }
        if config.mirror_bp > 0 {
            // A new share applies to the running mirror phase.
            state.mirror_bp = config.mirror_bp;
            return (state, None);
        }
        let weight = config.step_weight(0);
        let reason = format!(
            "the policy removed the mirror phase: step 1 of {}, {}",
            config.steps_bp.len(),
            percent(weight)
        );
        let decision = state.transition(state.phase, 0, weight, now_ms, reason, &evidence);
        state.mirror_bp = 0;
        return (state, Some(decision));
    }
    if previous.phase.is_terminal() {
        return start(
            format!("the policy changed the canary's steps: new rollout, {first}"),
            Some(&previous),
        );
    }
    match config
        .steps_bp
        .iter()
        .position(|&w| w == previous.weight_bp)
    {
        Some(step) => {
            let mut state = previous;
            let from_step = state.step;
            state.step = step;
            state.steps_bp = config.steps_bp.clone();
            let decision = (from_step != step).then(|| Decision {
                at_ms: now_ms,
                canary: canary.to_owned(),
                from: state.phase,
                to: state.phase,
                step,
                from_weight_bp: state.weight_bp,
                weight_bp: state.weight_bp,
                reason: format!(
                    "the policy changed the canary's steps: {} is now step {} of {}",
                    percent(state.weight_bp),
                    step + 1,
                    config.steps_bp.len()
                ),
                evidence: evidence.clone(),
                policy: String::new(),
            });
            (state, decision)
        }
        None => start(
            format!(
                "the policy changed the canary's steps and {} is not one of them: restarted at {first}",
                percent(previous.weight_bp)
            ),
            Some(&previous),
        ),
    }
}
