//! A proxy-wasm HTTP filter that does nothing: every callback Envoy makes
//! into the VM returns at once with `Continue`.
//!
//! It measures the floor of any wasm filter — Envoy creating a context per
//! stream and crossing into V8 for each callback — against which Weir's own
//! filter is compared in `bench/`. `scripts/build-filter.sh weir-noop-filter`
//! leaves it at `dist/weir_noop_filter.wasm`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

/// The root context: accepts any configuration and makes a request context per stream.
struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopRequest))
    }
}

/// The request context: every callback keeps its default, which continues.
struct NoopRequest;

impl Context for NoopRequest {}

impl HttpContext for NoopRequest {}
