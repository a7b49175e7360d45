//! Steady request load through Envoy while a test reconfigures something,
//! counted so the test can make sure requests flow around each change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::http_client;
use crate::wait::eventually;

/// How long [`SteadyLoad::more`] waits for its requests before failing.
const MORE_DEADLINE: Duration = Duration::from_secs(20);

/// Workers sending POSTs one after another until stopped; each request has a
/// device id of its own (`{worker}-{i}`).
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    workers: JoinSet<Vec<u16>>,
}

impl SteadyLoad {
    /// Starts `workers` loops of at most `max_per_worker` requests each to
    /// `url`, every request carrying `headers`.
    pub fn start(
        url: String,
        headers: &[(&str, &str)],
        workers: usize,
        max_per_worker: usize,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let headers: Arc<Vec<(String, String)>> = Arc::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let mut set = JoinSet::new();
        for worker in 0..workers {
            let (stop, completed, url, headers) = (
                Arc::clone(&stop),
                Arc::clone(&completed),
                url.clone(),
                Arc::clone(&headers),
            );
            set.spawn(async move {
                let client = http_client();
                let mut statuses = Vec::new();
                for i in 0..max_per_worker {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut request = client
                        .post(&url)
                        .header("x-device-id", format!("{worker}-{i}"));
                    for (name, value) in headers.iter() {
                        request = request.header(name, value);
                    }
                    let sent = request.send().await;
                    statuses.push(sent.map(|r| r.status().as_u16()).unwrap_or(0));
                    completed.fetch_add(1, Ordering::Relaxed);
                }
                statuses
            });
        }
        Self {
            stop,
            completed,
            workers: set,
        }
    }

    /// Waits until `n` more requests have completed (whatever their status).
    pub async fn more(&self, n: usize) -> anyhow::Result<()> {
        let target = self.completed.load(Ordering::Relaxed) + n;
        eventually("more requests through Envoy", MORE_DEADLINE, || {
            let done = self.completed.load(Ordering::Relaxed) >= target;
            async move { done.then_some(()) }
        })
        .await
    }

    /// Stops the workers and returns every response's status (0: no response).
    pub async fn finish(mut self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        let mut statuses = Vec::new();
        while let Some(done) = self.workers.join_next().await {
            statuses.extend(done.expect("a load worker panicked"));
        }
        statuses
    }
}

/// How many of `statuses` are not 200.
pub fn failures(statuses: &[u16]) -> usize {
    statuses.iter().filter(|&&s| s != 200).count()
}
