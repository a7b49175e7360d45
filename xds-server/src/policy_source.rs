//! The policy file as a source of truth: read, validated, and watched. An
//! invalid edit is reported with the policy crate's precise diagnostics and
//! changes nothing; the last good policy keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_policy::Policy;
use weir_policy::source::{self, Diagnostic};

/// How often the file is looked at. Cheap (one `stat`), and well inside the
/// convergence budget of a policy edit.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Why a policy file could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidPolicy {
    /// The file could not be read.
    Unreadable(String),
    /// The file was read, and these are its problems.
    Invalid(Vec<Diagnostic>),
}

impl std::fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) => f.write_str(why),
            Self::Invalid(diagnostics) => {
                let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

/// Reads and validates the policy file at `path`; returns it with its text.
pub fn read(path: &Path) -> Result<(Policy, String), InvalidPolicy> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        InvalidPolicy::Unreadable(format!("{}: cannot read: {err}", path.display()))
    })?;
    Ok((parse(path, &text)?, text))
}

/// Validates the text of the policy file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Policy, InvalidPolicy> {
    source::load(&path.display().to_string(), text).map_err(InvalidPolicy::Invalid)
}

/// Notices when a file's content changes.
pub struct Watcher {
    path: PathBuf,
    seen: Option<(Stamp, String)>,
    /// A change seen on the last poll, read once it has held still for one
    /// more: an editor that truncates and then writes the file would
    /// otherwise be caught between the two and its half-saved file rejected.
    settling: Option<Stamp>,
}

/// What tells a changed file from an unchanged one without reading it.
type Stamp = (SystemTime, u64);

impl Watcher {
    /// Watches `path`, whose current content counts as seen.
    pub fn new(path: &Path, current_text: &str) -> Self {
        let seen = stamp(path).map(|stamp| (stamp, current_text.to_owned()));
        Self {
            path: path.to_path_buf(),
            seen,
            settling: None,
        }
    }

    /// The file's new text if it changed since last seen and has not changed
    /// since the previous poll. Editors that save by renaming a new file into
    /// place are covered: only the content counts.
    pub fn poll(&mut self) -> Option<String> {
        let stamp = stamp(&self.path)?;
        if self.seen.as_ref().is_some_and(|(seen, _)| *seen == stamp) {
            self.settling = None;
            return None;
        }
        if self.settling.replace(stamp) != Some(stamp) {
            return None;
        }
        self.settling = None;
        let text = std::fs::read_to_string(&self.path).ok()?;
        let changed = self.seen.as_ref().is_none_or(|(_, old)| *old != text);
        self.seen = Some((stamp, text.clone()));
        changed.then_some(text)
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(text: &str) -> (tempfile::TempDir, PathBuf, Watcher) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).unwrap();
        let watcher = Watcher::new(&path, text);
        (dir, path, watcher)
    }

    #[test]
    fn an_edit_is_read_once_it_has_held_still_for_a_poll() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        assert_eq!(watcher.poll(), None, "nothing changed");
        std::fs::write(&path, "a: 2\n# longer\n").unwrap();
        assert_eq!(watcher.poll(), None, "just changed: settling");
        assert_eq!(watcher.poll().as_deref(), Some("a: 2\n# longer\n"));
        assert_eq!(watcher.poll(), None, "reported once");
    }

    #[test]
    fn a_file_caught_between_truncation_and_write_is_not_read() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        // An editor saving in place: the file is empty for a moment.
        std::fs::File::create(&path).unwrap();
        assert_eq!(watcher.poll(), None);
        std::fs::write(&path, "a: 2\nb: 3\n").unwrap();
        assert_eq!(watcher.poll(), None, "it changed again: settling anew");
        assert_eq!(watcher.poll().as_deref(), Some("a: 2\nb: 3\n"));
    }

    #[test]
    fn the_same_content_written_again_is_no_change() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        let replaced = path.with_extension("new");
        std::fs::write(&replaced, "a: 1\n").unwrap();
        std::fs::rename(&replaced, &path).unwrap();
        for _ in 0..3 {
            assert_eq!(watcher.poll(), None);
        }
    }
}
