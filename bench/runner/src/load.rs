//! The traffic: the same request shape for every variant, sent open-loop at a
//! fixed rate (a request leaves on schedule whether or not earlier ones have
//! been answered), or closed-loop with fixed concurrency for the saturation
//! and memory runs.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// The path every benchmark request goes to.
pub(crate) const PATH: &str = "/v1/telemetry";

/// A small telemetry reading, the body of every request.
pub(crate) const BODY: &str = r#"{"temperature_c":21.5,"battery_pct":87}"#;

/// Longest a single request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the load: loopback only, no proxy, a bounded time per request.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// The device id of the `n`th device.
pub(crate) fn device_id(n: u64) -> String {
    format!("sensor-{n:06}")
}

/// Sends one request from `device`; returns whether it was answered 200.
async fn send(client: &reqwest::Client, url: &str, device: &str) -> bool {
    let response = client
        .post(url)
        .header("x-region", "eu-west")
        .header("x-device-type", "sensor")
        .header("x-device-id", device)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await;
    match response {
        Ok(response) => {
            let ok = response.status() == reqwest::StatusCode::OK;
            // Read the whole answer: the latency is the full exchange.
            response.bytes().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

/// What one run saw.
#[derive(Debug, Default)]
pub(crate) struct LoadResult {
    /// Latency of every answered request, from sending it to the end of the answer.
    pub(crate) latencies: Vec<Duration>,
    /// Requests that failed or were not answered 200.
    pub(crate) errors: u64,
    /// Wall time from the first request sent to the last answer.
    pub(crate) elapsed: Duration,
    /// How late the generator was at its latest, against its schedule (open
    /// loop only).
    pub(crate) max_lag: Duration,
}

impl LoadResult {
    /// Requests sent.
    pub(crate) fn sent(&self) -> u64 {
        self.latencies.len() as u64 + self.errors
    }
}

/// Sends `count` requests at `rate` per second, the `i`th from device
/// `first_device + i % devices`.
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    rate: u32,
    count: u64,
    devices: u64,
    first_device: u64,
) -> LoadResult {
    let period = Duration::from_secs(1) / rate.max(1);
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let mut max_lag = Duration::ZERO;
    for i in 0..count {
        let due = start + period * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (client, url) = (client.clone(), url.to_owned());
        let device = device_id(first_device + i % devices.max(1));
        tasks.spawn(async move {
            let sent = Instant::now();
            send(&client, &url, &device).await.then(|| sent.elapsed())
        });
    }
    let mut result = LoadResult {
        max_lag,
        ..LoadResult::default()
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some(latency)) => result.latencies.push(latency),
            _ => result.errors += 1,
        }
    }
    result.elapsed = start.elapsed();
    result
}

/// Keeps `lanes` requests in flight for `duration`: each lane sends its next
/// request as soon as its last one is answered, the `i`th of a lane from
/// device `lane + i × lanes` (modulo `devices`).
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    lanes: u64,
    duration: Duration,
    devices: u64,
) -> LoadResult {
    let lanes = lanes.max(1);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for lane in 0..lanes {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.spawn(async move {
            let mut seen = LoadResult::default();
            let mut n = lane;
            while Instant::now() < deadline {
                let sent = Instant::now();
                if send(&client, &url, &device_id(n % devices.max(1))).await {
                    seen.latencies.push(sent.elapsed());
                } else {
                    seen.errors += 1;
                }
                n += lanes;
            }
            seen
        });
    }
    let mut result = LoadResult::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(lane) => {
                result.latencies.extend(lane.latencies);
                result.errors += lane.errors;
            }
            Err(_) => result.errors += 1,
        }
    }
    result.elapsed = start.elapsed();
    result
}

/// Sends one request from each device in `devices`, `in_flight` at a time;
/// returns how many failed.
pub(crate) async fn each_device_once(
    client: &reqwest::Client,
    url: &str,
    devices: std::ops::Range<u64>,
    in_flight: u64,
) -> anyhow::Result<u64> {
    let in_flight = in_flight.max(1);
    let mut tasks = JoinSet::new();
    for lane in 0..in_flight {
        let (client, url) = (client.clone(), url.to_owned());
        let lane_devices = devices.clone().skip(usize::try_from(lane).unwrap_or(0));
        tasks.spawn(async move {
            let mut failed = 0;
            for n in lane_devices.step_by(usize::try_from(in_flight).unwrap_or(1)) {
                if !send(&client, &url, &device_id(n)).await {
                    failed += 1;
                }
            }
            failed
        });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        failed += done?;
    }
    Ok(failed)
}
