//! The demo's device traffic: who sends what, and what came back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weir_testbed::backend::Echo;
use weir_testbed::{Envoy, http_client};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
const DEVICE_TYPES: [&str; 3] = ["sensor", "gateway", "vehicle"];
const CLASSES: [&str; 4] = ["alarm", "command", "telemetry", "heartbeat"];

/// The order classes are shown in: the policy's, highest first.
pub(crate) fn rank(class: &str) -> usize {
    CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(CLASSES.len())
}

/// One request to send.
#[derive(Clone)]
struct Planned {
    device: String,
    region: &'static str,
    device_type: &'static str,
    path: &'static str,
    class: &'static str,
    spoof: bool,
}

/// A list of requests.
pub(crate) struct Mix(Vec<Planned>);

impl Mix {
    /// Mostly telemetry and heartbeats, some commands and alarms, from
    /// `devices` devices spread over regions and types.
    pub(crate) fn steady(requests: usize, devices: usize) -> Self {
        Self(
            (0..requests)
                .map(|n| {
                    let d = n % devices;
                    let (path, class) = match n % 20 {
                        0 => ("/v1/alarms", "alarm"),
                        1 | 2 => ("/v1/commands/ack", "command"),
                        3..=7 => ("/v1/heartbeat", "heartbeat"),
                        _ => ("/v1/telemetry", "telemetry"),
                    };
                    Planned {
                        device: format!("device-{d:05}"),
                        region: REGIONS[d % REGIONS.len()],
                        device_type: DEVICE_TYPES[(d / REGIONS.len()) % DEVICE_TYPES.len()],
                        path,
                        class,
                        spoof: n % 10 == 9,
                    }
                })
                .collect(),
        )
    }

    /// A burst of one alarm for every three heartbeats.
    pub(crate) fn overload(requests: usize) -> Self {
        Self(
            (0..requests)
                .map(|n| {
                    let (path, class) = if n % 4 == 0 {
                        ("/v1/alarms", "alarm")
                    } else {
                        ("/v1/heartbeat", "heartbeat")
                    };
                    Planned {
                        device: format!("device-{n:05}"),
                        region: REGIONS[n % REGIONS.len()],
                        device_type: "sensor",
                        path,
                        class,
                        spoof: false,
                    }
                })
                .collect(),
        )
    }
}

/// What happened to one class.
#[derive(Default)]
pub(crate) struct ClassTally {
    pub(crate) sent: usize,
    pub(crate) served: usize,
    pub(crate) shed: usize,
    pub(crate) other: usize,
    latencies: Vec<Duration>,
}

impl ClassTally {
    pub(crate) fn p99_ms(&self) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 * 0.99).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// What happened to a run of traffic.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) by_region_cluster: BTreeMap<(String, String), usize>,
    pub(crate) by_class: BTreeMap<String, ClassTally>,
    /// eu-west ingest traffic: device → the clusters it reached.
    eu_ingest: BTreeMap<String, BTreeSet<String>>,
    pub(crate) spoofed: usize,
    pub(crate) spoof_leaks: usize,
}

impl Tally {
    pub(crate) fn eu_ingest_devices(&self) -> BTreeSet<&String> {
        self.eu_ingest.keys().collect()
    }

    pub(crate) fn canary_devices(&self, canary: &str) -> BTreeSet<String> {
        self.eu_ingest
            .iter()
            .filter(|(_, c)| c.contains(canary))
            .map(|(d, _)| d.clone())
            .collect()
    }

    pub(crate) fn saw(&self, device: &str) -> bool {
        self.eu_ingest.contains_key(device)
    }

    pub(crate) fn failed(&self) -> usize {
        self.by_class.values().map(|c| c.shed + c.other).sum()
    }

    fn merge(&mut self, other: Tally) {
        for (key, n) in other.by_region_cluster {
            *self.by_region_cluster.entry(key).or_default() += n;
        }
        for (class, c) in other.by_class {
            let mine = self.by_class.entry(class).or_default();
            mine.sent += c.sent;
            mine.served += c.served;
            mine.shed += c.shed;
            mine.other += c.other;
            mine.latencies.extend(c.latencies);
        }
        for (device, clusters) in other.eu_ingest {
            self.eu_ingest.entry(device).or_default().extend(clusters);
        }
        self.spoofed += other.spoofed;
        self.spoof_leaks += other.spoof_leaks;
    }
}

/// Sends the mix through Envoy, `parallel` requests at a time.
pub(crate) async fn run(envoy: &Envoy, mix: Mix, parallel: usize) -> Tally {
    run_at(&envoy.url(""), mix, parallel).await
}

/// Sends the mix to the Envoy listening at `base` (a URL without a path).
pub(crate) async fn run_at(base: &str, mix: Mix, parallel: usize) -> Tally {
    let base = base.to_owned();
    let mut lanes: Vec<Vec<Planned>> = vec![Vec::new(); parallel];
    for (n, planned) in mix.0.into_iter().enumerate() {
        lanes[n % parallel].push(planned);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes {
        let base = base.clone();
        tasks.spawn(async move {
            let client = http_client();
            let mut tally = Tally::default();
            for p in lane {
                let mut request = client
                    .post(format!("{base}{}", p.path))
                    .header("x-device-id", &p.device)
                    .header("x-region", p.region)
                    .header("x-device-type", p.device_type)
                    .timeout(Duration::from_secs(10));
                if p.spoof {
                    tally.spoofed += 1;
                    request = request
                        .header("x-weir-cluster", "commands-us")
                        .header("x-weir-priority", "alarm");
                }
                let class = tally.by_class.entry(p.class.to_owned()).or_default();
                class.sent += 1;
                let started = Instant::now();
                let Ok(response) = request.send().await else {
                    class.other += 1;
                    continue;
                };
                class.latencies.push(started.elapsed());
                match response.status().as_u16() {
                    200 => class.served += 1,
                    503 if response.headers().contains_key("x-weir-shed") => {
                        class.shed += 1;
                        continue;
                    }
                    _ => {
                        class.other += 1;
                        continue;
                    }
                }
                let Ok(echo) = response.json::<Echo>().await else {
                    continue;
                };
                if p.spoof
                    && echo
                        .headers
                        .get("x-weir-priority")
                        .is_some_and(|c| c != p.class)
                {
                    tally.spoof_leaks += 1;
                }
                if p.region == "eu-west" && echo.backend.starts_with("ingest-eu") {
                    tally
                        .eu_ingest
                        .entry(p.device.clone())
                        .or_default()
                        .insert(echo.backend.clone());
                }
                *tally
                    .by_region_cluster
                    .entry((p.region.to_owned(), echo.backend))
                    .or_default() += 1;
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(Ok(part)) = tasks.join_next().await {
        total.merge(part);
    }
    total
}
