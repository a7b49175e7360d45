//! Whether `weir` works, for its orchestrator's probes.
//!
//! - **Alive** (`GET /healthz`) while the control loop turns and no panic left
//!   the serving state half-changed. Otherwise weir cannot recover by itself:
//!   the orchestrator should restart it (Envoys keep their last configuration
//!   meanwhile, and the state saved before the fault is resumed).
//! - **Ready** (`GET /readyz`) while it is alive and can also keep what it
//!   decides: the controller's state is being saved, and a replica is in touch
//!   with etcd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Panics in this process, counted by [`install_panic_hook`].
static PANICS: AtomicU64 = AtomicU64::new(0);

/// The shortest time without a turn of the control loop that counts as stalled.
const MIN_STALL: Duration = Duration::from_secs(5);

/// Counts and logs every panic (any thread, any task), then reports it as
/// the hook before did.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%info, "panic (weir_panics_total counts them; GET /healthz says whether weir recovered)");
        previous(info);
    }));
}

/// Panics since the process started.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The control loop's heartbeat.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds after `start` of the last turn.
    last_ms: AtomicU64,
    stall: Duration,
}

impl Heartbeat {
    /// A heartbeat of a loop turning every `interval`: stalled after ten
    /// intervals without a turn, and never sooner than 5 s.
    pub fn new(interval: Duration) -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            stall: (interval * 10).max(MIN_STALL),
        }
    }

    /// The loop turned.
    pub fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last turn, if that is long enough to call the loop stalled.
    pub fn stalled(&self) -> Option<Duration> {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let since = self.start.elapsed().saturating_sub(last);
        (since > self.stall).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stalled_after_ten_intervals_and_at_least_five_seconds() {
        let heartbeat = Heartbeat::new(Duration::from_millis(250));
        assert_eq!(heartbeat.stall, MIN_STALL);
        assert_eq!(
            Heartbeat::new(Duration::from_secs(1)).stall,
            Duration::from_secs(10)
        );
        heartbeat.beat();
        assert!(heartbeat.stalled().is_none());
        // A heartbeat whose last turn was long ago.
        let old = Heartbeat {
            start: Instant::now() - Duration::from_secs(60),
            last_ms: AtomicU64::new(0),
            stall: MIN_STALL,
        };
        assert!(old.stalled().is_some_and(|d| d >= Duration::from_secs(60)));
        old.beat();
        assert!(old.stalled().is_none());
    }

    #[test]
    fn panics_are_counted_by_the_hook() {
        install_panic_hook();
        let before = panics();
        let _ = std::thread::spawn(|| panic!("injected")).join();
        assert!(panics() > before);
    }
}
