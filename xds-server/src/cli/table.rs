//! Aligned plain-text tables and the value formats the commands share.

/// A table: a header row, then rows; columns left-aligned, two spaces apart.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The width of each column.
    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(width) => *width = (*width).max(w),
                    None => widths.push(w),
                }
            }
        }
        widths
    }

    /// Each line, header first, without trailing spaces.
    pub(crate) fn lines(&self) -> Vec<String> {
        let widths = self.widths();
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (i, cell) in row.iter().enumerate() {
                    if i > 0 {
                        line.push_str("  ");
                    }
                    line.push_str(cell);
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                line.trim_end().to_owned()
            })
            .collect()
    }
}

/// Basis points as a percentage: `2500` → `25 %`, `125` → `1.25 %`.
pub(crate) fn percent(bp: u32) -> String {
    format!("{} %", f64::from(bp) / 100.0)
}

/// Milliseconds, rounded for reading: `12.3 ms`, `-` when absent.
pub(crate) fn millis(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{} ms", (ms * 10.0).round() / 10.0),
        None => "-".to_owned(),
    }
}

/// How long ago `at_ms` was, from this machine's clock: `4 s ago`, `3 min ago`.
pub(crate) fn ago(at_ms: u64) -> String {
    let secs = crate::serving::now_ms().saturating_sub(at_ms) / 1000;
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7_199 => format!("{} min ago", secs / 60),
        7_200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&["NAME", "WEIGHT"]);
        table.row(vec!["app-canary".into(), "50 %".into()]);
        table.row(vec!["b".into(), "".into()]);
        assert_eq!(
            table.lines(),
            ["NAME        WEIGHT", "app-canary  50 %", "b"]
        );
    }

    #[test]
    fn formats_values() {
        assert_eq!(percent(2500), "25 %");
        assert_eq!(percent(125), "1.25 %");
        assert_eq!(millis(Some(12.34)), "12.3 ms");
        assert_eq!(millis(Some(250.4)), "250 ms");
        assert_eq!(millis(None), "-");
    }
}
