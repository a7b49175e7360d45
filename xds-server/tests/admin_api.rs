//! The admin API of a real `weir serve` (the binary, on run-time loopback
//! ports): the bearer token, JSON errors, rollout history, nodes' ACKs and
//! NACKs, and the Prometheus metrics moving as xDS, OTLP, the operator and the
//! policy file do things; and the xDS port's own token. An ADS client plays
//! Envoy; no Envoy is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use envoy_types::pb::google::rpc::Status;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir::snapshot::type_url;

const PATIENCE: Duration = Duration::from_secs(20);
const TOKEN: &str = "correct-horse-battery-staple";

/// A canary `app-canary` of `app`, at 50 % then 100 %.
const POLICY: &str = r#"
device_types: [sensor]
regions: { rtt_ms: { eu-west: { eu-west: 1 } } }
clusters:
  - { name: app, region: eu-west, endpoints: ["127.0.0.1:9"] }
  - { name: app-canary, region: eu-west, variant: canary, endpoints: ["127.0.0.1:9"] }
services:
  - name: app
    match: { path_prefix: / }
    sla: { p99_ms: 250 }
    placements:
      - cluster: app
        canary:
          cluster: app-canary
          steps: [50, 100]
          hold: 30s
          analysis:
            max_error_rate_increase: 2
            max_latency_ratio: { p95: 1.5, p99: 2.0 }
            min_samples: 40
priority:
  classes: [telemetry]
  default: telemetry
admission:
  concurrency_limit: 1000
  retry_after: 1s
  classes: { telemetry: { max_wait: 1s } }
"#;

/// A running `weir serve`, killed when dropped.
struct Server {
    child: Child,
    admin: String,
    xds: String,
    http: reqwest::Client,
    token: Option<String>,
    dir: tempfile::TempDir,
}

/// `weir serve` with `extra` flags, its environment free of weir's variables.
fn serve_command(dir: &Path, extra: &[&str]) -> Command {
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    // The module's content does not matter without Envoy.
    std::fs::write(dir.join("filter.wasm"), b"\0asm").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .arg("serve")
        .arg("--policy")
        .arg(dir.join("policy.yaml"))
        .arg("--wasm")
        .arg(dir.join("filter.wasm"))
        .arg("--state")
        .arg(dir.join("state.redb"))
        .arg("--ready-file")
        .arg(dir.join("ready.json"))
        .args(["--listener-address", "127.0.0.1:0"])
        .args(extra)
        .env_remove("WEIR_ADMIN_TOKEN")
        .env_remove("WEIR_READ_TOKEN")
        .env_remove("WEIR_WRITE_TOKEN")
        .env_remove("WEIR_INGEST_TOKEN")
        .env_remove("WEIR_ALLOWED_HOSTS")
        .env_remove("WEIR_XDS_TOKEN")
        .env_remove("WEIR_XDS_TOKEN_FILE")
        .env_remove("WEIR_XDS_ADDRESS")
        .env_remove("WEIR_ADMIN_TOKEN_FILE")
        .env_remove("WEIR_ADMIN_ADDRESS")
        .env_remove("WEIR_SERVER")
        .env("WEIR_LOG", "warn")
        .stdin(Stdio::null());
    command
}

impl Server {
    async fn start(extra: &[&str], token: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = serve_command(dir.path(), extra);
        command.args([
            "--admin-address",
            "127.0.0.1:0",
            "--xds-address",
            "127.0.0.1:0",
        ]);
        let log = std::fs::File::create(dir.path().join("weir.log")).unwrap();
        let mut child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ready = dir.path().join("ready.json");
        let deadline = Instant::now() + PATIENCE;
        let addresses: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(value) = serde_json::from_str(&text)
            {
                break value;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "weir exited ({status}):\n{}",
                    std::fs::read_to_string(dir.path().join("weir.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "weir did not start in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            child,
            admin: addresses["admin"].as_str().unwrap().to_owned(),
            xds: addresses["xds"].as_str().unwrap().to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            token: token.map(str::to_owned),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A request with the token, if the server has one.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
        let response = self.request(method, path).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} answered {status} with non-JSON: {text}"));
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn metrics(&self) -> BTreeMap<String, f64> {
        let response = self
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        parse_prometheus(&response.text().await.unwrap())
    }

    /// Runs the `weir` CLI against this server.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .env("WEIR_SERVER", &self.admin)
            .env_remove("WEIR_ADMIN_TOKEN")
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weir.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- weir's log -----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses the Prometheus text format (0.0.4) strictly: every sample belongs
/// to a metric declared by `# TYPE`, names and labels are well formed, values
/// are numbers. Returns each series (`name{labels}` as written) and its value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let is_name = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("bad comment: {line}"));
            assert!(is_name(name), "bad metric name in: {line}");
            match kind {
                Some("HELP") => {}
                Some("TYPE") => {
                    let t = rest.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad type in: {line}"
                    );
                    typed.insert(name.to_owned(), t.to_owned());
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name = key.split('{').next().unwrap();
        assert!(is_name(name), "bad metric name in: {line}");
        // A histogram's samples are its family's name with a suffix.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| typed.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{name} has no # TYPE");
        if let Some(labels) = key.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels in: {line}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (label, quoted) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in: {line}"));
                assert!(is_name(label), "bad label name in: {line}");
                assert!(!quoted.ends_with('\\'), "bad escaping in: {line}");
            }
        }
        if typed[family] == "counter" {
            assert!(name.ends_with("_total"), "counter {name} without _total");
            assert!(value >= 0.0, "negative counter: {line}");
        }
        assert!(
            series.insert(key.to_owned(), value).is_none(),
            "duplicate series: {line}"
        );
    }
    series
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {metrics:#?}"))
}

/// Polls `probe` until it yields `Some`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `weir serve` says when it refuses to start on these addresses
/// (it must exit with 1).
fn refusal(dir: &Path, admin: &str, xds: &str) -> String {
    let out = serve_command(dir, &["--admin-address", admin, "--xds-address", xds])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_refuses_an_admin_address_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refusal(dir.path(), "0.0.0.0:0", "127.0.0.1:0");
    assert!(
        stderr.contains("refusing to serve the admin API on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
    assert!(stderr.contains("--admin-token"), "{stderr}");

    // An empty token file is refused too, rather than taken as no token.
    std::fs::write(dir.path().join("token"), "\n").unwrap();
    let token_file = dir.path().join("token");
    let out = serve_command(
        dir.path(),
        &[
            "--admin-address",
            "0.0.0.0:0",
            "--xds-address",
            "127.0.0.1:0",
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the admin token is empty"));
}

#[tokio::test]
async fn with_a_token_every_endpoint_but_health_and_the_module_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file: PathBuf = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let server = Server::start(
        &["--admin-token-file", token_file.to_str().unwrap()],
        Some(TOKEN),
    )
    .await;
    let http = &server.http;
    let protected = [
        ("GET", "/v1/status"),
        ("GET", "/v1/rollouts"),
        ("GET", "/v1/rollouts/app-canary/history"),
        ("POST", "/v1/rollouts/app-canary/pause"),
        ("GET", "/v1/clusters"),
        ("GET", "/v1/nodes"),
        ("GET", "/v1/feed"),
        ("DELETE", "/v1/feed"),
        ("GET", "/metrics"),
        ("POST", "/v1/metrics"),
        ("GET", "/no/such/endpoint"),
    ];
    for (method, path) in protected {
        let method: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic Zm9vOmJhcg=="),
            Some(&*format!("Bearer {TOKEN}x")),
        ] {
            let mut request = http.request(method.clone(), server.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"weir\""
            );
            let body: Value = response.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
    }
    // The right token opens them.
    for path in [
        "/v1/status",
        "/v1/rollouts",
        "/v1/clusters",
        "/v1/nodes",
        "/v1/feed",
    ] {
        let response = http
            .get(server.url(path))
            .header("authorization", format!("bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.metrics().await;
    // Probes and Envoy's module fetch need none.
    let health = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let module = http
        .get(server.url("/v1/wasm/weir_filter.wasm"))
        .send()
        .await
        .unwrap();
    assert_eq!(module.status(), StatusCode::OK);
    assert_eq!(module.bytes().await.unwrap().as_ref(), b"\0asm");

    // The CLI: no token, a wrong one, the right one.
    let out = server.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: this endpoint requires `Authorization: Bearer <token>`"),
        "{stderr}"
    );
    assert!(stderr.contains("--token or WEIR_ADMIN_TOKEN"), "{stderr}");
    let out = server.cli(&["status", "--token", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one of the tokens"));
    let out = server.cli(&["status", "--token", TOKEN]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("app-canary"));
}

#[tokio::test]
async fn errors_are_json_with_a_fitting_status() {
    let server = Server::start(&[], None).await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let cases = [
        (
            post.clone(),
            "/v1/rollouts/nope/pause",
            StatusCode::NOT_FOUND,
            "`nope` is not the canary of any placement; canaries are: app-canary",
        ),
        (
            get.clone(),
            "/v1/rollouts/nope/history",
            StatusCode::NOT_FOUND,
            "`nope` is not the canary",
        ),
        (
            get.clone(),
            "/v1/rollouts/nope",
            StatusCode::NOT_FOUND,
            "`nope` is not the canary",
        ),
        (
            post.clone(),
            "/v1/rollouts/app-canary/jump",
            StatusCode::NOT_FOUND,
            "unknown command `jump`",
        ),
        (
            post.clone(),
            "/v1/rollouts/app-canary/resume",
            StatusCode::CONFLICT,
            "cannot resume `app-canary`: it is progressing",
        ),
        (
            get.clone(),
            "/v1/rollouts/app-canary/history?limit=many",
            StatusCode::BAD_REQUEST,
            "`limit` is a number",
        ),
        (
            get.clone(),
            "/v2/anything",
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/clusters",
            StatusCode::METHOD_NOT_ALLOWED,
            "does not take that method",
        ),
    ];
    for (method, path, status, message) in cases {
        let (got, body) = server.call(method.clone(), path).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(error.contains(message), "{method} {path}: {error}");
    }
    // A feed that does not fit the policy: every problem, and one message.
    let response = server
        .request(reqwest::Method::PUT, "/v1/feed")
        .json(&json!({"canary_weights": {"nope": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn history_lists_each_decision_with_its_evidence_newest_last() {
    let server = Server::start(&[], None).await;
    for command in ["pause", "resume", "pause"] {
        let (status, body) = server
            .call(
                reqwest::Method::POST,
                &format!("/v1/rollouts/app-canary/{command}"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["decision"]["kind"], command);
    }
    let history = server.get("/v1/rollouts/app-canary/history").await;
    let kinds: Vec<&str> = history["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "pause", "resume", "pause"]);
    assert_eq!(history["total"], 4);
    assert_eq!(history["rollout"]["phase"], "paused");
    let last = &history["decisions"][3];
    assert_eq!(last["from"], "progressing");
    assert_eq!(last["to"], "paused");
    assert_eq!(last["weight_bp"], 5000);
    assert!(last["at"].as_str().unwrap().ends_with('Z'));
    assert!(last["evidence"]["verdict"].is_string(), "{last}");
    assert!(last["evidence"]["findings"].is_array(), "{last}");

    let limited = server.get("/v1/rollouts/app-canary/history?limit=2").await;
    let kinds: Vec<&str> = limited["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["resume", "pause"]);
    assert_eq!(limited["total"], 4);

    // The rollout itself, with its verdict and last decision.
    let rollouts = server.get("/v1/rollouts").await;
    let rollout = &rollouts["rollouts"][0];
    assert_eq!(rollout["canary"], "app-canary");
    assert_eq!(rollout["last_decision"]["kind"], "pause");
    assert!(rollout["verdict"].is_string(), "{rollout}");
    let one = server.get("/v1/rollouts/app-canary").await;
    assert_eq!(one["rollout"]["phase"], "paused");
    assert!(one["evidence"]["findings"].is_array(), "{one}");

    let clusters = server.get("/v1/clusters").await;
    let names: Vec<&str> = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "app-canary"]);
    assert_eq!(clusters["clusters"][0]["score"], 1.0);
    assert_eq!(clusters["clusters"][0]["target_p99_ms"], 250.0);
}

/// One OTLP/JSON export: 10 requests of `app` that weir uses, and one data
/// point it rejects (no response class 9 exists).
fn otlp_export() -> Value {
    let point = |class: &str, n: &str| {
        json!({
            "asInt": n,
            "attributes": [
                {"key": "envoy.cluster_name", "value": {"stringValue": "app"}},
                {"key": "envoy.response_code_class", "value": {"stringValue": class}}
            ]
        })
    };
    json!({"resourceMetrics": [{
        "resource": {"attributes": []},
        "scopeMetrics": [{"metrics": [{
            "name": "cluster.upstream_rq_xx",
            "sum": {
                "aggregationTemporality": 1,
                "isMonotonic": true,
                "dataPoints": [point("2", "10"), point("9", "1")]
            }
        }]}]
    }]})
}

fn request(type_url: &str, node: Option<&str>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node.map(|id| Node {
            id: id.into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_parse_and_move_with_xds_otlp_decisions_and_policy_edits() {
    let server = Server::start(&[], None).await;
    let before = server.metrics().await;
    for series in [
        r#"weir_xds_pushes_total{type="cds"}"#,
        r#"weir_xds_nacks_total{type="cds"}"#,
        r#"weir_otlp_requests_total{transport="http"}"#,
        r#"weir_otlp_data_points_total{outcome="used"}"#,
        r#"weir_otlp_data_points_total{outcome="rejected"}"#,
        "weir_policy_rejections_total",
        "weir_xds_nodes_connected",
    ] {
        assert_eq!(value(&before, series), 0.0, "{series}");
    }
    assert_eq!(
        value(
            &before,
            r#"weir_canary_weight_basis_points{canary="app-canary"}"#
        ),
        5000.0
    );
    assert_eq!(
        value(
            &before,
            r#"weir_rollout_phase{canary="app-canary",phase="progressing"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&before, r#"weir_cluster_sla_score{cluster="app"}"#),
        1.0
    );
    assert_eq!(value(&before, "weir_fleet_queue_depth"), 0.0);

    // An "Envoy" takes the clusters, then rejects the listeners.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.xds))
        .await
        .unwrap();
    let (requests, outbound) = mpsc::channel(8);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let mut recv = async || -> DiscoveryResponse {
        tokio::time::timeout(PATIENCE, responses.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    requests
        .send(request(type_url::CLUSTER, Some("fake-envoy")))
        .await
        .unwrap();
    let clusters = recv().await;
    requests
        .send(DiscoveryRequest {
            version_info: clusters.version_info.clone(),
            response_nonce: clusters.nonce.clone(),
            ..request(type_url::CLUSTER, None)
        })
        .await
        .unwrap();
    requests
        .send(request(type_url::LISTENER, None))
        .await
        .unwrap();
    let listeners = recv().await;
    requests
        .send(DiscoveryRequest {
            response_nonce: listeners.nonce.clone(),
            error_detail: Some(Status {
                code: 3,
                message: "listener rejected by the test".into(),
                details: Vec::new(),
            }),
            ..request(type_url::LISTENER, None)
        })
        .await
        .unwrap();

    let nodes = eventually("the NACK on record", || async {
        let nodes = server.get("/v1/nodes").await;
        (!nodes["nodes"][0]["types"]["lds"]["nack"].is_null()).then_some(nodes)
    })
    .await;
    let node = &nodes["nodes"][0];
    assert_eq!(node["id"], "fake-envoy");
    assert_eq!(node["connected"], true);
    assert_eq!(node["in_sync"], false);
    assert_eq!(node["types"]["cds"]["in_sync"], true, "{node}");
    assert_eq!(
        node["types"]["cds"]["acked"]["version"],
        clusters.version_info
    );
    assert_eq!(nodes["snapshot"]["types"]["cds"], clusters.version_info);
    assert_eq!(node["types"]["lds"]["acked"], Value::Null);
    assert_eq!(
        node["types"]["lds"]["nack"]["message"],
        "listener rejected by the test"
    );
    assert_eq!(
        node["types"]["lds"]["nack"]["version"],
        listeners.version_info
    );
    assert_eq!(node["last_nack"]["type_url"], type_url::LISTENER);

    // OTLP/HTTP, as an application or a collector sends it.
    let response = server
        .request(reqwest::Method::POST, "/v1/metrics")
        .json(&otlp_export())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // An operator's pause, and an invalid edit of the policy file.
    let (status, _) = server
        .call(reqwest::Method::POST, "/v1/rollouts/app-canary/pause")
        .await;
    assert_eq!(status, StatusCode::OK);
    // Written whole (renamed into place): one edit, one rejection.
    let staged = server.dir.path().join("policy.staged");
    std::fs::write(&staged, "clusters: [").unwrap();
    std::fs::rename(&staged, server.dir.path().join("policy.yaml")).unwrap();

    let after = eventually("the policy rejection counted", || async {
        let metrics = server.metrics().await;
        (metrics.get("weir_policy_rejections_total") == Some(&1.0)).then_some(metrics)
    })
    .await;
    assert_eq!(value(&after, r#"weir_xds_pushes_total{type="cds"}"#), 1.0);
    assert_eq!(value(&after, r#"weir_xds_pushes_total{type="lds"}"#), 1.0);
    assert_eq!(value(&after, r#"weir_xds_acks_total{type="cds"}"#), 1.0);
    assert_eq!(value(&after, r#"weir_xds_acks_total{type="lds"}"#), 0.0);
    assert_eq!(value(&after, r#"weir_xds_nacks_total{type="lds"}"#), 1.0);
    assert_eq!(value(&after, r#"weir_xds_nacks_total{type="cds"}"#), 0.0);
    assert_eq!(value(&after, "weir_xds_nodes_connected"), 1.0);
    assert_eq!(value(&after, "weir_xds_streams"), 1.0);
    assert_eq!(value(&after, "weir_xds_streams_opened_total"), 1.0);
    assert_eq!(
        value(&after, r#"weir_otlp_requests_total{transport="http"}"#),
        1.0
    );
    assert_eq!(
        value(&after, r#"weir_otlp_data_points_total{outcome="used"}"#),
        1.0
    );
    assert_eq!(
        value(&after, r#"weir_otlp_data_points_total{outcome="rejected"}"#),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"weir_rollout_decisions_total{canary="app-canary",kind="pause",phase="paused",origin="operator"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"weir_rollout_decisions_total{canary="app-canary",kind="start",phase="progressing",origin="controller"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"weir_rollout_phase{canary="app-canary",phase="paused"}"#
        ),
        1.0
    );
    assert_eq!(value(&after, "weir_policy_error"), 1.0);
    assert_eq!(value(&after, "weir_policy_reloads_total"), 0.0);
    drop(requests);
}

const XDS_TOKEN: &str = "xds-token-for-envoys-only";
const READ_TOKEN: &str = "read-token-for-prometheus";
const WRITE_TOKEN: &str = "write-token-for-operators";
const INGEST_TOKEN: &str = "ingest-token-for-exporters";

#[test]
fn serve_refuses_an_xds_address_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = refusal(dir.path(), "127.0.0.1:0", "0.0.0.0:0");
    assert!(
        stderr.contains("refusing to serve xDS and OTLP on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
    assert!(stderr.contains("--xds-token"), "{stderr}");
}

/// `request` with `authorization: Bearer <token>` metadata, if a token is given.
fn authorized<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn with_an_xds_token_ads_and_otlp_calls_must_carry_it() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;

    // An ingest token too, which opens OTLP but not ADS; the admin API then
    // needs a token, the read token here.
    let server = Server::start(
        &[
            "--xds-token",
            XDS_TOKEN,
            "--ingest-token",
            INGEST_TOKEN,
            "--read-token",
            READ_TOKEN,
        ],
        Some(READ_TOKEN),
    )
    .await;
    let url = format!("http://{}", server.xds);

    // ADS: a stream without the token (or with another) is refused; with it, served.
    let mut ads = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    for token in [None, Some("not-the-token"), Some(TOKEN), Some(INGEST_TOKEN)] {
        let (requests, outbound) = mpsc::channel(1);
        requests
            .send(request(type_url::CLUSTER, Some("no-token")))
            .await
            .unwrap();
        let refused = ads
            .stream_aggregated_resources(authorized(ReceiverStream::new(outbound), token))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    }
    let (requests, outbound) = mpsc::channel(1);
    requests
        .send(request(type_url::CLUSTER, Some("with-token")))
        .await
        .unwrap();
    let mut responses = ads
        .stream_aggregated_resources(authorized(ReceiverStream::new(outbound), Some(XDS_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    let clusters = tokio::time::timeout(PATIENCE, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(clusters.type_url, type_url::CLUSTER);
    assert!(!clusters.resources.is_empty());

    // OTLP/gRPC, on the same port: the same rule.
    let mut otlp = MetricsServiceClient::connect(url).await.unwrap();
    let refused = otlp
        .export(authorized(ExportMetricsServiceRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    for token in [XDS_TOKEN, INGEST_TOKEN] {
        otlp.export(authorized(
            ExportMetricsServiceRequest::default(),
            Some(token),
        ))
        .await
        .unwrap();
    }
    let refused = otlp
        .export(authorized(
            ExportMetricsServiceRequest::default(),
            Some(READ_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Only the Envoy that carried the token is known.
    let (status, nodes) = server.call(reqwest::Method::GET, "/v1/nodes").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = nodes
        .as_array()
        .or_else(|| nodes["nodes"].as_array())
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, ["with-token"], "{nodes}");
}

#[tokio::test]
async fn nodes_are_paged_and_status_lists_a_bounded_number() {
    // More Envoys than `/v1/status` lists, each on its own ADS stream of one
    // HTTP/2 connection.
    const ENVOYS: usize = weir::xds::STATUS_NODES + 20;
    let server = Server::start(&[], None).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.xds))
        .await
        .unwrap();
    let mut streams = Vec::new();
    for i in 0..ENVOYS {
        let (requests, outbound) = mpsc::channel(1);
        let id = format!("envoy-{i:04}");
        requests
            .send(request(type_url::CLUSTER, Some(&id)))
            .await
            .unwrap();
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        streams.push((requests, responses));
    }
    let status = eventually("every Envoy counted", || async {
        let status = server.get("/v1/status").await;
        (status["envoys"]["connected"] == ENVOYS).then_some(status)
    })
    .await;
    assert_eq!(status["envoys"]["streams"], ENVOYS);
    assert_eq!(status["envoys"]["listed"], weir::xds::STATUS_NODES);
    let listed = status["nodes"].as_object().unwrap();
    assert_eq!(listed.len(), weir::xds::STATUS_NODES);
    assert!(listed.contains_key("envoy-0000"), "the first by id");

    // Pages of 50 reach every node once, in id order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..ENVOYS {
        let path = match &after {
            Some(id) => format!("/v1/nodes?limit=50&after={id}"),
            None => "/v1/nodes?limit=50".to_owned(),
        };
        let page = server.get(&path).await;
        let nodes = page["nodes"].as_array().unwrap();
        assert!(nodes.len() <= 50);
        seen.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..ENVOYS).map(|i| format!("envoy-{i:04}")).collect();
    assert_eq!(seen, expected);

    let (code, body) = server
        .call(reqwest::Method::GET, "/v1/nodes?limit=many")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    drop(streams);
}

/// Whether `token` opens `method path`: `false` for 401 and 403, which must
/// then be JSON naming the token.
async fn opens(server: &Server, method: &str, path: &str, token: &str) -> bool {
    let method: reqwest::Method = method.parse().unwrap();
    let mut request = server
        .http
        .request(method.clone(), server.url(path))
        .bearer_auth(token);
    request = match path {
        "/v1/metrics" => request
            .header("content-type", "application/json")
            .body(otlp_export().to_string()),
        "/v1/feed" if method == reqwest::Method::PUT => request
            .header("content-type", "application/json")
            .body(json!({"weights": {}}).to_string()),
        _ => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        if status == StatusCode::FORBIDDEN {
            assert!(
                body["error"].as_str().unwrap().contains("does not allow"),
                "{body}"
            );
        }
        return false;
    }
    true
}

#[tokio::test]
async fn each_token_opens_only_its_scope_on_every_endpoint() {
    let server = Server::start(
        &[
            "--admin-token",
            TOKEN,
            "--read-token",
            READ_TOKEN,
            "--write-token",
            WRITE_TOKEN,
            "--ingest-token",
            INGEST_TOKEN,
        ],
        Some(TOKEN),
    )
    .await;
    let reads = [
        "/v1/status",
        "/v1/snapshot",
        "/v1/feed",
        "/v1/rollouts",
        "/v1/rollouts/app-canary",
        "/v1/rollouts/app-canary/history",
        "/v1/clusters",
        "/v1/nodes",
        "/metrics",
        "/v1/timeline",
        "/v1/policy",
        "/v1/simulator",
    ];
    let writes = [
        ("POST", "/v1/rollouts/app-canary/pause"),
        ("POST", "/v1/rollouts/app-canary/resume"),
        ("PUT", "/v1/feed"),
        ("DELETE", "/v1/feed"),
    ];
    // (token, reads, writes, ingest)
    let scopes = [
        (TOKEN, true, true, true),
        (WRITE_TOKEN, true, true, false),
        (READ_TOKEN, true, false, false),
        (INGEST_TOKEN, false, false, true),
        ("no-such-token", false, false, false),
    ];
    for (token, read, write, ingest) in scopes {
        for path in reads {
            assert_eq!(
                opens(&server, "GET", path, token).await,
                read,
                "GET {path} with {token}"
            );
        }
        for (method, path) in writes {
            assert_eq!(
                opens(&server, method, path, token).await,
                write,
                "{method} {path} with {token}"
            );
        }
        assert_eq!(
            opens(&server, "POST", "/v1/metrics", token).await,
            ingest,
            "OTLP with {token}"
        );
    }
    // The scrape token cannot abort a rollout, through the CLI either.
    let out = server.cli(&["rollout", "abort", "app-canary", "--token", READ_TOKEN]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not allow write requests"));
    let rollout = server.get("/v1/rollouts/app-canary").await;
    assert_eq!(rollout["rollout"]["phase"], "progressing", "{rollout}");
}

#[tokio::test]
async fn without_a_token_web_pages_can_neither_rebind_nor_command_weir() {
    let server = Server::start(&["--allowed-host", "weir.internal"], None).await;
    let http = &server.http;
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut request = http.request(method, server.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1.
    let rebound = send(
        reqwest::Method::GET,
        "/v1/status",
        &[("host", "evil.example:18001")],
    )
    .await
    .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    let body: Value = rebound.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--allowed-host"),
        "{body}"
    );
    let named = send(
        reqwest::Method::GET,
        "/v1/status",
        &[("host", "weir.internal")],
    )
    .await
    .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
    // Cross-site commands: refused, and the rollout is not paused.
    let path = "/v1/rollouts/app-canary/pause";
    for headers in [
        &[("origin", "http://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site")][..],
    ] {
        let refused = send(reqwest::Method::POST, path, headers).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{headers:?}");
    }
    let rollout = server.get("/v1/rollouts/app-canary").await;
    assert_eq!(rollout["rollout"]["phase"], "progressing", "{rollout}");
    assert!(server.log().contains("request refused"), "{}", server.log());
    // weir's own page (same origin) and the CLI (no Origin) may.
    let own = format!("http://{}", server.admin);
    let paused = send(reqwest::Method::POST, path, &[("origin", &own)])
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    let out = server.cli(&["rollout", "resume", "app-canary"]);
    assert!(out.status.success(), "{out:?}");
}
