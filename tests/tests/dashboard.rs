//! The dashboard end to end, in headless Chromium: a real `weir serve` with a
//! canary policy, a real Envoy fleet under traffic so that the rollout is
//! live, and the page weir serves — it shows the rollout with the weight weir
//! reports and keeps updating, and its policy simulator (the policy crate in
//! WebAssembly) answers as `weir explain` does.
//!
//! Needs Debian's chromium and chromium-driver (`scripts/setup.sh browser`)
//! and the simulator in `dist/simulator` (`make build`); without them the
//! test fails and says so.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use weir_testbed::browser::Browser;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::served::Served;
use weir_testbed::{Envoy, http_client, otel_apps, paths};

/// How long the page may take to show something.
const DEADLINE: Duration = Duration::from_secs(60);

/// The canary fleet (`weir_testbed::canary`) at its first step, 50 %, held
/// long enough that the weight stays put while the test reads it.
async fn world() -> Served {
    let policy = policy_from_yaml(
        "dashboard.yaml",
        &canary::policy_yaml("[50, 100]", "10m", 40, 2.0),
    )
    .unwrap();
    Served::start(policy, "dashboard-envoy", 2).await.unwrap()
}

/// About 50 requests/s from 200 devices through Envoy until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(envoy: &Envoy) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, url) = (Arc::clone(&stop), envoy.url("/v1/telemetry"));
        let task = tokio::spawn(async move {
            let client = http_client();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // Bounded: never more than five minutes of traffic.
            for i in 0..15_000u64 {
                tick.tick().await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let device = format!("device-{}", i % 200);
                let _ = client.post(&url).header("x-device-id", device).send().await;
            }
        });
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// `dist/weir explain POLICY ARGS…`: its standard output.
fn weir_explain(policy: &Path, args: &[&str]) -> String {
    let output = Command::new(paths::weir_binary())
        .arg("explain")
        .arg(policy)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "weir explain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn simulator_built() {
    let dir = paths::repo_root().join("dist/simulator");
    for file in ["weir_simulator.js", "weir_simulator_bg.wasm"] {
        assert!(
            dir.join(file).exists(),
            "{} is missing: build the simulator with `make build` (scripts/build-simulator.sh)",
            dir.join(file).display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_live_rollout_and_its_simulator_answers_as_weir_explain() {
    simulator_built();
    let browser = Browser::start().await.unwrap_or_else(|err| panic!("{err}"));
    let w = world().await;
    let traffic = Traffic::start(&w.envoy);
    let admin = w.weir.admin_addr();
    browser.goto(&format!("http://{admin}/")).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "Weir · dashboard");

    // The live rollout, with the weight weir reports.
    let card = browser
        .wait_for(
            "the dashboard to show the rollout",
            DEADLINE,
            &format!(
                r#"const card = document.querySelector('[data-rollout="{CANARY}"]');
                if (!card || !card.dataset.weightBp) return null;
                return {{
                    weight: Number(card.dataset.weightBp),
                    text: card.querySelector('.weight').textContent,
                    name: card.querySelector('.name').textContent,
                    phase: card.dataset.phase,
                    latest: Number(card.dataset.latestMs),
                    drawn: card.querySelectorAll('svg.weight-chart path.series').length,
                }};"#
            ),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}; chromedriver:\n{}", browser.log()));
    let served: Value = http_client()
        .get(format!("http://{admin}/v1/rollouts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rollout = served["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["canary"] == CANARY)
        .unwrap();
    assert_eq!(card["name"], CANARY);
    assert_eq!(card["weight"], rollout["weight_bp"], "{card} vs {rollout}");
    assert_eq!(card["weight"], 5_000);
    assert_eq!(card["text"], "50.00 %");
    assert_eq!(card["phase"], "progressing");
    assert_eq!(card["drawn"], 1, "the weight line is drawn: {card}");

    // The chart keeps up: a later reading is newer.
    let first = card["latest"].as_u64().unwrap();
    browser
        .wait_for(
            "the chart to advance",
            Duration::from_secs(15),
            &format!(
                r#"const card = document.querySelector('[data-rollout="{CANARY}"]');
                return Number(card.dataset.latestMs) > {first} ? Number(card.dataset.latestMs) : null;"#
            ),
        )
        .await
        .unwrap();
    // Envoy's stats reach weir and the page: the canary's error-rate line
    // appears once its window has requests.
    browser
        .wait_for(
            "the canary's traffic on the chart",
            DEADLINE,
            &format!(
                r#"return document.querySelector('[data-rollout="{CANARY}"] svg.error-chart path.series.canary') ? true : null;"#
            ),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));

    // The simulator: the served policy, and a request typed in.
    browser
        .wait_for(
            "the simulator's first answer",
            DEADLINE,
            r#"const r = document.getElementById('sim-result');
            if (r.dataset.state === 'unavailable') return document.getElementById('sim-unavailable').textContent;
            return r.dataset.state === 'ok' ? 'ok' : null;"#,
        )
        .await
        .map(|state| assert_eq!(state, "ok", "the simulator did not load: {state}"))
        .unwrap();
    let policy_text = browser
        .execute(
            "return document.getElementById('sim-policy').value;",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(
        policy_text.as_str().unwrap(),
        std::fs::read_to_string(w.policy_file.path()).unwrap(),
        "the editor holds the served policy"
    );
    let post = browser
        .find("#sim-method option:nth-child(2)")
        .await
        .unwrap();
    browser.click(&post).await.unwrap();
    let path = browser.find("#sim-path").await.unwrap();
    browser.clear(&path).await.unwrap();
    browser.type_text(&path, "/v1/telemetry").await.unwrap();
    let headers = browser.find("#sim-headers").await.unwrap();
    browser.clear(&headers).await.unwrap();
    browser
        .type_text(&headers, "x-device-id: device-7\nx-region: eu-west")
        .await
        .unwrap();
    let run = browser.find("#sim-run").await.unwrap();
    browser.click(&run).await.unwrap();
    let answer = browser
        .wait_for(
            "the simulator to answer the request",
            Duration::from_secs(20),
            r#"const r = document.getElementById('sim-result');
            const request = r.querySelector('tr[data-stage="request"] pre');
            if (r.dataset.state !== 'ok' || !request
                || !request.textContent.includes('POST /v1/telemetry')
                || !request.textContent.includes('x-region=eu-west')) return null;
            const lines = [...r.querySelectorAll('tr[data-stage]')]
                .filter((row) => row.dataset.stage !== 'policy')
                .map((row) => row.querySelector('pre').textContent);
            return {class: r.dataset.class, cluster: r.dataset.cluster, text: lines.join('\n') + '\n'};"#,
        )
        .await
        .unwrap();
    let request = [
        "--method",
        "POST",
        "--path",
        "/v1/telemetry",
        "--header",
        "x-device-id=device-7",
        "--header",
        "x-region=eu-west",
    ];
    let explained: Value = serde_json::from_str(&weir_explain(
        w.policy_file.path(),
        &[&request[..], &["--json"]].concat(),
    ))
    .unwrap();
    assert_eq!(answer["class"], explained["class"]["name"], "{answer}");
    assert_eq!(answer["cluster"], explained["cluster"], "{answer}");
    assert_eq!(
        answer["text"].as_str().unwrap(),
        weir_explain(w.policy_file.path(), &request),
        "the simulator shows what weir explain prints"
    );

    // A broken policy is answered with where it breaks.
    let editor = browser.find("#sim-policy").await.unwrap();
    browser.clear(&editor).await.unwrap();
    browser
        .type_text(&editor, "device_types: [sensor\nclusters: []\n")
        .await
        .unwrap();
    let problem = browser
        .wait_for(
            "the simulator to report the broken policy",
            Duration::from_secs(20),
            r#"const r = document.getElementById('sim-result');
            const where = r.querySelector('.problem .where');
            return r.dataset.state === 'error' && where ? where.textContent : null;"#,
        )
        .await
        .unwrap();
    assert!(problem.as_str().unwrap().starts_with("line "), "{problem}");
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_says_when_latency_cannot_be_resolved() {
    let w = world().await;
    let browser = Browser::start().await.unwrap_or_else(|err| panic!("{err}"));
    let admin = w.weir.admin_addr().to_string();
    // The applications alone report both variants, with the OpenTelemetry
    // SDK's default buckets: 0.3 s and 3 s are both in (0, 5] s.
    let apps = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            otel_apps::report(&admin, &[("app", 0.3), (CANARY, 3.0)], 30)
        })
    };
    browser.goto(&format!("http://{admin}/")).await.unwrap();
    let shown = browser
        .wait_for(
            "the card to say the latency is not resolvable",
            Duration::from_secs(20),
            &format!(
                r#"const card = document.querySelector('[data-rollout="{CANARY}"]');
                const note = card && card.querySelector('.figures .unresolved');
                return note ? note.textContent : null;"#
            ),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    apps.await.unwrap();
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("latency not resolvable"), "{shown}");
    assert!(shown.contains("5000 ms]"), "the bucket seen: {shown}");
}

/// The simulator's stages, as text, are what `weir explain` prints, for
/// requests that reach every stage and every outcome of the example policy.
#[test]
fn the_simulator_prints_what_weir_explain_prints() {
    let file = paths::repo_root().join("examples/policies/iot-fleet.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let requests: [&[&str]; 5] = [
        &[
            "--method",
            "POST",
            "--path",
            "/v1/alarms",
            "--header",
            "x-region=eu-west",
            "--header",
            "x-device-id=abc",
        ],
        &[
            "--path",
            "/v1/commands/reboot",
            "--header",
            "x-region=us-east",
        ],
        &[
            "--path",
            "/v1/telemetry",
            "--header",
            "x-device-type=vehicle",
            "--header",
            "x-region=ap-south",
            "--in-flight",
            "100000",
        ],
        &[
            "--method",
            "PUT",
            "--path",
            "/health",
            "--host",
            "api.example.com",
        ],
        &[
            "--path",
            "/v1/heartbeat",
            "--header",
            "x-device-id=sensor-000042",
            "--header",
            "x-region=eu-west",
            "--in-flight",
            "150",
        ],
    ];
    for args in requests {
        let mut request =
            json!({"method": "GET", "path": "/", "host": "", "headers": [], "in_flight": 0});
        for pair in args.chunks(2) {
            let [flag, value] = pair else { unreachable!() };
            match *flag {
                "--method" => request["method"] = json!(value),
                "--path" => request["path"] = json!(value),
                "--host" => request["host"] = json!(value),
                "--in-flight" => request["in_flight"] = json!(value.parse::<u64>().unwrap()),
                "--header" => {
                    let (name, value) = value.split_once('=').unwrap();
                    request["headers"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!([name, value]));
                }
                other => panic!("{other}"),
            }
        }
        let answer: Value = serde_json::from_str(&weir_simulator::simulate_json(
            &text,
            &request.to_string(),
            "",
        ))
        .unwrap();
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(
            answer["explain"].as_str().unwrap(),
            weir_explain(&file, args),
            "for {args:?}"
        );
    }
}
