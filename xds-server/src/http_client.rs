//! weir's own HTTP client, for `http://` and `https://` alike: the CLI's
//! requests to `weir serve`, and a replica's commands and metrics on their
//! way to the leader. rustls with ring, as the servers use; a private CA
//! (`--ca-file`) or the system's roots; a client certificate for a port that
//! requires mutual TLS. Every answer's body is bounded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

pub use axum::http::{HeaderMap, Method, Request, StatusCode};

/// The largest answer read; `weir status` of a large fleet is well below it.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Flags for reaching a `weir` that serves TLS.
#[derive(Clone, Debug, Default, Args)]
pub struct ClientTlsArgs {
    /// Trust this CA (PEM) for https:// servers, instead of the system's roots.
    #[arg(long, env = "WEIR_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Present this certificate (PEM chain) to a weir whose admin port
    /// requires client certificates (--admin-client-ca).
    #[arg(long, env = "WEIR_CLIENT_CERT", requires = "client_key", global = true)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "WEIR_CLIENT_KEY", requires = "client_cert", global = true)]
    pub client_key: Option<PathBuf>,
}

/// How a request failed before an answer came.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("the answer could not be read: {0}")]
    Body(String),
}

impl Failed {
    /// The innermost cause, the one worth a user's reading.
    pub fn root(&self) -> &(dyn std::error::Error + 'static) {
        let mut cause: &(dyn std::error::Error + 'static) = self;
        while let Some(next) = cause.source() {
            cause = next;
        }
        cause
    }
}

/// An answer: its status, headers and whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A pooled client (HTTP/2 or HTTP/1.1 over TLS, HTTP/1.1 in the clear).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client that checks servers as `tls` says, connects within
    /// `connect_timeout` and waits at most `timeout` for a whole answer.
    pub fn new(
        tls: &ClientTlsArgs,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(tls)?)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// Sends `request` and reads its answer whole.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, Failed> {
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|err| Failed::Body(err.to_string()))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failed::Timeout))
    }
}

/// The rustls configuration `tls` asks for.
fn client_config(tls: &ClientTlsArgs) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for cert in crate::tls::certificates(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", ca.display()))?;
            }
        }
        None => {
            // Unreadable system roots only matter for https:// servers, and
            // then the handshake says so.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::tls::certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("{}: no private key in PEM", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("{}: the key does not go with it", cert.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A request of `method` to `url` with `headers` and `body`.
pub fn request(
    method: Method,
    url: &str,
    headers: &[(axum::http::HeaderName, axum::http::HeaderValue)],
    body: Bytes,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(body))
        .with_context(|| format!("`{url}` is not a URL"))
}
