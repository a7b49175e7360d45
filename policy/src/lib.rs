//! Weir's shared crate: the policy model and the pure per-request decisions.
//!
//! Both halves of Weir link this crate: the proxy-wasm filter (compiled to
//! `wasm32-unknown-unknown`) and the `weir` control server. It therefore does
//! no I/O, reads no clock and draws no random numbers; everything it decides
//! is a function of its inputs, so the filter and the server always agree.

pub mod filter_config;
pub mod headers;

pub use filter_config::{FilterConfig, InvalidFilterConfig};
