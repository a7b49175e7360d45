//! The controller's memory across restarts: every rollout's state, the
//! decisions taken, and the smoothed scores (SLA scores, concurrency limit),
//! in an embedded database (redb) file; and the dashboard's timeline, so that
//! its charts survive a restart too.
//!
//! `serve` saves after each evaluation or command that decided something, in
//! one durable write transaction, before it pushes the new feed: a restart
//! never serves a weight that was not recorded. Records are JSON, so fields
//! added later read as their defaults. A file that is not a readable database
//! of this format is an error naming the file: redb reports most damage as
//! errors, and the few places where it panics on a damaged page are caught
//! here and reported the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::controller::{Decision, RolloutState, Scores};
use crate::timeline::Point;

/// Rollout states by canary cluster.
const ROLLOUTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("rollouts");
/// Decisions by sequence number, oldest first.
const DECISIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("decisions");
/// The smoothed scores, under [`SCORES_KEY`] (a table added within layout 1:
/// files without it read as having no scores).
const SCORES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("scores");
const SCORES_KEY: &str = "scores";
/// The dashboard's timeline points by time (also added within layout 1).
const TIMELINE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("timeline");
/// `format`: the layout version of the tables above.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The layout this build reads and writes.
const FORMAT: u64 = 1;

/// Decisions kept in the file; older ones are dropped as new ones come.
pub const MAX_STORED_DECISIONS: u64 = 10_000;

/// What a database holds.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    /// Rollout states, by canary cluster.
    pub rollouts: Vec<RolloutState>,
    /// Decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// The smoothed scores.
    pub scores: Scores,
    /// The dashboard's timeline points, oldest first.
    pub timeline: Vec<Point>,
}

/// The state database.
pub struct StateStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens the database at `path`, creating it (not its folder) if missing.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = guarded(|| {
            Database::builder()
                // The data is tiny; redb's default cache is 1 GiB.
                .set_cache_size(16 * 1024 * 1024)
                .create(&path)
                .map_err(anyhow::Error::from)
        })
        .with_context(|| format!("cannot open the state database {}", path.display()))?;
        let store = Self { db, path };
        guarded(|| store.init())
            .with_context(|| format!("cannot use the state database {}", store.path.display()))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables and checks the layout version.
    fn init(&self) -> anyhow::Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut meta = tx.open_table(META)?;
            let format = meta.get("format")?.map(|v| v.value());
            match format {
                None => {
                    meta.insert("format", FORMAT)?;
                }
                Some(FORMAT) => {}
                Some(other) => bail!(
                    "it has layout version {other}, this weir reads version {FORMAT} (written by another release?)"
                ),
            }
            tx.open_table(ROLLOUTS)?;
            tx.open_table(DECISIONS)?;
            tx.open_table(SCORES)?;
            tx.open_table(TIMELINE)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces the rollout states with `rollouts` and the scores with
    /// `scores`, and appends `new_decisions`, in one durable transaction.
    pub fn save(
        &self,
        rollouts: &[RolloutState],
        new_decisions: &[Decision],
        scores: &Scores,
    ) -> anyhow::Result<()> {
        guarded(|| self.write(rollouts, new_decisions, scores))
            .with_context(|| format!("cannot save to the state database {}", self.path.display()))
    }

    fn write(
        &self,
        rollouts: &[RolloutState],
        new_decisions: &[Decision],
        scores: &Scores,
    ) -> anyhow::Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut table = tx.open_table(ROLLOUTS)?;
            let keep: std::collections::BTreeSet<&str> =
                rollouts.iter().map(|r| r.canary.as_str()).collect();
            table.retain(|canary, _| keep.contains(canary))?;
            for rollout in rollouts {
                let json = serde_json::to_vec(rollout)?;
                table.insert(rollout.canary.as_str(), json.as_slice())?;
            }

            let mut table = tx.open_table(DECISIONS)?;
            let first = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (key, decision) in (first..).zip(new_decisions) {
                let json = serde_json::to_vec(decision)?;
                table.insert(key, json.as_slice())?;
            }
            let excess = table.len()?.saturating_sub(MAX_STORED_DECISIONS);
            for _ in 0..excess {
                table.pop_first()?;
            }

            let json = serde_json::to_vec(scores)?;
            tx.open_table(SCORES)?.insert(SCORES_KEY, json.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds timeline `points` and forgets those at or before `forget_until_ms`,
    /// in one transaction that is made durable by the next [`StateStore::save`]
    /// (the controller checkpoints every few seconds): a crash loses a few
    /// seconds of chart, never a decision, and the charts cost no disk sync.
    pub fn save_timeline(&self, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()> {
        guarded(|| {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::None)?;
            {
                let mut table = tx.open_table(TIMELINE)?;
                for point in points {
                    table.insert(point.at_ms, serde_json::to_vec(point)?.as_slice())?;
                }
                table.retain_in(..=forget_until_ms, |_, _| false)?;
            }
            tx.commit()?;
            Ok(())
        })
        .with_context(|| format!("cannot save to the state database {}", self.path.display()))
    }

    /// What the database holds.
    pub fn load(&self) -> anyhow::Result<Saved> {
        guarded(|| self.read())
            .with_context(|| format!("cannot read the state database {}", self.path.display()))
    }

    fn read(&self) -> anyhow::Result<Saved> {
        let tx = self.db.begin_read()?;
        let mut rollouts = Vec::new();
        for entry in tx.open_table(ROLLOUTS)?.iter()? {
            let (key, value) = entry?;
            let state: RolloutState = serde_json::from_slice(value.value())
                .with_context(|| format!("rollout `{}` is not readable", key.value()))?;
            rollouts.push(state);
        }
        let mut decisions = Vec::new();
        for entry in tx.open_table(DECISIONS)?.iter()? {
            let (key, value) = entry?;
            let decision: Decision = serde_json::from_slice(value.value())
                .with_context(|| format!("decision #{} is not readable", key.value()))?;
            decisions.push(decision);
        }
        let scores = match tx.open_table(SCORES)?.get(SCORES_KEY)? {
            Some(value) => serde_json::from_slice(value.value())
                .context("the saved scores are not readable")?,
            None => Scores::default(),
        };
        let mut timeline = Vec::new();
        for entry in tx.open_table(TIMELINE)?.iter()? {
            let (key, value) = entry?;
            let point: Point = serde_json::from_slice(value.value())
                .with_context(|| format!("timeline point at {} is not readable", key.value()))?;
            timeline.push(point);
        }
        Ok(Saved {
            rollouts,
            decisions,
            scores,
            timeline,
        })
    }
}

/// Runs a database operation, turning a panic inside redb (which it does on
/// some damaged pages) into an error.
fn guarded<T>(operation: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".to_owned());
            bail!("the database is damaged ({message})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{Evidence, LimitStatus, Phase, SlaStatus, VariantStats, Verdict};

    fn state(canary: &str, step: usize, weight_bp: u32) -> RolloutState {
        RolloutState {
            canary: canary.into(),
            stable: "stable".into(),
            salt: canary.into(),
            steps_bp: vec![100, 500, 10_000],
            phase: Phase::Progressing,
            step,
            weight_bp,
            started_ms: 1,
            step_since_ms: 2,
            healthy_ms: 3,
            healthy_since_ms: Some(4),
            evaluated_ms: Some(5),
            baseline: None,
        }
    }

    fn scores(smoothed: f64) -> Scores {
        Scores {
            sla: vec![SlaStatus {
                cluster: "c".into(),
                target_p99_ms: Some(250.0),
                p99_ms: Some(400.0),
                raw: Some(0.4),
                smoothed,
                published: 0.45,
            }],
            limit: Some(LimitStatus {
                adaptive: true,
                min: 10,
                max: 200,
                pressure: Some(1.6),
                ratio: 1.4,
                computed: 88.5,
                published: 90,
                adjusted_at_ms: 7,
            }),
        }
    }

    fn decision(at_ms: u64) -> Decision {
        Decision {
            at_ms,
            canary: "c".into(),
            from: Phase::Progressing,
            to: Phase::RolledBack,
            step: 1,
            from_weight_bp: 500,
            weight_bp: 0,
            reason: "bad".into(),
            evidence: Evidence {
                window_ms: 10_000,
                canary: VariantStats {
                    requests: 200,
                    errors: 40,
                    error_rate: 0.2,
                    latency_observations: 0,
                    p95_ms: None,
                    p99_ms: Some(12.5),
                },
                stable: VariantStats::default(),
                stable_baseline_at_ms: None,
                error_test: None,
                latency_ratio: None,
                verdict: Verdict::Bad,
                findings: vec!["errors: bad".into()],
            },
        }
    }

    #[test]
    fn saves_and_loads_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path).unwrap();
            assert_eq!(store.load().unwrap(), Saved::default());
            store
                .save(
                    &[state("a", 0, 100), state("b", 1, 500)],
                    &[decision(1)],
                    &Scores::default(),
                )
                .unwrap();
            // States and scores are replaced (b is gone), decisions appended.
            store
                .save(
                    &[state("a", 2, 10_000)],
                    &[decision(2), decision(3)],
                    &scores(0.42),
                )
                .unwrap();
        }
        let store = StateStore::open(&path).unwrap();
        let saved = store.load().unwrap();
        assert_eq!(saved.rollouts, vec![state("a", 2, 10_000)]);
        assert_eq!(saved.decisions, vec![decision(1), decision(2), decision(3)]);
        assert_eq!(saved.scores, scores(0.42));
    }

    fn point(at_ms: u64) -> Point {
        Point {
            at_ms,
            rollouts: Default::default(),
            classes: Default::default(),
            in_flight: at_ms % 7,
            queue_depth: 0,
            concurrency_limit: Some(200),
            clusters: Default::default(),
        }
    }

    #[test]
    fn timeline_points_are_kept_until_forgotten_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path).unwrap();
            store
                .save_timeline(&[point(1_000), point(2_000)], 0)
                .unwrap();
            store
                .save_timeline(&[point(3_000), point(4_000)], 1_000)
                .unwrap();
            // Made durable with the next save of the controller's state.
            store.save(&[], &[], &Scores::default()).unwrap();
        }
        let saved = StateStore::open(&path).unwrap().load().unwrap();
        assert_eq!(
            saved.timeline,
            vec![point(2_000), point(3_000), point(4_000)]
        );
    }

    #[test]
    fn keeps_a_bounded_number_of_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("state.redb")).unwrap();
        let many: Vec<Decision> = (0..MAX_STORED_DECISIONS + 5).map(decision).collect();
        store.save(&[], &many, &Scores::default()).unwrap();
        let decisions = store.load().unwrap().decisions;
        assert_eq!(decisions.len() as u64, MAX_STORED_DECISIONS);
        assert_eq!(decisions[0].at_ms, 5);
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let text = b"this is not a database, just some text that is long enough ".repeat(200);
        std::fs::write(&path, text).unwrap();
        let message = format!("{:#}", StateStore::open(&path).unwrap_err());
        assert!(
            message.contains("cannot open the state database"),
            "{message}"
        );
        assert!(message.contains("state.redb"), "{message}");
    }

    #[test]
    fn damage_anywhere_in_the_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        {
            let store = StateStore::open(&good).unwrap();
            store
                .save(&[state("a", 0, 100)], &[decision(1)], &scores(0.5))
                .unwrap();
            store
                .save(&[state("a", 1, 500)], &[decision(2)], &scores(0.6))
                .unwrap();
        }
        let bytes = std::fs::read(&good).unwrap();
        let (mut errors, mut survived) = (0, 0);
        for (i, offset) in (0..bytes.len()).step_by(509).enumerate() {
            let fill = [0x00, 0xff, 0x5a][i % 3];
            let mut damaged = bytes.clone();
            for b in damaged.iter_mut().skip(offset).take(512) {
                *b = fill;
            }
            let path = dir.path().join(format!("damaged-{offset}.redb"));
            std::fs::write(&path, damaged).unwrap();
            // Whatever redb makes of it, the answer is a result.
            let outcome = StateStore::open(&path).and_then(|store| {
                store.load()?;
                store.save(&[state("a", 2, 10_000)], &[decision(3)], &scores(0.7))?;
                store.load()
            });
            match outcome {
                Ok(_) => survived += 1,
                Err(err) => {
                    assert!(format!("{err:#}").contains("damaged-"), "{err:#}");
                    errors += 1;
                }
            }
            std::fs::remove_file(&path).unwrap();
        }
        assert!(errors > 0, "no damage was noticed ({survived} survived)");
    }

    #[test]
    fn an_unreadable_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = StateStore::open(&path).unwrap();
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(ROLLOUTS)
                .unwrap()
                .insert("a", b"{not json".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let message = format!("{:#}", store.load().unwrap_err());
        assert!(message.contains("rollout `a` is not readable"), "{message}");
    }

    #[test]
    fn another_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = StateStore::open(&path).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert("format", 99).unwrap();
            tx.commit().unwrap();
        }
        let message = format!("{:#}", StateStore::open(&path).unwrap_err());
        assert!(message.contains("layout version 99"), "{message}");
    }
}
