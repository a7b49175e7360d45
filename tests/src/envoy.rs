//! A real Envoy, configured by a generated bootstrap and observed through its
//! admin API.
//!
//! Every port is chosen by the kernel (`port_value: 0`): the admin address is
//! read from `--admin-address-path` and the listener's from `/listeners`, so
//! any number of Envoys can run side by side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::{Value, json};
use weir_policy::headers::CLUSTER as CLUSTER_HEADER;

use crate::paths;
use crate::process::Supervised;
use crate::wait::eventually;

/// How long Envoy may take to start: V8 compiles the module on first load.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long Envoy may take to start under another program (valgrind runs it
/// some fifty times slower).
const WRAPPED_STARTUP_DEADLINE: Duration = Duration::from_secs(600);

/// The name of the listener tests send traffic to.
const INGRESS: &str = "ingress";

/// Which HTTP filter runs before the router.
#[derive(Clone, Debug)]
pub enum FilterChoice {
    /// No filter: plain Envoy, the baseline.
    None,
    /// Weir's filter with this plugin configuration (`None`: no `configuration` block).
    Weir(Option<String>),
    /// Any other wasm module, with its plugin configuration.
    Wasm {
        module: PathBuf,
        configuration: String,
    },
    /// A Lua filter with this inline source.
    Lua(String),
    /// Any HTTP filter, as its JSON entry in `http_filters` (one of Envoy's
    /// own, such as `admission_control`, for a baseline).
    Native(Value),
    /// Weir's filter with this plugin configuration, delivered through a
    /// file-based ECDS source so that [`Envoy::update_weir_config`] can
    /// replace it while Envoy runs, as `weir` does over ADS.
    WeirDiscovered(String),
}

/// The name of the filter's extension configuration in ECDS.
const WEIR_EXTENSION: &str = "weir";

/// Builds the configuration of an Envoy for a test and starts it.
#[derive(Clone, Debug)]
pub struct EnvoyBuilder {
    clusters: Vec<(String, Vec<SocketAddr>)>,
    default_cluster: Option<String>,
    /// When set, the default route splits by these weights instead of going
    /// to `default_cluster` (Envoy's native `weighted_clusters`).
    weighted_default: Option<Vec<(String, u32)>>,
    filter: FilterChoice,
    concurrency: u32,
    circuit_breaker: Option<CircuitBreaker>,
    route_timeout: Option<Duration>,
    /// A program Envoy runs under, with its arguments (empty: none).
    under: Vec<String>,
}

/// The thresholds of every cluster's circuit breaker (Envoy's default
/// priority); Envoy's own defaults are 1,024 of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Requests outstanding to the cluster at once.
    pub max_requests: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Connections open to the cluster.
    pub max_connections: u32,
}

impl CircuitBreaker {
    /// Thresholds so high they never trip: no admission at all.
    pub const OPEN: Self = Self {
        max_requests: 1_000_000,
        max_pending_requests: 1_000_000,
        max_connections: 1_000_000,
    };
}

impl Default for EnvoyBuilder {
    fn default() -> Self {
        Self {
            clusters: Vec::new(),
            default_cluster: None,
            weighted_default: None,
            filter: FilterChoice::None,
            concurrency: 2,
            circuit_breaker: None,
            route_timeout: None,
            under: Vec::new(),
        }
    }
}

impl EnvoyBuilder {
    /// An Envoy with no clusters and no filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a cluster of the given endpoints; the first cluster added is the
    /// default route's target unless [`Self::default_cluster`] says otherwise.
    pub fn cluster(mut self, name: &str, endpoints: &[SocketAddr]) -> Self {
        if self.default_cluster.is_none() {
            self.default_cluster = Some(name.to_owned());
        }
        self.clusters.push((name.to_owned(), endpoints.to_vec()));
        self
    }

    /// Routes requests that name no cluster to `name`.
    pub fn default_cluster(mut self, name: &str) -> Self {
        self.default_cluster = Some(name.to_owned());
        self
    }

    /// Makes the default route Envoy's native weighted split: each request
    /// that names no cluster goes to one of `clusters` with a probability
    /// proportional to its weight (a baseline for the filter's canary split).
    /// The clusters must be added with [`Self::cluster`].
    pub fn weighted_default(mut self, clusters: &[(&str, u32)]) -> Self {
        self.weighted_default = Some(
            clusters
                .iter()
                .map(|(name, weight)| ((*name).to_owned(), *weight))
                .collect(),
        );
        self
    }

    /// Runs Weir's filter with this plugin configuration (JSON).
    pub fn weir_filter(mut self, configuration: &str) -> Self {
        self.filter = FilterChoice::Weir(Some(configuration.to_owned()));
        self
    }

    /// Runs any filter choice, such as a baseline for a benchmark.
    pub fn filter(mut self, filter: FilterChoice) -> Self {
        self.filter = filter;
        self
    }

    /// Envoy's worker threads (each has its own wasm VM).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Sets every cluster's circuit breaker thresholds (Envoy's defaults when not set).
    pub fn circuit_breaker(mut self, thresholds: CircuitBreaker) -> Self {
        self.circuit_breaker = Some(thresholds);
        self
    }

    /// Runs Envoy under `program` with `args` before Envoy's own command
    /// line (a profiler such as valgrind); start-up may then take minutes.
    pub fn under(mut self, program: &str, args: &[String]) -> Self {
        self.under = std::iter::once(program.to_owned())
            .chain(args.iter().cloned())
            .collect();
        self
    }

    /// Bounds every route's upstream request (Envoy's default is 15 s).
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = Some(timeout);
        self
    }

    /// The bootstrap configuration, as JSON; `ecds_path` is where a
    /// discovered filter configuration is read from.
    pub fn bootstrap(&self, ecds_path: &std::path::Path) -> Value {
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, endpoints)| {
                let mut cluster = static_cluster(name, endpoints);
                if let Some(breaker) = self.circuit_breaker {
                    cluster["circuit_breakers"] = json!({"thresholds": [{
                        "max_requests": breaker.max_requests,
                        "max_pending_requests": breaker.max_pending_requests,
                        "max_connections": breaker.max_connections
                    }]});
                }
                cluster
            })
            .collect();
        let mut routes = vec![json!({
            // A request the filter has assigned to a cluster goes there.
            "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER, "present_match": true}]},
            "route": {"cluster_header": CLUSTER_HEADER}
        })];
        if let Some(weighted) = &self.weighted_default {
            let clusters: Vec<Value> = weighted
                .iter()
                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                .collect();
            routes.push(json!({
                "match": {"prefix": "/"},
                "route": {"weighted_clusters": {"clusters": clusters}}
            }));
        } else if let Some(default) = &self.default_cluster {
            routes.push(json!({"match": {"prefix": "/"}, "route": {"cluster": default}}));
        }
        if let Some(timeout) = self.route_timeout {
            for route in &mut routes {
                route["route"]["timeout"] = json!(format!("{}s", timeout.as_secs_f64()));
            }
        }
        let mut http_filters = http_filter(&self.filter, ecds_path)
            .into_iter()
            .collect::<Vec<_>>();
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        json!({
            // Discovered configuration (ECDS) needs a node identity.
            "node": {"id": "weir-testbed", "cluster": "weir-testbed"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{
                    "name": INGRESS,
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": INGRESS,
                            "route_config": {
                                "name": "local",
                                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                            },
                            "http_filters": http_filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }

    /// Starts Envoy and waits until its admin API reports it ready.
    pub async fn start(&self) -> anyhow::Result<Envoy> {
        let discovery = self.discovery_dir()?;
        let mut envoy = Envoy::start_under(
            &self.bootstrap(&discovery.path().join(ECDS_FILE)),
            self.concurrency,
            &self.under,
        )
        .await?;
        envoy.discovery = Some(discovery);
        Ok(envoy)
    }

    /// Starts Envoy expecting it to refuse its configuration and exit; returns
    /// the exit status and the log.
    pub async fn start_expecting_failure(&self) -> anyhow::Result<(ExitStatus, String)> {
        let discovery = self.discovery_dir()?;
        Envoy::start_expecting_failure(
            &self.bootstrap(&discovery.path().join(ECDS_FILE)),
            self.concurrency,
        )
        .await
    }

    /// A folder for the ECDS file, written before Envoy starts.
    fn discovery_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new().prefix("weir-ecds-").tempdir()?;
        if let FilterChoice::WeirDiscovered(configuration) = &self.filter {
            write_discovered(&dir.path().join(ECDS_FILE), configuration)?;
        }
        Ok(dir)
    }
}

fn static_cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [locality_endpoints(endpoints)]}
    })
}

/// One locality's worth of endpoints, as a cluster's `load_assignment` lists them.
pub(crate) fn locality_endpoints(endpoints: &[SocketAddr]) -> Value {
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|addr| {
            json!({"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(), "port_value": addr.port()
            }}}})
        })
        .collect();
    json!({"lb_endpoints": lb_endpoints})
}

/// The file a discovered filter configuration is read from.
const ECDS_FILE: &str = "weir-filter.json";

fn http_filter(choice: &FilterChoice, ecds_path: &std::path::Path) -> Option<Value> {
    let (module, configuration) = match choice {
        FilterChoice::None => return None,
        FilterChoice::Native(filter) => return Some(filter.clone()),
        FilterChoice::WeirDiscovered(_) => {
            return Some(json!({
                "name": WEIR_EXTENSION,
                "config_discovery": {
                    "config_source": {
                        "path_config_source": {"path": ecds_path},
                        "resource_api_version": "V3"
                    },
                    "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
                }
            }));
        }
        FilterChoice::Lua(source) => {
            return Some(json!({
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": source}
                }
            }));
        }
        FilterChoice::Weir(configuration) => (paths::filter_wasm(), configuration.clone()),
        FilterChoice::Wasm {
            module,
            configuration,
        } => (module.clone(), Some(configuration.clone())),
    };
    Some(
        json!({"name": "envoy.filters.http.wasm", "typed_config": wasm_config(&module, configuration.as_deref())}),
    )
}

/// The typed configuration of a wasm HTTP filter running `module`.
fn wasm_config(module: &std::path::Path, configuration: Option<&str>) -> Value {
    let mut plugin = json!({
        "name": "weir",
        "root_id": "weir",
        "vm_config": {
            "vm_id": "weir",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": module}}
        }
    });
    if let Some(configuration) = configuration {
        plugin["configuration"] = json!({
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration
        });
    }
    json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": plugin})
}

/// Writes a discovery response holding Weir's filter with `configuration`,
/// atomically: Envoy watches for the file being moved into place.
fn write_discovered(path: &std::path::Path, configuration: &str) -> anyhow::Result<()> {
    let response = json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": WEIR_EXTENSION,
        "typed_config": wasm_config(&paths::filter_wasm(), Some(configuration))
    }]});
    let staged = path.with_extension("staged");
    std::fs::write(&staged, serde_json::to_vec(&response)?)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// The listener test traffic goes to: the one named `ingress` (static
/// configurations) or `weir_ingress` (from `weir serve`).
fn ingress_address(listeners: &Value) -> Option<SocketAddr> {
    listeners["listener_statuses"]
        .as_array()?
        .iter()
        .find(|status| status["name"] == INGRESS || status["name"] == "weir_ingress")
        .and_then(|status| {
            let socket = &status["local_address"]["socket_address"];
            let ip = socket["address"].as_str()?;
            let port = socket["port_value"].as_u64()?;
            format!("{ip}:{port}").parse().ok()
        })
}

/// A running Envoy; killed when dropped, its log printed if the test failed.
pub struct Envoy {
    process: Supervised,
    admin_path: PathBuf,
    admin: Option<SocketAddr>,
    ingress: Option<SocketAddr>,
    http: reqwest::Client,
    discovery: Option<tempfile::TempDir>,
    concurrency: u32,
    startup_deadline: Duration,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with any bootstrap (JSON) and waits until its admin API
    /// reports it ready. The bootstrap's listener named `ingress` receives test
    /// traffic; give it and the admin API `port_value: 0`.
    pub async fn start(bootstrap: &Value, concurrency: u32) -> anyhow::Result<Self> {
        Self::start_under(bootstrap, concurrency, &[]).await
    }

    /// [`Self::start`], under a program with its arguments (`under`, empty for none).
    async fn start_under(
        bootstrap: &Value,
        concurrency: u32,
        under: &[String],
    ) -> anyhow::Result<Self> {
        let mut envoy = Self::spawn(bootstrap, concurrency, under)?;
        if let Err(err) = envoy.wait_ready().await {
            envoy.process.print_log();
            return Err(err);
        }
        Ok(envoy)
    }

    /// Starts Envoy expecting it to refuse its bootstrap and exit; returns the
    /// exit status and the log.
    pub async fn start_expecting_failure(
        bootstrap: &Value,
        concurrency: u32,
    ) -> anyhow::Result<(ExitStatus, String)> {
        let mut envoy = Self::spawn(bootstrap, concurrency, &[])?;
        let status = eventually("Envoy to exit", STARTUP_DEADLINE, || {
            let status = envoy.process.exited();
            async move { status }
        })
        .await?;
        Ok((status, envoy.process.log()))
    }

    fn spawn(bootstrap: &Value, concurrency: u32, under: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("weir-envoy-").tempdir()?;
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(bootstrap)?)?;
        let admin_path = dir.path().join("admin-address");
        let mut command = match under.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(paths::envoy_binary());
                command
            }
            None => Command::new(paths::envoy_binary()),
        };
        command
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--disable-hot-restart")
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--log-level", "info"])
            // Relative paths in a bootstrap (such as dist/weir_filter.wasm) are the repository's.
            .current_dir(paths::repo_root());
        let process = Supervised::spawn("envoy", command, &dir.path().join("envoy.log"))?;
        Ok(Self {
            process,
            admin_path,
            admin: None,
            ingress: None,
            http: crate::http_client(),
            discovery: None,
            concurrency,
            startup_deadline: if under.is_empty() {
                STARTUP_DEADLINE
            } else {
                WRAPPED_STARTUP_DEADLINE
            },
            _dir: dir,
        })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let admin_path = self.admin_path.clone();
        let admin: SocketAddr = {
            let process = &mut self.process;
            eventually("Envoy's admin address", self.startup_deadline, || {
                let found = match process.exited() {
                    Some(status) => Some(Err(anyhow::anyhow!("Envoy exited: {status}"))),
                    None => std::fs::read_to_string(&admin_path)
                        .ok()
                        .and_then(|text| text.trim().parse().ok())
                        .map(Ok),
                };
                async move { found }
            })
            .await??
        };
        self.admin = Some(admin);
        let http = self.http.clone();
        eventually("Envoy to be ready", self.startup_deadline, || {
            let http = http.clone();
            async move {
                let response = http
                    .get(format!("http://{admin}/ready"))
                    .send()
                    .await
                    .ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await?;
        // A listener from a control server may arrive after Envoy is live.
        let http = self.http.clone();
        let ingress = eventually("Envoy's ingress listener", self.startup_deadline, || {
            let http = http.clone();
            async move {
                let url = format!("http://{admin}/listeners?format=json");
                let listeners: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                ingress_address(&listeners)
            }
        })
        .await?;
        self.ingress = Some(ingress);
        Ok(())
    }

    /// The address of the admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("Envoy is ready")
    }

    /// The URL of `path` on the ingress listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress.expect("Envoy is ready"))
    }

    /// Sends `method path` with `headers` through the ingress listener: the
    /// status, and what the backend saw (`None` when Envoy answered itself).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Option<crate::backend::Echo>)> {
        let mut request = self.http.request(method.parse()?, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.ok()))
    }

    /// POSTs `path` with `headers`; the backend that answered, which must answer 200.
    pub async fn backend_for(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        match self.send("POST", path, headers).await? {
            (200, Some(echo)) => Ok(echo.backend),
            (status, _) => {
                anyhow::bail!("POST {path} {headers:?} answered {status}, not a backend's 200")
            }
        }
    }

    /// A GET on the admin API, as text.
    pub async fn admin_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}{path}", self.admin_addr());
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// A GET on the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.admin_text(path).await?)?)
    }

    /// Waits until the filter's stats (`wasmcustom.weir.*`) have stayed the
    /// same for twice the filter's counter flush period: its counters then
    /// hold every count of the requests that ended before. Call it after a
    /// load, before reading the filter's counters.
    pub async fn filter_counters_settled(&self) -> anyhow::Result<()> {
        let quiet = weir_policy::metrics::COUNTER_FLUSH * 2;
        let path = "/stats?filter=^wasmcustom%5C.weir%5C.";
        let give_up = std::time::Instant::now() + STARTUP_DEADLINE;
        let mut last = self.admin_text(path).await?;
        let mut unchanged_since = std::time::Instant::now();
        while unchanged_since.elapsed() < quiet {
            anyhow::ensure!(
                std::time::Instant::now() < give_up,
                "the filter's counters kept changing for {STARTUP_DEADLINE:?}"
            );
            tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
            let current = self.admin_text(path).await?;
            if current != last {
                last = current;
                unchanged_since = std::time::Instant::now();
            }
        }
        Ok(())
    }

    /// A stat's current value from `/stats`, if Envoy has it.
    pub async fn stat(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let stats = self
            .admin_json(&format!("/stats?format=json&filter={name}"))
            .await?;
        Ok(stats["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|stat| stat["name"] == name)
            .and_then(|stat| stat["value"].as_u64()))
    }

    /// Replaces the filter's plugin configuration through ECDS (the Envoy must
    /// have been built with [`FilterChoice::WeirDiscovered`]). Returns at once;
    /// use [`Self::wait_for_log`] to see it applied or refused.
    pub fn update_weir_config(&self, configuration: &str) -> anyhow::Result<()> {
        let dir = self
            .discovery
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this Envoy has no discovered filter"))?;
        write_discovered(&dir.path().join(ECDS_FILE), configuration)
    }

    /// Waits until Envoy's log holds `needle` at least `times` times.
    pub async fn wait_for_log(&self, needle: &str, times: usize) -> anyhow::Result<()> {
        eventually(
            &format!("{times}× {needle:?} in Envoy's log"),
            STARTUP_DEADLINE,
            || {
                let found = self.log().matches(needle).count() >= times;
                async move { found.then_some(()) }
            },
        )
        .await
    }

    /// Waits until the filter on the main thread and on every worker has
    /// logged that it runs configuration `version`.
    pub async fn wait_for_filter_version(&self, version: &str) -> anyhow::Result<()> {
        let needle = format!("configured with version \"{version}\"");
        let threads_needed = self.concurrency as usize + 1;
        eventually(
            &format!("{needle} on {threads_needed} threads"),
            STARTUP_DEADLINE,
            || {
                let threads: std::collections::BTreeSet<String> = self
                    .log()
                    .lines()
                    .filter(|line| line.contains(&needle))
                    .filter_map(|line| line.split("][").nth(1).map(str::to_owned))
                    .collect();
                async move { (threads.len() >= threads_needed).then_some(()) }
            },
        )
        .await
    }

    /// Everything Envoy has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id, for CPU accounting.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
