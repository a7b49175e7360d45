//! Durations as operators write them: `250ms`, `2s`, `1m`, `1h`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A duration written as a number and a unit (`ms`, `s`, `m` or `h`).
///
/// Any string is accepted when the document is read, so that a malformed
/// duration is reported by validation together with every other error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Duration(
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$")))] pub String,
);

impl Duration {
    /// A duration of `ms` milliseconds, written in the largest exact unit.
    pub fn from_millis(ms: u64) -> Self {
        let text = match ms {
            0 => "0ms".to_owned(),
            _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
            _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
            _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
            _ => format!("{ms}ms"),
        };
        Self(text)
    }

    /// The duration in milliseconds, or `None` if it is not well formed.
    pub fn millis(&self) -> Option<u64> {
        let text = self.0.trim();
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        number.checked_mul(scale)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Duration;

    #[test]
    fn units_are_read() {
        assert_eq!(Duration("250ms".into()).millis(), Some(250));
        assert_eq!(Duration("2s".into()).millis(), Some(2_000));
        assert_eq!(Duration("1m".into()).millis(), Some(60_000));
        assert_eq!(Duration("1h".into()).millis(), Some(3_600_000));
    }

    #[test]
    fn malformed_durations_are_none() {
        for bad in [
            "",
            "s",
            "10",
            "1.5s",
            "-1s",
            "10 s",
            "10sec",
            "99999999999999999999h",
        ] {
            assert_eq!(Duration(bad.into()).millis(), None, "{bad:?}");
        }
    }

    #[test]
    fn from_millis_round_trips() {
        for ms in [0, 1, 250, 1_000, 1_500, 60_000, 90_000, 3_600_000] {
            assert_eq!(Duration::from_millis(ms).millis(), Some(ms));
        }
        assert_eq!(Duration::from_millis(30_000).0, "30s");
    }
}
