//! The filter's plugin configuration: one JSON document, parsed once per
//! `on_configure`, that `weir` produces and the filter consumes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::feed::Feed;
use crate::model::Policy;
use crate::validate::validate;

/// The filter's plugin configuration.
///
/// Unknown fields are refused: a typo must not silently turn a setting off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Version of this document, reported in logs so an operator can tell
    /// which configuration a filter runs.
    pub version: String,
    /// The compiled policy; without one the filter only guards Weir's headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// The live feed; the policy's initial feed when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<Feed>,
    /// Stamp every response with `x-weir-filter: <filter version>`. Off by
    /// default: it tells clients what runs in front of them, and the extra
    /// response-header write is a measurable share of the filter's cost.
    #[serde(default, skip_serializing_if = "is_false")]
    pub version_header: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl FilterConfig {
    /// Parses the plugin configuration Envoy hands the filter.
    ///
    /// An empty document means "no configuration" and yields the defaults, so
    /// the filter can be loaded without any `configuration` block.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InvalidFilterConfig> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let config: Self = serde_json::from_slice(bytes).map_err(InvalidFilterConfig::from)?;
        if config.version.trim().is_empty() {
            return Err(InvalidFilterConfig::whole("`version` must not be empty"));
        }
        if let Some(policy) = &config.policy {
            // The document may come from anywhere (a hand-written static
            // configuration too): the filter checks it as `weir validate` does.
            let mut problems = validate(policy);
            if let Some(feed) = &config.feed {
                problems.extend(feed.validate(policy));
            }
            if !problems.is_empty() {
                let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return Err(InvalidFilterConfig::whole(format!(
                    "the policy is invalid: {}",
                    listed.join("; ")
                )));
            }
        }
        Ok(config)
    }

    /// The decision engine for this configuration, if it has a policy.
    pub fn engine(&self) -> Option<Engine> {
        let policy = self.policy.as_ref()?;
        let feed = self.feed.clone().unwrap_or_else(|| Feed::initial(policy));
        Some(Engine::new(policy, &feed))
    }
}

/// Why a plugin configuration was refused, with its position in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidFilterConfig {
    /// 1-based line of the error, or 0 when it concerns the whole document.
    pub line: usize,
    /// 1-based column of the error, or 0 when it concerns the whole document.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl InvalidFilterConfig {
    fn whole(message: impl Into<String>) -> Self {
        Self {
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

impl From<serde_json::Error> for InvalidFilterConfig {
    fn from(err: serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; we report those separately.
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full.get(..at).unwrap_or(&full).to_owned(),
            None => full,
        };
        Self {
            line: err.line(),
            column: err.column(),
            message,
        }
    }
}

impl fmt::Display for InvalidFilterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "invalid plugin configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid plugin configuration at line {} column {}: {}",
                self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for InvalidFilterConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_gives_defaults() {
        assert_eq!(FilterConfig::from_json(b""), Ok(FilterConfig::default()));
        assert_eq!(FilterConfig::from_json(b" \n"), Ok(FilterConfig::default()));
    }

    #[test]
    fn a_valid_document_is_read() {
        let config = FilterConfig::from_json(br#"{"version": "v42"}"#).unwrap();
        assert_eq!(config.version, "v42");
        assert!(config.engine().is_none(), "no policy, no engine");
    }

    #[test]
    fn the_version_header_is_off_unless_asked_for() {
        let plain = FilterConfig::from_json(br#"{"version": "v1"}"#).unwrap();
        assert!(!plain.version_header);
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("version_header")
        );
        let stamped =
            FilterConfig::from_json(br#"{"version": "v1", "version_header": true}"#).unwrap();
        assert!(stamped.version_header);
        assert!(FilterConfig::from_json(br#"{"version": "v1", "version_header": "yes"}"#).is_err());
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let err = FilterConfig::from_json(b"{\n  \"version\": \"v1\",\n  oops\n}").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.message.contains("key must be a string"), "{err}");
        assert!(err.to_string().contains("line 3 column 3"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = FilterConfig::from_json(br#"{"version": "v1", "verison": "v2"}"#).unwrap_err();
        assert!(err.message.contains("unknown field `verison`"), "{err}");
    }

    #[test]
    fn wrong_types_and_empty_versions_are_refused() {
        assert!(FilterConfig::from_json(br#"{"version": 5}"#).is_err());
        assert!(FilterConfig::from_json(br#"{"version": " "}"#).is_err());
        assert!(FilterConfig::from_json(b"\xff\xfe").is_err());
    }
}
