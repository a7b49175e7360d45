//! The per-request context: what the filter does to one HTTP stream.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use weir_policy::{FilterConfig, headers};

pub(crate) struct WeirRequest {
    #[allow(dead_code)] // Read by the decision stages that build on the foundation.
    config: Rc<FilterConfig>,
}

impl WeirRequest {
    pub(crate) fn new(config: Rc<FilterConfig>) -> Self {
        Self { config }
    }

    /// Removes every client-supplied `x-weir-*` header, so only Weir sets them.
    fn strip_internal_headers(&self) {
        // The byte-valued accessor: a header value that is not UTF-8 must not trap the VM.
        for (name, _) in self.get_http_request_headers_bytes() {
            if headers::is_internal(&name) {
                self.remove_http_request_header(&name);
            }
        }
    }
}

impl Context for WeirRequest {}

impl HttpContext for WeirRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.strip_internal_headers();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header(headers::FILTER_VERSION, Some(crate::VERSION));
        Action::Continue
    }
}
