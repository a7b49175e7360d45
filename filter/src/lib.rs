//! Weir's proxy-wasm HTTP filter.
//!
//! This crate is host glue only: it reads the plugin configuration and the
//! request through proxy-wasm host calls and hands them to `weir-policy`,
//! where every decision lives. Build it for `wasm32-unknown-unknown`
//! (`make build` leaves it at `dist/weir_filter.wasm`) and load it into Envoy
//! with `envoy.filters.http.wasm`; see `envoy/static.yaml`.
//!
//! Per request: strip client `x-weir-*` headers → classify → route and split
//! → admit, queue or shed (`request.rs`), by the shared crate's admission
//! gate, which `admission.rs` connects to Envoy's gauge and streams; a
//! finished stream's slot goes to the best held request at once, and the
//! root context's tick (`root.rs`) picks up slots other workers gave back.
//!
//! It never panics on its own account: a panic traps the wasm VM, after which
//! Envoy fails every request that reaches the filter.

mod admission;
mod headers;
mod metrics;
mod request;
mod root;
mod segments;
mod state;

/// The filter's build version: logged when configured, and stamped on
/// responses as `x-weir-filter` when the configuration asks for it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The module's entry point, which Envoy calls once per VM.
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root::WeirRoot::new())
        });
    }}
}
