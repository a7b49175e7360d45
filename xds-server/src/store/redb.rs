//! The embedded store: one redb file beside a single `weir`. A file that is
//! not a readable database of this format is an error naming the file: redb
//! reports most damage as errors, and the few places where it panics on a
//! damaged page are caught here and reported the same way.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail};
use redb::backends::InMemoryBackend;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    StorageBackend, StorageError, TableDefinition,
};

use weir_policy::Feed;

use super::{Checkpoint, MAX_STORED_DECISIONS, Saved, Store};
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
/// The feed served and the operator's pins, under [`FEED_KEY`] and
/// [`PINS_KEY`] (added within layout 1 too).
const FEEDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("feeds");
const FEED_KEY: &str = "served";
const PINS_KEY: &str = "pins";
/// The dashboard's timeline points by time (also added within layout 1).
const TIMELINE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("timeline");
/// `format`: the layout version of the tables above.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The layout this build reads and writes.
const FORMAT: u64 = 1;

/// The state database.
pub struct RedbStore {
    /// `None` after an operation failed: redb refuses every write after an
    /// I/O error (a full disk, say) until the database is opened again, which
    /// the next use does.
    db: Mutex<Option<Database>>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database at `path`, creating it (not its folder) if missing.
    ///
    /// An existing file that can be read but not written (a filesystem
    /// remounted read-only after an error, say) is opened all the same: its
    /// state is read, and every save fails until it can be written, which
    /// weir serves through as it does a full disk (toward stable, saying so).
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = match open_database(&path) {
            Ok(db) => {
                guarded(|| init(&db))
                    .with_context(|| format!("cannot use the state database {}", path.display()))?;
                Some(db)
            }
            Err(err) if path.is_file() && cannot_write(&err) => {
                read_only(&path)?;
                tracing::error!(
                    "{err:#}: reading it as it is; nothing weir decides can be saved until it can be written"
                );
                None
            }
            Err(err) => return Err(err),
        };
        Ok(Self {
            db: Mutex::new(db),
            path,
        })
    }

    /// Runs `operation` on the database, opening it again first if a write
    /// failed before; a write that fails has it opened again next time.
    fn with_db<T>(
        &self,
        action: &str,
        operation: impl FnOnce(&Database) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let db = match slot.take() {
            Some(db) => db,
            None => open_database(&self.path).with_context(|| self.context(action))?,
        };
        let result = guarded(|| operation(&db)).with_context(|| self.context(action));
        if result.is_ok() {
            *slot = Some(db);
        }
        result
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn context(&self, action: &str) -> String {
        format!("cannot {action} the state database {}", self.path.display())
    }
}

/// Opens (or creates) the database file.
fn open_database(path: &Path) -> anyhow::Result<Database> {
    guarded(|| {
        Database::builder()
            // The data is tiny; redb's default cache is 1 GiB.
            .set_cache_size(16 * 1024 * 1024)
            .create(path)
            .map_err(anyhow::Error::from)
    })
    .with_context(|| format!("cannot open the state database {}", path.display()))
}

/// Whether `err` is the filesystem refusing writes (read-only, or not
/// permitted) rather than a damaged or foreign file.
fn cannot_write(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().or_else(|| {
            match cause.downcast_ref::<DatabaseError>() {
                Some(DatabaseError::Storage(StorageError::Io(io))) => Some(io),
                _ => None,
            }
        });
        io.is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            )
        })
    })
}

/// The saved state of a database that can only be read: a copy of the file
/// is opened in memory, where redb may repair it (a weir killed before it
/// closed the file leaves it needing repair, which the file itself cannot
/// take while it is read-only).
fn read_only(path: &Path) -> anyhow::Result<Saved> {
    guarded(|| {
        let bytes = std::fs::read(path)?;
        let copy = InMemoryBackend::new();
        copy.set_len(bytes.len() as u64)?;
        copy.write(0, &bytes)?;
        let db = Database::builder()
            .set_cache_size(16 * 1024 * 1024)
            .create_with_backend(copy)?;
        // The copy takes writes: the layout is checked, and tables a file
        // of an earlier release lacks are added, as at a normal start.
        init(&db)?;
        read(&db)
    })
    .with_context(|| format!("cannot read the state database {}", path.display()))
}

/// Creates the tables and checks the layout version.
fn init(db: &Database) -> anyhow::Result<()> {
    let mut tx = db.begin_write()?;
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
        tx.open_table(FEEDS)?;
    }
    tx.commit()?;
    Ok(())
}

fn write(db: &Database, checkpoint: &Checkpoint<'_>) -> anyhow::Result<()> {
    let Checkpoint {
        rollouts,
        new_decisions,
        scores,
        feed,
    } = *checkpoint;
    let mut tx = db.begin_write()?;
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
        let json = serde_json::to_vec(feed)?;
        tx.open_table(FEEDS)?.insert(FEED_KEY, json.as_slice())?;
    }
    tx.commit()?;
    Ok(())
}

fn write_pins(db: &Database, pins: Option<&Feed>) -> anyhow::Result<()> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut table = tx.open_table(FEEDS)?;
        match pins {
            Some(pins) => {
                table.insert(PINS_KEY, serde_json::to_vec(pins)?.as_slice())?;
            }
            None => {
                table.remove(PINS_KEY)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_timeline(db: &Database, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()> {
    // Made durable by the next checkpoint (every few seconds): the charts
    // cost no disk sync.
    let mut tx = db.begin_write()?;
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
}

fn read(db: &Database) -> anyhow::Result<Saved> {
    let tx = db.begin_read()?;
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
        Some(value) => {
            serde_json::from_slice(value.value()).context("the saved scores are not readable")?
        }
        None => Scores::default(),
    };
    let feeds = tx.open_table(FEEDS)?;
    let feed = match feeds.get(FEED_KEY)? {
        Some(value) => {
            Some(serde_json::from_slice(value.value()).context("the saved feed is not readable")?)
        }
        None => None,
    };
    let pins = match feeds.get(PINS_KEY)? {
        Some(value) => Some(
            serde_json::from_slice(value.value())
                .context("the pinned feed values are not readable")?,
        ),
        None => None,
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
        feed,
        pins,
        timeline,
    })
}

impl Store for RedbStore {
    fn load(&self) -> anyhow::Result<Saved> {
        match self.with_db("read", read) {
            Err(err) if cannot_write(&err) => read_only(&self.path),
            result => result,
        }
    }

    fn save(&self, checkpoint: &Checkpoint<'_>) -> anyhow::Result<()> {
        self.with_db("save to", |db| write(db, checkpoint))
    }

    fn save_pins(&self, pins: Option<&Feed>) -> anyhow::Result<()> {
        self.with_db("save to", |db| write_pins(db, pins))
    }

    fn save_timeline(&self, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()> {
        self.with_db("save to", |db| write_timeline(db, points, forget_until_ms))
    }

    fn describe(&self) -> String {
        format!("the state database {}", self.path.display())
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
    use crate::store::contract::{checkpoint, decision, scores, state};

    crate::store::contract::store_contract_tests!(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        (dir, move || {
            Box::new(RedbStore::open(&path).unwrap()) as Box<dyn Store>
        })
    });

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let text = b"this is not a database, just some text that is long enough ".repeat(200);
        std::fs::write(&path, text).unwrap();
        let message = format!("{:#}", RedbStore::open(&path).unwrap_err());
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
            let store = RedbStore::open(&good).unwrap();
            store
                .save(&checkpoint(
                    &[state("a", 0, 100)],
                    &[decision(1)],
                    &scores(0.5),
                ))
                .unwrap();
            store
                .save(&checkpoint(
                    &[state("a", 1, 500)],
                    &[decision(2)],
                    &scores(0.6),
                ))
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
            let outcome = RedbStore::open(&path).and_then(|store| {
                store.load()?;
                store.save(&checkpoint(
                    &[state("a", 2, 10_000)],
                    &[decision(3)],
                    &scores(0.7),
                ))?;
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
        let store = RedbStore::open(&path).unwrap();
        store
            .with_db("write to", |db| {
                let tx = db.begin_write()?;
                tx.open_table(ROLLOUTS)?
                    .insert("a", b"{not json".as_slice())?;
                tx.commit()?;
                Ok(())
            })
            .unwrap();
        let message = format!("{:#}", store.load().unwrap_err());
        assert!(message.contains("rollout `a` is not readable"), "{message}");
    }

    #[test]
    fn another_layout_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store
                .with_db("write to", |db| {
                    let tx = db.begin_write()?;
                    tx.open_table(META)?.insert("format", 99)?;
                    tx.commit()?;
                    Ok(())
                })
                .unwrap();
        }
        let message = format!("{:#}", RedbStore::open(&path).unwrap_err());
        assert!(message.contains("layout version 99"), "{message}");
    }
}
