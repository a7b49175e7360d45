//! Waiting on a condition by polling it, with a deadline: never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to pause between two polls of a condition.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it yields `Some`, or fails once `deadline` has passed.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= give_up {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
