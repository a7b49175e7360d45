//! The root context: one per wasm VM (so one per Envoy worker). It parses the
//! configuration, creates a request context per HTTP stream, and on its tick
//! hands slots other workers gave back to its held requests and sheds those
//! out of time.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use weir_policy::FilterConfig;

use crate::metrics::Metrics;
use crate::request::WeirRequest;
use crate::state::{SharedState, State, now_ms, settle};

pub(crate) struct WeirRoot {
    state: SharedState,
}

impl WeirRoot {
    pub(crate) fn new() -> Self {
        Self {
            state: Rc::new(RefCell::new(State::new())),
        }
    }
}

impl Context for WeirRoot {}

impl RootContext for WeirRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::from_json(&raw) {
            Ok(config) => config,
            Err(err) => {
                // Returning false makes Envoy refuse this configuration; a
                // running filter keeps the one it had.
                log::error!("weir filter refused its configuration: {err}");
                return false;
            }
        };
        let engine = config.engine();
        let metrics = match (&config.policy, &engine) {
            (Some(policy), Some(engine)) => Metrics::for_policy(policy, engine),
            _ => Metrics::gauges(),
        };
        let Ok(mut state) = self.state.try_borrow_mut() else {
            log::error!("weir filter: configuration arrived while busy; keeping the previous one");
            return false;
        };
        state.configure(engine, metrics, config.version_header);
        log::info!(
            "weir filter {} configured with version {:?}{}",
            crate::VERSION,
            config.version,
            if config.policy.is_some() {
                ""
            } else {
                " (no policy: guarding headers only)"
            }
        );
        true
    }

    fn on_tick(&mut self) {
        // Counters reach Envoy; slots other workers gave back go to the best
        // requests held here; then those out of time are answered.
        let effects = {
            let Ok(mut state) = self.state.try_borrow_mut() else {
                return;
            };
            state.metrics.flush();
            if !state.holds() {
                state.retick();
                return;
            }
            let now = now_ms();
            state
                .with_gate(|gate, slots, fx| gate.tick(now, slots, fx))
                .1
        };
        settle(&self.state, effects, None);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WeirRequest::new(
            context_id,
            Rc::clone(&self.state),
        )))
    }
}
