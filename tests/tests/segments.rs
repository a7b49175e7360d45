//! Segment verdicts end to end: the filter in a real Envoy counts each
//! device segment of the canary, Envoy's stats sink carries the counts to
//! `weir`, and `weir` judges every segment as it judges the whole.

use std::time::Duration;

use serde_json::Value;
use weir_testbed::Behaviour;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::served::Served;
use weir_testbed::steady::Traffic;
use weir_testbed::wait::eventually;
use weir_testbed::weir::Weir;

/// Requests per second through Envoy: half to the canary at the first step.
const RATE: u64 = 300;

async fn world(steps: &str, hold: &str, segments: &str) -> Served {
    let yaml = canary::policy_yaml_with(steps, hold, 40, 1.0, &[("segments", segments)]);
    let policy = policy_from_yaml("segments.yaml", &yaml).unwrap();
    Served::start(policy, "segments-envoy", 2).await.unwrap()
}

/// One device in twenty is a camera (5 % of the requests); the others are
/// sensors.
fn device_type(device: u64) -> Vec<(&'static str, String)> {
    let kind = if device.is_multiple_of(20) {
        "camera"
    } else {
        "sensor"
    };
    vec![("x-device-type", kind.to_owned())]
}

/// Ten firmware versions, each a tenth of the devices.
fn firmware(device: u64) -> Vec<(&'static str, String)> {
    vec![("x-firmware", format!("2.{}.0", device % 10))]
}

async fn rollout_detail(weir: &Weir) -> Value {
    weir.get_json(&format!("/v1/rollouts/{CANARY}"))
        .await
        .unwrap()
}

async fn wait_phase(weir: &Weir, phase: &str, deadline: Duration) -> Value {
    eventually(&format!("the rollout to be {phase}"), deadline, || async {
        let detail = rollout_detail(weir).await;
        (detail["rollout"]["phase"] == phase).then_some(detail)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", weir.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_only_the_cameras_is_rolled_back_naming_them() {
    let w = world("[50, 100]", "10m", "{ by: [device_type] }").await;
    // A sixth of the cameras' requests fail on the canary: 0.8 % of the
    // canary's requests, under the whole's 1-point limit.
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 1_667,
        only_header: Some(("x-device-type", "camera")),
        ..Behaviour::default()
    });
    let traffic = Traffic::start_with(&w.envoy, RATE, Duration::from_secs(60), device_type);
    let detail = wait_phase(&w.weir, "rolled_back", Duration::from_secs(45)).await;
    traffic.stop().await;
    let decision = &detail["last_decision"];
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.contains("segment device_type=camera"),
        "the decision names the segment: {reason}"
    );
    let evidence = &decision["evidence"];
    let camera = evidence["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["value"] == "camera")
        .cloned()
        .unwrap_or_else(|| panic!("{evidence}"));
    assert_eq!(camera["verdict"], "bad", "{camera}");
    // The whole cluster stayed within its limit: only the segment saw it.
    let whole_increase = evidence["error_test"]["increase_pp"].as_f64().unwrap();
    assert!(whole_increase < 1.0, "{evidence}");
    assert!(
        camera["canary"]["requests"].as_u64().unwrap() >= 40,
        "{camera}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_ten_segments_as_noisy_as_stable_is_promoted() {
    let w = world(
        "[50, 100]",
        "3s",
        "{ by: [\"header:x-firmware\"], top: 10 }",
    )
    .await;
    // Both variants fail 2 % of every segment's requests.
    for cluster in ["app", CANARY] {
        w.fleet.backend(cluster).set_behaviour(Behaviour {
            fail_basis_points: 200,
            ..Behaviour::default()
        });
    }
    let traffic = Traffic::start_with(&w.envoy, RATE, Duration::from_secs(90), firmware);
    // Judged at the first step, every segment on its own.
    let judged = eventually(
        "ten firmware segments judged",
        Duration::from_secs(30),
        || async {
            let detail = rollout_detail(&w.weir).await;
            let segments = detail["evidence"]["segments"].as_array()?.len();
            (segments == 10).then_some(detail)
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    let values: Vec<&str> = judged["evidence"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    assert!(values.contains(&"2.7.0"), "{values:?}");
    let promoted = wait_phase(&w.weir, "promoted", Duration::from_secs(60)).await;
    traffic.stop().await;
    assert_eq!(promoted["rollout"]["weight_bp"], 10_000);
}
