//! The xDS port's bearer token. The port carries ADS and OTLP/gRPC, and both
//! move traffic (a configuration served, metrics that roll a canary back),
//! so beyond loopback every call must carry `authorization: Bearer <token>`:
//! Envoy sends it as `initial_metadata` of its `weir_xds` gRPC services (see
//! `envoy/bootstrap.yaml`), an OTLP exporter as a header.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tonic::{Request, Status};

use crate::token::{Token, bearer};

/// Flags of `weir serve` for the xDS port's token.
#[derive(Debug, Default, Args)]
pub struct XdsAuthArgs {
    /// Bearer token every gRPC call on --xds-address (ADS and OTLP/gRPC) must
    /// carry in its `authorization` metadata; required when --xds-address is
    /// not a loopback address.
    #[arg(
        long,
        env = "WEIR_XDS_TOKEN",
        hide_env_values = true,
        conflicts_with = "xds_token_file"
    )]
    pub xds_token: Option<String>,
    /// Read the xDS token from this file (surrounding whitespace is ignored).
    #[arg(long, env = "WEIR_XDS_TOKEN_FILE")]
    pub xds_token_file: Option<PathBuf>,
}

/// The token calls on the xDS port must carry, if any: a gRPC interceptor.
#[derive(Clone, Debug, Default)]
pub struct XdsAuth {
    token: Option<Token>,
    /// Also accepted, by the OTLP/gRPC service only: the ingest token.
    ingest: Option<Token>,
}

impl XdsAuth {
    /// The token given by `args`, checked against the address the xDS port
    /// listens on: beyond loopback a token is required.
    pub fn new(args: &XdsAuthArgs, xds_address: SocketAddr) -> anyhow::Result<Self> {
        let token = Token::load(
            args.xds_token.as_deref(),
            args.xds_token_file.as_deref(),
            "the xDS token",
        )?;
        if token.is_none() && !xds_address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve xDS and OTLP on {xds_address} without a token: beyond \
                 loopback anyone who reaches it could read the fleet's configuration or \
                 report metrics that move traffic. Set --xds-token (or WEIR_XDS_TOKEN, or \
                 --xds-token-file) and give Envoy the same as `initial_metadata`, or listen \
                 on 127.0.0.1"
            );
        }
        Ok(Self {
            token,
            ingest: None,
        })
    }

    /// The check for the OTLP/gRPC service, which accepts the ingest token
    /// beside the xDS token (an OTLP exporter then cannot read the fleet's
    /// configuration).
    pub(crate) fn for_otlp(&self, ingest: Option<Token>) -> Self {
        Self {
            token: self.token.clone(),
            ingest,
        }
    }

    /// Whether calls need a token.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }
}

impl tonic::service::Interceptor for XdsAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| bearer(value.as_bytes()));
        match presented {
            Some(presented)
                if token.accepts(presented)
                    | self.ingest.as_ref().is_some_and(|t| t.accepts(presented)) =>
            {
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated(
                "the bearer token is not the xDS token `weir serve` was given",
            )),
            None => Err(Status::unauthenticated(
                "calls to weir's xDS port require `authorization: Bearer <token>` metadata \
                 (Envoy: `initial_metadata` of the weir_xds gRPC services)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::service::Interceptor;

    use super::*;

    fn args(token: Option<&str>) -> XdsAuthArgs {
        XdsAuthArgs {
            xds_token: token.map(str::to_owned),
            xds_token_file: None,
        }
    }

    fn call(auth: &XdsAuth, authorization: Option<&str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        auth.clone().call(request).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn a_token_is_required_beyond_loopback() {
        let loopback: SocketAddr = "127.0.0.1:18000".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:18000".parse().unwrap();
        assert!(XdsAuth::new(&args(None), loopback).is_ok_and(|a| !a.required()));
        let refused = XdsAuth::new(&args(None), anywhere).unwrap_err();
        assert!(refused.to_string().contains("without a token"), "{refused}");
        assert!(XdsAuth::new(&args(Some("t0ken")), anywhere).is_ok_and(|a| a.required()));
    }

    #[test]
    fn calls_without_the_token_are_unauthenticated() {
        let open = XdsAuth::new(&args(None), "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(call(&open, None), Ok(()));
        let auth = XdsAuth::new(&args(Some("t0ken")), "127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(call(&auth, Some("Bearer t0ken")), Ok(()));
        assert_eq!(call(&auth, None), Err(Code::Unauthenticated));
        assert_eq!(
            call(&auth, Some("Bearer other")),
            Err(Code::Unauthenticated)
        );
        assert_eq!(call(&auth, Some("t0ken")), Err(Code::Unauthenticated));
    }

    #[test]
    fn the_ingest_token_opens_otlp_but_not_ads() {
        let ads = XdsAuth::new(&args(Some("x")), "127.0.0.1:1".parse().unwrap()).unwrap();
        let ingest = Token::load(Some("i"), None, "the ingest token").unwrap();
        let otlp = ads.for_otlp(ingest);
        assert_eq!(call(&otlp, Some("Bearer i")), Ok(()));
        assert_eq!(call(&otlp, Some("Bearer x")), Ok(()));
        assert_eq!(call(&ads, Some("Bearer i")), Err(Code::Unauthenticated));
    }
}
