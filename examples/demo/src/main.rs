//! Weir's demo: Envoy running `envoy/static.yaml` with the filter, three named
//! backends on loopback, a burst of device traffic (some of it trying to
//! spoof Weir's internal headers), and a summary of what happened.
//!
//! Run it with `make demo`, which builds and installs what is missing first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_testbed::backend::Echo;
use weir_testbed::{Backend, Envoy, http_client, static_mode};

/// Requests in the burst, and how many are in flight at once.
const REQUESTS: usize = 600;
const CONCURRENCY: usize = 24;
/// Every `SPOOF_EVERY`th request carries client-set `x-weir-*` headers.
const SPOOF_EVERY: usize = 5;
const PATHS: [&str; 4] = [
    "/v1/alarms",
    "/v1/commands",
    "/v1/telemetry",
    "/v1/heartbeat",
];

#[derive(Default)]
struct Tally {
    by_backend: BTreeMap<String, usize>,
    by_status: BTreeMap<u16, usize>,
    stamped: usize,
    spoofed_sent: usize,
    spoofed_leaked: usize,
    latencies: Vec<Duration>,
    errors: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backends = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|name| Backend::start(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    println!("weir demo: backends {}", describe(&backends));

    let envoy = Envoy::start(&static_mode::static_bootstrap(&addrs)?, 2).await?;
    println!(
        "weir demo: Envoy ready (envoy/static.yaml, filter dist/weir_filter.wasm), ingress {}, admin http://{}",
        envoy.url(""),
        envoy.admin_addr()
    );
    println!(
        "weir demo: sending {REQUESTS} requests, {CONCURRENCY} at a time, every {SPOOF_EVERY}th spoofing x-weir-* headers\n"
    );

    let tally = burst(&envoy).await;
    report(&tally, &backends);
    if tally.spoofed_leaked > 0 || tally.errors > 0 {
        anyhow::bail!("the demo saw failures: see above");
    }
    Ok(())
}

async fn burst(envoy: &Envoy) -> Tally {
    let client = http_client();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let client = client.clone();
        let base = envoy.url("");
        workers.spawn(async move {
            let mut tally = Tally::default();
            for n in (worker..REQUESTS).step_by(CONCURRENCY) {
                let spoof = n % SPOOF_EVERY == 0;
                let mut request = client
                    .post(format!("{base}{}", PATHS[n % PATHS.len()]))
                    .header("x-device-id", format!("device-{:04}", n % 97))
                    .timeout(Duration::from_secs(5));
                if spoof {
                    tally.spoofed_sent += 1;
                    request = request
                        .header("x-weir-cluster", "backends")
                        .header("x-weir-priority", "alarm");
                }
                let started = Instant::now();
                match request.send().await {
                    Err(_) => tally.errors += 1,
                    Ok(response) => {
                        tally.latencies.push(started.elapsed());
                        *tally
                            .by_status
                            .entry(response.status().as_u16())
                            .or_default() += 1;
                        if response.headers().contains_key("x-weir-filter") {
                            tally.stamped += 1;
                        }
                        match response.json::<Echo>().await {
                            Ok(echo) => {
                                if echo.headers.keys().any(|h| h.starts_with("x-weir-")) {
                                    tally.spoofed_leaked += 1;
                                }
                                *tally.by_backend.entry(echo.backend).or_default() += 1;
                            }
                            Err(_) => tally.errors += 1,
                        }
                    }
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(Ok(part)) = workers.join_next().await {
        for (backend, count) in part.by_backend {
            *total.by_backend.entry(backend).or_default() += count;
        }
        for (status, count) in part.by_status {
            *total.by_status.entry(status).or_default() += count;
        }
        total.stamped += part.stamped;
        total.spoofed_sent += part.spoofed_sent;
        total.spoofed_leaked += part.spoofed_leaked;
        total.errors += part.errors;
        total.latencies.extend(part.latencies);
    }
    total
}

fn report(tally: &Tally, backends: &[Backend]) {
    let answered: usize = tally.by_backend.values().sum();
    println!("{:<10} {:>8} {:>7}", "backend", "requests", "share");
    for backend in backends {
        let count = tally.by_backend.get(backend.name()).copied().unwrap_or(0);
        let share = 100.0 * count as f64 / answered.max(1) as f64;
        println!("{:<10} {:>8} {:>6.1}%", backend.name(), count, share);
    }
    let statuses: Vec<String> = tally
        .by_status
        .iter()
        .map(|(status, count)| format!("{status}×{count}"))
        .collect();
    let mut latencies = tally.latencies.clone();
    latencies.sort();
    println!();
    println!("statuses:                  {}", statuses.join(", "));
    println!(
        "stamped by the filter:     {}/{}",
        tally.stamped,
        latencies.len()
    );
    println!(
        "spoofed x-weir-* requests: {} sent, {} reached a backend with them",
        tally.spoofed_sent, tally.spoofed_leaked
    );
    println!(
        "latency:                   p50 {:.1} ms, p99 {:.1} ms",
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99))
    );
    if tally.errors > 0 {
        println!("errors:                    {}", tally.errors);
    }
}

fn describe(backends: &[Backend]) -> String {
    backends
        .iter()
        .map(|b| format!("{}@{}", b.name(), b.addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
