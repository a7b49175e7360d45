//! The examples stay true.
//!
//! - `make demo`'s scenario runs unattended to its end, says what it
//!   promised (a canary promoted, two rolled back, heartbeats shed and no
//!   alarm), prints the dashboard's URL, and leaves no process and no file
//!   behind — also when it is stopped by a signal.
//! - The mesh examples (`examples/istio`, `examples/envoy-gateway`) carry
//!   exactly what `weir compile` prints for the policy they name, which
//!   `weir check-filter-config` accepts, and route every cluster of it.
//! - `examples/existing-envoy/ecds-only.yaml` works: an Envoy with its own
//!   listeners and clusters takes only the filter from a real `weir serve`;
//!   and, naming its region, it measures the RTT geo routing uses.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testbed::fleet::{Fleet, PolicyFile, load_policy};
use weir_testbed::slow_tls::SlowTls;
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir};
use weir_testbed::{Envoy, http_client, paths};

/// The policy every example is built from.
const POLICY: &str = "examples/policies/three-regions.yaml";

/// How long the whole demo may take, start to exit: its scenario takes
/// about 35 s on two cores.
const DEMO_DEADLINE: Duration = Duration::from_secs(150);

/// The demo's executable, built (release, as `make demo` runs it) unless
/// `WEIR_DEMO_BIN` names one.
fn demo_binary() -> PathBuf {
    // Built once for all the tests of this file.
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_demo).clone()
}

fn build_demo() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_DEMO_BIN") {
        return PathBuf::from(path);
    }
    let root = paths::repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "-p",
            "weir-demo",
        ])
        .current_dir(&root)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build -p weir-demo failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/weir-demo")
}

/// A running demo, its output collected as it comes, its temporary files in
/// a folder of its own (`TMPDIR`) so that the test can see them all go.
struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
    tmp: tempfile::TempDir,
}

impl Demo {
    fn start(demo_seconds: Option<u64>) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("weir-demo-test-")
            .tempdir()
            .unwrap();
        let mut command = Command::new(demo_binary());
        command
            .current_dir(paths::repo_root())
            .env("TMPDIR", tmp.path())
            .env_remove("DEMO_SECONDS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(seconds) = demo_seconds {
            command.env("DEMO_SECONDS", seconds.to_string());
        }
        let mut child = command.spawn().expect("start the demo");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut all = output.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        Self { child, output, tmp }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output holds `needle`.
    fn wait_for(&mut self, needle: &str, deadline: Duration) {
        let give_up = Instant::now() + deadline;
        while !self.output().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the demo exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < give_up,
                "no {needle:?} from the demo within {deadline:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the demo to exit by itself.
    fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let give_up = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "the demo did not end within {deadline:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// The pids the demo says its weir and Envoy have.
    fn child_pids(&self) -> Vec<u32> {
        let output = self.output();
        ["weir pid ", "envoy pid "]
            .iter()
            .map(|label| {
                let at = output
                    .find(label)
                    .unwrap_or_else(|| panic!("no {label:?} in the output:\n{output}"));
                output[at + label.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// Nothing the demo started runs any more, and its files are gone.
    fn assert_left_nothing(&self, pids: &[u32]) {
        let tmp = self.tmp.path().to_string_lossy().into_owned();
        let leftovers = || -> Vec<String> {
            let mut found: Vec<String> = pids
                .iter()
                .filter(|pid| running(**pid))
                .map(|pid| format!("pid {pid} still runs"))
                .collect();
            // Anything else started with one of the demo's files as an argument.
            found.extend(processes_mentioning(&tmp));
            found
        };
        let give_up = Instant::now() + Duration::from_secs(5);
        while !leftovers().is_empty() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            leftovers().is_empty(),
            "the demo left processes behind: {:?}",
            leftovers()
        );
        let files: Vec<_> = std::fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.is_empty(), "the demo left files behind: {files:?}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- demo output -----\n{}", self.output());
        }
    }
}

/// Whether process `pid` runs (and is not a zombie awaiting its parent).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (running(pid) && cmdline.contains(needle)).then(|| format!("pid {pid}: {cmdline}"))
        })
        .collect()
}

#[test]
fn the_demo_runs_its_scenario_unattended_and_leaves_nothing_behind() {
    let mut demo = Demo::start(Some(0));
    demo.wait_for("dashboard   http://", Duration::from_secs(90));
    let output = demo.output();
    let url = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard   "))
        .unwrap()
        .trim()
        .to_owned();
    // The dashboard is weir's admin address: its API answers beside it.
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answers = |path: &str| {
        runtime.block_on(async {
            let response = http_client()
                .get(format!("{url}{path}"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    assert_eq!(answers("v1/status").0, 200);
    let (status, page) = answers("");
    assert_eq!(status, 200, "the dashboard at {url}: {page}");
    let pids = demo.child_pids();

    let status = demo.wait_exit(DEMO_DEADLINE);
    let output = demo.output();
    assert!(status.success(), "the demo failed ({status}):\n{output}");
    for promise in [
        "ok  ingest-eu-canary promoted by weir: 10% → 25% → 50% → 100%",
        "ok  ingest-us-canary rolled back by weir",
        "ok  ingest-ap-canary rolled back by weir",
        "ok  overload: ",
        "ROLLED BACK: canary is bad",
        "PROMOTED: ",
        "Envoy runs ingest-eu-canary at 25% (",
        "Stopped: Envoy, weir and the backends; temporary files removed.",
    ] {
        assert!(output.contains(promise), "no {promise:?} in:\n{output}");
    }
    assert!(!output.contains("FAILED"), "{output}");
    // "overload: H of N heartbeats shed, 0 of M alarms shed", H > 0.
    let overload = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("ok  overload: "))
        .unwrap();
    let heartbeats_shed: u64 = overload.split(' ').next().unwrap().parse().unwrap();
    assert!(heartbeats_shed > 0, "{overload}");
    assert!(overload.contains(", 0 of "), "alarms were shed: {overload}");
    assert!(overload.ends_with(" alarms shed"), "{overload}");
    demo.assert_left_nothing(&pids);
}

#[test]
fn the_demo_stops_everything_on_sigterm() {
    let mut demo = Demo::start(None);
    demo.wait_for("Act 1 — ", Duration::from_secs(90));
    let pids = demo.child_pids();
    demo.signal("TERM");
    let status = demo.wait_exit(Duration::from_secs(20));
    // Interrupted before its scenario was over.
    assert_eq!(status.code(), Some(130), "{}", demo.output());
    assert!(
        demo.output()
            .contains("SIGTERM: stopped Envoy, weir and the backends; temporary files removed."),
        "{}",
        demo.output()
    );
    demo.assert_left_nothing(&pids);
}

/// `weir` run with `args`: success, stdout and stderr.
fn weir(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(paths::weir_binary())
        .args(args)
        .current_dir(paths::repo_root())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn read_yaml(relative: &str) -> Value {
    let text = std::fs::read_to_string(paths::repo_root().join(relative)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|err| panic!("{relative}: {err}"))
}

/// The clusters of the policy, by name.
fn policy_clusters(relative: &str) -> BTreeSet<String> {
    load_policy(relative)
        .unwrap()
        .clusters
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn the_mesh_examples_carry_what_weir_compile_prints() {
    let examples = [
        (
            "examples/istio/wasmplugin.yaml",
            "/spec/pluginConfig",
            "    ",
        ),
        (
            "examples/envoy-gateway/envoy-extension-policy.yaml",
            "/spec/wasm/0/config",
            "        ",
        ),
    ];
    for (file, pointer, indent) in examples {
        let document = read_yaml(file);
        let policy = document
            .pointer("/metadata/annotations/weir~1policy")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{file} names no policy (annotation weir/policy)"));
        let embedded = document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{file} has no {pointer}"));

        // The filter accepts it, as the real command checks it.
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("plugin-config.json");
        std::fs::write(&config_path, serde_json::to_vec(embedded).unwrap()).unwrap();
        let (ok, stdout, stderr) = weir(&["check-filter-config", config_path.to_str().unwrap()]);
        assert!(ok && stdout.contains(": ok"), "{file}: {stdout}{stderr}");

        // And it is exactly what `weir compile` prints for the policy now.
        let (ok, compiled, stderr) = weir(&["compile", policy]);
        assert!(ok, "weir compile {policy}: {stderr}");
        let compiled: Value = serde_json::from_str(&compiled).unwrap();
        assert!(
            *embedded == compiled,
            "{file} no longer carries `weir compile {policy}`: keep the file up to its last key \
             and append `weir compile {policy} | sed 's/^/{indent}/'`"
        );
    }
}

#[test]
fn the_mesh_routes_cover_every_cluster_of_the_policy() {
    let clusters = policy_clusters(POLICY);
    let istio = read_yaml("examples/istio/virtualservice.yaml");
    let istio_routed: BTreeSet<String> = istio["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|route| route["match"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| {
            m["headers"]["x-weir-cluster"]["exact"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(istio_routed, clusters, "examples/istio/virtualservice.yaml");

    let gateway = read_yaml("examples/envoy-gateway/httproute.yaml");
    let gateway_routed: BTreeSet<String> = gateway["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["matches"].as_array().cloned().unwrap_or_default())
        .flat_map(|m| m["headers"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["name"] == "x-weir-cluster")
        .filter_map(|h| h["value"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        gateway_routed, clusters,
        "examples/envoy-gateway/httproute.yaml"
    );
}

/// `examples/existing-envoy/ecds-only.yaml` listening on ports the kernel picks.
fn ecds_only_on_free_ports() -> Value {
    let mut bootstrap = read_yaml("examples/existing-envoy/ecds-only.yaml");
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    for listener in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
    {
        listener["address"]["socket_address"]["port_value"] = json!(0);
    }
    bootstrap
}

/// A static cluster's endpoints: the one address.
fn endpoint(addr: std::net::SocketAddr) -> Value {
    json!([{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
        "address": addr.ip().to_string(), "port_value": addr.port()
    }}}}]}])
}

/// `examples/existing-envoy/ecds-only.yaml` with run-time ports, its
/// policy clusters on `fleet`'s backends and ADS on `weir`.
fn ecds_only_bootstrap(fleet: &Fleet, weir: &Weir) -> Value {
    let mut bootstrap = ecds_only_on_free_ports();
    let mut named = BTreeSet::new();
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap()
    {
        let name = cluster["name"].as_str().unwrap().to_owned();
        let addr = if name == "weir_xds" {
            weir.xds_addr()
        } else {
            named.insert(name.clone());
            fleet.backend(&name).addr()
        };
        cluster["load_assignment"]["endpoints"] = endpoint(addr);
    }
    assert_eq!(
        named,
        policy_clusters(POLICY),
        "ecds-only.yaml has a cluster for every cluster of {POLICY}, and no other"
    );
    bootstrap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_envoy_takes_only_the_filter_from_weir() {
    let fleet = Fleet::start(load_policy(POLICY).unwrap()).unwrap();
    let policy_file = PolicyFile::new("three-regions.yaml", fleet.policy()).unwrap();
    let weir = Weir::start(policy_file.path(), WasmDelivery::Local)
        .await
        .unwrap();
    // Ready means its listener has warmed: the filter came from weir.
    let envoy = Envoy::start(&ecds_only_bootstrap(&fleet, &weir), 2)
        .await
        .unwrap();

    // Its own listener and clusters only: weir sent no listener or cluster.
    let listeners = envoy.admin_json("/listeners?format=json").await.unwrap();
    let names: Vec<&str> = listeners["listener_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["ingress"]);

    // The filter steers: by region, and ap-south's cameras to eu-west.
    let cases = [
        ("eu-west", "meter", "ingest-eu"),
        ("us-east", "gateway", "ingest-us"),
        ("ap-south", "meter", "ingest-ap"),
        ("ap-south", "camera", "ingest-eu"),
    ];
    for (region, device_type, cluster) in cases {
        for n in 0..20 {
            let device = format!("{device_type}-{n}");
            let backend = envoy
                .backend_for(
                    "/v1/telemetry",
                    &[
                        ("x-region", region),
                        ("x-device-type", device_type),
                        ("x-device-id", &device),
                    ],
                )
                .await
                .unwrap();
            assert!(
                backend == cluster || backend == format!("{cluster}-canary"),
                "{region} {device}: {backend}"
            );
        }
    }

    // A new feed from weir reaches this Envoy's filter: eu-west's canary at 100 %.
    let mut feed = weir_policy::Feed::initial(fleet.policy());
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    weir.put_feed(&feed).await.unwrap().unwrap();
    eventually(
        "eu-west's devices all on the canary",
        Duration::from_secs(15),
        || async {
            for n in 0..20 {
                let device = format!("meter-{n}");
                let backend = envoy
                    .backend_for(
                        "/v1/telemetry",
                        &[
                            ("x-region", "eu-west"),
                            ("x-device-type", "meter"),
                            ("x-device-id", &device),
                        ],
                    )
                    .await
                    .ok()?;
                if backend != "ingest-eu-canary" {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap();
}

/// Two clusters a region apart; the table says 80 ms between the regions.
const RTT_POLICY: &str = r#"
device_types: [sensor]
regions: { rtt_ms: { eu-west: { us-east: 80 } } }
clusters:
  - { name: near, region: eu-west, endpoints: ["127.0.0.1:9"] }
  - { name: far, region: us-east, endpoints: ["127.0.0.1:9"] }
services:
  - name: ingest
    match: { path_prefix: / }
    placements: [{ cluster: near }, { cluster: far }]
priority: { classes: [telemetry], default: telemetry }
admission:
  concurrency_limit: 1000
  retry_after: 1s
  classes: { telemetry: { max_wait: 1s } }
"#;

/// `ecds-only.yaml` as an eu-west Envoy (its stats sink names the region)
/// whose policy clusters are TLS upstreams, a new connection per request,
/// on `fronts` (cluster, address), trusting `ca`.
fn regional_bootstrap(
    weir: &Weir,
    fronts: &[(&str, std::net::SocketAddr)],
    ca: &std::path::Path,
) -> Value {
    let mut bootstrap = ecds_only_on_free_ports();
    let detector = &mut bootstrap["stats_sinks"][0]["typed_config"]["resource_detectors"][0];
    detector["typed_config"]["attributes"]["cloud.region"] = json!("eu-west");
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap();
    clusters.retain(|c| c["name"] == "weir_xds");
    clusters[0]["load_assignment"]["endpoints"] = endpoint(weir.xds_addr());
    for (name, addr) in fronts {
        clusters.push(json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "5s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"max_requests_per_connection": 1},
                    "explicit_http_config": {"http_protocol_options": {}}
                }
            },
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": weir_testbed::certs::SERVER_NAME,
                    "common_tls_context": {"validation_context": {"trusted_ca": {"filename": ca}}}
                }
            },
            "load_assignment": {"cluster_name": name, "endpoints": endpoint(*addr)}
        }));
    }
    bootstrap
}

/// The RTT `GET /v1/clusters` shows from eu-west to `cluster`: (measured, used).
async fn rtt_from_eu_west(weir: &Weir, cluster: &str) -> (Option<f64>, Option<f64>) {
    let clusters = weir.get_json("/v1/clusters").await.unwrap();
    let row = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == cluster)
        .and_then(|c| c["rtt"].as_array())
        .and_then(|rows| rows.iter().find(|r| r["region"] == "eu-west").cloned())
        .unwrap_or_default();
    (row["measured_ms"].as_f64(), row["used_ms"].as_f64())
}

/// Where eight eu-west devices' requests go, sent at once.
async fn eu_west_backends(envoy: &Envoy, round: usize) -> BTreeSet<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let url = envoy.url("/v1/telemetry");
        tasks.spawn(async move {
            let response = http_client()
                .post(url)
                .header("x-region", "eu-west")
                .header("x-device-id", format!("sensor-{round}-{n}"))
                .send()
                .await
                .ok()?;
            let echo: weir_testbed::backend::Echo = response.json().await.ok()?;
            Some(echo.backend)
        });
    }
    let mut seen = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        seen.insert(done.unwrap().unwrap_or_else(|| "(failed)".to_owned()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_connect_time_rises_loses_its_traffic_to_the_next_region() {
    let dir = tempfile::tempdir().unwrap();
    let ca = weir_testbed::certs::Ca::new(dir.path(), "upstreams").unwrap();
    let identity = ca.server("upstream").unwrap();
    let policy = weir_testbed::fleet::policy_from_yaml("rtt.yaml", RTT_POLICY).unwrap();
    let fleet = Fleet::start(policy).unwrap();
    let policy_file = PolicyFile::new("rtt.yaml", fleet.policy()).unwrap();
    let weir = Weir::start(policy_file.path(), WasmDelivery::Local)
        .await
        .unwrap();
    let near = SlowTls::start(fleet.backend("near").addr(), &identity)
        .await
        .unwrap();
    let far = SlowTls::start(fleet.backend("far").addr(), &identity)
        .await
        .unwrap();
    near.set_handshake_delay(Duration::from_millis(5));
    far.set_handshake_delay(Duration::from_millis(80));
    let fronts = [("near", near.addr()), ("far", far.addr())];
    let envoy = Envoy::start(&regional_bootstrap(&weir, &fronts, &ca.cert_path()), 2)
        .await
        .unwrap();

    // eu-west's devices go to eu-west, whose connect time is measured.
    let mut round = 0;
    let measured = eventually(
        "eu-west's RTT to near measured",
        Duration::from_secs(30),
        || {
            round += 1;
            let (envoy, weir) = (&envoy, &weir);
            let round = round;
            async move {
                let seen = eu_west_backends(envoy, round).await;
                assert_eq!(seen, BTreeSet::from(["near".to_owned()]));
                rtt_from_eu_west(weir, "near").await.0
            }
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", weir.log()));
    assert!((4.0..80.0).contains(&measured), "measured {measured} ms");

    // eu-west's connections to near now take 300 ms: its measured RTT
    // follows, and the devices move to us-east (80 ms by the table).
    near.set_handshake_delay(Duration::from_millis(300));
    eventually("eu-west's devices on far", Duration::from_secs(40), || {
        round += 1;
        let envoy = &envoy;
        let round = round;
        async move {
            let seen = eu_west_backends(envoy, round).await;
            (seen == BTreeSet::from(["far".to_owned()])).then_some(())
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", weir.log()));
    let (measured, used) = rtt_from_eu_west(&weir, "near").await;
    // Every device leaves once near scores `spread` (0.05) below far's
    // 0.4 × (1 − 80/200) + 0.6: at a measured RTT over 105 ms. Then near
    // gets no connections to measure, and its RTT stays where it was.
    let measured = measured.unwrap();
    assert!(measured > 105.0, "measured {measured} ms");
    assert_eq!(used, Some(measured));
    let (_, used_far) = rtt_from_eu_west(&weir, "far").await;
    assert!(
        used_far.is_some_and(|ms| (60.0..200.0).contains(&ms)),
        "{used_far:?}"
    );
}
