//! What operators install from, checked with the real tools:
//!
//! - the filter's OCI image (`make package`, `dist/oci`) pushed to a real
//!   registry and pulled back holds the very module built, as one layer;
//! - weir's image, unpacked and started as its own configuration says (its
//!   user, entrypoint and environment), answers `/healthz`;
//! - the alert rules (`deploy/prometheus/weir-rules.yaml`) pass
//!   `promtool check rules` and their unit tests (`promtool test rules`);
//! - every query of the Grafana dashboard (`deploy/grafana/weir.json`), its
//!   panels' and its annotations', parses and returns data on a real
//!   Prometheus scraping a real `weir` whose Envoy's stats sink feeds it —
//!   and the rules loaded there fire on a real rollback.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weir_testbed::Behaviour;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::paths::{packaging_tool, repo_root};
use weir_testbed::prometheus::Prometheus;
use weir_testbed::registry::Registry;
use weir_testbed::served::Served;
use weir_testbed::steady::Traffic;
use weir_testbed::wait::eventually;

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    let rules = dir.join("weir-rules.yaml");
    let tests = dir.join("weir-rules.test.yaml");
    run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    // The unit tests find the rules next to them.
    run("promtool", &["test", "rules", tests.to_str().unwrap()]);
}

/// Every PromQL expression of the dashboard: its panels' targets and its
/// annotations' queries.
fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/weir.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap().iter();
    let targets = panels.flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default());
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .clone()
        .into_iter()
        .filter(|a| a["datasource"]["type"] == "prometheus");
    targets
        .chain(annotations)
        .map(|q| q["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_the_rules_fire_on_a_real_rollback() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let policy = policy_from_yaml(
        "dash.yaml",
        &canary::policy_yaml("[50, 100]", "30s", 40, 2.0),
    )
    .unwrap();
    let w = Served::start(policy, "dashboard-envoy", 2).await.unwrap();
    let prometheus = Prometheus::scraping(w.weir.admin_addr()).await.unwrap();
    let rules = prometheus.rules().await.unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 12, "{rules}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules}");

    // Traffic through the filter, then a canary failing a fifth of its
    // requests: weir rolls it back.
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(60));
    eventually(
        "a few scrapes with traffic",
        Duration::from_secs(20),
        || async {
            let admitted = prometheus
                .query("sum(weir_fleet_admission_requests_total)")
                .await
                .ok()?;
            (admitted.first()?["value"][1].as_str()? != "0").then_some(())
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 2_000,
        ..Behaviour::default()
    });

    // The queries without data at the last try.
    let silent = std::sync::Mutex::new(BTreeSet::new());
    let answered = eventually(
        "every dashboard query to return data",
        Duration::from_secs(30),
        || {
            let (prometheus, queries, silent) = (&prometheus, &queries, &silent);
            async move {
                let mut none = BTreeSet::new();
                for query in queries {
                    match prometheus.query(query).await {
                        Ok(result) if !result.is_empty() => {}
                        Ok(_) => {
                            none.insert(query.clone());
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                let done = none.is_empty();
                *silent.lock().unwrap() = none;
                done.then_some(())
            }
        },
    )
    .await;
    assert!(
        answered.is_ok(),
        "no data for:\n{:#?}",
        silent.lock().unwrap()
    );

    let fired = eventually(
        "WeirCanaryRolledBack to fire",
        Duration::from_secs(20),
        || async {
            let alerts = prometheus
                .query(r#"ALERTS{alertname="WeirCanaryRolledBack",alertstate="firing"}"#)
                .await
                .ok()?;
            alerts.first().cloned()
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; Prometheus's log:\n{}", prometheus.log()));
    assert_eq!(fired["metric"]["canary"], CANARY);
    traffic.stop().await;
}

/// The images' tag: the workspace's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `dist/oci`, which `make package` writes.
fn oci_layout() -> std::path::PathBuf {
    let layout = repo_root().join("dist/oci");
    assert!(
        layout.join("index.json").exists(),
        "{} is missing: run `make package`",
        layout.display()
    );
    layout
}

/// Runs a packaging tool; its stdout, or a panic with what it printed.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(packaging_tool(tool))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_image_pushed_to_a_registry_and_pulled_back_holds_the_module() {
    let layout = oci_layout();
    let registry = Registry::start().await.unwrap();
    let source = format!("oci:{}:weir-filter:{VERSION}", layout.display());
    let remote = format!("docker://{}/weir/filter:{VERSION}", registry.addr());
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &source,
            &remote,
        ],
    );

    // What Istio and Envoy Gateway would pull: one layer, holding plugin.wasm.
    let pulled = tempfile::tempdir().unwrap();
    let into = format!("dir:{}", pulled.path().display());
    run(
        "skopeo",
        &["copy", "--quiet", "--src-tls-verify=false", &remote, &into],
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(pulled.path().join("manifest.json")).unwrap())
            .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = pulled.path().join(digest.trim_start_matches("sha256:"));
    let listing = Command::new("tar").arg("tzf").arg(&blob).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "plugin.wasm"
    );
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&blob)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let module = std::fs::read(unpacked.path().join("plugin.wasm")).unwrap();
    let built = std::fs::read(weir_testbed::paths::filter_wasm()).unwrap();
    assert_eq!(
        sha256_hex(&module),
        sha256_hex(&built),
        "the module pulled is the one built"
    );

    // Labelled as the OCI annotations say.
    let config = run(
        "skopeo",
        &["inspect", "--config", "--tls-verify=false", &remote],
    );
    let config: Value = serde_json::from_str(&config).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.title"], "weir-filter");
}

/// The image's runtime configuration, as `umoci unpack` writes it: user,
/// arguments, environment.
struct Process {
    uid: u64,
    gid: u64,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

fn process_of(bundle: &std::path::Path) -> Process {
    let config: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &config["process"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Process {
        uid: process["user"]["uid"].as_u64().unwrap(),
        gid: process["user"]["gid"].as_u64().unwrap(),
        args: strings(&process["args"]),
        env: strings(&process["env"])
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weir_image_runs_as_its_own_user_and_answers_healthz() {
    use std::os::unix::fs::MetadataExt;
    let layout = oci_layout();
    let image = format!("oci:{}:weir:{VERSION}", layout.display());
    // Small: the binary and four libraries.
    let manifest: Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--raw", &image])).unwrap();
    let compressed: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    println!(
        "weir:{VERSION}: {:.1} MB compressed",
        compressed as f64 / 1e6
    );
    assert!(compressed < 40_000_000, "{compressed} bytes");

    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let root = running_as_root();
    let mut unpack = vec!["unpack"];
    if !root {
        unpack.push("--rootless");
    }
    let image_ref = format!("{}:weir:{VERSION}", layout.display());
    unpack.extend(["--image", &image_ref, bundle.to_str().unwrap()]);
    run("umoci", &unpack);
    let process = process_of(&bundle);
    assert_eq!((process.uid, process.gid), (65532, 65532), "not root");
    let rootfs = bundle.join("rootfs");
    // The policy, where a ConfigMap would be mounted.
    let policy = process
        .env
        .iter()
        .find(|(k, _)| k == "WEIR_POLICY")
        .unwrap()
        .1
        .clone();
    std::fs::copy(
        repo_root().join("examples/policies/iot-fleet.yaml"),
        rootfs.join(policy.trim_start_matches('/')),
    )
    .unwrap();

    // Started as a runtime would: inside the image's filesystem, as its
    // user, with its arguments and environment and nothing else.
    let mut command = if root {
        let mut c = Command::new("chroot");
        c.arg(format!("--userspec={}:{}", process.uid, process.gid))
            .arg(&rootfs);
        c
    } else {
        let mut c = Command::new("unshare");
        c.arg("--map-root-user")
            .arg(format!("--root={}", rootfs.display()));
        c
    };
    command
        .args(&process.args)
        .args([
            "--xds-address=127.0.0.1:0",
            "--admin-address=127.0.0.1:0",
            "--listener-address=127.0.0.1:0",
            "--ready-file=/tmp/ready.json",
        ])
        .env_clear()
        .envs(process.env.iter().map(|(k, v)| (k, v)));
    let weir = weir_testbed::process::Supervised::spawn(
        "weir (image)",
        command,
        &dir.path().join("weir.log"),
    )
    .unwrap();
    let ready_file = rootfs.join("tmp/ready.json");
    let ready: Value = eventually(
        "weir in its image to be ready",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&ready_file).ok()?;
            serde_json::from_str(&text).ok()
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; its log:\n{}", weir.log()));
    let admin = ready["admin"].as_str().unwrap();
    let health = weir_testbed::http_client()
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "{}", weir.log());
    // It keeps its state where the image says, as its own user.
    let state = process
        .env
        .iter()
        .find(|(k, _)| k == "WEIR_STATE")
        .unwrap()
        .1
        .clone();
    let state = rootfs.join(state.trim_start_matches('/'));
    let meta = std::fs::metadata(&state).unwrap_or_else(|err| panic!("{}: {err}", state.display()));
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65532, 65532));
    }
}

/// Whether this process runs as root (then the image runs with chroot as
/// its user; otherwise in a user namespace).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The resources `kubectl apply -k deploy/kubernetes/<variant>` applies:
/// rendered by kubectl's kustomize, one JSON value per document.
fn kustomized(variant: &str) -> Vec<Value> {
    let dir = repo_root().join("deploy/kubernetes").join(variant);
    let rendered = run("kubectl", &["kustomize", dir.to_str().unwrap()]);
    rendered
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|err| panic!("{variant}: {err}")))
        .collect()
}

fn of_kind<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `kubernetes-validate --strict` on each of `resources` but the Prometheus
/// Operator's (no Kubernetes schema has them): whether every one passed,
/// and what it printed.
fn validate_against_schemas(resources: &[Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        if resource["apiVersion"] == "monitoring.coreos.com/v1" {
            continue;
        }
        let file = dir.path().join(format!("{i}.json"));
        std::fs::write(&file, resource.to_string()).unwrap();
        files.push(file);
    }
    let validator = repo_root().join(".tools/k8s-venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: run `scripts/setup.sh packaging`",
        validator.display()
    );
    let out = Command::new(validator)
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(&files)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = printed.matches(" passed for resource ").count();
    (out.status.success() && passed == files.len(), printed)
}

/// What the manifests say of weir, checked against the image and the binary.
fn check_weir_deployment(resources: &[Value], variant: &str) {
    let deployment = of_kind(resources, "Deployment", "weir");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        format!("registry.example.com/weir/weir:{VERSION}"),
        "{variant}"
    );
    // The user the image runs as.
    let config = run(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:weir:{VERSION}", oci_layout().display()),
        ],
    );
    let config: Value = serde_json::from_str(&config).unwrap();
    let user = format!(
        "{}:{}",
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    );
    assert_eq!(config["config"]["User"], user, "{variant}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // Every WEIR_ variable is one `weir serve` reads.
    let help = Command::new(weir_testbed::paths::weir_binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in names.iter().filter(|n| n.starts_with("WEIR_")) {
        assert!(
            help.contains(&format!("env: {name}")),
            "{variant} sets {name}, which `weir serve` does not read"
        );
    }
    // Probes on the admin port, where weir answers them without a token.
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"], "/healthz",
            "{variant} {probe}"
        );
        assert_eq!(
            container[probe]["httpGet"]["port"], "admin",
            "{variant} {probe}"
        );
    }
    // The Services reach the container's ports by name, the pods by label.
    let ports: Vec<&Value> = container["ports"].as_array().unwrap().iter().collect();
    for service in resources.iter().filter(|r| r["kind"] == "Service") {
        for port in service["spec"]["ports"].as_array().unwrap() {
            assert!(
                ports.iter().any(|p| p["name"] == port["targetPort"]),
                "{variant}: {service}"
            );
        }
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&pod_labels(deployment)[key], value, "{variant}");
        }
    }
    // The policy in the ConfigMap is one weir accepts.
    let policy = of_kind(resources, "ConfigMap", "weir-policy")["data"]["policy.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy).unwrap();
    let validated = Command::new(weir_testbed::paths::weir_binary())
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );
    // Prometheus scrapes the admin port with a token the pod also has.
    let monitor = of_kind(resources, "ServiceMonitor", "weir");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let service = of_kind(resources, "Service", "weir");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"])
    );
    assert_eq!(endpoint["path"], "/metrics");
    let secret = &endpoint["authorization"]["credentials"];
    assert!(container["env"].as_array().unwrap().iter().any(|e| {
        e["valueFrom"]["secretKeyRef"]
            == serde_json::json!({"name": secret["name"], "key": secret["key"]})
    }));
}

fn pod_labels(deployment: &Value) -> &serde_json::Map<String, Value> {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap()
}

#[test]
fn the_kubernetes_manifests_render_with_kustomize_and_match_the_schemas() {
    for variant in ["single", "replicas"] {
        let resources = kustomized(variant);
        let (passed, printed) = validate_against_schemas(&resources);
        assert!(passed, "{variant}:\n{printed}");
        for resource in &resources {
            assert_eq!(
                resource["metadata"]["namespace"], "weir-system",
                "{resource}"
            );
        }
        check_weir_deployment(&resources, variant);
    }

    // One replica keeps its state on a volume, and stops before the next starts.
    let single = kustomized("single");
    let deployment = of_kind(&single, "Deployment", "weir");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    of_kind(&single, "PersistentVolumeClaim", "weir-state");

    // Three keep it in etcd, each with its own identity, two always up.
    let replicas = kustomized("replicas");
    let deployment = of_kind(&replicas, "Deployment", "weir");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let env: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for needed in ["WEIR_STORE", "WEIR_REPLICA_ID", "WEIR_ADVERTISE_ADMIN"] {
        assert!(env.contains(&needed), "replicas lack {needed}");
    }
    assert!(
        replicas
            .iter()
            .all(|r| r["kind"] != "PersistentVolumeClaim")
    );
    assert_eq!(
        of_kind(&replicas, "PodDisruptionBudget", "weir")["spec"]["minAvailable"],
        2
    );
    assert_eq!(
        of_kind(&replicas, "Service", "weir-xds")["spec"]["clusterIP"],
        "None"
    );

    // The schemas do catch a mistake: the check is not a formality.
    let mut broken = single.clone();
    for resource in &mut broken {
        if resource["kind"] == "Deployment" {
            resource["spec"]["replicas"] = Value::from("one");
        }
    }
    let (passed, printed) = validate_against_schemas(&broken);
    assert!(
        !passed,
        "a Deployment with replicas: \"one\" passed:\n{printed}"
    );
}
