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
            buffer: host::header_map_pairs(MapType::HttpRequestHeaders).unwrap_or_default(),
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

/// The one host call the SDK offers only with copies.
#[allow(unsafe_code)]
mod host {
    use std::ptr::null_mut;

    use proxy_wasm::types::{MapType, Status};

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        // The same import, with the same signature, as the SDK's declaration.
        fn proxy_get_header_map_pairs(
            map_type: MapType,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> Status;
    }

    /// The serialized map, owned, so that it is freed when dropped.
    pub(super) fn header_map_pairs(map_type: MapType) -> Result<Vec<u8>, Status> {
        let mut data: *mut u8 = null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer and a length into the two
        // locals, which outlive the call.
        let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
        match status {
            Status::Ok if data.is_null() => Ok(Vec::new()),
            // SAFETY: on success the host returns a buffer it obtained from
            // this module's `malloc(size)`, which the SDK implements as a
            // leaked boxed slice of exactly `size` bytes; ownership passes to
            // us, and it is taken back as the SDK's own `get_map_bytes` does.
            Status::Ok => Ok(unsafe { Vec::from_raw_parts(data, size, size) }),
            other => Err(other),
        }
    }
}
