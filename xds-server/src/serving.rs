//! The serving state: the policy and feed being served, the controller that
//! moves the feed, where its decisions are kept, and the snapshot Envoys get.
//! `serve` wires it to the servers and the clocks; `admin` and `dashboard`
//! read it and send it commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use weir_policy::{Feed, Policy};

use crate::controller::{Command, Controller, Decision};
use crate::metrics_store::MetricsStore;
use crate::policy_source::{self, InvalidPolicy};
use crate::resources::{self, Options};
use crate::snapshot::Snapshot;
use crate::store::{Checkpoint, Saved, Store};
use crate::telemetry::{Origin, Telemetry};

/// Evaluations between two saves of the rollout states when nothing else
/// made one (about 2 s at the default interval).
const CHECKPOINT_EVERY: u64 = 8;

/// Milliseconds since the epoch, the controller's and the metrics' clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why an operator's command did not take effect.
#[derive(Debug, PartialEq)]
pub(crate) enum CommandFailure {
    /// It does not apply to the rollout as it is (`409`).
    Refused(String),
    /// It could not be decided or kept now; it may work later (`503`).
    Unavailable(String),
}

/// What is being served, and what went wrong last.
pub(crate) struct Control {
    policy_path: PathBuf,
    policy: Policy,
    /// Feed values an operator pinned through the admin API; they win over the
    /// controller's until cleared or until they no longer fit the policy.
    feed_override: Option<Feed>,
    options: Options,
    snapshots: watch::Sender<Arc<Snapshot>>,
    controller: Controller,
    state: Box<dyn Store>,
    metrics: Arc<Mutex<MetricsStore>>,
    evaluations: u64,
    /// Whether this process decides: alone, or as the replicas' leader. A
    /// follower serves the leader's state (see [`Control::adopt`]).
    deciding: bool,
    /// The policy text's digest, which replicas compare.
    policy_digest: String,
    telemetry: Telemetry,
    /// The last problem with the policy file or a snapshot, cleared by the next success.
    pub(crate) last_error: Option<String>,
    /// Each canary's weight in the snapshot served.
    served_weights: BTreeMap<String, u32>,
    /// The canaries' mirrored shares last served, as `served_weights`.
    served_mirrors: BTreeMap<String, u32>,
    /// The controller's state while it cannot be saved.
    unsaved: Option<Unsaved>,
}

/// What the controller decided that the store has not kept yet, and why.
struct Unsaved {
    error: String,
    /// Decisions served but not saved, oldest first: saved with the next
    /// checkpoint that succeeds.
    decisions: Vec<Decision>,
}

impl Control {
    /// The serving state of `policy` with the controller's feed, and the
    /// channel its snapshots are published on; an error if they do not make a
    /// consistent snapshot.
    #[allow(clippy::too_many_arguments)] // one for each part it owns
    pub(crate) fn new(
        policy_path: PathBuf,
        policy: Policy,
        policy_text: &str,
        deciding: bool,
        options: Options,
        controller: Controller,
        state: Box<dyn Store>,
        metrics: Arc<Mutex<MetricsStore>>,
        telemetry: Telemetry,
    ) -> anyhow::Result<(Self, watch::Receiver<Arc<Snapshot>>)> {
        let feed = controller.feed();
        let snapshot = resources::build(&policy, &feed, &options)?;
        tracing::info!(version = %snapshot.version, file = %policy_path.display(), "policy loaded");
        let (snapshots, receiver) = watch::channel(Arc::new(snapshot));
        know_clusters(&metrics, &policy);
        let control = Self {
            policy_path,
            policy,
            feed_override: None,
            options,
            snapshots,
            controller,
            state,
            metrics,
            evaluations: 0,
            deciding,
            policy_digest: policy_digest(policy_text),
            telemetry,
            last_error: None,
            served_weights: feed.canary_weights,
            served_mirrors: feed.canary_mirrors,
            unsaved: None,
        };
        Ok((control, receiver))
    }

    /// Takes over saved state — this process's own at start-up; the leader's,
    /// while this replica follows; the state it left, when this one leads — and
    /// serves the feed it makes under this replica's own policy, so the
    /// snapshot is always one this policy makes.
    pub(crate) fn adopt(&mut self, saved: Saved, deciding: bool) {
        self.controller =
            restored_controller(&self.policy, saved.rollouts, saved.decisions, &saved.scores);
        if let Some(feed) = &saved.feed {
            self.controller
                .restore_rtt(&measured_rtt(feed, saved.pins.as_ref()), now_ms());
        }
        self.deciding = deciding;
        self.feed_override = saved.pins.filter(|pins| {
            let problems = pins.validate(&self.policy);
            if !problems.is_empty() {
                tracing::warn!(
                    ?problems,
                    "the saved pinned feed values do not fit this policy: not served"
                );
            }
            problems.is_empty()
        });
        if let Err(err) = self.rebuild() {
            tracing::error!(error = %err, "the saved state makes no valid snapshot: the last one keeps serving");
            self.last_error = Some(err);
        }
    }

    /// Whether this process decides (alone, or as the leader).
    pub(crate) fn deciding(&self) -> bool {
        self.deciding
    }

    /// Stops deciding at once (a leader that lost its lease).
    pub(crate) fn stop_deciding(&mut self) {
        self.deciding = false;
    }

    /// The digest of the policy text served.
    pub(crate) fn policy_digest(&self) -> &str {
        &self.policy_digest
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    pub(crate) fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn controller(&self) -> &Controller {
        &self.controller
    }

    /// The feed served: the controller's, with the operator's pinned values over it.
    pub(crate) fn feed(&self) -> Feed {
        overlay(self.controller.feed(), self.feed_override.as_ref())
    }

    /// Pins feed values (`None` clears them); nothing changes if they do not fit the policy.
    pub(crate) fn set_feed(&mut self, pinned: Option<Feed>) -> Result<String, Vec<String>> {
        if let Some(feed) = &pinned {
            let problems = feed.validate(&self.policy);
            if !problems.is_empty() {
                return Err(problems.iter().map(ToString::to_string).collect());
            }
        }
        // Built before anything changes, kept before it is served: a restart
        // (or another replica) serves the same pins.
        let served = overlay(self.controller.feed(), pinned.as_ref());
        let snapshot = resources::build(&self.policy, &served, &self.options)
            .map_err(|e| vec![e.to_string()])?;
        self.state
            .save_pins(pinned.as_ref())
            .map_err(|err| vec![format!("not applied: {err:#}")])?;
        self.feed_override = pinned;
        self.served_weights = served.canary_weights;
        self.served_mirrors = served.canary_mirrors;
        Ok(self.publish(snapshot))
    }

    /// An operator's command on a rollout: recorded, persisted, then pushed.
    ///
    /// When the state cannot be saved, a command toward stable (an abort, a
    /// pause) is served all the same and saved once the store works again,
    /// as the controller's rollbacks are; one away from it (resume, promote)
    /// changes nothing and fails.
    pub(crate) fn command(
        &mut self,
        canary: &str,
        command: Command,
    ) -> Result<Decision, CommandFailure> {
        if !self.deciding {
            return Err(CommandFailure::Unavailable(
                "this replica does not lead: commands take effect through the leader".into(),
            ));
        }
        let before = Saved {
            rollouts: self.controller.rollouts(),
            decisions: self.controller.decisions().to_vec(),
            scores: self.controller.scores(),
            ..Saved::default()
        };
        let mut decision = self
            .controller
            .command(canary, command, now_ms())
            .map_err(CommandFailure::Refused)?;
        decision.policy.clone_from(&self.policy_digest);
        self.controller.stamp_policy(&self.policy_digest);
        let earlier = self.unsaved.take().map(|u| u.decisions).unwrap_or_default();
        let pending: Vec<Decision> = earlier.iter().chain([&decision]).cloned().collect();
        if let Err(err) = self.checkpoint(&pending) {
            let error = format!("{err:#}");
            if self.telemetry.state_not_saved() {
                tracing::error!(
                    "{error}; until it can be saved, moves toward stable are served and canaries are held at the weight served"
                );
            }
            if !matches!(command, Command::Abort | Command::Pause) {
                // Not kept, so not served either: the command did not happen
                // (a later save must not make it happen behind the
                // operator's back).
                let mut restored = restored_controller(
                    &self.policy,
                    before.rollouts,
                    before.decisions,
                    &before.scores,
                );
                restored.take_measurements(&mut self.controller);
                self.controller = restored;
                self.unsaved = Some(Unsaved {
                    error: error.clone(),
                    decisions: earlier,
                });
                return Err(CommandFailure::Unavailable(format!(
                    "not applied, the state could not be saved: {error}; try again"
                )));
            }
            self.unsaved = Some(Unsaved {
                error,
                decisions: pending,
            });
        } else if self.telemetry.state_saved() {
            tracing::info!("the state is saved again");
        }
        tracing::info!(canary, ?command, to = ?decision.to, weight_bp = decision.weight_bp, "rollout command");
        self.rebuild().map_err(CommandFailure::Unavailable)?;
        Ok(decision)
    }

    /// One evaluation of the controller; a new feed is persisted, then pushed.
    /// A follower does not evaluate: it serves what the leader decides.
    ///
    /// When the state cannot be saved (disk full, lost store), weir fails
    /// toward stable: what raises no canary's weight above the one served (a
    /// rollback, a pause, new scores) is pushed at once and saved once the
    /// store works again; a rollout whose weight would rise is held as it
    /// was, and decides again at the next evaluation.
    pub(crate) fn control(&mut self, now: u64) {
        if !self.deciding {
            return;
        }
        let before = self.controller.rollouts();
        let evaluation = {
            let Ok(mut metrics) = self.metrics.lock() else {
                return;
            };
            metrics.prune(now);
            self.controller.evaluate(&metrics, now)
        };
        let mut decisions = evaluation.decisions;
        for decision in &mut decisions {
            decision.policy.clone_from(&self.policy_digest);
        }
        self.controller.stamp_policy(&self.policy_digest);
        self.evaluations = self.evaluations.wrapping_add(1);
        // Hold progress is saved now and then even without a decision, so a
        // restart loses at most a few seconds of it.
        // The first evaluation saves too: a store that cannot be written is
        // reported at once.
        let checkpoint = self.evaluations % CHECKPOINT_EVERY == 1;
        if decisions.is_empty() && !evaluation.changed && !checkpoint && self.unsaved.is_none() {
            return;
        }
        // Written before it is pushed: a restart resumes exactly here.
        let earlier = self.unsaved.take().map(|u| u.decisions).unwrap_or_default();
        let pending: Vec<Decision> = earlier.iter().chain(&decisions).cloned().collect();
        match self.checkpoint(&pending) {
            Ok(()) => {
                if self.telemetry.state_saved() {
                    tracing::info!("the state is saved again");
                }
            }
            Err(err) => {
                let error = format!("{err:#}");
                if self.telemetry.state_not_saved() {
                    tracing::error!(
                        "{error}; until it can be saved, moves toward stable are served and canaries are held at the weight served"
                    );
                }
                // Only this evaluation's decisions can be held: the earlier
                // ones were served.
                let held = self.hold_rises(before, &decisions);
                decisions.retain(|d| !held.contains(&d.canary));
                let decisions = earlier.iter().chain(&decisions).cloned().collect();
                self.unsaved = Some(Unsaved { error, decisions });
            }
        }
        self.telemetry.decisions(&decisions, Origin::Controller);
        for decision in &decisions {
            tracing::info!(
                canary = %decision.canary,
                from = ?decision.from,
                to = ?decision.to,
                weight_bp = decision.weight_bp,
                reason = %decision.reason,
                "rollout decision"
            );
        }
        let feed = self.feed();
        let behind = feed.canary_weights != self.served_weights
            || feed.canary_mirrors != self.served_mirrors;
        if (evaluation.changed || !decisions.is_empty() || behind)
            && let Err(err) = self.rebuild()
        {
            tracing::error!(error = %err, "the controller's feed was not served");
        }
    }

    /// Puts back, as they were `before` this evaluation, the rollouts whose
    /// weight would rise above the one served, dropping their decisions from
    /// the history; returns their canaries.
    fn hold_rises(
        &mut self,
        before: Vec<crate::controller::RolloutState>,
        fresh: &[Decision],
    ) -> Vec<String> {
        let feed = self.feed();
        let held: Vec<String> = feed
            .canary_weights
            .iter()
            .filter(|&(canary, weight)| self.served_weights.get(canary).is_none_or(|s| weight > s))
            .map(|(canary, _)| canary.clone())
            .collect();
        if held.is_empty() {
            return held;
        }
        let mut rollouts = self.controller.rollouts();
        for rollout in &mut rollouts {
            if held.contains(&rollout.canary)
                && let Some(old) = before.iter().find(|b| b.canary == rollout.canary)
            {
                *rollout = old.clone();
            }
        }
        let dropped: Vec<&Decision> = fresh.iter().filter(|d| held.contains(&d.canary)).collect();
        let decisions = self
            .controller
            .decisions()
            .iter()
            .filter(|d| !dropped.contains(d))
            .cloned()
            .collect();
        let scores = self.controller.scores();
        let mut restored = restored_controller(&self.policy, rollouts, decisions, &scores);
        // Measured RTTs are not saved: the rebuilt controller keeps them.
        restored.take_measurements(&mut self.controller);
        self.controller = restored;
        held
    }

    /// Why the controller's state cannot be saved, while it cannot.
    pub(crate) fn unsaved(&self) -> Option<&str> {
        self.unsaved.as_ref().map(|u| u.error.as_str())
    }

    /// Saves the controller's state with `new_decisions` and the feed it makes.
    fn checkpoint(&self, new_decisions: &[Decision]) -> anyhow::Result<()> {
        self.state.save(&Checkpoint {
            rollouts: &self.controller.rollouts(),
            new_decisions,
            scores: &self.controller.scores(),
            feed: &self.feed(),
        })
    }

    /// Keeps the dashboard's timeline points (see [`Store::save_timeline`]).
    pub(crate) fn save_timeline(
        &self,
        points: &[crate::timeline::Point],
        forget_until_ms: u64,
    ) -> anyhow::Result<()> {
        self.state.save_timeline(points, forget_until_ms)
    }

    fn rebuild(&mut self) -> Result<String, String> {
        let feed = self.feed();
        let snapshot =
            resources::build(&self.policy, &feed, &self.options).map_err(|e| e.to_string())?;
        self.served_weights = feed.canary_weights;
        self.served_mirrors = feed.canary_mirrors;
        Ok(self.publish(snapshot))
    }

    /// Applies a new policy text; an invalid one changes nothing.
    pub(crate) fn apply_policy_text(&mut self, text: &str) {
        let policy = match policy_source::parse(&self.policy_path, text) {
            Ok(policy) => policy,
            Err(invalid) => return self.reject(&invalid),
        };
        let digest = policy_digest(text);
        // A policy that cannot make a consistent snapshot is refused before
        // anything (the controller's rollouts included) moves to it.
        if let Err(err) = resources::build(&policy, &Feed::initial(&policy), &self.options) {
            tracing::error!(file = %self.policy_path.display(), error = %err, "policy rejected: the last good one keeps serving");
            self.telemetry.policy_rejected();
            self.last_error = Some(err.to_string());
            return;
        }
        // Pinned values survive an edit where they still fit the new policy.
        self.feed_override = self
            .feed_override
            .take()
            .filter(|f| f.validate(&policy).is_empty());
        self.controller.set_policy(&policy, now_ms());
        know_clusters(&self.metrics, &policy);
        self.policy = policy;
        self.policy_digest = digest;
        self.telemetry.policy_applied();
        match self.rebuild() {
            Ok(version) => {
                tracing::info!(file = %self.policy_path.display(), version, "policy applied")
            }
            Err(err) => self.last_error = Some(err),
        }
    }

    /// Reports a policy that cannot be used; the last good one keeps serving.
    pub(crate) fn reject(&mut self, invalid: &InvalidPolicy) {
        tracing::error!(
            file = %self.policy_path.display(),
            "policy rejected: the last good one keeps serving:\n{invalid}"
        );
        self.telemetry.policy_rejected();
        self.last_error = Some(invalid.to_string());
    }

    fn publish(&mut self, snapshot: Snapshot) -> String {
        let version = snapshot.version.clone();
        self.last_error = None;
        // Publishing the same content again would only make streams re-check it.
        if self.snapshots.borrow().version != version {
            self.snapshots.send_replace(Arc::new(snapshot));
        }
        version
    }
}

/// A controller of `policy` that resumes from saved state: the rollouts
/// where they stood, their decisions, the scores and the latest evidence.
pub(crate) fn restored_controller(
    policy: &Policy,
    rollouts: Vec<crate::controller::RolloutState>,
    decisions: Vec<Decision>,
    scores: &crate::controller::Scores,
) -> Controller {
    let mut controller = Controller::new(policy, rollouts, now_ms());
    controller.restore_history(decisions);
    controller.restore_scores(scores);
    controller
}

/// The first 12 hex digits of the sha256 of a policy text.
pub(crate) fn policy_digest(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The RTTs of a served `feed` that were measured: those an operator
/// `pinned` over them are left out.
fn measured_rtt(feed: &Feed, pinned: Option<&Feed>) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut measured = feed.rtt_ms.clone();
    if let Some(pinned) = pinned {
        for (region, row) in &pinned.rtt_ms {
            if let Some(kept) = measured.get_mut(region) {
                kept.retain(|cluster, _| !row.contains_key(cluster));
            }
        }
    }
    measured
}

/// The controller's `feed` with the operator's `pinned` values over it.
fn overlay(mut feed: Feed, pinned: Option<&Feed>) -> Feed {
    if let Some(pinned) = pinned {
        feed.canary_weights.extend(pinned.canary_weights.clone());
        feed.canary_mirrors.extend(pinned.canary_mirrors.clone());
        for (region, row) in &pinned.rtt_ms {
            feed.rtt_ms
                .entry(region.clone())
                .or_default()
                .extend(row.clone());
        }
        feed.sla_scores.extend(pinned.sla_scores.clone());
        if pinned.concurrency_limit.is_some() {
            feed.concurrency_limit = pinned.concurrency_limit;
        }
    }
    feed
}

/// Tells the metrics store which clusters' reports it must always keep.
fn know_clusters(metrics: &Mutex<MetricsStore>, policy: &Policy) {
    let mut store = metrics
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    store.know_clusters(policy.clusters.iter().map(|c| c.name.clone()));
    store.plan_segments(policy);
}

/// Serving state for tests of this crate.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::resources::WasmSource;

    const POLICY: &str = include_str!("../../examples/policies/iot-fleet.yaml");

    /// Serving state deciding on `store`, for the example policy.
    pub(crate) fn control_on(store: Box<dyn Store>) -> Control {
        let policy = weir_policy::source::load("iot-fleet.yaml", POLICY).unwrap();
        let controller = Controller::new(&policy, Vec::new(), now_ms());
        let options = Options::new(WasmSource::Local("/weir_filter.wasm".into()));
        let metrics = Arc::new(Mutex::new(MetricsStore::new(60_000)));
        let (control, _snapshots) = Control::new(
            "iot-fleet.yaml".into(),
            policy,
            POLICY,
            true,
            options,
            controller,
            store,
            metrics,
            Telemetry::default(),
        )
        .unwrap();
        control
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Phase;
    use crate::store::{EtcdOptions, EtcdStore, Writes};

    /// Serving state deciding on a real etcd store whose writes `writes` allows.
    fn control(etcd: &weir_testbed::etcd::Etcd, writes: Writes) -> Control {
        let endpoints = etcd.endpoints().iter().map(ToString::to_string).collect();
        let store = EtcdStore::open(&EtcdOptions::new(endpoints)).unwrap();
        store.set_writes(writes);
        control_on(Box::new(store))
    }

    use super::testing::control_on;

    /// One second of traffic to the example's canary and its stable cluster
    /// received at `at_ms`: 1,000 requests each, all fast, with these error
    /// rates.
    fn traffic(control: &Control, at_ms: u64, canary_errors: f64, stable_errors: f64) {
        let mut metrics = control.metrics.lock().unwrap();
        for (cluster, error_rate) in [
            ("ingest-eu-canary", canary_errors),
            ("ingest-eu", stable_errors),
        ] {
            let mut latency = crate::metrics_store::Histogram::with_bounds(vec![10.0, 12.0, 14.0]);
            latency.counts = vec![900, 100, 0, 0];
            metrics.add(
                cluster,
                crate::metrics_store::Sample {
                    at_ms,
                    requests: 1_000,
                    errors: (1_000.0 * error_rate) as u64,
                    latency: Some(latency),
                },
            );
        }
    }

    /// Serving state deciding on a real etcd store, and the store, whose
    /// writes the test turns off and on.
    fn control_on_etcd(etcd: &weir_testbed::etcd::Etcd) -> (Arc<EtcdStore>, Control) {
        let endpoints = etcd.endpoints().iter().map(ToString::to_string).collect();
        let store = Arc::new(EtcdStore::open(&EtcdOptions::new(endpoints)).unwrap());
        let control = control_on(Box::new(Arc::clone(&store)));
        (store, control)
    }

    fn saved_canary(store: &EtcdStore) -> crate::controller::RolloutState {
        store.load().unwrap().rollouts.remove(0)
    }

    fn first_canary(control: &Control) -> crate::controller::RolloutState {
        control.controller().rollouts().remove(0)
    }

    #[test]
    fn adopted_state_keeps_the_measured_rtts_it_served_not_the_pinned_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RedbStore::open(dir.path().join("state.redb")).unwrap();
        let mut control = control_on(Box::new(store));
        let row = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(c, ms)| ((*c).to_owned(), *ms))
                .collect::<BTreeMap<_, _>>()
        };
        let mut served = control.feed();
        served.rtt_ms = [(
            "eu-west".to_owned(),
            row(&[("ingest-eu", 42.0), ("ingest-us", 7.0)]),
        )]
        .into();
        let pins = Feed {
            canary_weights: BTreeMap::new(),
            canary_mirrors: BTreeMap::new(),
            sla_scores: BTreeMap::new(),
            rtt_ms: [("eu-west".to_owned(), row(&[("ingest-us", 7.0)]))].into(),
            concurrency_limit: None,
        };
        control.adopt(
            Saved {
                feed: Some(served),
                pins: Some(pins),
                ..Saved::default()
            },
            true,
        );
        // The measured pair is the controller's again; the pinned one stays a pin.
        let measured: Vec<(String, String, f64)> = control
            .controller()
            .rtt()
            .into_iter()
            .map(|s| (s.region, s.cluster, s.published_ms))
            .collect();
        assert_eq!(
            measured,
            [("eu-west".to_owned(), "ingest-eu".to_owned(), 42.0)]
        );
        let feed = control.feed();
        assert_eq!(feed.rtt_ms["eu-west"]["ingest-eu"], 42.0);
        assert_eq!(feed.rtt_ms["eu-west"]["ingest-us"], 7.0);
    }

    #[test]
    fn a_command_raising_a_weight_that_cannot_be_saved_changes_nothing() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let etcd = runtime.block_on(weir_testbed::etcd::Etcd::start()).unwrap();
        let mut control = control(&etcd, Writes::Refused);
        let before = first_canary(&control);
        let (served, decisions) = (
            control.snapshot().version.clone(),
            control.controller().decisions().len(),
        );
        let failed = control
            .command(&before.canary, Command::Promote)
            .unwrap_err();
        assert!(
            matches!(&failed, CommandFailure::Unavailable(m) if m.contains("not applied")),
            "{failed:?}"
        );
        assert!(control.unsaved().is_some(), "readiness says so");
        assert_eq!(first_canary(&control), before);
        assert_eq!(control.controller().decisions().len(), decisions);
        assert_eq!(control.snapshot().version, served);

        // The same command where the store takes it.
        let mut control = self::control(&etcd, Writes::Open);
        let decision = control.command(&before.canary, Command::Abort).unwrap();
        assert_eq!(decision.to, Phase::RolledBack);
        assert_eq!(first_canary(&control).phase, Phase::RolledBack);
        assert_ne!(control.snapshot().version, served);
        // A command that does not apply is refused, not "unavailable".
        assert!(matches!(
            control.command(&before.canary, Command::Pause),
            Err(CommandFailure::Refused(_))
        ));
    }

    #[test]
    fn without_a_store_a_rollback_is_served_at_once_and_an_advance_waits_until_it_is_saved() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let etcd = runtime.block_on(weir_testbed::etcd::Etcd::start()).unwrap();
        let (store, mut control) = control_on_etcd(&etcd);
        let canary = first_canary(&control).canary;
        assert_eq!(canary, "ingest-eu-canary");
        let first = control.feed().canary_weights[&canary];
        assert_eq!(first, 100, "the first step, 1 %");

        // Healthy traffic through the hold while the store refuses writes:
        // the advance it earns is not served, nor kept in memory.
        store.set_writes(Writes::Refused);
        let served = control.snapshot().version.clone();
        let start = now_ms();
        let mut at = start;
        while at < start + 32_000 {
            traffic(&control, at, 0.0, 0.0);
            control.control(at);
            at += 1_000;
        }
        assert!(control.unsaved().is_some());
        assert_eq!(control.feed().canary_weights[&canary], first);
        assert_eq!(first_canary(&control).step, 0);
        assert_eq!(control.snapshot().version, served);
        assert!(
            control
                .controller()
                .decisions()
                .iter()
                .all(|d| d.weight_bp <= first)
        );

        // The store takes writes again: the advance is decided again, saved, served.
        store.set_writes(Writes::Open);
        traffic(&control, at, 0.0, 0.0);
        control.control(at);
        assert!(control.unsaved().is_none());
        assert_eq!(first_canary(&control).step, 1);
        assert_eq!(saved_canary(&store).step, 1);
        assert_ne!(control.snapshot().version, served);

        // Bad traffic while the store refuses writes: rolled back and served
        // at once, saved (with its decision) once the store works again.
        store.set_writes(Writes::Refused);
        let served = control.snapshot().version.clone();
        at += 1_000;
        traffic(&control, at, 0.2, 0.0);
        control.control(at);
        assert_eq!(first_canary(&control).phase, Phase::RolledBack);
        assert_eq!(control.feed().canary_weights[&canary], 0);
        assert_ne!(control.snapshot().version, served);
        assert!(control.unsaved().is_some());
        assert_eq!(saved_canary(&store).phase, Phase::Progressing);
        store.set_writes(Writes::Open);
        control.control(at + 250);
        assert!(control.unsaved().is_none());
        let saved = store.load().unwrap();
        assert_eq!(saved.rollouts[0].phase, Phase::RolledBack);
        assert!(saved.decisions.iter().any(|d| d.to == Phase::RolledBack));
    }

    #[test]
    fn an_abort_that_cannot_be_saved_is_served_at_once_and_saved_once_it_can_be() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let etcd = runtime.block_on(weir_testbed::etcd::Etcd::start()).unwrap();
        let (store, mut control) = control_on_etcd(&etcd);
        let canary = first_canary(&control).canary;
        store.set_writes(Writes::Refused);
        let served = control.snapshot().version.clone();

        let decision = control.command(&canary, Command::Abort).unwrap();
        assert_eq!(decision.to, Phase::RolledBack);
        assert_eq!(control.feed().canary_weights[&canary], 0);
        assert_ne!(control.snapshot().version, served, "served at once");
        assert!(control.unsaved().is_some());
        let saved = store.load().unwrap();
        assert!(saved.rollouts.iter().all(|r| r.phase != Phase::RolledBack));

        // Saved, with its decision, at the next evaluation once writes work.
        store.set_writes(Writes::Open);
        control.control(now_ms());
        assert!(control.unsaved().is_none());
        let saved = store.load().unwrap();
        assert_eq!(saved.rollouts[0].phase, Phase::RolledBack);
        assert!(
            saved
                .decisions
                .iter()
                .any(|d| d.to == Phase::RolledBack && d.reason == decision.reason)
        );
    }
}
