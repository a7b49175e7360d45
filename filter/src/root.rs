//! The root context: one per wasm VM (so one per Envoy worker). It owns the
//! parsed configuration and creates a request context for every HTTP stream.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use weir_policy::FilterConfig;

use crate::request::WeirRequest;

#[derive(Default)]
pub(crate) struct WeirRoot {
    config: Rc<FilterConfig>,
}

impl Context for WeirRoot {}

impl RootContext for WeirRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&raw) {
            Ok(config) => {
                log::info!(
                    "weir filter {} configured with version {:?}",
                    crate::VERSION,
                    config.version
                );
                self.config = Rc::new(config);
                true
            }
            Err(err) => {
                // Returning false makes Envoy refuse this configuration; a running
                // filter keeps the one it had.
                log::error!("weir filter refused its configuration: {err}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WeirRequest::new(Rc::clone(&self.config))))
    }
}
