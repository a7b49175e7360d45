//! A proxy-wasm HTTP filter that does nothing: every callback Envoy makes
//! into the VM returns at once with `Continue`.
//!
//! It measures the floor of any wasm filter — Envoy creating a context per
//! stream and crossing into V8 for each callback — against which Weir's own
//! filter is compared in `bench/`. `scripts/build-filter.sh weir-noop-filter`
//! leaves it at `dist/weir_noop_filter.wasm`.
//!
//! Configured with `steer`, it does only the host calls any filter that
//! steers by header must make, and nothing else: one read of the request
//! headers (in place, as Weir's filter reads them) and two header writes
//! (`x-weir-priority`, `x-weir-cluster`), after which Envoy matches the route
//! again. That is the floor of a filter doing Weir's job.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { steer: false }) });
}}

/// The root context: accepts any configuration and makes a request context per stream.
struct NoopRoot {
    steer: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.steer = self.get_plugin_configuration().as_deref() == Some(b"steer".as_slice());
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.steer {
            Some(Box::new(SteerRequest))
        } else {
            Some(Box::new(NoopRequest))
        }
    }
}

/// The request context: every callback keeps its default, which continues.
struct NoopRequest;

impl Context for NoopRequest {}

impl HttpContext for NoopRequest {}

/// The request context of `steer`: the steering host calls, no decisions.
struct SteerRequest;

impl Context for SteerRequest {}

impl HttpContext for SteerRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The read Weir's filter makes (the host's map kept whole).
        let headers =
            weir_wasm_host::header_map_pairs(MapType::HttpRequestHeaders).unwrap_or_default();
        // Something must be read, or the read could go unnoticed.
        let class = if headers.len() > 64 {
            "telemetry"
        } else {
            "heartbeat"
        };
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-weir-priority", Some(class));
        let _ =
            hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-weir-cluster", Some(STABLE));
        Action::Continue
    }
}

/// The cluster the benchmark's route sends everything to.
const STABLE: &str = "ingest-eu";
