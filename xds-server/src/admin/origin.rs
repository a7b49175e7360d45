//! Keeps a web page open in the operator's browser from driving `weir`.
//!
//! - **DNS rebinding**: a page on `evil.example` whose name is made to
//!   resolve to 127.0.0.1 reads and writes a loopback `weir` as if it were
//!   its own origin. Without a token, so: the admin API answers only
//!   requests whose `Host` is `localhost`, a loopback address, or a name
//!   given with `--allowed-host` (a token already stops such a page, which
//!   cannot know it).
//! - **Cross-site requests** (CSRF): a page may send a simple `POST` to any
//!   address without reading the answer. A request that changes state
//!   (anything but `GET` and `HEAD`) is refused when its `Origin` is not
//!   weir's own (or an allowed host's), or `Sec-Fetch-Site` says it came from
//!   another site. The CLI, `curl`, Envoy and OTLP exporters send neither
//!   header and pass.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use clap::Args;

use super::error;

/// Flags of `weir serve` for the names the admin API answers to.
#[derive(Debug, Default, Args)]
pub struct OriginArgs {
    /// Host names beyond localhost and loopback addresses that the admin API
    /// answers to without a token, and whose pages may send it commands (the
    /// name of a proxy in front of it, say); comma-separated or repeated.
    #[arg(
        long = "allowed-host",
        env = "WEIR_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
}

/// The check, as the admin router's middleware state.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginGuard {
    allowed: Arc<[String]>,
    /// Whether `Host` is checked: when no token protects the API.
    check_host: bool,
}

impl OriginGuard {
    pub(crate) fn new(args: &OriginArgs, tokens_required: bool) -> Self {
        let allowed = args
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Self {
            allowed,
            check_host: !tokens_required,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            || self.allowed_name(&host)
    }

    /// Why `method` with `headers` is refused, if it is.
    fn refusal(
        &self,
        method: &Method,
        headers: &HeaderMap,
        authority: Option<&str>,
    ) -> Option<String> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority);
        if self.check_host
            && let Some(host) = host
            && !self.host_allowed(host_name(host))
        {
            return Some(format!(
                "weir answers requests for localhost and loopback addresses, not for `{host}` \
                 (a web page whose name resolves here would otherwise read and drive it); \
                 name it with --allowed-host, or set a token"
            ));
        }
        if *method == Method::GET || *method == Method::HEAD {
            return None;
        }
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if let Some(site) = fetch_site
            && !matches!(site, "same-origin" | "none")
        {
            return Some(format!(
                "a {site} request from a web page may not change weir's state"
            ));
        }
        let origin = headers.get(header::ORIGIN)?;
        let origin = origin.to_str().unwrap_or("null");
        let origin_authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let own = origin_authority.is_some_and(|a| {
            host.is_some_and(|h| a.eq_ignore_ascii_case(h)) || self.allowed_name(host_name(a))
        });
        (!own).then(|| {
            format!(
                "a request from the web page at `{origin}` may not change weir's state; weir \
                 takes commands from its own pages, from pages of --allowed-host names, and \
                 from clients that send no Origin (the CLI, curl)"
            )
        })
    }

    fn allowed_name(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.contains(&host)
    }
}

/// The name of a `host[:port]` (an IPv6 address without its brackets).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// Middleware: a refused request gets `403` and a JSON error.
pub(crate) async fn guard(
    State(guard): State<OriginGuard>,
    request: Request,
    next: Next,
) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    match guard.refusal(request.method(), request.headers(), authority.as_deref()) {
        None => next.run(request).await,
        Some(why) => {
            tracing::warn!(method = %request.method(), path = request.uri().path(), "request refused: {why}");
            error(StatusCode::FORBIDDEN, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    fn guard(allowed: &[&str], tokens: bool) -> OriginGuard {
        let args = OriginArgs {
            allowed_hosts: allowed.iter().map(|h| (*h).to_owned()).collect(),
        };
        OriginGuard::new(&args, tokens)
    }

    #[test]
    fn names_of_authorities() {
        assert_eq!(host_name("127.0.0.1:18001"), "127.0.0.1");
        assert_eq!(host_name("[::1]:18001"), "::1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("weir.example:443"), "weir.example");
    }

    #[test]
    fn without_a_token_only_loopback_names_and_allowed_hosts_are_answered() {
        let open = guard(&["weir.internal"], false);
        let get = Method::GET;
        for host in [
            "127.0.0.1:18001",
            "localhost:18001",
            "[::1]:1",
            "WEIR.internal:80",
        ] {
            assert_eq!(
                open.refusal(&get, &headers(&[("host", host)]), None),
                None,
                "{host}"
            );
        }
        let rebound = open.refusal(&get, &headers(&[("host", "evil.example:18001")]), None);
        assert!(rebound.is_some_and(|why| why.contains("evil.example")));
        // Under a token any name is answered: the token is the guard.
        let tokened = guard(&[], true);
        assert_eq!(
            tokened.refusal(&get, &headers(&[("host", "evil.example")]), None),
            None
        );
    }

    #[test]
    fn state_changes_from_other_sites_are_refused() {
        let post = Method::POST;
        for tokens in [false, true] {
            let g = guard(&["console.example"], tokens);
            let from = |origin: &str| {
                g.refusal(
                    &post,
                    &headers(&[("host", "127.0.0.1:18001"), ("origin", origin)]),
                    None,
                )
            };
            assert_eq!(from("http://127.0.0.1:18001"), None);
            assert_eq!(from("https://console.example"), None);
            assert!(from("http://evil.example").is_some());
            assert!(from("http://127.0.0.1:8080").is_some());
            assert!(from("null").is_some());
            let cross = headers(&[
                ("host", "127.0.0.1:18001"),
                ("sec-fetch-site", "cross-site"),
            ]);
            assert!(g.refusal(&post, &cross, None).is_some());
            // No Origin: the CLI, curl.
            assert_eq!(
                g.refusal(&post, &headers(&[("host", "127.0.0.1:1")]), None),
                None
            );
            // Reads are not state changes.
            let read = headers(&[("host", "127.0.0.1:1"), ("origin", "http://evil.example")]);
            assert_eq!(g.refusal(&Method::GET, &read, None), None);
        }
    }
}
