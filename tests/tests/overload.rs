//! Admission under overload in a real Envoy: a small concurrency limit, slow
//! backends, and bursts of alarms and heartbeats.

use std::time::{Duration, Instant};

use weir_testbed::fleet::{Fleet, policy_from_yaml};
use weir_testbed::wait::eventually;
use weir_testbed::{Behaviour, Envoy, http_client};

/// A one-service policy with a concurrency limit of 4: alarms may use all of
/// it, heartbeats half. `heartbeat_wait` is how long a heartbeat may queue.
fn policy(heartbeat_wait: &str) -> weir_policy::Policy {
    let yaml = format!(
        r#"
device_types: [sensor]
regions: {{ rtt_ms: {{ eu-west: {{ eu-west: 1 }} }} }}
clusters:
  - {{ name: slow, region: eu-west, endpoints: ["127.0.0.1:9"] }}
services:
  - name: ingest
    match: {{ path_prefix: / }}
    placements: [{{ cluster: slow }}]
priority:
  classes: [alarm, heartbeat]
  default: heartbeat
  rules:
    - {{ class: alarm, match: {{ path_prefix: /alarm }} }}
admission:
  concurrency_limit: 4
  retry_after: 1s
  classes:
    alarm: {{ max_wait: 5s }}
    heartbeat: {{ max_wait: {heartbeat_wait} }}
"#
    );
    policy_from_yaml("overload.yaml", &yaml).unwrap()
}

struct Answer {
    path: String,
    status: u16,
    shed_class: Option<String>,
    retry_after: Option<String>,
    took: Duration,
}

fn spawn_request(envoy: &Envoy, path: String) -> tokio::task::JoinHandle<Answer> {
    let url = envoy.url(&path);
    tokio::spawn(async move {
        let started = Instant::now();
        let response = http_client()
            .get(url)
            .header("x-region", "eu-west")
            .send()
            .await
            .expect("send");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Answer {
            shed_class: header("x-weir-shed"),
            retry_after: header("retry-after"),
            status: response.status().as_u16(),
            path,
            took: started.elapsed(),
        }
    })
}

async fn gauge(envoy: &Envoy, name: &str) -> u64 {
    envoy
        .stat(&format!("wasmcustom.{name}"))
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn wait_gauge(envoy: &Envoy, name: &str, value: u64) {
    eventually(
        &format!("{name} = {value}"),
        Duration::from_secs(10),
        || async move { (gauge(envoy, name).await == value).then_some(()) },
    )
    .await
    .unwrap();
}

/// Time a request may take beyond what its class allows: one 5 ms tick of the
/// queue plus scheduling on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_mixed_burst_heartbeats_are_shed_and_alarms_never() {
    const DELAY: Duration = Duration::from_millis(300);
    const HEARTBEAT_WAIT: Duration = Duration::from_millis(100);
    let fleet = Fleet::start(policy("100ms")).unwrap();
    fleet.backend("slow").set_behaviour(Behaviour {
        delay: DELAY,
        ..Behaviour::default()
    });
    let envoy = fleet.envoy(None).start().await.unwrap();

    let mut requests = Vec::new();
    for i in 0..24 {
        let path = if i % 3 == 0 {
            format!("/alarm/{i}")
        } else {
            format!("/heartbeat/{i}")
        };
        requests.push(spawn_request(&envoy, path));
    }
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.unwrap());
    }

    let (alarms, heartbeats): (Vec<&Answer>, Vec<&Answer>) =
        answers.iter().partition(|a| a.path.starts_with("/alarm"));
    assert_eq!(alarms.len(), 8);
    for alarm in &alarms {
        assert_eq!(alarm.status, 200, "alarm {} was not served", alarm.path);
    }
    let shed: Vec<&&Answer> = heartbeats.iter().filter(|a| a.status == 503).collect();
    assert!(!shed.is_empty(), "no heartbeat was shed under overload");
    for answer in &shed {
        assert_eq!(answer.shed_class.as_deref(), Some("heartbeat"));
        assert_eq!(answer.retry_after.as_deref(), Some("1"));
        assert!(
            answer.took <= HEARTBEAT_WAIT + SLACK,
            "{} was shed after {:?}",
            answer.path,
            answer.took
        );
    }
    for answer in heartbeats.iter().filter(|a| a.status == 200) {
        assert!(
            answer.took <= HEARTBEAT_WAIT + DELAY + SLACK,
            "{} took {:?}",
            answer.path,
            answer.took
        );
    }
    assert!(
        heartbeats
            .iter()
            .all(|a| a.status == 200 || a.status == 503)
    );

    envoy.filter_counters_settled().await.unwrap();
    assert_eq!(
        envoy
            .stat("wasmcustom.weir.class.alarm.shed")
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        envoy
            .stat("wasmcustom.weir.class.heartbeat.shed")
            .await
            .unwrap(),
        Some(shed.len() as u64)
    );
    // Nothing leaks: every slot and queue place is given back.
    wait_gauge(&envoy, "weir.in_flight", 0).await;
    wait_gauge(&envoy, "weir.queue.depth", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_are_released_highest_class_first() {
    let fleet = Fleet::start(policy("1500ms")).unwrap();
    let slow = fleet.backend("slow");
    slow.set_behaviour(Behaviour {
        delay: Duration::from_millis(300),
        ..Behaviour::default()
    });
    // One worker, so every request shares one queue and the order is the queue's.
    let envoy = fleet.envoy(None).concurrency(1).start().await.unwrap();

    let mut requests = Vec::new();
    for i in 0..4 {
        requests.push(spawn_request(&envoy, format!("/alarm/first-{i}")));
    }
    wait_gauge(&envoy, "weir.in_flight", 4).await;
    // Heartbeats queue first, then alarms: the alarms must still go first.
    for i in 0..4 {
        requests.push(spawn_request(&envoy, format!("/heartbeat/{i}")));
    }
    wait_gauge(&envoy, "weir.queue.depth", 4).await;
    for i in 0..4 {
        requests.push(spawn_request(&envoy, format!("/alarm/queued-{i}")));
    }
    wait_gauge(&envoy, "weir.queue.depth", 8).await;
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{} was not served", answer.path);
    }

    let arrivals = slow.arrivals();
    assert_eq!(arrivals.len(), 12, "{arrivals:?}");
    let last_queued_alarm = arrivals
        .iter()
        .rposition(|p| p.starts_with("/alarm/queued"))
        .unwrap();
    let first_heartbeat = arrivals
        .iter()
        .position(|p| p.starts_with("/heartbeat"))
        .unwrap();
    assert!(
        last_queued_alarm < first_heartbeat,
        "released out of priority order: {arrivals:?}"
    );
    envoy.filter_counters_settled().await.unwrap();
    assert_eq!(
        envoy
            .stat("wasmcustom.weir.class.heartbeat.released")
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        envoy
            .stat("wasmcustom.weir.class.alarm.released")
            .await
            .unwrap(),
        Some(4)
    );
}
