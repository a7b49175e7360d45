//! `bench/RESULTS.md` holds a section per benchmark between the markers
//! `<!-- NAME-bench:begin -->` and `<!-- NAME-bench:end -->`: each benchmark
//! rewrites its own section and keeps the rest of the file.

use std::path::Path;

/// What a report's header says of its run, taken as the benchmark starts.
pub struct RunStart {
    /// The command line, as `binary` and its arguments.
    pub command: String,
    pub machine: crate::procfs::Machine,
    pub date: String,
    pub load_start: String,
}

impl RunStart {
    /// This process's run, as benchmark binary `binary`.
    pub fn now(binary: &str) -> Self {
        Self {
            command: std::iter::once(binary.to_owned())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
            machine: crate::procfs::Machine::describe(&crate::paths::envoy_binary()),
            date: crate::procfs::utc_now(),
            load_start: crate::procfs::load_average(),
        }
    }
}

/// Prints `markdown` and, with `out`, writes it there as benchmark `name`'s section.
pub fn publish(out: Option<&Path>, name: &str, markdown: &str) -> anyhow::Result<()> {
    println!("{markdown}");
    if let Some(out) = out {
        write_section(out, name, markdown)?;
        eprintln!("weir-{name}-bench: wrote its section of {}", out.display());
    }
    Ok(())
}

/// The begin and end markers of benchmark `name`'s section.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}-bench:begin -->"),
        format!("<!-- {name}-bench:end -->"),
    )
}

/// Writes `section` into `path` as benchmark `name`'s section, keeping the
/// rest of the file (created if missing; the section is appended if the file
/// has none). The file is replaced atomically.
pub fn write_section(path: &Path, name: &str, section: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err.into()),
    };
    let updated = splice(&existing, name, section);
    let staged = path.with_extension("md.staged");
    std::fs::write(&staged, updated)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// `existing` with benchmark `name`'s section replaced by `section`.
pub fn splice(existing: &str, name: &str, section: &str) -> String {
    let (begin_marker, end_marker) = markers(name);
    let block = format!("{begin_marker}\n{}\n{end_marker}", section.trim_end());
    if let Some(begin) = existing.find(&begin_marker)
        && let Some(end) = existing[begin..].find(&end_marker).map(|i| begin + i)
    {
        return format!(
            "{}{block}{}",
            &existing[..begin],
            &existing[end + end_marker.len()..]
        );
    }
    let mut text = existing.trim_end().to_owned();
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(&block);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_only_what_is_between_the_markers() {
        let (begin, end) = markers("otlp");
        let first = splice("", "otlp", "one\n");
        assert_eq!(first, format!("{begin}\none\n{end}\n"));

        let xds = "<!-- xds-bench:begin -->\nxds\n<!-- xds-bench:end -->";
        let file = format!("# Results\n\n{xds}\n\n{begin}\nold\n{end}\n\ntrailer\n");
        let updated = splice(&file, "otlp", "new");
        assert_eq!(
            updated,
            format!("# Results\n\n{xds}\n\n{begin}\nnew\n{end}\n\ntrailer\n")
        );
        assert_eq!(splice(&updated, "otlp", "new"), updated);

        let appended = splice(&format!("# Results\n\n{xds}\n"), "otlp", "mine");
        assert_eq!(
            appended,
            format!("# Results\n\n{xds}\n\n{begin}\nmine\n{end}\n")
        );
    }
}
