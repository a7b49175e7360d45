//! The per-request context: what the filter does to one HTTP stream.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use weir_policy::metrics::Outcome;
use weir_policy::{Engine, Request, headers};

use crate::metrics;
use crate::state::{SharedState, now_ms};

pub(crate) struct WeirRequest {
    id: u32,
    state: SharedState,
}

impl WeirRequest {
    pub(crate) fn new(id: u32, state: SharedState) -> Self {
        Self { id, state }
    }

    /// Reads the request headers once, removing every client-supplied
    /// `x-weir-*` header on the way, so only Weir sets them.
    fn read_and_strip_headers(&self) -> Vec<(String, String)> {
        // The byte-valued accessor: a header value that is not UTF-8 must not trap the VM.
        let mut kept = Vec::new();
        for (name, value) in self.get_http_request_headers_bytes() {
            if headers::is_internal(&name) {
                self.remove_http_request_header(&name);
            } else {
                // Valid UTF-8 (nearly always) is taken over without a copy.
                let value = String::from_utf8(value).unwrap_or_else(|invalid| {
                    String::from_utf8_lossy(invalid.as_bytes()).into_owned()
                });
                kept.push((name, value));
            }
        }
        kept
    }

    /// Classify, route, split, then admit, hold or shed.
    fn steer(&self, engine: &Engine, all: &[(String, String)]) -> Action {
        let pseudo = |name: &str| {
            all.iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let request = Request {
            method: pseudo(":method"),
            host: pseudo(":authority"),
            path: pseudo(":path"),
            headers: all,
        };
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Action::Continue;
        };
        let metrics = Rc::clone(&state.metrics);
        state.request_counter = state.request_counter.wrapping_add(1);
        let spread_key = engine.spread_key(&request, state.request_counter);

        let class = engine.classify(&request);
        self.set_http_request_header(headers::PRIORITY, Some(&class.name));
        match engine.steer(&request, spread_key, &mut state.scores) {
            Some(route) => {
                self.set_http_request_header(headers::CLUSTER, Some(route.cluster));
                // Per-cluster counts are Envoy's own cluster stats; the filter
                // counts what only it knows: the variant of each canary split.
                if let Some((canary_cluster, variant)) = route.split {
                    metrics.variant(canary_cluster, variant);
                }
            }
            None => metrics.unrouted(),
        }

        let admitter = engine.admitter();
        let threshold = admitter.threshold(class.rank);
        // Requests already held on this worker at this class or above go first.
        // (The clock is read only when there is a queue to look at.)
        let overtakes =
            !state.queue.is_empty() && state.queue.holds_at_or_above(class.rank, now_ms());
        if !overtakes && state.try_take_slot(self.id, threshold) {
            metrics.outcome(class.rank, Outcome::Admitted);
            return Action::Continue;
        }
        let now = now_ms();
        let max_wait_ms = admitter.max_wait_ms(class.rank);
        let held = match max_wait_ms {
            0 => None,
            _ => state.queue.push(self.id, class.rank, now, max_wait_ms).ok(),
        };
        let retry_after = admitter.retry_after_s();
        match held {
            Some(displaced) => {
                metrics.outcome(class.rank, Outcome::Queued);
                state.set_ticking(true);
                if displaced.is_none() {
                    metrics::bump(metrics.queue_depth, 1);
                }
                drop(state);
                if let Some(displaced) = displaced {
                    // A lower class made room: it is shed now, in its own stream.
                    metrics.outcome(displaced.rank, Outcome::Shed);
                    if hostcalls::set_effective_context(displaced.id).is_ok() {
                        shed(
                            engine
                                .classes()
                                .get(displaced.rank)
                                .map_or("", String::as_str),
                            retry_after,
                        );
                    }
                    let _ = hostcalls::set_effective_context(self.id);
                }
                Action::Pause
            }
            None => {
                // The class may not wait, or this worker's queue is full of higher classes.
                drop(state);
                metrics.outcome(class.rank, Outcome::Shed);
                shed(&class.name, retry_after);
                Action::Pause
            }
        }
    }
}

/// Answers the current stream 503 with `retry-after`, naming the class shed.
pub(crate) fn shed(class: &str, retry_after_s: u64) {
    let retry_after = retry_after_s.to_string();
    let headers = vec![
        ("retry-after", retry_after.as_str()),
        (headers::SHED, class),
        ("content-type", "text/plain"),
    ];
    let _ = hostcalls::send_http_response(
        503,
        headers,
        Some(b"overloaded: request shed by priority\n"),
    );
}

impl Context for WeirRequest {}

impl HttpContext for WeirRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let all = self.read_and_strip_headers();
        let engine = self.state.try_borrow().ok().and_then(|s| s.engine.clone());
        match engine {
            Some(engine) => self.steer(&engine, &all),
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let stamp = self.state.try_borrow().is_ok_and(|s| s.version_header);
        if stamp {
            self.set_http_response_header(headers::FILTER_VERSION, Some(crate::VERSION));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // The stream is over, however it ended: free its slot, or its place in the queue.
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.release_slot(self.id);
            if state.queue.remove(self.id) {
                metrics::bump(state.metrics.queue_depth, -1);
            }
        }
    }
}
