//! The admin API's bearer token: where it comes from, when it is required,
//! and the check every request but two goes through.
//!
//! - With a token, every endpoint requires `Authorization: Bearer <token>`
//!   except `GET /healthz` (for probes) and the filter module
//!   ([`super::WASM_PATH`]): Envoy fetches the module through a remote data
//!   source, which sends no custom header; the module is the public build
//!   artefact, and Envoy checks it against the sha256 that came over xDS.
//! - Without a token the admin API must listen on loopback: `weir serve`
//!   refuses to start otherwise, since the API moves traffic.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;

use super::{WASM_PATH, error};
use crate::token::{Token, bearer};

/// Flags of `weir serve` for the admin API's token.
#[derive(Debug, Default, Args)]
pub struct AuthArgs {
    /// Bearer token the admin API requires (`Authorization: Bearer <token>`)
    /// on every endpoint but /healthz and the filter module; required when
    /// --admin-address is not a loopback address.
    #[arg(
        long,
        env = "WEIR_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,
    /// Read the admin token from this file (surrounding whitespace is ignored).
    #[arg(long, env = "WEIR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The token itself, for this replica's requests to another one.
    pub(crate) fn token(&self) -> anyhow::Result<Option<String>> {
        crate::token::read(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            "the admin token",
        )
    }
}

/// The token requests must carry, if any.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auth {
    token: Option<Token>,
}

impl Auth {
    /// The token given by `args`, checked against the address the admin API
    /// listens on: beyond loopback a token is required.
    pub(crate) fn new(args: &AuthArgs, admin_address: SocketAddr) -> anyhow::Result<Self> {
        let token = Token::load(
            args.admin_token.as_deref(),
            args.admin_token_file.as_deref(),
            "the admin token",
        )?;
        if token.is_none() && !admin_address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve the admin API on {admin_address} without a token: beyond \
                 loopback anyone who reaches it could move traffic. Set --admin-token (or \
                 WEIR_ADMIN_TOKEN, or --admin-token-file), or listen on 127.0.0.1"
            );
        }
        Ok(Self { token })
    }

    /// Whether requests need a token.
    pub(crate) fn required(&self) -> bool {
        self.token.is_some()
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        self.token.as_ref().is_none_or(|t| t.accepts(presented))
    }
}

/// Middleware: a request without the token gets `401` and a JSON error.
pub(crate) async fn require_token(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !auth.required() || path == "/healthz" || path == WASM_PATH {
        return next.run(request).await;
    }
    let presented = request.headers().get(header::AUTHORIZATION);
    let message = match presented.map(|value| bearer(value.as_bytes())) {
        None | Some(None) => {
            "this endpoint requires `Authorization: Bearer <token>`, with the token `weir serve` was given"
        }
        Some(Some(token)) if auth.accepts(token) => return next.run(request).await,
        Some(Some(_)) => "the bearer token is not the admin token `weir serve` was given",
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"weir\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>) -> AuthArgs {
        AuthArgs {
            admin_token: token.map(str::to_owned),
            admin_token_file: None,
        }
    }

    #[test]
    fn a_token_is_required_beyond_loopback() {
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(Auth::new(&args(None), loopback).is_ok_and(|a| !a.required()));
        let refused = Auth::new(&args(None), anywhere).map(|_| ()).unwrap_err();
        assert!(refused.to_string().contains("without a token"), "{refused}");
        assert!(Auth::new(&args(Some("s3cret")), anywhere).is_ok_and(|a| a.required()));
        assert!(Auth::new(&args(Some(" ")), loopback).is_err());
    }
}
