//! The admin API's client for the commands that talk to a running `weir
//! serve`: one request at a time, and every failure as one line that says
//! what to do about it.

use std::time::Duration;

use clap::Args;
use reqwest::StatusCode;
use serde_json::Value;

/// The local admin address, where `weir serve` listens by default.
const DEFAULT_SERVER: &str = "http://127.0.0.1:18001";

/// How to reach `weir serve`, and how to print what it says.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// The admin API of `weir serve` (an http:// URL, or host:port).
    #[arg(long, env = "WEIR_SERVER", default_value = DEFAULT_SERVER, global = true)]
    server: String,
    /// The admin token, if `weir serve` was given one.
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
    http: reqwest::Client,
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
        if reqwest::Url::parse(&server).is_err() {
            return Err(Failure(format!(
                "--server `{}` is not a URL such as {DEFAULT_SERVER}",
                args.server
            )));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|err| Failure(format!("cannot make an HTTP client: {err}")))?;
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
        self.send(self.http.get(format!("{}{path}", self.server)))
    }

    /// `POST path` without a body: the JSON answer.
    pub(crate) fn post(&self, path: &str) -> Result<Value, Failure> {
        self.send(self.http.post(format!("{}{path}", self.server)))
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

    fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token.trim()),
            None => request,
        };
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|err| self.unreachable(&err))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|err| self.unreachable(&err))?;
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
    fn unreachable(&self, err: &reqwest::Error) -> Failure {
        Failure(format!(
            "cannot reach weir at {} ({}); is `weir serve` running? set --server or WEIR_SERVER",
            self.server,
            cause(err)
        ))
    }
}

/// The root cause of a transport error, in a few words.
fn cause(err: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
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
        innermost = e.to_string();
        source = e.source();
    }
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        strip_os_error(&innermost)
    }
}

fn strip_os_error(message: &str) -> String {
    match message.find(" (os error") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}
