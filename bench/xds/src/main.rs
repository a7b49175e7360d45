//! Weir's control-plane benchmark.
//!
//! - **Convergence**: `weir serve` and a real Envoy on loopback; the policy
//!   file is edited 50 times (the filter's configuration, an endpoint, a whole
//!   cluster), each write atomic, and the time from the write to Envoy's ACK
//!   of every type that changed is read from weir's `/v1/status`.
//! - **Scale**: a load client of its own opens 1,000 ADS streams as distinct
//!   nodes, over a few shared HTTP/2 connections, subscribes as Envoy does and
//!   ACKs every response; it measures the time until all have ACKed their
//!   first configuration, then the time from a policy change until all have
//!   ACKed it, and weir's resident memory — state of the world, then delta.
//!
//! `make bench-xds` builds what it needs and runs it, writing its section of
//! `bench/RESULTS.md`.

mod convergence;
mod edits;
mod report;
mod scale;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weir_testbed::Backend;
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::procfs;

use crate::scale::Protocol;

/// Type URLs, in the order weir pushes them.
pub(crate) const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub(crate) const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub(crate) const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub(crate) const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub(crate) const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
pub(crate) const TYPES: [&str; 5] = [CDS, EDS, LDS, RDS, ECDS];

/// How often `weir serve` looks at the policy file
/// (`xds-server/src/policy_source.rs`, `POLL_INTERVAL`); it reads a change
/// once the file has held still for one more look.
pub(crate) const WEIR_FILE_POLL: Duration = Duration::from_millis(10);

/// The short name of a type URL (CDS, EDS, LDS, RDS, ECDS).
pub(crate) fn short_type(type_url: &str) -> &'static str {
    match type_url {
        CDS => "CDS",
        EDS => "EDS",
        LDS => "LDS",
        RDS => "RDS",
        ECDS => "ECDS",
        _ => "?",
    }
}

/// Pauses spread evenly (and reproducibly) over `[0, max)`, so that policy
/// writes fall at every phase of weir's file poll.
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self, max: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
        Duration::from_micros(self.0 % micros)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "weir-xds-bench",
    about = "weir serve: policy edit to Envoy ACK, and 1,000 ADS streams (time to ACK, memory)"
)]
pub(crate) struct Args {
    /// Policy edits in the convergence run (0 skips it).
    #[arg(long, default_value_t = 50)]
    pub(crate) edits: usize,
    /// ADS streams (distinct nodes) of the load client, one scale run per
    /// number and protocol, comma-separated (0 skips the scale runs).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub(crate) streams: Vec<usize>,
    /// Streams per HTTP/2 connection (the connections: the streams divided
    /// by this, rounded up).
    #[arg(long, default_value_t = 100)]
    pub(crate) streams_per_connection: usize,
    /// Policy changes measured in each scale run.
    #[arg(long, default_value_t = 8)]
    pub(crate) changes: usize,
    /// Replica counts of the scale runs, comma-separated: 1 is one `weir`,
    /// more share the streams on a real etcd (at the first number of
    /// streams above 1,000 only).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub(crate) replicas: Vec<usize>,
    /// The protocols of the scale runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sotw,delta")]
    pub(crate) protocols: Vec<Protocol>,
    /// How often to check for the ACKs, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub(crate) poll_ms: u64,
    /// Also write the report into this file, between the markers
    /// `<!-- xds-bench:begin -->` and `<!-- xds-bench:end -->` (added at the
    /// end if absent); the rest of the file is kept.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

// The load client stands in for thousands of Envoys on this machine's two
// cores: glibc's allocator made it a fifth slower, time weir's fan-out then
// waited for. weir's binary uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let command = std::iter::once("weir-xds-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let machine = procfs::Machine::describe(&weir_testbed::paths::envoy_binary());
    let load_before = procfs::load_average();
    let date = procfs::utc_now();

    // Backends for every cluster of the example policy, and a spare one that
    // edits move an endpoint to (and point an added cluster at).
    let fleet = Fleet::start(example_policy())?;
    let spare = Backend::start("spare")?;
    let policy = serde_json::to_value(fleet.policy())?;
    let spare_endpoint = spare.addr().to_string();
    let dir = tempfile::Builder::new()
        .prefix("weir-xds-bench-")
        .tempdir()?;

    let convergence = if args.edits > 0 {
        eprintln!("weir-xds-bench: convergence, {} edits", args.edits);
        Some(
            convergence::run(
                policy.clone(),
                spare_endpoint.clone(),
                args.edits,
                poll,
                dir.path(),
            )
            .await?,
        )
    } else {
        None
    };
    let mut scale_runs = Vec::new();
    // Every number of streams alone; replicas at the first one above 1,000.
    let shared = args.streams.iter().copied().find(|&n| n > 1_000);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &streams in args.streams.iter().filter(|&&n| n > 0) {
        runs.push((streams, 1));
        if Some(streams) == shared {
            runs.extend(
                args.replicas
                    .iter()
                    .filter(|&&r| r > 1)
                    .map(|&r| (streams, r)),
            );
        }
    }
    for (streams, replicas) in runs {
        let channels = streams.div_ceil(args.streams_per_connection.max(1));
        for protocol in &args.protocols {
            eprintln!(
                "weir-xds-bench: scale, {streams} streams over {channels} connections, {}, {replicas} weir",
                protocol.label()
            );
            let settings = scale::Settings {
                protocol: *protocol,
                streams,
                channels,
                changes: args.changes,
                poll,
                replicas,
            };
            scale_runs.push(
                scale::run(settings, policy.clone(), spare_endpoint.clone(), dir.path()).await?,
            );
        }
    }
    let report = report::Report {
        command,
        date,
        machine,
        load_before,
        load_after: procfs::load_average(),
        convergence,
        scale: scale_runs,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(out) = &args.out {
        weir_testbed::results::write_section(out, "xds", &markdown)?;
        eprintln!("weir-xds-bench: wrote its section of {}", out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut jitter = Jitter::new(7);
        let max = Duration::from_millis(25);
        let sample: Vec<Duration> = (0..1000).map(|_| jitter.next(max)).collect();
        assert!(sample.iter().all(|d| *d < max));
        assert!(sample.iter().any(|d| *d < Duration::from_millis(5)));
        assert!(sample.iter().any(|d| *d > Duration::from_millis(20)));
    }

    #[test]
    fn type_names() {
        let names: Vec<&str> = TYPES.iter().map(|t| short_type(t)).collect();
        assert_eq!(names, ["CDS", "EDS", "LDS", "RDS", "ECDS"]);
    }
}
