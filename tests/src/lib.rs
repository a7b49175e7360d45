//! Weir's test bed: real processes on loopback, started on ports picked at
//! run time, watched through their own APIs, and stopped when dropped.
//!
//! - [`envoy`]: an Envoy built from a generated configuration, ready when its
//!   admin API says so;
//! - [`browser`]: headless Chromium driven through ChromeDriver, for the
//!   dashboard;
//! - [`etcd`]: real etcd on loopback, one member or a cluster, whose members
//!   can be killed and restarted;
//! - [`backend`]: HTTP backends that answer with their own name and the
//!   request they saw, and can be told to delay or fail a share of requests;
//! - [`canary`]: a one-service canary fleet and the weight Envoy runs;
//! - [`certs`]: a CA and certificates made at test time, as PEM files;
//! - [`disk`]: a small tmpfs that fills up for real;
//! - [`fleet`]: a backend per cluster of a policy, and an Envoy running the
//!   filter with that policy;
//! - [`static_mode`]: `envoy/static.yaml` pointed at a test's backends;
//! - [`weir`]: `weir serve` on run-time ports, and `envoy/bootstrap.yaml` pointed at it;
//! - [`served`]: backends, `weir serve` on a policy file and an Envoy from
//!   `envoy/bootstrap.yaml` alone;
//! - [`procfs`]: what the benchmarks read from `/proc` (CPU time, memory,
//!   load average) and a description of the machine;
//! - [`results`]: the benchmarks' sections of `bench/RESULTS.md`;
//! - [`load`]: steady request load, counted, while a test reconfigures;
//! - [`traffic`]: open-loop device traffic of several classes, on schedule,
//!   and what came back;
//! - [`stats`]: percentiles of a sample of durations, medians of rates;
//! - [`otel_apps`]: applications reporting request durations through the
//!   OpenTelemetry SDK;
//! - [`process`]: a supervised child process whose log is printed if the
//!   test fails and which is killed however the test ends;
//! - [`prometheus`]: a real Prometheus scraping `weir`, with the shipped
//!   alert rules loaded, queried through its HTTP API;
//! - [`registry`]: an image registry on loopback;
//! - [`slow_tls`]: a TLS front whose handshakes take as long as a test says.
//!
//! End-to-end tests live in `tests/tests/`; the demo (`examples/demo`) and the
//! benchmarks use the same pieces.

pub mod backend;
pub mod browser;
pub mod canary;
pub mod certs;
pub mod disk;
pub mod envoy;
pub mod etcd;
pub mod fleet;
pub mod load;
pub mod otel_apps;
pub mod paths;
pub mod process;
pub mod procfs;
pub mod prometheus;
pub mod registry;
pub mod results;
pub mod served;
pub mod slow_tls;
pub mod static_mode;
pub mod stats;
pub mod steady;
pub mod traffic;
pub mod wait;
pub mod weir;

pub use backend::{Backend, Behaviour};
pub use envoy::{CircuitBreaker, Envoy, EnvoyBuilder};

/// A loopback port nobody listens on right now, for a process that cannot
/// be told to pick its own and say which (etcd, Prometheus).
pub fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// An HTTP client for loopback traffic that ignores any proxy settings of the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .expect("build HTTP client")
}
