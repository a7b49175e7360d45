//! The demo's devices and their traffic: steady traffic at a fixed rate for
//! the whole run, and a burst of reconnecting devices for the overload act.
//! Both count what came back, per class and per route.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use weir_policy::headers::{CLUSTER, PRIORITY, SHED};
use weir_testbed::backend::{BACKEND_HEADER, Echo};
use weir_testbed::http_client;

/// Regions devices report from, with the short form used in device ids.
const REGIONS: [(&str, &str); 3] = [("eu-west", "eu"), ("us-east", "us"), ("ap-south", "ap")];

/// The policy's priority classes, highest first.
pub(crate) const CLASSES: [&str; 4] = ["alarm", "command", "telemetry", "heartbeat"];

/// How many devices send steady traffic.
const DEVICES: usize = 1_500;

/// Every this many steady requests, one also carries `x-weir-*` headers a
/// client must never be able to set.
const SPOOF_EVERY: u64 = 25;

/// The kinds of devices, and what each sends: twenty messages in a row, so
/// that each type has its own mix of priority classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeviceType {
    /// Smart meters: mostly readings, some heartbeats, the odd tamper alarm.
    Meter,
    /// Cameras: motion events, heartbeats, and intrusion alarms.
    Camera,
    /// Gateways: mostly heartbeats and acknowledged commands.
    Gateway,
}

impl DeviceType {
    fn name(self) -> &'static str {
        match self {
            Self::Meter => "meter",
            Self::Camera => "camera",
            Self::Gateway => "gateway",
        }
    }

    /// Six meters, two cameras and two gateways in every ten devices.
    fn of(device: usize) -> Self {
        match (device / REGIONS.len()) % 10 {
            0..=5 => Self::Meter,
            6 | 7 => Self::Camera,
            _ => Self::Gateway,
        }
    }

    /// The class of the `k`th message (of every twenty).
    fn message(self, k: u64) -> &'static str {
        let slot = k % 20;
        match self {
            // 5 % alarms, 70 % telemetry, 25 % heartbeats.
            Self::Meter => match slot {
                0 => "alarm",
                1..=14 => "telemetry",
                _ => "heartbeat",
            },
            // 15 % alarms, 5 % commands, 50 % telemetry, 30 % heartbeats.
            Self::Camera => match slot {
                0..=2 => "alarm",
                3 => "command",
                4..=13 => "telemetry",
                _ => "heartbeat",
            },
            // 5 % alarms, 30 % commands, 15 % telemetry, 50 % heartbeats.
            Self::Gateway => match slot {
                0 => "alarm",
                1..=6 => "command",
                7..=9 => "telemetry",
                _ => "heartbeat",
            },
        }
    }
}

/// The request path (and method) of a message of `class`.
fn request_line(class: &str) -> (reqwest::Method, &'static str) {
    match class {
        "alarm" => (reqwest::Method::POST, "/v1/alarms"),
        "command" => (reqwest::Method::POST, "/v1/commands/ack"),
        "heartbeat" => (reqwest::Method::PUT, "/v1/heartbeat"),
        _ => (reqwest::Method::POST, "/v1/telemetry"),
    }
}

/// One device.
#[derive(Clone, Debug)]
struct Device {
    id: String,
    region: &'static str,
    kind: DeviceType,
}

impl Device {
    fn new(n: usize) -> Self {
        let (region, short) = REGIONS[n % REGIONS.len()];
        let kind = DeviceType::of(n);
        Self {
            id: format!("{}-{short}-{n:04}", kind.name()),
            region,
            kind,
        }
    }
}

/// What happened to one class's requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClassCounts {
    pub(crate) sent: u64,
    /// Answered 200 by a backend.
    pub(crate) served: u64,
    /// Answered 503 by the filter itself (`x-weir-shed`).
    pub(crate) shed: u64,
    /// Any other answer, or none: a backend's error, a timeout.
    pub(crate) failed: u64,
    latencies: Vec<Duration>,
}

impl ClassCounts {
    /// The 99th percentile of the answered requests' latency, in ms.
    pub(crate) fn p99_ms(&self) -> f64 {
        weir_testbed::stats::Summary::of(&self.latencies).map_or(0.0, |s| s.p99.as_secs_f64() * 1e3)
    }
}

/// What happened to a run of traffic.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub(crate) by_class: BTreeMap<&'static str, ClassCounts>,
    /// (client region, backend that answered) → requests.
    pub(crate) by_route: BTreeMap<(&'static str, String), u64>,
    /// Requests that tried to set `x-weir-*` headers.
    pub(crate) spoofed: u64,
    /// Of those, how many reached a backend with the client's value.
    pub(crate) spoof_leaks: u64,
}

impl Tally {
    /// All requests sent.
    pub(crate) fn sent(&self) -> u64 {
        self.by_class.values().map(|c| c.sent).sum()
    }

    /// A class's counts (zero if it sent nothing).
    pub(crate) fn class(&self, class: &str) -> ClassCounts {
        self.by_class.get(class).cloned().unwrap_or_default()
    }
}

/// A tally shared by the tasks that send traffic.
#[derive(Clone, Default)]
pub(crate) struct SharedTally(Arc<Mutex<Tally>>);

impl SharedTally {
    /// A copy of the counts so far.
    pub(crate) fn snapshot(&self) -> Tally {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Sends one message through Envoy and counts what came back.
async fn send(
    client: &reqwest::Client,
    base: &str,
    device: &Device,
    class: &'static str,
    spoof: bool,
    tally: &SharedTally,
    keep_latency: bool,
) {
    let (method, path) = request_line(class);
    let mut request = client
        .request(method, format!("{base}{path}"))
        .header("x-device-id", &device.id)
        .header("x-region", device.region)
        .header("x-device-type", device.kind.name())
        .timeout(Duration::from_secs(10));
    if spoof {
        // A device trying to jump the queue and pick its own cluster.
        let cluster = if device.region == "us-east" {
            "ingest-eu"
        } else {
            "ingest-us"
        };
        request = request.header(CLUSTER, cluster).header(PRIORITY, "alarm");
    }
    let started = Instant::now();
    let response = request.send().await;
    let elapsed = started.elapsed();
    let (status, shed, backend) = match &response {
        Ok(r) => (
            r.status().as_u16(),
            r.headers().contains_key(SHED),
            r.headers()
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(_) => (0, false, None),
    };
    // A spoofed request's backend shows which class the filter really gave it.
    let leaked = match response {
        Ok(r) if spoof && status == 200 => r
            .json::<Echo>()
            .await
            .ok()
            .and_then(|echo| echo.headers.get(PRIORITY).cloned())
            .is_some_and(|seen| seen != class),
        _ => false,
    };
    tally.record(|t| {
        let counts = t.by_class.entry(class).or_default();
        counts.sent += 1;
        match status {
            200 => counts.served += 1,
            503 if shed => counts.shed += 1,
            _ => counts.failed += 1,
        }
        if keep_latency && status != 0 {
            counts.latencies.push(elapsed);
        }
        if let (200, Some(backend)) = (status, backend) {
            *t.by_route.entry((device.region, backend)).or_default() += 1;
        }
        if spoof {
            t.spoofed += 1;
            t.spoof_leaks += u64::from(leaked);
        }
    });
}

/// Steady traffic from the whole fleet at a fixed rate, until dropped.
pub(crate) struct Steady {
    tally: SharedTally,
    _tasks: JoinSet<()>,
}

impl Steady {
    /// Starts `rate` requests per second through the Envoy at `base`, over
    /// `lanes` connections (each sends its next request when its turn comes,
    /// or as soon as its previous one is answered if that is later).
    pub(crate) fn start(base: &str, rate: u64, lanes: usize) -> Self {
        let tally = SharedTally::default();
        let mut tasks = JoinSet::new();
        let period = Duration::from_micros(1_000_000 * lanes as u64 / rate.max(1));
        let counter = Arc::new(AtomicU64::new(0));
        for lane in 0..lanes {
            let (base, tally, counter) = (base.to_owned(), tally.clone(), Arc::clone(&counter));
            tasks.spawn(async move {
                let client = http_client();
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Lanes start spread over one period, not all at once.
                tokio::time::sleep(period * lane as u32 / lanes as u32).await;
                loop {
                    tick.tick().await;
                    let k = counter.fetch_add(1, Ordering::Relaxed);
                    // Walk the fleet with a stride, so that every device sends now and then.
                    let device = Device::new((k as usize * 7) % DEVICES);
                    let class = device.kind.message(k / DEVICES as u64 + k);
                    let spoof = k % SPOOF_EVERY == SPOOF_EVERY - 1;
                    send(&client, &base, &device, class, spoof, &tally, false).await;
                }
            });
        }
        Self {
            tally,
            _tasks: tasks,
        }
    }

    /// The counts so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally.snapshot()
    }

    /// The live counts, for a task that reports them.
    pub(crate) fn shared(&self) -> SharedTally {
        self.tally.clone()
    }
}

/// A reconnect storm: `clients` devices at once, each sending back to back
/// for `duration` — mostly heartbeats, queued telemetry and some alarms.
pub(crate) async fn storm(base: &str, clients: usize, duration: Duration) -> Tally {
    let tally = SharedTally::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (base, tally, stop) = (base.to_owned(), tally.clone(), Arc::clone(&stop));
        tasks.spawn(async move {
            let client = http_client();
            let device = Device::new(DEVICES + c);
            for k in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // 10 % alarms, 25 % telemetry, 65 % heartbeats.
                let class = match (k + c as u64) % 20 {
                    0 | 1 => "alarm",
                    2..=6 => "telemetry",
                    _ => "heartbeat",
                };
                send(&client, &base, &device, class, false, &tally, true).await;
            }
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    tally.snapshot()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_has_every_device_type() {
        let devices: Vec<Device> = (0..DEVICES).map(Device::new).collect();
        for (region, _) in REGIONS {
            for kind in [DeviceType::Meter, DeviceType::Camera, DeviceType::Gateway] {
                assert!(
                    devices.iter().any(|d| d.region == region && d.kind == kind),
                    "{region} has {kind:?}"
                );
            }
        }
    }

    #[test]
    fn each_device_type_sends_its_own_mix() {
        let mix = |kind: DeviceType| {
            let mut counts = BTreeMap::new();
            for k in 0..20 {
                *counts.entry(kind.message(k)).or_insert(0) += 1;
            }
            counts
        };
        assert_eq!(mix(DeviceType::Meter)["telemetry"], 14);
        assert_eq!(mix(DeviceType::Camera)["alarm"], 3);
        assert_eq!(mix(DeviceType::Gateway)["heartbeat"], 10);
        for kind in [DeviceType::Meter, DeviceType::Camera, DeviceType::Gateway] {
            assert!(mix(kind).contains_key("alarm"));
        }
    }
}
