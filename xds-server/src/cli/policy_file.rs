//! `weir validate` and `weir compile`: reading policy files as operators edit them.

use std::path::Path;

use weir_policy::Policy;
use weir_policy::source::{self, Diagnostic};

/// Reads and validates one policy file, printing its problems to stderr.
pub(super) fn load(file: &Path) -> Option<Policy> {
    let shown = file.display().to_string();
    let text = match crate::policy_source::read_text(file) {
        Ok(text) => text,
        Err(invalid) => {
            eprintln!("error: {invalid}");
            return None;
        }
    };
    match source::load(&shown, &text) {
        Ok(policy) => Some(policy),
        Err(diagnostics) => {
            report(&diagnostics);
            None
        }
    }
}

fn report(diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
    let n = diagnostics.len();
    eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
}

pub(super) fn validate_all(files: &[impl AsRef<Path>]) -> bool {
    let mut all_valid = true;
    for file in files {
        let file = file.as_ref();
        if load(file).is_some() {
            super::emit(&format!("{}: ok\n", file.display()));
        } else {
            all_valid = false;
        }
    }
    all_valid
}

pub(super) fn compile(file: &Path, compact: bool, version_header: bool) -> bool {
    match load(file) {
        Some(policy) => {
            let mut config = source::compile(&policy);
            config.version_header = version_header;
            super::print_json(&config, compact)
        }
        None => false,
    }
}
