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

/// The largest policy file read, in bytes: 4 MiB, room for tens of
/// thousands of clusters. A larger file is refused before it is read whole.
pub const MAX_POLICY_BYTES: u64 = 4 << 20;

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
    let text = read_text(path)?;
    Ok((parse(path, &text)?, text))
}

/// The text of the file at `path`, if it is text and no larger than
/// [`MAX_POLICY_BYTES`]; at most one byte more than that is read.
pub fn read_text(path: &Path) -> Result<String, InvalidPolicy> {
    bounded_text(path).map_err(|failure| failure.invalid(path))
}

/// Why a file's text was not read.
enum ReadFailure {
    /// It could not be read (missing, not permitted, an I/O error): worth
    /// trying again, the content may be fine.
    Io(std::io::Error),
    /// Read, and unusable as it is.
    TooLarge,
    NotText {
        valid_up_to: usize,
    },
}

impl ReadFailure {
    fn invalid(&self, path: &Path) -> InvalidPolicy {
        let why = match self {
            Self::Io(err) => format!("cannot read: {err}"),
            Self::TooLarge => {
                format!("larger than the largest policy file accepted ({MAX_POLICY_BYTES} bytes)")
            }
            Self::NotText { valid_up_to } => format!("not UTF-8 text (byte {valid_up_to} is not)"),
        };
        InvalidPolicy::Unreadable(format!("{}: {why}", path.display()))
    }
}

fn bounded_text(path: &Path) -> Result<String, ReadFailure> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadFailure::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(ReadFailure::TooLarge);
    }
    String::from_utf8(bytes).map_err(|err| ReadFailure::NotText {
        valid_up_to: err.utf8_error().valid_up_to(),
    })
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
    /// since the previous poll, or why it cannot be used (too large, not
    /// text); a file that cannot be read at all (being replaced, not
    /// permitted) is tried again at the next poll. Editors that save by renaming a new file into
    /// place are covered: only the content counts.
    pub fn poll(&mut self) -> Option<Result<String, InvalidPolicy>> {
        let stamp = stamp(&self.path)?;
        if self.seen.as_ref().is_some_and(|(seen, _)| *seen == stamp) {
            self.settling = None;
            return None;
        }
        if self.settling.replace(stamp) != Some(stamp) {
            return None;
        }
        self.settling = None;
        let text = match bounded_text(&self.path) {
            Ok(text) => text,
            // Tried again at the next poll (a file being replaced, say, or
            // whose permissions are being fixed).
            Err(ReadFailure::Io(_)) => return None,
            Err(unusable) => {
                // Reported once: the stamp counts as seen until it changes.
                self.seen = Some((stamp, String::new()));
                return Some(Err(unusable.invalid(&self.path)));
            }
        };
        let changed = self.seen.as_ref().is_none_or(|(_, old)| *old != text);
        self.seen = Some((stamp, text.clone()));
        changed.then_some(Ok(text))
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

    fn text(polled: Option<Result<String, InvalidPolicy>>) -> Option<String> {
        polled.map(|read| read.expect("readable"))
    }

    #[test]
    fn a_file_larger_than_the_bound_is_refused_once_without_being_read_whole() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        let huge = "#".repeat(MAX_POLICY_BYTES as usize) + "\n";
        std::fs::write(&path, &huge).unwrap();
        assert_eq!(watcher.poll(), None, "settling");
        let Some(Err(InvalidPolicy::Unreadable(why))) = watcher.poll() else {
            panic!("a file over the bound is refused");
        };
        assert!(why.ends_with(&format!("policy.yaml: larger than the largest policy file accepted ({MAX_POLICY_BYTES} bytes)")), "{why}");
        assert_eq!(watcher.poll(), None, "reported once");
        assert!(matches!(read(&path), Err(InvalidPolicy::Unreadable(_))));

        // Back under the bound, it is read again.
        std::fs::write(&path, "a: 1\n").unwrap();
        assert_eq!(watcher.poll(), None, "settling");
        assert_eq!(text(watcher.poll()).as_deref(), Some("a: 1\n"));
    }

    #[test]
    fn a_file_that_is_not_text_is_refused_with_where() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        std::fs::write(&path, b"a: \xff\n").unwrap();
        assert_eq!(watcher.poll(), None, "settling");
        let Some(Err(invalid)) = watcher.poll() else {
            panic!("not UTF-8 is refused");
        };
        assert!(
            invalid
                .to_string()
                .ends_with("not UTF-8 text (byte 3 is not)"),
            "{invalid}"
        );
    }

    #[test]
    fn an_edit_is_read_once_it_has_held_still_for_a_poll() {
        let (_dir, path, mut watcher) = watched("a: 1\n");
        assert_eq!(watcher.poll(), None, "nothing changed");
        std::fs::write(&path, "a: 2\n# longer\n").unwrap();
        assert_eq!(watcher.poll(), None, "just changed: settling");
        assert_eq!(text(watcher.poll()).as_deref(), Some("a: 2\n# longer\n"));
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
        assert_eq!(text(watcher.poll()).as_deref(), Some("a: 2\nb: 3\n"));
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
