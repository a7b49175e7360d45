//! The one table of header names Weir reads and writes.
//!
//! Every `x-weir-*` header is Weir's own. The filter removes any that a
//! client sends before it decides anything, so a client can never choose its
//! own priority, cluster or variant.

/// Prefix shared by every header Weir owns.
pub const INTERNAL_PREFIX: &str = "x-weir-";

/// Response header naming the filter build that handled the request.
pub const FILTER_VERSION: &str = "x-weir-filter";

/// Request header naming the upstream cluster; routes read it with `cluster_header`.
pub const CLUSTER: &str = "x-weir-cluster";

/// Request header naming the canary cluster a request is mirrored to;
/// routes read it with a `request_mirror_policies` `cluster_header`.
pub const MIRROR: &str = "x-weir-mirror";

/// Request header carrying the priority class upstream.
pub const PRIORITY: &str = "x-weir-priority";

/// Response header on a shed request, naming its class.
pub const SHED: &str = "x-weir-shed";

/// Whether `name` is one of Weir's internal headers (case-insensitive, as HTTP header names are).
pub fn is_internal<N: AsRef<[u8]> + ?Sized>(name: &N) -> bool {
    let name = name.as_ref();
    name.len() >= INTERNAL_PREFIX.len()
        && name
            .iter()
            .zip(INTERNAL_PREFIX.as_bytes())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_headers_are_recognised_in_any_case() {
        assert!(is_internal("x-weir-cluster"));
        assert!(is_internal("X-Weir-Priority"));
        assert!(is_internal("x-weir-"));
        assert!(is_internal(FILTER_VERSION));
        assert!(is_internal(CLUSTER));
    }

    #[test]
    fn other_headers_are_not_internal() {
        assert!(!is_internal("x-weird"));
        assert!(!is_internal("x-wei"));
        assert!(!is_internal(""));
        assert!(!is_internal("content-type"));
        assert!(!is_internal("a-x-weir-cluster"));
        // A multi-byte character straddling the prefix length must not confuse the check.
        assert!(!is_internal("x-weiré"));
    }
}
