//! Convergence: `weir serve` and one real Envoy on loopback; the policy file
//! is edited, and the time from the write to Envoy's ACK of every type that
//! changed is read off weir's own status (`/v1/status`), polled every few ms.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_testbed::Envoy;
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap};

use crate::edits::{Editor, Kind, write_policy};
use crate::{Jitter, TYPES, short_type};

/// The Envoy's node id.
pub(crate) const NODE: &str = "bench-envoy";

/// Envoy's worker threads.
pub(crate) const ENVOY_WORKERS: u32 = 1;

/// How long one edit may take to reach Envoy before the run fails.
const EDIT_DEADLINE: Duration = Duration::from_secs(5);

/// How long Envoy may take to ACK its first configuration.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One edit, measured.
#[derive(Clone, Debug)]
pub(crate) struct Edit {
    pub(crate) kind: Kind,
    /// The types whose version changed (short names: CDS, EDS…).
    pub(crate) changed: Vec<&'static str>,
    /// From the write until weir's status showed the new snapshot.
    pub(crate) published: Duration,
    /// From the write until the status showed Envoy's ACK of every changed type.
    pub(crate) acked: Duration,
    /// Per changed type, from the write until the status showed its ACK.
    pub(crate) per_type: Vec<(&'static str, Duration)>,
}

/// The whole run.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) edits: Vec<Edit>,
    /// Median round trip of one `GET /v1/status`: the resolution of the timings, with the poll interval.
    pub(crate) status_rtt: Duration,
    pub(crate) poll: Duration,
    /// NACKs weir recorded for the Envoy (0 expected).
    pub(crate) nacks: usize,
    pub(crate) weir_rss_kb: u64,
}

/// Per type URL, the version weir serves.
fn serving(status: &Value) -> anyhow::Result<BTreeMap<&'static str, String>> {
    TYPES
        .iter()
        .map(|t| {
            let version = status["snapshot"]["types"][*t]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no version of {t} in weir's status"))?;
            Ok((*t, version.to_owned()))
        })
        .collect()
}

fn acked<'a>(status: &'a Value, type_url: &str) -> Option<&'a str> {
    status["nodes"][NODE]["acked"][type_url]["version"].as_str()
}

/// Runs `edits` edits of `policy` (a policy serialised to JSON), checking for
/// the new ACKs every `poll`.
pub(crate) async fn run(
    policy: Value,
    spare_endpoint: String,
    edits: usize,
    poll: Duration,
    dir: &Path,
) -> anyhow::Result<Run> {
    let path = dir.join("convergence-policy.yaml");
    let mut editor = Editor::new(policy, spare_endpoint)?;
    write_policy(&path, editor.doc())?;
    let weir = Weir::start(&path, WasmDelivery::Local).await?;
    let bootstrap = ads_bootstrap(weir.xds_addr(), NODE, false)?;
    let envoy = Envoy::start(&bootstrap, ENVOY_WORKERS).await?;
    let started = Instant::now();
    loop {
        let status = weir.status().await?;
        let now = serving(&status)?;
        if TYPES
            .iter()
            .all(|t| acked(&status, t) == Some(now[t].as_str()))
        {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < START_DEADLINE,
            "Envoy did not ACK its first configuration in {START_DEADLINE:?}: {}",
            status["nodes"]
        );
        tokio::time::sleep(poll).await;
    }

    let mut jitter = Jitter::new(0x5eed);
    let mut results = Vec::with_capacity(edits);
    let mut rtts = Vec::new();
    let mut last_nack = Value::Null;
    let mut nacks = 0;
    for i in 0..edits {
        let kind = Kind::ALL[i % Kind::ALL.len()];
        let before = serving(&weir.status().await?)?;
        editor.apply(kind)?;
        // Writes fall at every phase of weir's file poll, not always the same one.
        tokio::time::sleep(jitter.next(crate::WEIR_FILE_POLL)).await;
        let written = write_policy(&path, editor.doc())?;
        let mut published = None;
        let mut per_type: BTreeMap<&'static str, Duration> = BTreeMap::new();
        let acked_at = loop {
            let asked = Instant::now();
            let status = weir.status().await?;
            let seen = Instant::now();
            rtts.push(seen - asked);
            if let Some(error) = status["policy"]["last_error"].as_str() {
                anyhow::bail!("weir refused edit {i} ({kind:?}): {error}");
            }
            let nack = &status["nodes"][NODE]["last_nack"];
            if !nack.is_null() && *nack != last_nack {
                nacks += 1;
                last_nack = nack.clone();
                eprintln!("weir-xds-bench: Envoy NACKed: {nack}");
            }
            let now = serving(&status)?;
            let changed: Vec<&'static str> = TYPES
                .iter()
                .copied()
                .filter(|t| now[t] != before[t])
                .collect();
            if !changed.is_empty() {
                published.get_or_insert(seen - written);
                for t in &changed {
                    if acked(&status, t) == Some(now[t].as_str()) {
                        per_type.entry(t).or_insert(seen - written);
                    }
                }
                if changed
                    .iter()
                    .all(|t| acked(&status, t) == Some(now[t].as_str()))
                {
                    break (seen - written, changed);
                }
            }
            anyhow::ensure!(
                written.elapsed() < EDIT_DEADLINE,
                "edit {i} ({kind:?}) did not reach Envoy in {EDIT_DEADLINE:?}: {}",
                status["nodes"][NODE]
            );
            tokio::time::sleep(poll).await;
        };
        let (acked, changed) = acked_at;
        results.push(Edit {
            kind,
            changed: changed.into_iter().map(short_type).collect(),
            published: published.unwrap_or(acked),
            acked,
            per_type: TYPES
                .iter()
                .filter_map(|t| per_type.get(t).map(|d| (short_type(t), *d)))
                .collect(),
        });
    }
    rtts.sort();
    let status_rtt = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    let weir_rss_kb = weir_testbed::procfs::status_kb(weir.pid(), "VmRSS")?;
    drop(envoy);
    Ok(Run {
        edits: results,
        status_rtt,
        poll,
        nacks,
        weir_rss_kb,
    })
}
