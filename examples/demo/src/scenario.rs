//! The scripted scenario: three canary releases roll out at once; one starts
//! failing and one slows down, and weir rolls both back by itself; the third
//! is walked to 100 %; then an overload shows heartbeats shed while alarms
//! are served. Every step waits on what weir and Envoy report, never on a
//! fixed sleep.

use std::time::Duration;

use serde_json::Value;
use weir_testbed::fleet::{Fleet, load_policy};
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap};
use weir_testbed::{Behaviour, Envoy};

use crate::narrator::{Clock, envoy_canary_weights, epoch_ms, percent};
use crate::traffic::{self, CLASSES, Steady, Tally};

/// The policy the demo runs, relative to the repository's root.
pub(crate) const POLICY: &str = "examples/policies/three-regions.yaml";

/// The name of weir's copy of the policy in the demo's folder.
const POLICY_FILE: &str = "three-regions.yaml";

/// eu-west's canary: a good release.
const HEALTHY: &str = "ingest-eu-canary";
/// us-east's canary: a release that starts failing.
const FAILING: &str = "ingest-us-canary";
/// ap-south's canary: a release that slows down.
const SLOW: &str = "ingest-ap-canary";

/// Steady traffic: requests per second, and how many connections carry them.
pub(crate) const STEADY_RATE: u64 = 200;
pub(crate) const STEADY_LANES: usize = 24;

/// The overload: devices reconnecting at once, for how long, and how slow
/// the backends answer meanwhile.
const STORM_CLIENTS: usize = 160;
const STORM: Duration = Duration::from_secs(5);
const STORM_DELAY: Duration = Duration::from_millis(250);

/// Everything the demo runs. Dropping it stops Envoy, then weir, then the
/// backends, and removes the temporary files (fields drop in this order).
pub(crate) struct World {
    pub(crate) envoy: Envoy,
    pub(crate) weir: Weir,
    pub(crate) fleet: Fleet,
    pub(crate) dir: tempfile::TempDir,
}

impl World {
    /// The policy file weir serves (the example, pointed at the backends).
    pub(crate) fn weir_policy(&self) -> std::path::PathBuf {
        self.dir.path().join(POLICY_FILE)
    }

    /// A backend for every cluster of the policy, `weir serve` on the policy
    /// pointed at them, and an Envoy that has nothing but the ADS bootstrap.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let fleet = Fleet::start(load_policy(POLICY)?)?;
        let dir = tempfile::Builder::new().prefix("weir-demo-").tempdir()?;
        let policy_path = dir.path().join(POLICY_FILE);
        // The example with its endpoints on this demo's backends (JSON is YAML).
        std::fs::write(&policy_path, serde_json::to_string_pretty(fleet.policy())?)?;
        let weir = Weir::start(&policy_path, WasmDelivery::Local).await?;
        let envoy = Envoy::start(&ads_bootstrap(weir.xds_addr(), "demo-envoy", false)?, 2).await?;
        Ok(Self {
            envoy,
            weir,
            fleet,
            dir,
        })
    }
}

/// One promise of the scenario, kept or not.
pub(crate) struct Check {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

impl Check {
    fn new(ok: bool, text: String) -> Self {
        Self { ok, text }
    }
}

/// Runs the acts; returns what was promised and what happened.
pub(crate) async fn run(
    world: &World,
    clock: &Clock,
    steady: &Steady,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    println!(
        "\n{} Act 1 — three releases roll out at once, one canary per region, each at 10%",
        clock.stamp()
    );
    println!(
        "         Envoy's stats sink reports every cluster's requests, errors and latency to weir each second;"
    );
    println!(
        "         weir compares each canary with its region's stable cluster over the last 10 s and moves it"
    );
    println!(
        "         a step once it has been healthy for its hold (eu-west 5 s, us-east and ap-south 8 s)."
    );
    println!(
        "         Devices keep their variant: a device's canary bucket is a hash of its id, the same in every Envoy."
    );

    past_first_step(world, FAILING).await;
    report_routes(&steady.tally());
    let failing = fault(
        world,
        clock,
        FAILING,
        "Act 2 — a bad release: ingest-us-canary starts answering 25% of its requests with 503",
        Behaviour {
            fail_basis_points: 2_500,
            ..Behaviour::default()
        },
    )
    .await?;
    checks.push(failing.check("its release began failing"));

    let slow = fault(
        world,
        clock,
        SLOW,
        "Act 3 — a slow release: ingest-ap-canary starts taking 200 ms per request (stable: ~1 ms)",
        Behaviour {
            delay: Duration::from_millis(200),
            ..Behaviour::default()
        },
    )
    .await?;
    checks.push(slow.check("its release slowed down"));

    checks.push(promotion(world, clock).await?);
    checks.push(overload(world, clock, steady).await?);

    let tally = steady.tally();
    checks.push(Check::new(
        tally.spoof_leaks == 0 && tally.spoofed > 0,
        format!(
            "{} requests tried to choose their own class and cluster with x-weir-* headers: {} got through",
            tally.spoofed, tally.spoof_leaks
        ),
    ));
    Ok(checks)
}

/// What happened after a fault was injected into a canary.
struct FaultOutcome {
    canary: &'static str,
    /// How long after the fault weir decided to roll back, and why.
    rolled_back: Option<(Duration, String)>,
    /// Requests the canary received after Envoy ran weight 0.
    after: Option<u64>,
}

impl FaultOutcome {
    fn check(&self, what: &str) -> Check {
        match (&self.rolled_back, self.after) {
            (Some((after, why)), Some(requests)) => Check::new(
                requests == 0,
                format!(
                    "{} rolled back by weir {:.1} s after {what} ({why}); it got {requests} requests afterwards",
                    self.canary,
                    after.as_secs_f64()
                ),
            ),
            (Some((after, why)), None) => Check::new(
                false,
                format!(
                    "{} rolled back by weir {:.1} s after {what} ({why}), but Envoy did not run 0%",
                    self.canary,
                    after.as_secs_f64()
                ),
            ),
            (None, _) => Check::new(false, format!("{} was NOT rolled back", self.canary)),
        }
    }
}

/// Waits until `canary` has moved past its first step (or 45 s).
async fn past_first_step(world: &World, canary: &str) {
    let _ = wait_rollout(&world.weir, canary, Duration::from_secs(45), |r| {
        r["weight_bp"].as_u64().unwrap_or_default() >= 2_500 || r["phase"] != "progressing"
    })
    .await;
    catch_up().await;
}

/// Once `canary` has moved past its first step, makes its backend behave as
/// `behaviour`, and waits for weir to roll it back.
async fn fault(
    world: &World,
    clock: &Clock,
    canary: &'static str,
    title: &str,
    behaviour: Behaviour,
) -> anyhow::Result<FaultOutcome> {
    past_first_step(world, canary).await;
    println!("\n{} {title}", clock.stamp());
    println!(
        "         Nobody tells weir: it has to see it in Envoy's metrics and compare the canary with its stable cluster."
    );
    let injected = epoch_ms();
    world.fleet.backend(canary).set_behaviour(behaviour);
    let decided = wait_rollout(&world.weir, canary, Duration::from_secs(30), |r| {
        r["phase"] == "rolled_back"
    })
    .await;
    catch_up().await;
    if decided.is_none() {
        return Ok(FaultOutcome {
            canary,
            rolled_back: None,
            after: None,
        });
    }
    let decision = decisions(&world.weir)
        .await?
        .into_iter()
        .rev()
        .find(|d| d["canary"] == canary && d["to"] == "rolled_back");
    let rolled_back = decision.map(|d| {
        let at = d["at_ms"].as_u64().unwrap_or(injected);
        let why = match (
            &d["evidence"]["error_test"],
            &d["evidence"]["latency_ratio"],
        ) {
            (_, Value::Object(ratio))
                if d["reason"].as_str().is_some_and(|r| r.contains("latency")) =>
            {
                format!(
                    "latency: p99 ×{:.0} stable's",
                    ratio.get("p99").and_then(Value::as_f64).unwrap_or_default()
                )
            }
            (Value::Object(test), _) => format!(
                "errors: +{:.1} percentage points over stable",
                test.get("increase_pp")
                    .and_then(Value::as_f64)
                    .unwrap_or_default()
            ),
            _ => "see its decision".to_owned(),
        };
        (Duration::from_millis(at.saturating_sub(injected)), why)
    });
    let after = traffic_after_rollback(world, canary).await;
    if let Some(requests) = after {
        println!(
            "{} {canary} received {requests} requests in the 2 s after Envoy ran 0%",
            clock.stamp()
        );
    }
    Ok(FaultOutcome {
        canary,
        rolled_back,
        after,
    })
}

/// Waits until Envoy runs `canary` at 0 %, then counts the requests its
/// backend receives over the next 2 s.
async fn traffic_after_rollback(world: &World, canary: &str) -> Option<u64> {
    let http = weir_testbed::http_client();
    let admin = world.envoy.admin_addr();
    eventually("Envoy to run 0%", Duration::from_secs(10), || {
        let http = &http;
        async move {
            let weights = envoy_canary_weights(http, admin).await?;
            (weights.get(canary) == Some(&0)).then_some(())
        }
    })
    .await
    .ok()?;
    // Requests routed just before the change may still be on their way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = world.fleet.backend(canary).served();
    tokio::time::sleep(Duration::from_secs(2)).await;
    Some(world.fleet.backend(canary).served() - before)
}

/// Waits for the good release to be promoted.
async fn promotion(world: &World, clock: &Clock) -> anyhow::Result<Check> {
    let done = world
        .weir
        .rollout(HEALTHY)
        .await
        .is_ok_and(|r| r["phase"] == "promoted");
    println!(
        "\n{} Act 4 — a good release: {HEALTHY} has been healthy all along; {}",
        clock.stamp(),
        if done {
            "weir walked it to 100% and promoted it (above)"
        } else {
            "weir walks it to 100%, then promotes it"
        }
    );
    let promoted = wait_rollout(&world.weir, HEALTHY, Duration::from_secs(90), |r| {
        r["phase"] != "progressing"
    })
    .await;
    catch_up().await;
    let mine: Vec<Value> = decisions(&world.weir)
        .await?
        .into_iter()
        .filter(|d| d["canary"] == HEALTHY)
        .collect();
    let mut path: Vec<String> = mine
        .first()
        .map(|d| percent(d["from_weight_bp"].as_u64().unwrap_or_default()))
        .into_iter()
        .collect();
    for d in &mine {
        let weight = percent(d["weight_bp"].as_u64().unwrap_or_default());
        if path.last() != Some(&weight) {
            path.push(weight);
        }
    }
    let took = match (mine.first(), mine.last()) {
        (Some(first), Some(last)) => {
            let ms = last["at_ms"].as_u64().unwrap_or_default()
                - first["at_ms"].as_u64().unwrap_or_default();
            format!("{:.1} s", ms as f64 / 1e3)
        }
        _ => "?".to_owned(),
    };
    Ok(match promoted {
        Some(r) if r["phase"] == "promoted" => Check::new(
            true,
            format!(
                "{HEALTHY} promoted by weir: {} in {took}, nobody touched anything",
                path.join(" → ")
            ),
        ),
        Some(r) => Check::new(
            false,
            format!(
                "{HEALTHY} was NOT promoted: it ended {}",
                r["phase"].as_str().unwrap_or("?")
            ),
        ),
        None => Check::new(
            false,
            format!(
                "{HEALTHY} was NOT promoted within 90 s: {}",
                path.join(" → ")
            ),
        ),
    })
}

/// A reconnect storm against slow backends: the filter sheds heartbeats and
/// serves alarms.
async fn overload(world: &World, clock: &Clock, steady: &Steady) -> anyhow::Result<Check> {
    let policy = world.fleet.policy();
    let limit = policy.admission.concurrency_limit;
    println!(
        "\n{} Act 5 — overload: a network outage ends and {STORM_CLIENTS} devices reconnect at once, while every",
        clock.stamp()
    );
    println!(
        "         ingest backend slows to {} ms. The filter lets {limit} requests be in flight, of any class; each freed",
        STORM_DELAY.as_millis()
    );
    println!(
        "         slot goes to the highest class waiting, so heartbeats (100 ms of patience) are shed first, alarms last."
    );
    println!(
        "         weir scores each cluster's p99 against the 250 ms target (1: met); routing weighs a low score less."
    );
    let faulty = [FAILING, SLOW];
    for (name, backend) in world.fleet.backends() {
        if !faulty.contains(&name.as_str()) {
            backend.set_behaviour(Behaviour {
                delay: STORM_DELAY,
                ..Behaviour::default()
            });
        }
    }
    let alarms_before = steady.tally().class("alarm");
    let storm = traffic::storm(&world.envoy.url(""), STORM_CLIENTS, STORM).await;
    let alarms_after = steady.tally().class("alarm");
    for (name, backend) in world.fleet.backends() {
        if !faulty.contains(&name.as_str()) {
            backend.set_behaviour(Behaviour::default());
        }
    }
    println!(
        "{} the storm is over; backends answer at full speed again. The storm's requests:",
        clock.stamp()
    );
    report_classes(&storm);
    let heartbeats = storm.class("heartbeat");
    let alarms = storm.class("alarm");
    let steady_alarms_shed = alarms_after.shed - alarms_before.shed;
    let steady_alarms = alarms_after.sent - alarms_before.sent;
    let alarms_shed = alarms.shed + steady_alarms_shed;
    let all_alarms = alarms.sent + steady_alarms;
    Ok(Check::new(
        heartbeats.shed > 0 && alarms_shed == 0 && alarms.served > 0,
        format!(
            "overload: {} of {} heartbeats shed, {alarms_shed} of {all_alarms} alarms shed",
            heartbeats.shed, heartbeats.sent
        ),
    ))
}

/// Lets the narrator tell what weir just decided before the next act begins.
async fn catch_up() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The rollout of `canary` once `done` holds for it, or `None` after `deadline`.
async fn wait_rollout(
    weir: &Weir,
    canary: &str,
    deadline: Duration,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let done = &done;
    eventually(canary, deadline, || async move {
        let rollout = weir.rollout(canary).await.ok()?;
        done(&rollout).then_some(rollout)
    })
    .await
    .ok()
}

/// The decisions weir has recorded, oldest first.
async fn decisions(weir: &Weir) -> anyhow::Result<Vec<Value>> {
    let rollouts: Value = weir_testbed::http_client()
        .get(format!("http://{}/v1/rollouts", weir.admin_addr()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(rollouts["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Where the steady traffic went: client region → backend.
fn report_routes(tally: &Tally) {
    println!(
        "\n{:9}Where steady traffic went so far (client region → the backend that answered):",
        ""
    );
    let mut region = "";
    for ((from, to), n) in &tally.by_route {
        let shown = if *from == region { "" } else { from };
        region = from;
        let note = match (*from, to.as_str()) {
            ("ap-south", to) if to.starts_with("ingest-eu") => {
                "  ← cameras: ingest-ap serves meters and gateways only"
            }
            _ => "",
        };
        println!("           {shown:<9} {to:<17} {n:>6}{note}");
    }
}

/// Per class: sent, served, shed, p99.
fn report_classes(tally: &Tally) {
    println!(
        "           {:<10} {:>6} {:>7} {:>10} {:>7} {:>8}",
        "class", "sent", "served", "shed (503)", "failed", "p99 ms"
    );
    for class in CLASSES {
        let Some(c) = tally.by_class.get(class) else {
            continue;
        };
        println!(
            "           {class:<10} {:>6} {:>7} {:>10} {:>7} {:>8.1}",
            c.sent,
            c.served,
            c.shed,
            c.failed,
            c.p99_ms()
        );
    }
}
