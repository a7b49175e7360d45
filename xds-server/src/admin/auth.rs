//! The admin port's bearer tokens: where they come from, when one is
//! required, what each allows, and the check every request but two goes
//! through.
//!
//! - Four tokens, each optional: the **admin** token allows everything; a
//!   **read** token only reads (status, rollouts, nodes, `/metrics`, the
//!   dashboard's data) — what a Prometheus scrape or a dashboard needs, and
//!   never enough to abort a rollout; a **write** token reads and commands
//!   (pause, resume, promote, abort, pins); an **ingest** token only
//!   exports OTLP metrics (`POST /v1/metrics`).
//! - With any token set, every endpoint requires one that allows it, except
//!   `GET /healthz` and `/readyz` (for probes) and the filter module
//!   ([`super::WASM_PATH`]): Envoy fetches the module through a remote data
//!   source, which sends no custom header; the module is the public build
//!   artefact, and Envoy checks it against the sha256 that came over xDS.
//! - Without a token the admin API must listen on loopback: `weir serve`
//!   refuses to start otherwise, since the API moves traffic.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;

use super::{WASM_PATH, error};
use crate::token::{Token, bearer};

/// Flags of `weir serve` for the admin port's tokens.
#[derive(Debug, Default, Args)]
pub struct AuthArgs {
    /// Bearer token that allows every endpoint of the admin port
    /// (`Authorization: Bearer <token>`) but /healthz, /readyz and the
    /// filter module, which need none. Beyond loopback some token is
    /// required.
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
    /// A token that only reads: status, rollouts, clusters, nodes, the feed,
    /// /metrics and the dashboard's data (a Prometheus scrape, a dashboard).
    #[arg(
        long,
        env = "WEIR_READ_TOKEN",
        hide_env_values = true,
        conflicts_with = "read_token_file"
    )]
    pub read_token: Option<String>,
    /// Read the read token from this file.
    #[arg(long, env = "WEIR_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
    /// A token that reads and commands: pause, resume, promote, abort, and
    /// the operator's pins (PUT/DELETE /v1/feed).
    #[arg(
        long,
        env = "WEIR_WRITE_TOKEN",
        hide_env_values = true,
        conflicts_with = "write_token_file"
    )]
    pub write_token: Option<String>,
    /// Read the write token from this file.
    #[arg(long, env = "WEIR_WRITE_TOKEN_FILE")]
    pub write_token_file: Option<PathBuf>,
    /// A token that only exports metrics: OTLP/HTTP `POST /v1/metrics` here,
    /// and OTLP/gRPC on the xDS port (where it does not open ADS).
    #[arg(
        long,
        env = "WEIR_INGEST_TOKEN",
        hide_env_values = true,
        conflicts_with = "ingest_token_file"
    )]
    pub ingest_token: Option<String>,
    /// Read the ingest token from this file.
    #[arg(long, env = "WEIR_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The token this replica presents to the leader when it forwards
    /// metrics: the admin token, else the ingest token.
    pub(crate) fn forwarding_token(&self) -> anyhow::Result<Option<String>> {
        let admin = crate::token::read(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            "the admin token",
        )?;
        match admin {
            Some(token) => Ok(Some(token)),
            None => crate::token::read(
                self.ingest_token.as_deref(),
                self.ingest_token_file.as_deref(),
                "the ingest token",
            ),
        }
    }

    /// The ingest token alone, which the xDS port accepts for OTLP/gRPC.
    pub(crate) fn ingest(&self) -> anyhow::Result<Option<Token>> {
        Token::load(
            self.ingest_token.as_deref(),
            self.ingest_token_file.as_deref(),
            "the ingest token",
        )
    }
}

/// What a request does, and so which tokens allow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Reads state (`GET`, `HEAD`).
    Read,
    /// Changes it: commands and pins.
    Write,
    /// Exports metrics.
    Ingest,
}

impl Scope {
    fn of(method: &Method, path: &str) -> Self {
        if path == crate::otlp::METRICS_PATH && method == Method::POST {
            Self::Ingest
        } else if method == Method::GET || method == Method::HEAD {
            Self::Read
        } else {
            Self::Write
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Ingest => "ingest",
        }
    }
}

/// The tokens requests must carry, if any, and the scopes of each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auth {
    tokens: Vec<(Token, &'static [Scope])>,
}

const ADMIN: &[Scope] = &[Scope::Read, Scope::Write, Scope::Ingest];
const WRITE: &[Scope] = &[Scope::Read, Scope::Write];
const READ: &[Scope] = &[Scope::Read];
const INGEST: &[Scope] = &[Scope::Ingest];

impl Auth {
    /// The tokens given by `args`, checked against the address the admin API
    /// listens on: beyond loopback a token is required.
    pub(crate) fn new(args: &AuthArgs, admin_address: SocketAddr) -> anyhow::Result<Self> {
        let given = [
            (
                &args.admin_token,
                &args.admin_token_file,
                "the admin token",
                ADMIN,
            ),
            (
                &args.write_token,
                &args.write_token_file,
                "the write token",
                WRITE,
            ),
            (
                &args.read_token,
                &args.read_token_file,
                "the read token",
                READ,
            ),
            (
                &args.ingest_token,
                &args.ingest_token_file,
                "the ingest token",
                INGEST,
            ),
        ];
        let mut tokens = Vec::new();
        for (value, file, what, scopes) in given {
            if let Some(token) = Token::load(value.as_deref(), file.as_deref(), what)? {
                tokens.push((token, scopes));
            }
        }
        if tokens.is_empty() && !admin_address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve the admin API on {admin_address} without a token: beyond \
                 loopback anyone who reaches it could move traffic. Set --admin-token (or \
                 WEIR_ADMIN_TOKEN, or --admin-token-file) or the scoped --read-token, \
                 --write-token and --ingest-token, or listen on 127.0.0.1"
            );
        }
        Ok(Self { tokens })
    }

    /// Whether requests need a token.
    pub(crate) fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The scopes `presented` allows; `None` when it is no token of ours.
    fn scopes(&self, presented: &[u8]) -> Option<&'static [Scope]> {
        // Every token is compared, so the time taken does not say which matched.
        self.tokens.iter().fold(None, |found, (token, scopes)| {
            if token.accepts(presented) {
                Some(*scopes)
            } else {
                found
            }
        })
    }
}

/// Paths open without a token: probes and the module Envoy fetches.
fn open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path == WASM_PATH
}

/// Middleware: a request without a token gets `401`, one whose token does
/// not allow it `403`, each with a JSON error.
pub(crate) async fn require_token(
    State(auth): State<Auth>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !auth.required() || open(path) {
        return next.run(request).await;
    }
    let scope = Scope::of(request.method(), path);
    let presented = request.headers().get(header::AUTHORIZATION);
    let message = match presented.map(|value| bearer(value.as_bytes())) {
        None | Some(None) => {
            "this endpoint requires `Authorization: Bearer <token>`, with a token `weir serve` was given"
        }
        Some(Some(token)) => match auth.scopes(token) {
            Some(scopes) if scopes.contains(&scope) => return next.run(request).await,
            Some(_) => {
                let message = format!(
                    "this token does not allow {} requests ({} {path}); use one that does \
                     (see docs/security.md)",
                    scope.name(),
                    request.method()
                );
                return error(StatusCode::FORBIDDEN, message);
            }
            None => "the bearer token is not one of the tokens `weir serve` was given",
        },
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
            ..AuthArgs::default()
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
        let scoped = AuthArgs {
            read_token: Some("r".into()),
            ..AuthArgs::default()
        };
        assert!(Auth::new(&scoped, anywhere).is_ok_and(|a| a.required()));
    }

    #[test]
    fn each_token_allows_its_scopes() {
        let all = AuthArgs {
            admin_token: Some("a".into()),
            read_token: Some("r".into()),
            write_token: Some("w".into()),
            ingest_token: Some("i".into()),
            ..AuthArgs::default()
        };
        let auth = Auth::new(&all, "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(auth.scopes(b"a"), Some(ADMIN));
        assert_eq!(auth.scopes(b"w"), Some(WRITE));
        assert_eq!(auth.scopes(b"r"), Some(READ));
        assert_eq!(auth.scopes(b"i"), Some(INGEST));
        assert_eq!(auth.scopes(b"x"), None);
        assert_eq!(Scope::of(&Method::GET, "/v1/status"), Scope::Read);
        assert_eq!(Scope::of(&Method::POST, "/v1/metrics"), Scope::Ingest);
        assert_eq!(
            Scope::of(&Method::POST, "/v1/rollouts/c/abort"),
            Scope::Write
        );
        assert_eq!(Scope::of(&Method::PUT, "/v1/feed"), Scope::Write);
        assert_eq!(Scope::of(&Method::DELETE, "/v1/feed"), Scope::Write);
    }
}
