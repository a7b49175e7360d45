//! The per-request context: what the filter does to one HTTP stream.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use weir_policy::admission::Arrival;
use weir_policy::metrics::Outcome;
use weir_policy::{Engine, Request, headers};

use crate::admission::shed;
use crate::headers::RequestHeaders;
use crate::segments::{Pending, SHED_HEADER, counted_status};
use crate::state::{SharedState, now_ms, settle};

pub(crate) struct WeirRequest {
    id: u32,
    state: SharedState,
    /// Set for a request of a segmented canary: what its response counts in.
    segment: Option<Pending>,
}

impl WeirRequest {
    pub(crate) fn new(id: u32, state: SharedState) -> Self {
        Self {
            id,
            state,
            segment: None,
        }
    }

    /// The request's headers other than Weir's own, as text; every
    /// client-supplied `x-weir-*` header is removed on the way (one host call
    /// each, rare), so only Weir sets them. When some name or value is not
    /// UTF-8 (rarer still), the headers are read from lossy copies kept in
    /// `lossy` (names that are not UTF-8 are left out, as before).
    fn kept_headers<'h>(
        &self,
        raw: &'h RequestHeaders,
        lossy: &'h mut Vec<(String, String)>,
    ) -> Vec<(&'h str, &'h str)> {
        let mut kept = Vec::with_capacity(raw.capacity());
        if let Some(pairs) = raw.text_pairs() {
            for (name, value) in pairs {
                if headers::is_internal(name) {
                    self.remove_http_request_header(name);
                } else {
                    kept.push((name, value));
                }
            }
            return kept;
        }
        for (name, value) in raw.pairs() {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if headers::is_internal(name) {
                self.remove_http_request_header(name);
            } else {
                lossy.push((name.to_owned(), String::from_utf8_lossy(value).into_owned()));
            }
        }
        kept.extend(
            lossy
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        kept
    }

    /// Classify, route, split, then admit, hold or shed.
    fn steer(&mut self, engine: &Engine, all: &[(&str, &str)]) -> Action {
        let pseudo = |name: &str| all.iter().find(|(n, _)| *n == name).map_or("", |&(_, v)| v);
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
        let mut segment = None;

        let rank = engine.class_rank(&request);
        let class = engine.classes().get(rank).map_or("", String::as_str);
        self.set_http_request_header(headers::PRIORITY, Some(class));
        match engine.steer(&request, spread_key, &mut state.scores) {
            Some(route) => {
                self.set_http_request_header(headers::CLUSTER, Some(route.cluster));
                if let Some(canary) = route.mirror {
                    // The route's mirror policy copies the request there.
                    self.set_http_request_header(headers::MIRROR, Some(canary));
                }
                // Per-cluster counts are Envoy's own cluster stats; the filter
                // counts what only it knows: the variant of each canary split.
                if let Some((canary_cluster, variant)) = route.split {
                    metrics.variant(canary_cluster, variant);
                    segment = metrics
                        .segments
                        .start(canary_cluster, variant, &request, now_ms);
                }
            }
            None => metrics.unrouted(),
        }

        let id = self.id;
        let (verdict, effects) =
            state.with_gate(|gate, slots, fx| gate.arrive(id, rank, now_ms, slots, fx));
        drop(state);
        // Requests this one displaced are answered first, in their own streams.
        settle(&self.state, effects, Some(self.id));
        let action = match verdict {
            Arrival::Admit => {
                metrics.outcome(rank, Outcome::Admitted);
                Action::Continue
            }
            Arrival::Queue { .. } => {
                metrics.outcome(rank, Outcome::Queued);
                Action::Pause
            }
            Arrival::Shed { retry_after_s, .. } => {
                metrics.outcome(rank, Outcome::Shed);
                shed(class, retry_after_s);
                segment = None;
                Action::Pause
            }
        };
        self.segment = segment;
        // The counts just made reach Envoy at the next flush tick.
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.retick();
        }
        action
    }
}

impl Context for WeirRequest {}

impl HttpContext for WeirRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let raw = RequestHeaders::read();
        let mut lossy = Vec::new();
        let all = self.kept_headers(&raw, &mut lossy);
        let engine = self.state.try_borrow().ok().and_then(|s| s.engine.clone());
        let Some(engine) = engine else {
            return Action::Continue;
        };
        self.steer(&engine, &all)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(pending) = self.segment.take() {
            let status = counted_status(
                self.get_http_response_header(":status"),
                self.get_http_response_header(SHED_HEADER),
            );
            let metrics = self.state.try_borrow().ok().map(|s| Rc::clone(&s.metrics));
            if let (Some(status), Some(metrics)) = (status, metrics) {
                metrics.segment_finish(&pending, status, now_ms());
            }
        }
        let stamp = self.state.try_borrow().is_ok_and(|s| s.version_header);
        if stamp {
            self.set_http_response_header(headers::FILTER_VERSION, Some(crate::VERSION));
        }
        Action::Continue
    }
}

/// Envoy deletes a stream's context when the stream is over, however it
/// ended: its slot goes to the best request held, or its place in the queue
/// is given up. (Releasing here rather than in `on_log` spares every request
/// one entry into the VM: the module does not export `proxy_on_log`, see
/// `filter/callbacks.txt`. What this resumes or answers, Envoy carries out
/// after the callback returns.)
impl Drop for WeirRequest {
    fn drop(&mut self) {
        let id = self.id;
        let effects = match self.state.try_borrow_mut() {
            Ok(mut state) => {
                state
                    .with_gate(|gate, slots, fx| gate.finish(id, now_ms, slots, fx))
                    .1
            }
            Err(_) => return,
        };
        settle(&self.state, effects, Some(id));
    }
}
