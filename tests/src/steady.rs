//! Steady device traffic through an Envoy, for the rollout and replica
//! tests: many devices at a fixed rate, counting what the canary got wrong
//! and what failed anywhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::canary::CANARY;
use crate::{Envoy, http_client};

/// Steady traffic from many devices at about `rate` requests/s until stopped
/// (and never longer than `limit`). Counts the canary's 5xx answers and when
/// the first one came.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    first_canary_error: Arc<std::sync::Mutex<Option<Instant>>>,
    sent: Arc<AtomicU64>,
    /// Requests that failed other than by the canary's own 5xx: no answer,
    /// or an error status from anywhere else.
    failed: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Traffic {
    pub fn start(envoy: &Envoy, rate: u64, limit: Duration) -> Self {
        Self::start_with(envoy, rate, limit, |_| Vec::new())
    }

    /// [`Traffic::start`] whose device number `d` (0–4,999, fixed per
    /// device) also sends the headers `headers(d)`: device types, regions,
    /// firmware versions.
    pub fn start_with(
        envoy: &Envoy,
        rate: u64,
        limit: Duration,
        headers: fn(u64) -> Vec<(&'static str, String)>,
    ) -> Self {
        const LANES: u64 = 10;
        let stop = Arc::new(AtomicBool::new(false));
        let first_canary_error = Arc::new(std::sync::Mutex::new(None));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        for lane in 0..LANES {
            let (stop, first, sent, failed, url) = (
                Arc::clone(&stop),
                Arc::clone(&first_canary_error),
                Arc::clone(&sent),
                Arc::clone(&failed),
                envoy.url("/v1/telemetry"),
            );
            tasks.spawn(async move {
                let client = http_client();
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 * LANES / rate));
                for i in 0u64.. {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
                        break;
                    }
                    let number = lane * 500 + i % 500;
                    let device = format!("device-{lane}-{}", i % 500);
                    let mut request = client.post(&url).header("x-device-id", device);
                    for (name, value) in headers(number) {
                        request = request.header(name, value);
                    }
                    let Ok(response) = request.send().await else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    let canary = response
                        .headers()
                        .get("x-backend")
                        .is_some_and(|b| b == CANARY);
                    if canary && response.status().is_server_error() {
                        first
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert_with(Instant::now);
                    } else if !response.status().is_success() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Self {
            stop,
            first_canary_error,
            sent,
            failed,
            tasks,
        }
    }

    /// Requests that failed so far, other than the canary's 5xx.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// When the canary first answered 5xx, if it did.
    pub fn first_canary_error(&self) -> Option<Instant> {
        *self
            .first_canary_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the canary's first 5xx, at most `deadline`.
    pub async fn wait_first_canary_error(&self, deadline: Duration) -> anyhow::Result<Instant> {
        crate::wait::eventually("the canary's first error", deadline, || async {
            self.first_canary_error()
        })
        .await
    }

    /// Stops sending; the number of requests answered.
    pub async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.sent.load(Ordering::Relaxed)
    }
}
