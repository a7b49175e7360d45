//! `weir serve`, started as its users start it, on ports picked at run time,
//! and the Envoy bootstrap that points at it (`envoy/bootstrap.yaml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::paths;
use crate::process::Supervised;
use crate::wait::eventually;

/// How long `weir` may take to start serving.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// How a started `weir` delivers the filter module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmDelivery {
    /// A local path.
    Local,
    /// Over HTTP from weir's admin API.
    Http,
    /// Over HTTPS from weir's admin API, through the `weir_wasm` cluster of
    /// `envoy/bootstrap-tls.yaml` (see [`with_wasm_over_https`]).
    Https,
}

/// A running `weir serve`; killed when dropped.
pub struct Weir {
    process: Supervised,
    policy: PathBuf,
    xds: SocketAddr,
    admin: SocketAddr,
    delivery: WasmDelivery,
    /// Environment variables it was started with (flags such as `WEIR_XDS_TOKEN`).
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// Set when it serves TLS: its admin API is reached over HTTPS with it.
    https: Option<crate::certs::Https>,
    dir: tempfile::TempDir,
}

impl Weir {
    /// Starts `weir serve --policy policy` with every address on a free loopback port.
    pub async fn start(policy: &Path, delivery: WasmDelivery) -> anyhow::Result<Self> {
        Self::start_with_env(policy, delivery, &[]).await
    }

    /// [`Weir::start`], with these environment variables (`weir serve`'s
    /// flags can be set through them, e.g. `WEIR_XDS_TOKEN`).
    pub async fn start_with_env(
        policy: &Path,
        delivery: WasmDelivery,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_new(policy, "127.0.0.1:0".parse()?, delivery, env).await
    }

    /// [`Weir::start_with_env`] with its ADS server on `xds` (a port chosen
    /// beforehand, so that an Envoy's bootstrap can name it before it runs).
    pub async fn start_at(
        policy: &Path,
        xds: SocketAddr,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_new(policy, xds, WasmDelivery::Local, env).await
    }

    /// A first start, in a new working folder.
    async fn spawn_new(
        policy: &Path,
        xds: SocketAddr,
        delivery: WasmDelivery,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("weir-serve-").tempdir()?;
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::spawn(policy, xds, delivery, env, dir).await
    }

    async fn spawn(
        policy: &Path,
        xds: SocketAddr,
        delivery: WasmDelivery,
        env: Vec<(String, String)>,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let ready = dir.path().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(paths::weir_binary());
        command
            .arg("serve")
            .arg("--policy")
            .arg(policy)
            .arg("--xds-address")
            .arg(xds.to_string())
            .args([
                "--admin-address",
                "127.0.0.1:0",
                "--listener-address",
                "127.0.0.1:0",
            ])
            .arg("--wasm")
            .arg(paths::filter_wasm())
            .args([
                "--wasm-delivery",
                match delivery {
                    WasmDelivery::Local => "local",
                    WasmDelivery::Http => "http",
                    WasmDelivery::Https => "https",
                },
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("WEIR_LOG", "info,weir=debug")
            .envs(env.iter().map(|(k, v)| (k, v)));
        // Its own state database, kept across a kill and restart (unless
        // the test names one with `WEIR_STATE`).
        if !env.iter().any(|(k, _)| k == "WEIR_STATE") {
            command.arg("--state").arg(dir.path().join("state.redb"));
        }
        let log = dir.path().join(format!("weir-{}.log", std::process::id()));
        let mut process = Supervised::spawn("weir", command, &log)?;
        let addresses = eventually("weir to serve", STARTUP_DEADLINE, || {
            let found = match process.exited() {
                Some(status) => Some(Err(anyhow::anyhow!("weir exited: {status}"))),
                None => std::fs::read_to_string(&ready)
                    .ok()
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .map(Ok),
            };
            async move { found }
        })
        .await;
        let addresses = match addresses {
            Ok(Ok(addresses)) => addresses,
            Ok(Err(err)) | Err(err) => {
                process.print_log();
                return Err(err);
            }
        };
        let parse = |key: &str| -> anyhow::Result<SocketAddr> {
            Ok(addresses[key].as_str().unwrap_or_default().parse()?)
        };
        Ok(Self {
            xds: parse("xds")?,
            admin: parse("admin")?,
            process,
            policy: policy.to_path_buf(),
            delivery,
            env,
            http: crate::http_client(),
            https: None,
            dir,
        })
    }

    /// Talks to its admin API over HTTPS with `client` (one that trusts its
    /// certificate, and shows one if the port asks): for `weir serve --tls-cert`.
    pub fn over_https(mut self, client: crate::certs::Https) -> Self {
        self.https = Some(client);
        self
    }

    /// `method path` of the admin API with a JSON body: the status and the
    /// JSON answer (`null` when the answer is not JSON).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, bytes) = match &self.https {
            Some(https) => {
                let url = format!("https://{}{path}", self.admin);
                https.send(method.as_str(), &url, body).await?
            }
            None => {
                let url = format!("http://{}{path}", self.admin);
                let mut request = self.http.request(method, url);
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body);
                }
                let response = request.send().await?;
                let status = response.status().as_u16();
                (status, response.bytes().await?.to_vec())
            }
        };
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Kills it, as a crash would; [`Stopped::start`] brings it back on the
    /// same addresses.
    pub fn kill(self) -> Stopped {
        let Self {
            process,
            policy,
            xds,
            delivery,
            env,
            dir,
            ..
        } = self;
        drop(process);
        Stopped {
            policy,
            xds,
            delivery,
            env,
            dir,
        }
    }

    /// The process id, for reading its memory and CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The ADS address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> anyhow::Result<Value> {
        self.get_json("/v1/status").await
    }

    /// `GET path` of the admin API, as JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await?;
        anyhow::ensure!((200..300).contains(&status), "GET {path}: {status} {body}");
        Ok(body)
    }

    /// `PUT /v1/feed`; the new snapshot version, or the errors.
    pub async fn put_feed(
        &self,
        feed: &weir_policy::Feed,
    ) -> anyhow::Result<Result<String, Value>> {
        let feed = serde_json::to_value(feed)?;
        let (status, body) = self
            .call(reqwest::Method::PUT, "/v1/feed", Some(feed))
            .await?;
        let ok = (200..300).contains(&status);
        Ok(if ok {
            Ok(body["version"].as_str().unwrap_or_default().to_owned())
        } else {
            Err(body)
        })
    }

    /// `DELETE /v1/feed`: the controller owns the feed again.
    pub async fn clear_feed(&self) -> anyhow::Result<()> {
        let (status, body) = self.call(reqwest::Method::DELETE, "/v1/feed", None).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "DELETE /v1/feed: {status} {body}"
        );
        Ok(())
    }

    /// The rollout of `canary`, as `/v1/status` shows it.
    pub async fn rollout(&self, canary: &str) -> anyhow::Result<Value> {
        let status = self.status().await?;
        status["rollouts"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["canary"] == canary).cloned())
            .ok_or_else(|| anyhow::anyhow!("no rollout of {canary}"))
    }

    /// Everything it has logged.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The snapshot version it serves now.
    pub async fn snapshot_version(&self) -> anyhow::Result<String> {
        Ok(self.status().await?["snapshot"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Waits until node `node` has ACKed type `type_url` at the version weir serves now.
    pub async fn wait_acked(&self, node: &str, type_url: &str) -> anyhow::Result<()> {
        eventually(
            &format!("{node} to ACK the current {type_url}"),
            STARTUP_DEADLINE,
            || async move {
                let status = self.status().await.ok()?;
                let serving = status["snapshot"]["types"][type_url].as_str()?.to_owned();
                let acked = status["nodes"][node]["acked"][type_url]["version"]
                    .as_str()?
                    .to_owned();
                (acked == serving).then_some(())
            },
        )
        .await
    }

    /// Its working folder (for policy files a test edits).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A `weir` that was killed, ready to be started again.
pub struct Stopped {
    policy: PathBuf,
    xds: SocketAddr,
    delivery: WasmDelivery,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Stopped {
    /// Starts it again with the same policy file, xDS address and environment.
    pub async fn start(self) -> anyhow::Result<Weir> {
        Weir::spawn(&self.policy, self.xds, self.delivery, self.env, self.dir).await
    }
}

/// `envoy/bootstrap.yaml`, pointed at `xds` with run-time admin port, as node
/// `node`, over state-of-the-world or delta xDS.
pub fn ads_bootstrap(xds: SocketAddr, node: &str, delta: bool) -> anyhow::Result<Value> {
    ads_bootstrap_replicas(&[xds], node, delta)
}

/// [`ads_bootstrap`] with several `weir` replicas in the `weir_xds` cluster
/// (`envoy/bootstrap-replicas.yaml`'s form): a stream that fails reconnects
/// to the next one.
pub fn ads_bootstrap_replicas(
    xds: &[SocketAddr],
    node: &str,
    delta: bool,
) -> anyhow::Result<Value> {
    bootstrap_file("envoy/bootstrap.yaml", xds, node, delta)
}

/// `envoy/bootstrap-tls.yaml` pointed at `xds` as [`ads_bootstrap`] does,
/// with the CA that signed weir's certificate and Envoy's own certificate.
pub fn ads_bootstrap_tls(
    xds: SocketAddr,
    node: &str,
    ca: &Path,
    envoy: &crate::certs::Pem,
) -> anyhow::Result<Value> {
    let mut bootstrap = bootstrap_file("envoy/bootstrap-tls.yaml", &[xds], node, false)?;
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("envoy/bootstrap-tls.yaml has no static clusters"))?;
    // Every cluster to weir (ADS and the stats sink; the module over HTTPS)
    // shows this Envoy's certificate and trusts the test's CA.
    for name in ["weir_xds", "weir_wasm"] {
        let cluster = clusters
            .iter_mut()
            .find(|c| c["name"] == name)
            .ok_or_else(|| anyhow::anyhow!("envoy/bootstrap-tls.yaml has no {name} cluster"))?;
        let context = &mut cluster["transport_socket"]["typed_config"]["common_tls_context"];
        context["tls_certificates"][0] = json!({
            "certificate_chain": { "filename": envoy.cert },
            "private_key": { "filename": envoy.key },
        });
        context["validation_context"]["trusted_ca"] = json!({ "filename": ca });
    }
    Ok(bootstrap)
}

/// Points the `weir_wasm` cluster of a bootstrap from [`ads_bootstrap_tls`]
/// at weir's admin port, for [`WasmDelivery::Https`].
pub fn with_wasm_over_https(bootstrap: &mut Value, admin: SocketAddr) -> anyhow::Result<()> {
    let cluster = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .and_then(|clusters| clusters.iter_mut().find(|c| c["name"] == "weir_wasm"))
        .ok_or_else(|| anyhow::anyhow!("the bootstrap has no weir_wasm cluster"))?;
    cluster["load_assignment"]["endpoints"] = json!([crate::envoy::locality_endpoints(&[admin])]);
    Ok(())
}

fn bootstrap_file(
    file: &str,
    xds: &[SocketAddr],
    node: &str,
    delta: bool,
) -> anyhow::Result<Value> {
    let path = paths::repo_root().join(file);
    let text = std::fs::read_to_string(&path)?;
    let mut bootstrap: Value = serde_saphyr::from_str(&text)
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    bootstrap["node"]["id"] = json!(node);
    let sink = bootstrap["stats_sinks"]
        .get_mut(0)
        .ok_or_else(|| anyhow::anyhow!("{} has no stats sink", path.display()))?;
    sink["typed_config"]["resource_detectors"][0]["typed_config"]["attributes"]["service.instance.id"] =
        json!(node);
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    if delta {
        bootstrap["dynamic_resources"]["ads_config"]["api_type"] = json!("DELTA_GRPC");
    }
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .ok_or_else(|| anyhow::anyhow!("{} has no static clusters", path.display()))?;
    let xds_cluster = clusters
        .iter_mut()
        .find(|c| c["name"] == "weir_xds")
        .ok_or_else(|| anyhow::anyhow!("{} has no weir_xds cluster", path.display()))?;
    xds_cluster["load_assignment"]["endpoints"] = json!([crate::envoy::locality_endpoints(xds)]);
    Ok(bootstrap)
}

/// Gives `bootstrap` (from [`ads_bootstrap`]) the xDS token: Envoy sends it as
/// `initial_metadata` on its ADS stream and its stats sink's exports.
pub fn with_xds_token(bootstrap: &mut Value, token: &str) {
    let metadata = json!([{ "key": "authorization", "value": format!("Bearer {token}") }]);
    bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
        metadata.clone();
    if let Some(sink) = bootstrap["stats_sinks"].get_mut(0) {
        sink["typed_config"]["grpc_service"]["initial_metadata"] = metadata;
    }
}
