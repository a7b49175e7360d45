//! The request's headers, read from Envoy in one host call and used in place.
//!
//! The SDK's `get_http_request_headers_bytes` copies every name and value
//! into allocations of their own (two per header, each request); here the
//! host's buffer is kept and the pairs are slices of it
//! (`weir_policy::header_map`).

use proxy_wasm::types::MapType;

/// The serialized request header map, as the host wrote it.
pub(crate) struct RequestHeaders {
    buffer: Vec<u8>,
}

impl RequestHeaders {
    /// Reads the current stream's request headers (none if the host refuses).
    pub(crate) fn read() -> Self {
        Self {
            buffer: weir_wasm_host::header_map_pairs(MapType::HttpRequestHeaders)
                .unwrap_or_default(),
        }
    }

    /// The headers as (name, value) slices of the buffer.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        weir_policy::header_map::pairs(&self.buffer)
    }

    /// The headers as text, if every name and value is UTF-8 (checked once
    /// for the whole buffer).
    pub(crate) fn text_pairs(&self) -> Option<impl Iterator<Item = (&str, &str)>> {
        weir_policy::header_map::text_pairs(&self.buffer)
    }

    /// Room for the headers (bounded: Envoy sends at most 100 by default).
    pub(crate) fn capacity(&self) -> usize {
        weir_policy::header_map::declared_len(&self.buffer).min(256)
    }
}
