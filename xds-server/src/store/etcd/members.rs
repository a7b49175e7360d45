//! Which etcd members the clients send requests to. tonic's balanced
//! channel, under `etcd-client`, keeps a member it cannot reach among those it
//! picks from: a request sent there fails instead of going to another, so
//! with one member of three down a third of the lease's renewals fail and a
//! healthy leader loses its term. Every member is probed — etcd's `status`,
//! answered in time by a member that has a raft leader, as etcd's own
//! clients check health — and the clients keep only the healthy ones (all of
//! them when none is, so that errors say what is wrong).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// How often every member is probed: a member lost is left within about
/// this, well inside the default 2 s lease.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// How long a probe may take before the member counts as unhealthy.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Keeps `clients` sending to the healthy members of `urls` until the
/// runtime it runs on stops. `options` connect a probe to one member.
pub(super) async fn keep_to_healthy(
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Vec<Client>,
) {
    if urls.len() < 2 {
        return;
    }
    let options = options
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(PROBE_TIMEOUT);
    let mut probes: Vec<Option<Client>> = vec![None; urls.len()];
    let mut in_use = vec![true; urls.len()];
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probed = futures::future::join_all(
            urls.iter()
                .zip(probes.iter_mut())
                .map(|(url, probe)| healthy(url, probe, &options)),
        )
        .await;
        let wanted = if probed.iter().any(|h| *h) {
            probed
        } else {
            vec![true; urls.len()]
        };
        for ((url, want), using) in urls.iter().zip(&wanted).zip(in_use.iter_mut()) {
            if want == using {
                continue;
            }
            for client in &clients {
                let changed = if *want {
                    client.add_endpoint(url).await
                } else {
                    client.remove_endpoint(url).await
                };
                if let Err(err) = changed {
                    tracing::warn!(member = %url, %err, "cannot change the etcd members in use");
                }
            }
            if *want {
                tracing::info!(member = %url, "etcd member healthy again: back in use");
            } else {
                tracing::warn!(member = %url, "etcd member unhealthy: requests go to the others");
            }
            *using = *want;
        }
    }
}

/// Whether the member at `url` answers `status` in time and has a leader;
/// `probe` is the client kept for it (made again after a failure).
async fn healthy(url: &str, probe: &mut Option<Client>, options: &ConnectOptions) -> bool {
    if probe.is_none() {
        let connect = Client::connect([url], Some(options.clone()));
        *probe = tokio::time::timeout(PROBE_TIMEOUT, connect)
            .await
            .ok()
            .and_then(Result::ok);
    }
    let Some(client) = probe.as_mut() else {
        return false;
    };
    match tokio::time::timeout(PROBE_TIMEOUT, client.status()).await {
        Ok(Ok(status)) => status.leader() != 0,
        _ => {
            *probe = None;
            false
        }
    }
}
