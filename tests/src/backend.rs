//! HTTP backends that answer with their own name.
//!
//! Each runs on its own thread and Tokio runtime, so a test's own runtime
//! (or lack of one) never starves it. A response carries `x-backend: <name>`
//! and a JSON body with the backend's name, the path and every request header
//! the backend received, so tests can see exactly what Envoy forwarded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Response header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-backend";

/// How a backend treats the requests it receives; it can be changed while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Added before every answer.
    pub delay: Duration,
    /// Share of requests answered with `fail_status`, in basis points (0..=10,000),
    /// spread evenly over the request sequence.
    pub fail_basis_points: u32,
    /// The status of failed requests.
    pub fail_status: u16,
    /// When set, `delay` and failures apply only to requests whose header
    /// (name, lower-case) has this value: a release broken for one segment.
    pub only_header: Option<(&'static str, &'static str)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            fail_basis_points: 0,
            fail_status: 503,
            only_header: None,
        }
    }
}

/// What a backend answers: its name and what it received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Echo {
    /// The backend's name.
    pub backend: String,
    /// The request's method.
    pub method: String,
    /// The request's path and query.
    pub path: String,
    /// Request headers as received (names lower-case; repeated names joined by `, `).
    pub headers: BTreeMap<String, String>,
}

struct Shared {
    name: String,
    behaviour: Mutex<Behaviour>,
    /// When set, at most this many requests are worked on at once; the rest
    /// wait their turn in arrival order (a fixed capacity: slots ÷ delay).
    slots: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    served: AtomicU64,
    /// Requests `only_header` selected (all, without it): failures are spread
    /// evenly over these.
    affected: AtomicU64,
    active: AtomicU64,
    log: Mutex<Vec<String>>,
    arrivals: Mutex<Vec<String>>,
}

/// Paths remembered in arrival order, for tests of ordering.
const ARRIVALS_KEPT: usize = 10_000;

/// A running backend; stopped when dropped.
pub struct Backend {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Requests kept in a backend's log for printing when a test fails.
const LOG_LINES_KEPT: usize = 200;

impl Backend {
    /// Starts a backend named `name` on a free loopback port.
    pub fn start(name: &str) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            behaviour: Mutex::new(Behaviour::default()),
            slots: Mutex::new(None),
            served: AtomicU64::new(0),
            affected: AtomicU64::new(0),
            active: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("adopt backend listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("backend server");
                });
            })?;
        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has answered.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// How many requests it holds right now, working on them or waiting for a slot.
    pub fn active(&self) -> u64 {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Works on at most `slots` requests at once from now on (`None`: no
    /// limit); requests beyond it wait in arrival order. With a delay this
    /// gives the backend a fixed capacity of `slots / delay` requests/s.
    /// A request whose client goes away while it waits leaves the line.
    pub fn set_capacity(&self, slots: Option<usize>) {
        *self.shared.slots.lock().expect("slots lock") =
            slots.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    }

    /// The paths of the first 10,000 requests, in the order they arrived.
    pub fn arrivals(&self) -> Vec<String> {
        self.shared.arrivals.lock().expect("arrivals lock").clone()
    }

    /// Changes how it answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().expect("behaviour lock") = behaviour;
    }
}

/// Counts a request as held by the backend until it is answered or dropped.
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(active: &'a AtomicU64) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(active)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let _held = Held::new(&shared.active);
    let slots = shared.slots.lock().expect("slots lock").clone();
    let _slot = match slots {
        Some(slots) => slots.acquire_owned().await.ok(),
        None => None,
    };
    let n = shared.served.fetch_add(1, Ordering::Relaxed) + 1;
    let behaviour = *shared.behaviour.lock().expect("behaviour lock");
    let mut headers = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined: &mut String| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let echo = Echo {
        backend: shared.name.clone(),
        method: request.method().to_string(),
        path: request
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string),
        headers,
    };
    {
        let mut arrivals = shared.arrivals.lock().expect("arrivals lock");
        if arrivals.len() < ARRIVALS_KEPT {
            arrivals.push(echo.path.clone());
        }
    }
    let affected = behaviour
        .only_header
        .is_none_or(|(name, value)| echo.headers.get(name).is_some_and(|v| v == value));
    let failed = affected && {
        let k = shared.affected.fetch_add(1, Ordering::Relaxed) + 1;
        fails(k, behaviour.fail_basis_points)
    };
    let status = if failed {
        StatusCode::from_u16(behaviour.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    {
        let mut log = shared.log.lock().expect("log lock");
        if log.len() >= LOG_LINES_KEPT {
            log.remove(0);
        }
        log.push(format!(
            "#{n} {} {} -> {}",
            echo.method,
            echo.path,
            status.as_u16()
        ));
    }
    if affected && !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let mut response = (status, axum::Json(echo)).into_response();
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert(BACKEND_HEADER, value);
    }
    response
}

/// Whether the `n`th request (1-based) fails when `basis_points` of all fail:
/// failures are spread evenly, so any window of requests sees about the same share.
fn fails(n: u64, basis_points: u32) -> bool {
    let bp = u64::from(basis_points.min(10_000));
    (n * bp) / 10_000 != ((n - 1) * bp) / 10_000
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self
                .shared
                .log
                .lock()
                .map(|l| l.join("\n"))
                .unwrap_or_default();
            eprintln!(
                "----- backend {} ({} served, last requests) -----\n{log}",
                self.shared.name,
                self.served()
            );
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fails;

    #[test]
    fn failures_are_the_requested_share_and_evenly_spread() {
        for bp in [0, 1, 250, 1_000, 3_333, 5_000, 10_000] {
            let failed = (1..=10_000).filter(|&n| fails(n, bp)).count() as u32;
            assert_eq!(failed, bp, "share for {bp} bp");
            let first_hundred = (1..=100).filter(|&n| fails(n, bp)).count() as u32;
            assert!(first_hundred.abs_diff(bp / 100) <= 1, "spread for {bp} bp");
        }
    }
}
