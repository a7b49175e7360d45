//! The leader killed: how long until another replica decides, and until an
//! Envoy of the dead one is served by it.

use std::time::{Duration, Instant};

use weir_testbed::Envoy;
use weir_testbed::canary;
use weir_testbed::etcd::Etcd;
use weir_testbed::fleet::{Fleet, PolicyFile, policy_from_yaml};
use weir_testbed::weir::ads_bootstrap_replicas;

use crate::{free_port, poll, replica, replication};

/// The ECDS type: the filter's configuration, the feed's carrier.
const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// One run's times from the kill.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Until the follower's status says it leads and decides.
    pub(crate) deciding: Duration,
    /// Until the Envoy has reconnected to the follower and ACKed the
    /// configuration it serves.
    pub(crate) served: Duration,
}

pub(crate) async fn run(etcd: &Etcd, runs: usize) -> anyhow::Result<Vec<Run>> {
    let mut results = Vec::with_capacity(runs);
    for i in 0..runs {
        let result = one(etcd, i).await?;
        eprintln!(
            "  run {}: deciding after {:?}, Envoy served after {:?}",
            i + 1,
            result.deciding,
            result.served
        );
        results.push(result);
    }
    Ok(results)
}

async fn one(etcd: &Etcd, i: usize) -> anyhow::Result<Run> {
    let yaml = canary::policy_yaml("[50, 100]", "10m", 40, 2.0);
    let fleet = Fleet::start(policy_from_yaml("failover.yaml", &yaml)?)?;
    let policy = PolicyFile::new("policy.yaml", fleet.policy())?;
    let (store, prefix) = (etcd.store_url(), format!("/bench/failover-{i}/"));
    let leader = replica(policy.path(), free_port()?, &store, &prefix, "r0").await?;
    poll("r0 to lead", Duration::from_secs(10), || async {
        (replication(&leader).await?["deciding"] == true).then_some(())
    })
    .await?;
    // The second replica is not up when Envoy starts: its stream is on the leader.
    let second = free_port()?;
    let bootstrap = ads_bootstrap_replicas(&[leader.xds_addr(), second], "bench-envoy", false)?;
    let envoy = Envoy::start(&bootstrap, 1).await?;
    let follower = replica(policy.path(), second, &store, &prefix, "r1").await?;
    poll("r1 to follow r0", Duration::from_secs(10), || async {
        let replication = replication(&follower).await?;
        (replication["role"] == "follower" && replication["leader"] == "r0").then_some(())
    })
    .await?;

    let killed = Instant::now();
    drop(leader);
    // Both from the same polls: the Envoy may be served before the new
    // leader decides (a follower serves too).
    let (mut deciding, mut served) = (None, None);
    let deadline = Duration::from_secs(30);
    while deciding.is_none() || served.is_none() {
        if killed.elapsed() > deadline {
            anyhow::bail!("r1 did not decide and serve the Envoy within {deadline:?}");
        }
        if let Ok(status) = follower.status().await {
            if deciding.is_none() && status["replication"]["deciding"] == true {
                deciding = Some(killed.elapsed());
            }
            let serving = status["snapshot"]["types"][ECDS].as_str();
            let acked = status["nodes"]["bench-envoy"]["acked"][ECDS]["version"].as_str();
            if served.is_none() && serving.is_some() && serving == acked {
                served = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (Some(deciding), Some(served)) = (deciding, served) else {
        anyhow::bail!("the poll ended without both times");
    };
    drop(envoy);
    Ok(Run { deciding, served })
}
