//! Weir's shared crate: the policy model and the pure per-request decisions.
//!
//! Both halves of Weir link this crate: the proxy-wasm filter (compiled to
//! `wasm32-unknown-unknown`) and the `weir` control server. It therefore does
//! no I/O, reads no clock and draws no random numbers; everything it decides
//! is a function of its inputs, so the filter and the server always agree.
//!
//! - [`model`]: the policy document operators write;
//! - [`validate()`]: every check the document's shape cannot express;
//! - [`source`] (feature `source`): reading YAML with file, line and column in errors;
//! - [`engine`]: classify → admit → route → split;
//! - [`admission`]: the work-conserving priority gate the filter drives;
//! - [`filter_config`]: the JSON document the filter is configured with.

pub mod admission;
pub mod duration;
pub mod engine;
pub mod explain;
pub mod feed;
pub mod filter_config;
pub mod header_map;
pub mod headers;
pub mod metrics;
pub mod model;
pub mod names;
pub mod segments;
#[cfg(feature = "source")]
pub mod source;
pub mod split;
pub mod validate;

pub use duration::Duration;
pub use engine::{Decision, Engine, Request};
pub use feed::Feed;
pub use filter_config::{FilterConfig, InvalidFilterConfig};
pub use model::Policy;
pub use validate::{Invalid, validate};

/// The JSON Schema of the policy format, for editors and CI checks.
#[cfg(feature = "schema")]
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or_default()
}
