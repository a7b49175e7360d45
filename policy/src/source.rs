//! Reading policy files: YAML in, a [`Policy`] or every problem out, each with
//! file, line, column and the path of the field at fault.
//!
//! Reading happens in three passes over the same text: a position index of
//! every node (so any field path can be turned into a line and a column), the
//! typed document (unknown fields and wrong types stop here, at the first),
//! then [`validate()`], which reports everything else at once.

mod compile;
mod spans;

use std::fmt;

pub use compile::{compile, with_feed};

use crate::model::Policy;
use crate::validate::validate;
use spans::SpanIndex;

/// A problem in a policy file, in the style of a compiler's error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The path of the field at fault, e.g. `services[2].canary.steps[3]`;
    /// empty for a problem with the file as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Reads and validates a policy file's text; `file` names it in diagnostics.
pub fn load(file: &str, text: &str) -> Result<Policy, Vec<Diagnostic>> {
    let diagnostic = |(line, column): (u64, u64), path: String, message: String| Diagnostic {
        file: file.to_owned(),
        line,
        column,
        path,
        message,
    };
    let index = SpanIndex::build(text).map_err(|err| {
        vec![diagnostic(
            error_position(&err),
            String::new(),
            error_message(&err),
        )]
    })?;
    let mut failed_at = String::new();
    let policy: Policy = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            failed_at = if path == "." { String::new() } else { path };
            err.into_inner()
        })
    })
    .map_err(|err| {
        // The parser knows where it stopped; else the field it was reading does.
        // A missing field is the mapping's fault, and the parser would point at
        // the mapping's last key, so it is placed by its path instead.
        let position = match (err.without_snippet(), error_position(&err)) {
            (serde_saphyr::Error::SerdeMissingField { .. }, _) | (_, (0, _)) => {
                index.position(&failed_at)
            }
            (_, known) => known,
        };
        vec![diagnostic(position, failed_at.clone(), error_message(&err))]
    })?;
    let problems = validate(&policy);
    if problems.is_empty() {
        return Ok(policy);
    }
    Err(problems
        .into_iter()
        .map(|invalid| diagnostic(index.position(&invalid.path), invalid.path, invalid.message))
        .collect())
}

fn error_position(err: &serde_saphyr::Error) -> (u64, u64) {
    err.location().map_or((0, 0), |at| (at.line(), at.column()))
}

/// The error's own words, without the source excerpt and position the YAML
/// library appends (the diagnostic carries the position itself), in the
/// library's wording for users rather than for the programmers calling it.
fn error_message(err: &serde_saphyr::Error) -> String {
    let text = err
        .without_snippet()
        .render_with_formatter(&serde_saphyr::UserMessageFormatter);
    let first = text.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(at) => first.get(..at).unwrap_or(first).to_owned(),
        None => first.to_owned(),
    }
}
