//! The policy file as a source of truth: read, validated, and watched. An
//! invalid edit is reported with the policy crate's precise diagnostics and
//! changes nothing; the last good policy keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weir_policy::Policy;
use weir_policy::source::{self, Diagnostic};

/// How often the file is looked at. Cheap (one `stat`), and well inside the
/// convergence budget of a policy edit.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

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
    seen: Option<(SystemTime, u64, String)>,
}

impl Watcher {
    /// Watches `path`, whose current content counts as seen.
    pub fn new(path: &Path, current_text: &str) -> Self {
        let seen = stamp(path).map(|(modified, len)| (modified, len, current_text.to_owned()));
        Self {
            path: path.to_path_buf(),
            seen,
        }
    }

    /// The file's new text if it changed since last seen. Editors that save by
    /// renaming a new file into place are covered: only the content counts.
    pub fn poll(&mut self) -> Option<String> {
        let (modified, len) = stamp(&self.path)?;
        if let Some((m, l, _)) = &self.seen
            && *m == modified
            && *l == len
        {
            return None;
        }
        let text = std::fs::read_to_string(&self.path).ok()?;
        let changed = self.seen.as_ref().is_none_or(|(_, _, old)| *old != text);
        self.seen = Some((modified, len, text.clone()));
        changed.then_some(text)
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
