//! What a leader costs etcd: transactions, puts and bytes at steady state
//! and per decision, from etcd's own counters, and the size of each key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weir_testbed::etcd::Etcd;
use weir_testbed::fleet::PolicyFile;
use weir_testbed::http_client;

use crate::{free_port, poll, replica, replication};

/// etcd's counters this measurement reads (`/metrics` on a client URL).
const COUNTERS: [&str; 4] = [
    "etcd_mvcc_txn_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_network_client_grpc_received_bytes_total",
];

/// What was measured.
#[derive(Debug)]
pub(crate) struct Load {
    pub(crate) rollouts: usize,
    pub(crate) steady: Duration,
    /// Per second at steady state, by counter.
    pub(crate) steady_rates: BTreeMap<&'static str, f64>,
    /// Per decision, by counter (the steady rate over the burst subtracted).
    pub(crate) per_decision: BTreeMap<&'static str, f64>,
    pub(crate) decisions: usize,
    /// Bytes of each key under the prefix after the decisions.
    pub(crate) key_bytes: Vec<(String, usize)>,
}

/// Ten (or `rollouts`) services, each with a canary that holds its first step.
fn policy_yaml(rollouts: usize) -> String {
    let mut clusters = String::new();
    let mut services = String::new();
    for i in 0..rollouts {
        let _ = write!(
            clusters,
            "  - {{ name: app{i}, region: eu-west, endpoints: [\"127.0.0.1:9\"] }}\n  \
             - {{ name: app{i}-canary, region: eu-west, variant: canary, endpoints: [\"127.0.0.1:9\"] }}\n"
        );
        let _ = write!(
            services,
            "  - name: app{i}\n    match: {{ path_prefix: /s{i}/ }}\n    sla: {{ p99_ms: 250 }}\n    \
             placements:\n      - cluster: app{i}\n        canary:\n          cluster: app{i}-canary\n          \
             steps: [10, 50, 100]\n          hold: 10m\n          analysis:\n            \
             max_error_rate_increase: 2\n            max_latency_ratio: {{ p95: 1.5, p99: 2.0 }}\n            \
             min_samples: 40\n"
        );
    }
    format!(
        "device_types: [sensor]\nregions: {{ rtt_ms: {{ eu-west: {{ eu-west: 1 }} }} }}\nclusters:\n{clusters}\
         services:\n{services}priority:\n  classes: [telemetry]\n  default: telemetry\nadmission:\n  \
         concurrency_limit: 1000\n  retry_after: 1s\n  classes: {{ telemetry: {{ max_wait: 1s }} }}\n"
    )
}

async fn counters(endpoint: SocketAddr) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let text = http_client()
        .get(format!("http://{endpoint}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut found = BTreeMap::new();
    for name in COUNTERS {
        let total: f64 = text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        found.insert(name, total);
    }
    Ok(found)
}

fn delta(
    after: &BTreeMap<&'static str, f64>,
    before: &BTreeMap<&'static str, f64>,
) -> BTreeMap<&'static str, f64> {
    after
        .iter()
        .map(|(name, value)| (*name, value - before.get(name).copied().unwrap_or(0.0)))
        .collect()
}

pub(crate) async fn run(etcd: &Etcd, rollouts: usize, steady: Duration) -> anyhow::Result<Load> {
    let endpoint = *etcd
        .endpoints()
        .first()
        .ok_or_else(|| anyhow::anyhow!("etcd has no member"))?;
    let policy = weir_testbed::fleet::policy_from_yaml("load.yaml", &policy_yaml(rollouts))?;
    let file = PolicyFile::new("policy.yaml", &policy)?;
    let prefix = "/bench/load/";
    let leader = replica(file.path(), free_port()?, &etcd.store_url(), prefix, "r0").await?;
    poll("r0 to lead", Duration::from_secs(10), || async {
        (replication(&leader).await?["deciding"] == true).then_some(())
    })
    .await?;
    // Past the first saves and registrations.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = counters(endpoint).await?;
    let started = Instant::now();
    tokio::time::sleep(steady).await;
    let steady_delta = delta(&counters(endpoint).await?, &before);
    let steady_secs = started.elapsed().as_secs_f64();
    let steady_rates: BTreeMap<&'static str, f64> = steady_delta
        .iter()
        .map(|(name, value)| (*name, value / steady_secs))
        .collect();

    let before = counters(endpoint).await?;
    let burst = Instant::now();
    for i in 0..rollouts {
        http_client()
            .post(format!(
                "http://{}/v1/rollouts/app{i}-canary/pause",
                leader.admin_addr()
            ))
            .send()
            .await?
            .error_for_status()?;
    }
    let burst_delta = delta(&counters(endpoint).await?, &before);
    let burst_secs = burst.elapsed().as_secs_f64();
    let per_decision = burst_delta
        .iter()
        .map(|(name, value)| {
            let background = steady_rates.get(name).copied().unwrap_or(0.0) * burst_secs;
            (*name, (value - background).max(0.0) / rollouts as f64)
        })
        .collect();

    let mut client = etcd_client::Client::connect([endpoint.to_string()], None).await?;
    let listed = client
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    let mut key_bytes: Vec<(String, usize)> = Vec::new();
    for kv in listed.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let short = key.strip_prefix(prefix).unwrap_or(&key);
        // One of each kind: the newest decision batch and timeline point.
        let kind = short.split('/').next().unwrap_or(short).to_owned();
        let name = if short.contains('/') {
            format!("{kind}/…")
        } else {
            kind
        };
        match key_bytes.iter_mut().find(|(k, _)| *k == name) {
            Some(entry) => entry.1 = kv.value().len(),
            None => key_bytes.push((name, kv.value().len())),
        }
    }
    drop(leader);
    Ok(Load {
        rollouts,
        steady: Duration::from_secs_f64(steady_secs),
        steady_rates,
        per_decision,
        decisions: rollouts,
        key_bytes,
    })
}
