//! What a name, a header name, a host or an endpoint may look like.
//!
//! Names end up in Envoy resources, header values and metric names, so they
//! are held to a small, safe alphabet.

use crate::headers;

/// Longest name accepted (a DNS label's limit, which also suits metric names).
const MAX_NAME: usize = 63;

/// A name: 1–63 of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if name.is_empty() || name.len() > MAX_NAME || !ok_start || !ok_chars {
        return Err(format!(
            "`{name}` is not a valid name: use 1 to {MAX_NAME} lower-case letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// A request header name Weir may read: a lower-case HTTP token, not one of Weir's own.
pub fn check_header_name(name: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
    if !token {
        return Err(format!(
            "`{name}` is not a valid header name: use lower-case letters, digits, `-` and the other characters of an HTTP token"
        ));
    }
    if headers::is_internal(name) {
        return Err(format!(
            "`{name}` is one of Weir's internal headers, which clients cannot set"
        ));
    }
    Ok(())
}

/// An endpoint: `host:port`, the host an IPv4 address, `[IPv6]` or a DNS name.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{endpoint}` is not a valid endpoint: {why}"));
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return bad("write it as `host:port`");
    };
    match port.parse::<u16>() {
        // Digits only: `parse` would also take a leading `+`.
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0') => {}
        _ => return bad("the port must be a number from 1 to 65535"),
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)
    };
    if !host_ok {
        return bad("the host must be an IP address or a DNS name");
    }
    Ok(())
}

/// A service host pattern: a DNS name, or `*.` followed by one.
pub fn check_host_pattern(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if is_dns_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{host}` is not a host name (or `*.` and a host name)"
        ))
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_NAME
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "eu-west-1", "ingest.v2", "x_y", "9lives"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "A", "eu west", "ü", "a/b", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_names() {
        assert!(check_header_name("x-device-id").is_ok());
        for bad in ["", "X-Device", "x device", "x-weir-region", "a:b"] {
            assert!(check_header_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints() {
        for good in [
            "10.0.0.1:8080",
            "[::1]:80",
            "ingest.eu.internal:443",
            "localhost:1",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1",
            "host:0",
            "host:65536",
            "host:08",
            "host:+80",
            ":80",
            "bad host:80",
            "[zz]:80",
            "-a:80",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        assert!(check_host_pattern("api.example.com").is_ok());
        assert!(check_host_pattern("*.example.com").is_ok());
        assert!(check_host_pattern("*").is_err());
        assert!(check_host_pattern("a..b").is_err());
    }
}
