//! The root context: one per wasm VM (so one per Envoy worker). It parses the
//! configuration, creates a request context per HTTP stream, and on its tick
//! releases held requests as capacity frees and sheds those out of time.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use weir_policy::FilterConfig;
use weir_policy::metrics::Outcome;
use weir_policy::queue::Queued;

use crate::metrics::{self, Metrics};
use crate::request::{WeirRequest, shed};
use crate::state::{SharedState, State, now_ms};

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
        let now = now_ms();
        // Decide under the borrow; act after it, because resuming or answering
        // a stream can call back into this VM.
        let (expired, released, classes, retry_after, metrics) = {
            let Ok(mut state) = self.state.try_borrow_mut() else {
                return;
            };
            let Some(engine) = state.engine.clone() else {
                state.set_ticking(false);
                return;
            };
            let expired = state.queue.take_expired(now);
            let mut released: Vec<Queued> = Vec::new();
            loop {
                let in_flight = metrics::read(state.metrics.in_flight);
                let admits = |rank: usize| in_flight < engine.admitter().threshold(rank);
                let Some(next) = state.queue.pop_next(now, admits) else {
                    break;
                };
                if !state.try_take_slot(
                    next.id,
                    engine.admitter().threshold(next.effective_rank(now)),
                ) {
                    // Another worker took the slot first: hold it a little longer.
                    let _ = state.queue.push(
                        next.id,
                        next.rank,
                        next.since_ms,
                        next.deadline_ms.saturating_sub(next.since_ms),
                    );
                    break;
                }
                released.push(next);
            }
            let depth_change = -i64::try_from(expired.len() + released.len()).unwrap_or(0);
            metrics::bump(state.metrics.queue_depth, depth_change);
            let idle = state.queue.is_empty();
            state.set_ticking(!idle);
            let retry_after = engine.admitter().retry_after_s();
            (
                expired,
                released,
                engine.classes().to_vec(),
                retry_after,
                state.metrics.clone(),
            )
        };
        for held in released {
            metrics.outcome(held.rank, Outcome::Released);
            metrics.queue_wait(now.saturating_sub(held.since_ms));
            if hostcalls::set_effective_context(held.id).is_ok() {
                let _ = hostcalls::resume_http_request();
            } else if let Ok(mut state) = self.state.try_borrow_mut() {
                state.release_slot(held.id);
            }
        }
        for held in expired {
            metrics.outcome(held.rank, Outcome::Shed);
            if hostcalls::set_effective_context(held.id).is_ok() {
                let class = classes.get(held.rank).map_or("", String::as_str);
                shed(class, retry_after);
            }
        }
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
