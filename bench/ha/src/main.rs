//! Weir's replication benchmark, with real etcd, `weir serve` replicas and Envoy.
//!
//! - **Failover**: a leader and a follower on one etcd, an Envoy whose ADS
//!   stream is on the leader; the leader is killed (SIGKILL) and the clock
//!   runs until the follower says it leads and decides, and until the Envoy
//!   has reconnected to it and ACKed the configuration it serves. Each run
//!   on fresh replicas, Envoy and key prefix.
//! - **etcd's load**: one leader with ten rollouts progressing (holding, no
//!   traffic): etcd's own counters of transactions, puts and bytes received
//!   over a steady window, then per operator decision, and the size of each
//!   key a save writes.
//!
//! `make bench-ha` builds what it needs and runs it, writing its section of
//! `bench/RESULTS.md`.

mod etcd_load;
mod failover;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use weir_testbed::procfs;
use weir_testbed::weir::Weir;

#[derive(Parser, Debug)]
#[command(
    name = "weir-ha-bench",
    about = "leader failover times and etcd's load, with real etcd, weir replicas and Envoy"
)]
struct Args {
    /// Failover runs (0 skips them).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Rollouts progressing during the etcd load measurement (0 skips it).
    #[arg(long, default_value_t = 10)]
    rollouts: usize,
    /// Seconds of the steady window of the etcd load measurement.
    #[arg(long, default_value_t = 20)]
    steady_seconds: u64,
    /// Also write the report into this file, between the markers
    /// `<!-- ha-bench:begin -->` and `<!-- ha-bench:end -->`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A free loopback port, for a replica an Envoy's bootstrap names before it runs.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts replica `id` of the installation under `prefix`.
async fn replica(
    policy: &std::path::Path,
    xds: SocketAddr,
    store: &str,
    prefix: &str,
    id: &str,
) -> anyhow::Result<Weir> {
    let env = [
        ("WEIR_STORE", store),
        ("WEIR_STORE_PREFIX", prefix),
        ("WEIR_REPLICA_ID", id),
    ];
    Weir::start_at(policy, xds, &env).await
}

/// Polls `probe` every 5 ms until it gives a value, for at most `deadline`;
/// the value and when it came.
async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if started.elapsed() > deadline {
            anyhow::bail!("{what} did not happen within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `replication` of `weir`'s status, if it answers.
async fn replication(weir: &Weir) -> Option<Value> {
    Some(weir.status().await.ok()?["replication"].clone())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let weir_testbed::results::RunStart {
        command,
        machine,
        date,
        load_start,
    } = weir_testbed::results::RunStart::now("weir-ha-bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (failover, etcd_load) = runtime.block_on(async {
        let etcd = weir_testbed::etcd::Etcd::start().await?;
        let failover = if args.runs > 0 {
            eprintln!("weir-ha-bench: failover, {} runs", args.runs);
            Some(failover::run(&etcd, args.runs).await?)
        } else {
            None
        };
        let etcd_load = if args.rollouts > 0 {
            eprintln!("weir-ha-bench: etcd load, {} rollouts", args.rollouts);
            let steady = Duration::from_secs(args.steady_seconds.max(1));
            Some(etcd_load::run(&etcd, args.rollouts, steady).await?)
        } else {
            None
        };
        anyhow::Ok((failover, etcd_load))
    })?;
    let report = report::Report {
        command,
        date,
        machine,
        load_start,
        load_end: procfs::load_average(),
        failover,
        etcd_load,
    };
    weir_testbed::results::publish(args.out.as_deref(), "ha", &report.markdown())?;
    Ok(())
}
