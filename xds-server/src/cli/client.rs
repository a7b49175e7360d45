//! The admin API's client for the commands that talk to a running `weir
//! serve`: one request at a time, and every failure as one line that says
//! what to do about it.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, header};
use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use crate::http_client::{ClientTlsArgs, Failed, HttpClient, Method, StatusCode};

/// The local admin address, where `weir serve` listens by default.
const DEFAULT_SERVER: &str = "http://127.0.0.1:18001";

/// How to reach `weir serve`, and how to print what it says.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The admin API of `weir serve` (an http:// or https:// URL, or host:port).
    #[arg(long, env = "WEIR_SERVER", default_value = DEFAULT_SERVER, global = true)]
    server: String,
    /// For an https:// server: the CA to trust, a client certificate.
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// A token `weir serve` was given (the admin token, or a scoped one).
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// A failure, said in one line (without the `error: ` prefix).
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection to the admin API.
pub(crate) struct Client {
    server: String,
    token: Option<String>,
    http: HttpClient,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let server = args.server.trim().trim_end_matches('/');
        let server = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        let scheme_ok = server.starts_with("http://") || server.starts_with("https://");
        if !scheme_ok || server.parse::<axum::http::Uri>().is_err() {
            return Err(Failure(format!(
                "--server `{}` is not a URL such as {DEFAULT_SERVER}",
                args.server
            )));
        }
        let http = HttpClient::new(&args.tls, Duration::from_secs(3), Duration::from_secs(30))
            .map_err(|err| Failure(format!("cannot make an HTTP client: {err:#}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure(format!("cannot start the runtime: {err}")))?;
        Ok(Self {
            server,
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
            http,
            runtime,
        })
    }

    /// `GET path`: the JSON answer.
    pub(crate) fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::GET, path)
    }

    /// `POST path` without a body: the JSON answer.
    pub(crate) fn post(&self, path: &str) -> Result<Value, Failure> {
        self.send(Method::POST, path)
    }

    /// `GET path`, read as the API's type for it.
    pub(crate) fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.get(path).and_then(|answer| self.typed(path, answer))
    }

    /// `POST path` without a body, read as the API's type for it.
    pub(crate) fn post_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.post(path).and_then(|answer| self.typed(path, answer))
    }

    fn typed<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        answer: Value,
    ) -> Result<T, Failure> {
        serde_json::from_value(answer).map_err(|err| {
            Failure(format!(
                "{}{path} answered in a form this weir does not know ({err}): are the CLI and the server the same version?",
                self.server
            ))
        })
    }

    fn send(&self, method: Method, path: &str) -> Result<Value, Failure> {
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| Failure("the token holds characters a header cannot".to_owned()))?;
            headers.push((header::AUTHORIZATION, value));
        }
        let url = format!("{}{path}", self.server);
        let request = crate::http_client::request(method, &url, &headers, Bytes::new())
            .map_err(|err| Failure(format!("{err:#}")))?;
        self.runtime.block_on(async {
            let answer = self.http.send(request).await.map_err(|err| self.unreachable(&err))?;
            let (status, body) = (answer.status, answer.body);
            let json: Option<Value> = serde_json::from_slice(&body).ok();
            if status.is_success() {
                return json.ok_or_else(|| {
                    Failure(format!(
                        "{} answered something that is not JSON; is it weir's admin API? set --server or WEIR_SERVER",
                        self.server
                    ))
                });
            }
            let message = json
                .as_ref()
                .and_then(|j| j["error"].as_str())
                .map(str::to_owned);
            Err(Failure(match (status, message) {
                (StatusCode::UNAUTHORIZED, Some(message)) => format!(
                    "{message}; pass a token with --token or WEIR_ADMIN_TOKEN"
                ),
                (_, Some(message)) => message,
                (_, None) => {
                    let text = String::from_utf8_lossy(&body);
                    let text: String = text.trim().chars().take(200).collect();
                    format!("{} answered {status}: {text}", self.server)
                }
            }))
        })
    }

    /// The one line for a request that got no answer.
    fn unreachable(&self, err: &Failed) -> Failure {
        Failure(format!(
            "cannot reach weir at {} ({}); is `weir serve` running? set --server or WEIR_SERVER",
            self.server,
            cause(err)
        ))
    }
}

/// The root cause of a transport error, in a few words.
fn cause(err: &Failed) -> String {
    let root = err.root();
    if let Some(io) = root.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        return match io.kind() {
            ConnectionRefused => "connection refused".to_owned(),
            ConnectionReset => "connection reset".to_owned(),
            TimedOut => "timed out".to_owned(),
            HostUnreachable => "host unreachable".to_owned(),
            NetworkUnreachable => "network unreachable".to_owned(),
            AddrNotAvailable => "address not available".to_owned(),
            _ => strip_os_error(&io.to_string()),
        };
    }
    strip_os_error(&root.to_string())
}

fn strip_os_error(message: &str) -> String {
    match message.find(" (os error") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
