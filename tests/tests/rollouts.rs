//! Closing the loop end to end: a real Envoy whose own stats sink feeds
//! `weir`, real backends, and `weir` judging and moving the canary by itself.

use std::time::Duration;

use serde_json::Value;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::served::Served;
use weir_testbed::steady::Traffic;
use weir_testbed::wait::eventually;
use weir_testbed::weir::{Weir, ads_bootstrap};
use weir_testbed::{Behaviour, Envoy, http_client, otel_apps};

/// One service on a stable and a canary cluster (see `weir_testbed::canary`);
/// canaries start at 50 % so that 100 requests/s give them 50/s.
fn policy(steps: &str, hold: &str) -> weir_policy::Policy {
    policy_from_yaml("rollout.yaml", &canary::policy_yaml(steps, hold, 40, 2.0)).unwrap()
}

/// [`policy`] `[50, 100]` held 30 s, with a mirror phase of half the devices
/// held `hold` (the canary's hold when `None`).
fn mirrored_policy(hold: Option<&str>) -> weir_policy::Policy {
    let mut policy = policy("[50, 100]", "30s");
    if let Some(canary) = policy.services[0].placements[0].canary.as_mut() {
        canary.mirror = Some(weir_policy::model::Mirror {
            percent: 50.0,
            hold: hold.map(|h| weir_policy::Duration(h.into())),
        });
    }
    policy
}

async fn world(policy: weir_policy::Policy) -> Served {
    Served::start(policy, "rollout-envoy", 2).await.unwrap()
}

async fn rollout(weir: &Weir) -> Value {
    let status = weir.status().await.unwrap();
    status["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["canary"] == CANARY)
        .cloned()
        .unwrap()
}

async fn wait_phase(weir: &Weir, phase: &str, deadline: Duration) -> Value {
    eventually(&format!("the rollout to be {phase}"), deadline, || async {
        let rollout = rollout(weir).await;
        (rollout["phase"] == phase).then_some(rollout)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", weir.log()))
}

/// The canary weight in the filter configuration Envoy runs now.
async fn envoy_weight(envoy: &Envoy) -> Option<u64> {
    canary::envoy_weight(envoy).await.ok().flatten()
}

/// Waits until the routes Envoy runs have (or have not) a mirror policy.
async fn wait_envoy_mirroring(envoy: &Envoy, mirroring: bool) {
    let what = if mirroring { "a" } else { "no" };
    eventually(
        &format!("Envoy's route to have {what} mirror policy"),
        Duration::from_secs(10),
        || async {
            let dump = envoy
                .admin_text("/config_dump?resource=dynamic_route_configs")
                .await
                .ok()?;
            let routes_weir = dump.contains("x-weir-cluster");
            (routes_weir && dump.contains("request_mirror_policies") == mirroring).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_and_is_promoted() {
    let w = world(policy("[50, 75, 100]", "2s")).await;
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(60));
    let promoted = wait_phase(&w.weir, "promoted", Duration::from_secs(50)).await;
    traffic.stop().await;
    assert_eq!(promoted["weight_bp"], 10_000);
    let history: Value = http_client()
        .get(format!("http://{}/v1/rollouts", w.weir.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let weights: Vec<u64> = history["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["canary"] == CANARY)
        .map(|d| d["weight_bp"].as_u64().unwrap())
        .collect();
    for step in [5_000, 7_500, 10_000] {
        assert!(
            weights.contains(&step),
            "the rollout went through {step} bp: {weights:?}"
        );
    }
    canary::wait_envoy_weight(&w.envoy, 10_000, Duration::from_secs(10))
        .await
        .unwrap();
}

/// Makes the canary fail a fifth of its requests under 100 requests/s and
/// waits for Envoy to run weight 0; returns how long that took from the
/// first bad response.
async fn time_to_roll_back_a_failing_canary(w: &Served) -> Duration {
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 2_000,
        fail_status: 503,
        ..Behaviour::default()
    });
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(30));
    let first_error = traffic
        .wait_first_canary_error(Duration::from_secs(10))
        .await
        .unwrap();
    canary::wait_envoy_weight(&w.envoy, 0, Duration::from_secs(10))
        .await
        .unwrap();
    let reaction = first_error.elapsed();
    traffic.stop().await;
    reaction
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_returning_errors_is_rolled_back_within_two_seconds() {
    let w = world(policy("[50, 100]", "30s")).await;
    let reaction = time_to_roll_back_a_failing_canary(&w).await;
    assert!(
        reaction <= Duration::from_secs(2),
        "rolled back {reaction:?} after the first bad response"
    );
    let rolled_back = rollout(&w.weir).await;
    assert_eq!(rolled_back["phase"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mirrored_canary_is_rolled_back_before_any_device_got_its_answer() {
    // Half the devices' requests are copied to the canary, which fails every
    // one; no device may ever see it, and the rollout must end.
    let w = world(mirrored_policy(None)).await;
    let mirrored = rollout(&w.weir).await;
    assert_eq!(
        (
            mirrored["weight_bp"].as_u64(),
            mirrored["mirror_bp"].as_u64()
        ),
        (Some(0), Some(5_000))
    );
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 10_000,
        fail_status: 503,
        ..Behaviour::default()
    });
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(40));
    let rolled_back = wait_phase(&w.weir, "rolled_back", Duration::from_secs(20)).await;
    // No device got a canary answer (each would have been a 503), and none failed.
    let (canary_answered, failed) = (traffic.first_canary_error(), traffic.failed());
    let answered = traffic.stop().await;
    assert_eq!(canary_answered, None, "a device got the canary's answer");
    assert_eq!(failed, 0, "{failed} device requests failed");
    assert_eq!(rolled_back["weight_bp"], 0);
    assert!(rolled_back.get("mirror_bp").is_none(), "{rolled_back}");
    assert!(answered > 100, "{answered} requests answered");
    assert!(
        w.fleet.backend(CANARY).served() >= 40,
        "the canary was judged on {} mirrored requests",
        w.fleet.backend(CANARY).served()
    );
    let detail = w
        .weir
        .get_json(&format!("/v1/rollouts/{CANARY}"))
        .await
        .unwrap();
    let reason = detail["last_decision"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("canary is bad mirrored at 50 %"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_mirror_phase_starts_the_split_at_the_first_step() {
    let w = world(mirrored_policy(Some("2s"))).await;
    // The route copies requests by header only while a canary mirrors.
    wait_envoy_mirroring(&w.envoy, true).await;
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(30));
    let split = eventually("the split to start", Duration::from_secs(20), || async {
        let rollout = rollout(&w.weir).await;
        (rollout["weight_bp"] == 5_000).then_some(rollout)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    assert_eq!(split["phase"], "progressing");
    assert!(split.get("mirror_bp").is_none(), "{split}");
    // The devices now reach the canary itself.
    canary::wait_envoy_weight(&w.envoy, 5_000, Duration::from_secs(10))
        .await
        .unwrap();
    wait_envoy_mirroring(&w.envoy, false).await;
    let failed = traffic.failed();
    traffic.stop().await;
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_regression_is_rolled_back() {
    let w = world(policy("[50, 100]", "30s")).await;
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        delay: Duration::from_millis(200),
        ..Behaviour::default()
    });
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(30));
    wait_phase(&w.weir, "rolled_back", Duration::from_secs(20)).await;
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_over_the_seeds_error_ceiling_is_rolled_back_within_the_allowed_increase() {
    // 8 % errors: within the 10 points allowed over stable, over the seed's
    // 3 % + 2 % × (p99 ratio ≈ 1) ceiling.
    let yaml = canary::policy_yaml_with("[50, 100]", "30s", 40, 10.0, &[("error_ceiling", "{}")]);
    let w = world(policy_from_yaml("ceiling.yaml", &yaml).unwrap()).await;
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 800,
        ..Behaviour::default()
    });
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(40));
    wait_phase(&w.weir, "rolled_back", Duration::from_secs(30)).await;
    traffic.stop().await;
    let detail = w
        .weir
        .get_json(&format!("/v1/rollouts/{CANARY}"))
        .await
        .unwrap();
    let reason = detail["last_decision"]["reason"].as_str().unwrap();
    assert!(reason.contains("error ceiling"), "{reason}");
    assert!(
        !reason.contains("errors: canary"),
        "the comparison with stable passed: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_as_noisy_as_stable_is_not_rolled_back() {
    let w = world(policy("[50, 100]", "10m")).await;
    for cluster in ["app", CANARY] {
        w.fleet.backend(cluster).set_behaviour(Behaviour {
            fail_basis_points: 100,
            fail_status: 500,
            ..Behaviour::default()
        });
    }
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(30));
    // Long enough for several full analysis windows with enough samples.
    eventually(
        "12 s of judged traffic",
        Duration::from_secs(30),
        || async {
            let phase = rollout(&w.weir).await["phase"].clone();
            assert_eq!(phase, "progressing", "equal noise changed the rollout");
            let judged = w.weir.status().await.ok()?["otlp"]["data_points"]["used"].as_u64()?;
            (traffic.sent() > 1_200 && judged > 0).then_some(())
        },
    )
    .await
    .unwrap();
    traffic.stop().await;
    assert_eq!(rollout(&w.weir).await["phase"], "progressing");
    assert_eq!(rollout(&w.weir).await["weight_bp"], 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traffic_the_rollout_holds() {
    let w = world(policy("[50, 100]", "1s")).await;
    // Several holds pass with no traffic at all: no data means hold, never
    // pass. Waited for by the controller's own clock: four holds' worth of
    // evaluations after the first one seen.
    let evaluated = |r: &Value| r["evaluated_ms"].as_u64();
    let first = eventually("an evaluation", Duration::from_secs(10), || async {
        evaluated(&rollout(&w.weir).await)
    })
    .await
    .unwrap();
    eventually(
        "four holds of evaluations",
        Duration::from_secs(20),
        || async { (evaluated(&rollout(&w.weir).await)? >= first + 4_000).then_some(()) },
    )
    .await
    .unwrap();
    let rollout = rollout(&w.weir).await;
    assert_eq!(
        (rollout["phase"].as_str(), rollout["weight_bp"].as_u64()),
        (Some("progressing"), Some(5_000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_weir_resumes_the_rollout_and_envoy_sees_no_change() {
    let w = world(policy("[50, 75, 100]", "2s")).await;
    // Enough points on the charts that weir has saved some (it saves every 5).
    eventually(
        "8 points on the charts",
        Duration::from_secs(15),
        || async {
            let charted = timeline(&w.weir, 0).await;
            (charted["points"].as_array()?.len() >= 8).then_some(())
        },
    )
    .await
    .unwrap();
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(40));
    eventually(
        "the rollout to reach its second step",
        Duration::from_secs(30),
        || async { (rollout(&w.weir).await["weight_bp"] == 7_500).then_some(()) },
    )
    .await
    .unwrap();
    // No more traffic: without data the rollout holds where it is.
    traffic.stop().await;
    let before = rollout(&w.weir).await;
    canary::wait_envoy_weight(&w.envoy, 7_500, Duration::from_secs(10))
        .await
        .unwrap();
    let reloads = w
        .envoy
        .stat("extension_config_discovery.http_filter.weir_filter.config_reload")
        .await
        .unwrap();

    let charted_before = timeline(&w.weir, 0).await;

    let Served { weir, envoy, .. } = w;
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let weir = weir.kill().start().await.unwrap();
    let after = rollout(&weir).await;
    // The dashboard's charts come back: points from before the restart, as
    // they were (the last few seconds before a crash may be missing).
    let charted_after = timeline(&weir, 0).await;
    let restored: Vec<&Value> = charted_after["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["at_ms"].as_u64().unwrap() < killed_at)
        .collect();
    assert!(restored.len() >= 3, "{charted_after}");
    let same_time = charted_before["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["at_ms"] == restored[0]["at_ms"]);
    assert_eq!(same_time, Some(restored[0]));
    assert_eq!(
        (
            after["step"].clone(),
            after["weight_bp"].clone(),
            after["phase"].clone()
        ),
        (
            before["step"].clone(),
            before["weight_bp"].clone(),
            before["phase"].clone()
        )
    );
    weir.wait_acked(
        "rollout-envoy",
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
    )
    .await
    .unwrap();
    assert_eq!(envoy_weight(&envoy).await, Some(7_500));
    assert_eq!(
        envoy
            .stat("extension_config_discovery.http_filter.weir_filter.config_reload")
            .await
            .unwrap(),
        reloads,
        "Envoy reloaded its filter after weir restarted"
    );
}

/// The dashboard's timeline after `since_ms`.
async fn timeline(weir: &Weir, since_ms: u64) -> Value {
    http_client()
        .get(format!(
            "http://{}/v1/timeline?since={since_ms}",
            weir.admin_addr()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_metrics_from_the_opentelemetry_sdk_are_accepted_and_used() {
    let w = world(policy("[50, 100]", "10m")).await;
    let admin = w.weir.admin_addr().to_string();
    // The application reports 2 s requests on `app`: far over its 250 ms p99 target.
    let app = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || otel_apps::report(&admin, &[("app", 2.0)], 8))
    };
    eventually(
        "app's SLA score to fall",
        Duration::from_secs(10),
        || async {
            let feed: Value = http_client()
                .get(format!("http://{admin}/v1/feed"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (feed["sla_scores"]["app"].as_f64()? < 1.0).then_some(())
        },
    )
    .await
    .unwrap();
    app.await.unwrap();
    let otlp = w.weir.status().await.unwrap()["otlp"].clone();
    assert!(otlp["requests"]["http"].as_u64().unwrap() > 0, "{otlp}");
    assert!(otlp["data_points"]["used"].as_u64().unwrap() > 0, "{otlp}");
    assert_eq!(otlp["data_points"]["rejected"], 0, "{otlp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_ten_times_slower_in_buckets_too_wide_to_tell_is_not_promoted() {
    // Both variants reported by their applications only (no traffic through
    // Envoy), with the SDK's default buckets: 0.3 s and 3 s both lie in
    // (0, 5] s. Healthy for 2 s would take a step, and two promote.
    let w = world(policy("[50, 100]", "2s")).await;
    let admin = w.weir.admin_addr().to_string();
    let apps = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            otel_apps::report(&admin, &[("app", 0.3), (CANARY, 3.0)], 24)
        })
    };
    let evidence = eventually(
        "the latency to be found unresolvable",
        Duration::from_secs(10),
        || async {
            let detail = w
                .weir
                .get_json(&format!("/v1/rollouts/{CANARY}"))
                .await
                .ok()?;
            let evidence = detail["evidence"].clone();
            (!evidence["latency_unresolved"].as_array()?.is_empty()).then_some(evidence)
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    apps.await.unwrap();
    assert_eq!(evidence["verdict"], "inconclusive", "{evidence}");
    let unresolved = &evidence["latency_unresolved"][0];
    assert_eq!(unresolved["canary_bucket"]["high_ms"], 5000.0, "{evidence}");
    let findings = evidence["findings"].to_string();
    assert!(findings.contains("not resolvable"), "{findings}");
    // About 8 s of reports, and the canary never left its first step.
    let rollout = rollout(&w.weir).await;
    assert_eq!(
        (&rollout["phase"], &rollout["weight_bp"]),
        (&Value::from("progressing"), &Value::from(5_000)),
        "{rollout}"
    );
    let timeline = timeline(&w.weir, 0).await;
    let latest = timeline["points"].as_array().unwrap().last().unwrap();
    assert!(
        latest["rollouts"][CANARY]["latency_unresolved"].is_array(),
        "the dashboard's timeline shows it: {latest}"
    );
}

/// The concurrency limit in the filter configuration Envoy runs now.
async fn envoy_limit(envoy: &Envoy) -> Option<u64> {
    canary::envoy_concurrency_limit(envoy).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_over_the_usual_rate_lowers_the_throughput_limit() {
    let mut policy = policy("[50, 100]", "1h");
    policy.admission.adaptive_limit = Some(weir_policy::model::AdaptiveLimit {
        min: 10,
        by: weir_policy::model::LimitSignal::Throughput,
    });
    let w = world(policy).await;
    // The usual rate: 40 requests/s, learnt as the baseline.
    let usual = Traffic::start(&w.envoy, 40, Duration::from_secs(60));
    eventually("a baseline", Duration::from_secs(20), || async {
        let status = w.weir.status().await.ok()?;
        status["limit"]["baseline_rps"]
            .as_f64()
            .filter(|b| *b > 20.0)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    assert_eq!(
        envoy_limit(&w.envoy).await,
        Some(1_000),
        "at the usual rate, the ceiling"
    );
    // Four times as much: the limit falls to about a quarter of the ceiling.
    let surge = Traffic::start(&w.envoy, 120, Duration::from_secs(60));
    let lowered = eventually(
        "Envoy to run a lowered limit",
        Duration::from_secs(20),
        || async { envoy_limit(&w.envoy).await.filter(|l| *l < 500) },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    let status = w.weir.status().await.unwrap();
    let limit = &status["limit"];
    let (current, baseline) = (
        limit["current_rps"].as_f64().unwrap(),
        limit["baseline_rps"].as_f64().unwrap(),
    );
    assert!(current > 2.0 * baseline, "{limit}");
    assert!(lowered >= 10, "never below the floor: {lowered}");
    surge.stop().await;
    usual.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fleet_lowers_the_adaptive_limit_and_it_recovers() {
    // Both variants equally slow: the canary is not to blame, the load is.
    let mut policy = policy("[50, 100]", "1h");
    policy.admission.adaptive_limit = Some(weir_policy::model::AdaptiveLimit {
        min: 50,
        by: weir_policy::model::LimitSignal::Latency,
    });
    let w = world(policy).await;
    assert_eq!(
        envoy_limit(&w.envoy).await,
        Some(1_000),
        "starts at the ceiling"
    );
    let slow = Behaviour {
        delay: Duration::from_millis(400),
        ..Behaviour::default()
    };
    for cluster in [canary::STABLE, CANARY] {
        w.fleet.backend(cluster).set_behaviour(slow);
    }
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(90));

    // p99 ≈ 400 ms against 250 ms: cut each second to the floor.
    eventually(
        "Envoy to run the floor of the limit",
        Duration::from_secs(30),
        || async { (envoy_limit(&w.envoy).await == Some(50)).then_some(()) },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    let status = w.weir.status().await.unwrap();
    let pressure = status["limit"]["pressure"].as_f64();
    assert!(
        pressure.is_some_and(|p| p > 1.1),
        "the evidence is the fleet's p99 over its target: {}",
        status["limit"]
    );

    // Fast again: it climbs back to the ceiling.
    for cluster in [canary::STABLE, CANARY] {
        w.fleet.backend(cluster).set_behaviour(Behaviour::default());
    }
    eventually(
        "Envoy to run the ceiling again",
        Duration::from_secs(45),
        || async { (envoy_limit(&w.envoy).await == Some(1_000)).then_some(()) },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    traffic.stop().await;
}

/// The value of the sample of `/metrics` named `name` whose labels include
/// every one of `labels` (`key="value"`).
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(name) && labels.iter().all(|l| line.contains(l))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_are_two_sources_and_their_admission_counts_add_up() {
    let w = world(policy("[50, 100]", "1h")).await;
    let second = Envoy::start(
        &ads_bootstrap(w.weir.xds_addr(), "rollout-envoy-2", false).unwrap(),
        1,
    )
    .await
    .unwrap();
    for (envoy, requests) in [(&w.envoy, 120), (&second, 80)] {
        for i in 0..requests {
            let device = format!("device-{i}");
            let (status, _) = envoy
                .send("POST", "/v1/telemetry", &[("x-device-id", &device)])
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
    }
    let counter = "wasmcustom.weir.class.telemetry.admitted";
    let mut own = 0;
    for envoy in [&w.envoy, &second] {
        envoy.filter_counters_settled().await.unwrap();
        own += envoy.stat(counter).await.unwrap().unwrap_or(0);
    }
    assert_eq!(own, 200, "each Envoy's filter counted its own requests");

    let url = format!("http://{}/metrics", w.weir.admin_addr());
    let seen = eventually(
        "weir to sum both Envoys' admission reports",
        Duration::from_secs(15),
        || async {
            let text = http_client()
                .get(&url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let sources = metric(&text, "weir_fleet_admission_sources", &[])?;
            let admitted = metric(
                &text,
                "weir_fleet_admission_requests_total",
                &[r#"class="telemetry""#, r#"outcome="admitted""#],
            )?;
            (sources == 2.0 && admitted == 200.0).then_some((sources, admitted))
        },
    )
    .await;
    assert!(seen.is_ok(), "{seen:?}; weir's log:\n{}", w.weir.log());
}

/// `GET /readyz`: its status code and its answer.
async fn readiness(weir: &Weir) -> (u16, Value) {
    let response = http_client()
        .get(format!("http://{}/readyz", weir.admin_addr()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Readiness's problems, once weir says it is not ready.
async fn wait_unready(weir: &Weir) -> Value {
    eventually(
        "weir to say it is not ready",
        Duration::from_secs(10),
        || async {
            let (status, answer) = readiness(weir).await;
            (status == 503).then_some(answer)
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_disk_full_weir_still_rolls_back_says_so_and_saves_it_once_there_is_room() {
    let disk = weir_testbed::disk::SmallDisk::mount(8).unwrap();
    let state = disk.path().join("state.redb");
    let state = state.to_str().unwrap();
    let w = Served::start_with_env(
        policy("[50, 100]", "30s"),
        "full-disk-envoy",
        2,
        &[("WEIR_STATE", state)],
    )
    .await
    .unwrap();
    assert_eq!(readiness(&w.weir).await.0, 200);

    disk.fill().unwrap();
    // The state is saved every ~2 s even without a decision.
    let problems = wait_unready(&w.weir).await;
    assert!(
        problems["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("cannot be saved") && p.contains("No space left")),
        "{problems}"
    );
    assert_eq!(envoy_weight(&w.envoy).await, Some(5_000));

    // A bad canary is rolled back all the same.
    let reaction = time_to_roll_back_a_failing_canary(&w).await;
    assert!(
        reaction <= Duration::from_secs(2),
        "rolled back {reaction:?} after the first bad response, with the disk full"
    );
    let metrics = http_client()
        .get(format!("http://{}/metrics", w.weir.admin_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "weir_state_unsaved", &[]), Some(1.0));
    assert!(metric(&metrics, "weir_state_save_failures_total", &[]).is_some_and(|n| n >= 1.0));

    // Room again: saved, ready, and a restart resumes the rollback.
    disk.free().unwrap();
    eventually(
        "weir to be ready again",
        Duration::from_secs(10),
        || async { (readiness(&w.weir).await.0 == 200).then_some(()) },
    )
    .await
    .unwrap();
    let restarted = w.weir.kill().start().await.unwrap();
    assert_eq!(rollout(&restarted).await["phase"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_state_on_a_read_only_filesystem_weir_serves_what_was_saved_and_says_so() {
    let disk = weir_testbed::disk::SmallDisk::mount(8).unwrap();
    let state = disk.path().join("state.redb");
    let w = Served::start_with_env(
        policy("[50, 100]", "30s"),
        "read-only-envoy",
        2,
        &[("WEIR_STATE", state.to_str().unwrap())],
    )
    .await
    .unwrap();
    // A decision worth keeping, saved.
    let aborted: Value = http_client()
        .post(format!(
            "http://{}/v1/rollouts/{CANARY}/abort",
            w.weir.admin_addr()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(aborted["decision"]["to"], "rolled_back", "{aborted}");
    assert!(aborted.get("unsaved").is_none(), "{aborted}");

    // The filesystem goes read-only (as ext4 does after an I/O error) and
    // weir restarts: it used to refuse to start.
    let stopped = w.weir.kill();
    disk.set_read_only(true).unwrap();
    let weir = stopped.start().await.unwrap();
    assert_eq!(
        rollout(&weir).await["phase"],
        "rolled_back",
        "what was saved is served"
    );
    assert!(weir.log().contains("reading it as it is"), "{}", weir.log());
    let problems = wait_unready(&weir).await;
    assert!(
        problems["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("Read-only file system")),
        "{problems}"
    );
    assert_eq!(weir.status().await.unwrap()["state"]["saved"], false);

    // Writable again: saved and ready, without a restart.
    disk.set_read_only(false).unwrap();
    eventually(
        "weir to be ready again",
        Duration::from_secs(10),
        || async { (readiness(&weir).await.0 == 200).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(weir.status().await.unwrap()["state"]["saved"], true);
}
