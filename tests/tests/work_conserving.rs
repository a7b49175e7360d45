//! Work-conserving admission in a real Envoy: paced open-loop device
//! traffic against a backend whose capacity is the concurrency limit (slots
//! × service time). At half the capacity nothing is shed; at ten times it no
//! alarm is shed, the backend stays busy, and the filter's counters are what
//! the devices saw.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_testbed::fleet::Fleet;
use weir_testbed::traffic::{self, Answer, Class, Spacing, Tally, Target, device_mix};
use weir_testbed::wait::eventually;
use weir_testbed::{Behaviour, Envoy};

const CLASSES: [&str; 4] = ["alarm", "command", "telemetry", "heartbeat"];

fn policy(limit: u32) -> weir_policy::Policy {
    traffic::device_policy(limit).unwrap()
}

/// The device mix with more alarms (4 %, commands 6 %), so that a short
/// overload still carries a few dozen of them.
fn mix() -> Vec<Class> {
    let mut mix = device_mix();
    mix[0].weight = 4;
    mix[1].weight = 6;
    mix
}

/// Sends `count` requests of the mix at `rate` per second, evenly spaced and
/// on schedule (open loop: a request leaves on time whether or not earlier
/// ones were answered), and tallies per class what came back. Every shed
/// answer names its own class.
async fn paced_load(envoy: &Envoy, rate: f64, count: usize) -> BTreeMap<&'static str, Tally> {
    let mix = mix();
    let arrivals = traffic::schedule(&mix, rate, count, 997, Spacing::Even);
    let target = Target {
        base: envoy.url(""),
        connections: 2,
        timeout: Duration::from_secs(15),
        headers: vec![("x-region".into(), "eu-west".into())],
    };
    let outcomes = traffic::send(&target, &mix, &arrivals).await;
    for outcome in &outcomes {
        if let Answer::Shed { weir_class } = &outcome.answer {
            assert_eq!(weir_class.as_deref(), Some(mix[outcome.class].name));
        }
    }
    let tallies = traffic::tally(mix.len(), &outcomes);
    mix.iter().map(|c| c.name).zip(tallies).collect()
}

async fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat(&format!("wasmcustom.{name}"))
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Waits until every slot and queue place is given back.
async fn wait_idle(envoy: &Envoy) {
    let mut gauges = vec!["weir.in_flight".to_owned(), "weir.queue.depth".to_owned()];
    gauges.extend(CLASSES.map(|c| format!("weir.queue.waiting.{c}")));
    for gauge in &gauges {
        eventually(
            &format!("{gauge} back to 0"),
            Duration::from_secs(20),
            || async move { (stat(envoy, gauge).await == 0).then_some(()) },
        )
        .await
        .unwrap();
    }
}

/// The filter's counters equal what the devices saw, class by class.
async fn assert_counters_match(envoy: &Envoy, seen: &BTreeMap<&'static str, Tally>) {
    envoy.filter_counters_settled().await.unwrap();
    for class in CLASSES {
        let s = seen.get(class).cloned().unwrap_or_default();
        let count = |outcome: &str| format!("weir.class.{class}.{outcome}");
        let admitted = stat(envoy, &count("admitted")).await;
        let queued = stat(envoy, &count("queued")).await;
        let released = stat(envoy, &count("released")).await;
        let shed = stat(envoy, &count("shed")).await;
        assert_eq!(
            (s.timed_out, s.failed),
            (0, 0),
            "{class}: answers neither served nor shed: {s:?}"
        );
        assert_eq!(admitted + released, s.served, "{class}: served, {s:?}");
        assert_eq!(shed, s.shed, "{class}: shed, {s:?}");
        assert!(
            released <= queued,
            "{class}: {released} released of {queued} queued"
        );
        assert!(
            queued - released <= shed,
            "{class}: {queued} queued, {released} released, {shed} shed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_half_the_capacity_nothing_is_shed_and_at_ten_times_no_alarm_is() {
    // Both loads in one test, one after the other: run side by side they
    // would share the machine's two cores and each other's timing.
    half_capacity().await;
    ten_times_capacity().await;
}

/// 16 slots × 100 ms: a capacity of 160 requests/s, offered 80/s.
async fn half_capacity() {
    const LIMIT: u32 = 16;
    const SERVICE: Duration = Duration::from_millis(100);
    let fleet = Fleet::start(policy(LIMIT)).unwrap();
    fleet.backend("backend").set_behaviour(Behaviour {
        delay: SERVICE,
        ..Behaviour::default()
    });
    let envoy = fleet.envoy(None).start().await.unwrap();
    let capacity = f64::from(LIMIT) / SERVICE.as_secs_f64();
    let seen = paced_load(&envoy, capacity / 2.0, 400).await;
    for class in CLASSES {
        let s = &seen[class];
        assert_eq!(
            (s.shed, s.timed_out, s.failed),
            (0, 0, 0),
            "{class} at half the capacity: {s:?}"
        );
    }
    assert_eq!(seen["heartbeat"].served, 120, "{seen:?}");
    wait_idle(&envoy).await;
    assert_counters_match(&envoy, &seen).await;
}

/// 4 slots × 200 ms: a capacity of 20 requests/s, offered 200/s for 3 s.
async fn ten_times_capacity() {
    const LIMIT: u32 = 4;
    const SERVICE: Duration = Duration::from_millis(200);
    const COUNT: usize = 600;
    let fleet = Fleet::start(policy(LIMIT)).unwrap();
    let backend = fleet.backend("backend");
    backend.set_behaviour(Behaviour {
        delay: SERVICE,
        ..Behaviour::default()
    });
    let envoy = fleet.envoy(None).start().await.unwrap();
    let capacity = f64::from(LIMIT) / SERVICE.as_secs_f64();

    let started = Instant::now();
    let before = backend.served();
    let load = paced_load(&envoy, capacity * 10.0, COUNT);
    // The backend's work while the overload lasts: sampled when the last
    // request has been sent (the load's own duration), before the queues drain.
    let offered_for = Duration::from_secs_f64(COUNT as f64 / (capacity * 10.0));
    let (seen, served_while_offered) = tokio::join!(load, async {
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + offered_for)).await;
        (backend.served() - before, started.elapsed())
    });
    let (served_during, elapsed) = served_while_offered;

    let alarms = &seen["alarm"];
    assert_eq!(alarms.sent, 24);
    assert_eq!(
        (alarms.served, alarms.shed),
        (24, 0),
        "alarms at 10×: {alarms:?}"
    );
    // The backend stayed busy: every slot in use the whole time (less the
    // moments a slot spends passing from one stream to the next).
    let could_serve = capacity * elapsed.as_secs_f64();
    assert!(
        served_during as f64 >= 0.9 * could_serve,
        "the backend served {served_during} in {elapsed:?}, capacity {could_serve:.0}: {seen:?}"
    );
    // The lowest classes went first.
    let shed_rate = |class: &str| seen[class].shed_share();
    assert!(shed_rate("heartbeat") >= shed_rate("telemetry"), "{seen:?}");
    assert!(shed_rate("telemetry") >= shed_rate("command"), "{seen:?}");
    assert!(shed_rate("heartbeat") > 0.9, "{seen:?}");
    wait_idle(&envoy).await;
    assert_counters_match(&envoy, &seen).await;
}
