//! The one proxy-wasm host call Weir's filter makes without the Rust SDK.
//!
//! The SDK's `get_map_bytes` copies every header name and value into
//! allocations of their own (two per header, each request), and panics on a
//! name that is not UTF-8; here the host's serialized map is kept whole, to be
//! read in place (`weir_policy::header_map`). Weir's filter uses it, and so
//! does the benchmark's floor of steering (`bench/noop-filter`), which must
//! read the headers exactly as the filter does.

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

/// The current stream's `map_type` map as the host serialized it, owned, so
/// that it is freed when dropped.
pub fn header_map_pairs(map_type: MapType) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length into the two locals,
    // which outlive the call.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    match status {
        Status::Ok if data.is_null() => Ok(Vec::new()),
        // SAFETY: on success the host returns a buffer it obtained from this
        // module's `malloc(size)`, which the SDK implements as a leaked boxed
        // slice of exactly `size` bytes; ownership passes to us, and it is
        // taken back as the SDK's own `get_map_bytes` does.
        Status::Ok => Ok(unsafe { Vec::from_raw_parts(data, size, size) }),
        other => Err(other),
    }
}
