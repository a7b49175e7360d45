//! Tells what is happening as it happens: every decision weir's controller
//! takes, with its reason and evidence (from weir's admin API), the moment
//! Envoy runs it (from Envoy's config dump), and a line of traffic every few
//! seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::traffic::Steady;

/// How often weir and Envoy are asked what changed.
const POLL: Duration = Duration::from_millis(200);

/// At most one line of SLA scores in this long.
const SCORES: Duration = Duration::from_secs(2);

/// How often a line of traffic is printed.
const TICKER: Duration = Duration::from_secs(5);

/// Time since the demo started, for every line it prints.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    started: Instant,
    started_epoch_ms: u64,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            started_epoch_ms: epoch_ms(),
        }
    }

    /// `[ 12.3s]`: now.
    pub(crate) fn stamp(&self) -> String {
        format!("[{:>5.1}s]", self.started.elapsed().as_secs_f64())
    }

    /// The same for a time weir reported (ms since the epoch).
    fn stamp_at(&self, at_ms: u64) -> String {
        format!(
            "[{:>5.1}s]",
            at_ms.saturating_sub(self.started_epoch_ms) as f64 / 1e3
        )
    }
}

/// Milliseconds since the epoch, as weir stamps its decisions.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A weight in basis points as a percentage: `25%`, `2.5%`.
pub(crate) fn percent(bp: u64) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{:.2}%", bp as f64 / 100.0)
    }
}

/// Prints while it lives.
pub(crate) struct Narrator {
    ticker: Arc<AtomicBool>,
    _task: JoinSet<()>,
}

impl Narrator {
    /// Starts narrating weir (admin API at `weir`) and the Envoy whose admin
    /// API is at `envoy`; `steady` is the traffic to report on.
    pub(crate) fn start(
        clock: Clock,
        weir: SocketAddr,
        envoy: SocketAddr,
        steady: &Steady,
    ) -> Self {
        let steady_tally = steady.shared();
        let ticker_on = Arc::new(AtomicBool::new(true));
        let ticking = Arc::clone(&ticker_on);
        // Decisions taken before now (weir's first ones, before Envoy ran
        // anything) are told, but not timed.
        let since = epoch_ms();
        let mut task = JoinSet::new();
        task.spawn(async move {
            let http = weir_testbed::http_client();
            let mut seen = BTreeSet::new();
            // Decisions whose weight Envoy does not run yet: canary → (weight, decided at).
            let mut pending: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let mut last_tick = (Instant::now(), 0u64);
            // The scores last told, and when: at most one line every SCORES.
            let mut scores: Option<(BTreeMap<String, f64>, Instant)> = None;
            loop {
                if let Some(clusters) = get_json(&http, &format!("http://{weir}/v1/clusters")).await
                {
                    let now = published_scores(&clusters);
                    match &scores {
                        None => scores = Some((now, Instant::now())),
                        Some((told, at)) if at.elapsed() >= SCORES => {
                            if let Some(line) = score_line(&clock, told, &now, &clusters) {
                                println!("{line}");
                                scores = Some((now, Instant::now()));
                            }
                        }
                        Some(_) => {}
                    }
                }
                if let Some(rollouts) = get_json(&http, &format!("http://{weir}/v1/rollouts")).await
                {
                    for decision in rollouts["decisions"].as_array().into_iter().flatten() {
                        let key = decision_key(decision);
                        if seen.insert(key) {
                            println!("{}", describe_decision(&clock, decision));
                            let canary = decision["canary"].as_str().unwrap_or_default();
                            let weight = decision["weight_bp"].as_u64().unwrap_or_default();
                            let at = decision["at_ms"].as_u64().unwrap_or_default();
                            if at >= since {
                                pending.insert(canary.to_owned(), (weight, at));
                            }
                        }
                    }
                    if last_tick.0.elapsed() >= TICKER && ticking.load(Ordering::Relaxed) {
                        let sent = steady_tally.snapshot().sent();
                        let rate =
                            (sent - last_tick.1) as f64 / last_tick.0.elapsed().as_secs_f64();
                        println!("{}", ticker(&clock, rate, &rollouts));
                        last_tick = (Instant::now(), sent);
                    }
                }
                if !pending.is_empty()
                    && let Some(weights) = envoy_canary_weights(&http, envoy).await
                {
                    pending.retain(|canary, (weight, at)| {
                        if weights.get(canary) != Some(weight) {
                            return true;
                        }
                        println!(
                            "{} Envoy runs {canary} at {} ({} ms after the decision, over ECDS)",
                            clock.stamp(),
                            percent(*weight),
                            epoch_ms().saturating_sub(*at)
                        );
                        false
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Self {
            ticker: ticker_on,
            _task: task,
        }
    }

    /// Stops the traffic lines; decisions are still told.
    pub(crate) fn quiet(&self) {
        self.ticker.store(false, Ordering::Relaxed);
    }
}

/// What tells two decisions apart.
fn decision_key(decision: &Value) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        decision["at_ms"],
        decision["canary"],
        decision["to"],
        decision["step"],
        decision["weight_bp"]
    )
}

/// One decision: when, which canary, the weight it moved, why, and the
/// figures it was based on.
pub(crate) fn describe_decision(clock: &Clock, decision: &Value) -> String {
    let at = decision["at_ms"].as_u64().unwrap_or_default();
    let canary = decision["canary"].as_str().unwrap_or("?");
    let from = decision["from_weight_bp"].as_u64().unwrap_or_default();
    let to = decision["weight_bp"].as_u64().unwrap_or_default();
    let phase = decision["to"].as_str().unwrap_or_default();
    let headline = match phase {
        "rolled_back" => "ROLLED BACK: ",
        "promoted" => "PROMOTED: ",
        _ => "",
    };
    let moved = if from == to && decision["from"] == decision["to"] {
        format!("{:>4}   {:<4}", "", percent(to))
    } else {
        format!("{:>4} → {:<4}", percent(from), percent(to))
    };
    let mut text = format!(
        "{} weir: {canary:<17} {moved} {headline}{}",
        clock.stamp_at(at),
        decision["reason"].as_str().unwrap_or_default()
    );
    if let Some(evidence) = describe_evidence(&decision["evidence"]) {
        text.push_str(&format!("\n{:9}evidence: {evidence}", ""));
    }
    text
}

/// The two variants' figures over the analysis window, if there were any.
fn describe_evidence(evidence: &Value) -> Option<String> {
    let variant = |v: &Value| {
        let requests = v["requests"].as_u64().unwrap_or_default();
        let errors = v["errors"].as_u64().unwrap_or_default();
        let p99 = v["p99_ms"]
            .as_f64()
            .map_or("no latency yet".to_owned(), |p| format!("p99 {p:.1} ms"));
        (
            requests,
            format!("{requests} requests, {errors} errors, {p99}"),
        )
    };
    let (canary_requests, canary) = variant(&evidence["canary"]);
    let (stable_requests, stable) = variant(&evidence["stable"]);
    if canary_requests == 0 && stable_requests == 0 {
        return None;
    }
    let window = evidence["window_ms"].as_u64().unwrap_or_default() / 1000;
    Some(format!(
        "canary {canary} | stable {stable} (last {window} s)"
    ))
}

/// The SLA score each cluster has in the feed, from `/v1/clusters`.
fn published_scores(clusters: &Value) -> BTreeMap<String, f64> {
    clusters["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["cluster"].as_str()?.to_owned(), c["score"].as_f64()?)))
        .collect()
}

/// One line for the clusters whose published SLA score moved since
/// `before` (or is below 1), with their measured p99; `None` if none moved.
fn score_line(
    clock: &Clock,
    before: &BTreeMap<String, f64>,
    now: &BTreeMap<String, f64>,
    clusters: &Value,
) -> Option<String> {
    let moved = |cluster: &String, score: &f64| {
        (before.get(cluster).copied().unwrap_or(1.0) - score).abs() >= 0.01
    };
    if !now.iter().any(|(c, s)| moved(c, s)) {
        return None;
    }
    let shown: Vec<String> = now
        .iter()
        .filter(|(c, s)| moved(c, s) || **s < 0.995)
        .map(|(cluster, score)| {
            let p99 = clusters["clusters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["cluster"] == cluster.as_str())
                .and_then(|c| c["p99_ms"].as_f64());
            match p99 {
                Some(p99) => format!("{cluster} {score:.2} (p99 {p99:.0} ms)"),
                None => format!("{cluster} {score:.2}"),
            }
        })
        .collect();
    let all_whole = now.values().all(|s| *s >= 0.995);
    Some(format!(
        "{} weir: SLA scores {}{}",
        clock.stamp(),
        shown.join(" · "),
        if all_whole { " — all recovered" } else { "" }
    ))
}

/// A line of traffic and where each rollout is.
fn ticker(clock: &Clock, rate: f64, rollouts: &Value) -> String {
    let states: Vec<String> = rollouts["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let weight = match r["phase"].as_str() {
                Some("promoted") => 10_000,
                Some("rolled_back") => 0,
                _ => r["weight_bp"].as_u64().unwrap_or_default(),
            };
            format!(
                "{} {} {}",
                r["canary"].as_str().unwrap_or("?"),
                percent(weight),
                r["phase"].as_str().unwrap_or("?").replace('_', " ")
            )
        })
        .collect();
    format!(
        "{} traffic {rate:.0} req/s · {}",
        clock.stamp(),
        states.join(" · ")
    )
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The canary weights in the filter configuration Envoy runs now: the
/// configuration is a JSON document in a string of Envoy's ECDS config dump.
pub(crate) async fn envoy_canary_weights(
    http: &reqwest::Client,
    envoy: SocketAddr,
) -> Option<BTreeMap<String, u64>> {
    let dump = get_json(
        http,
        &format!("http://{envoy}/config_dump?resource=ecds_filters"),
    )
    .await?;
    let config = find_filter_config(&dump)?;
    Some(
        config["feed"]["canary_weights"]
            .as_object()?
            .iter()
            .filter_map(|(canary, w)| Some((canary.clone(), w.as_u64()?)))
            .collect(),
    )
}

/// The first string in `value` that is a filter configuration document.
fn find_filter_config(value: &Value) -> Option<Value> {
    match value {
        Value::String(text) if text.contains("\"feed\"") => serde_json::from_str::<Value>(text)
            .ok()
            .filter(|doc| doc.get("feed").is_some()),
        Value::Array(items) => items.iter().find_map(find_filter_config),
        Value::Object(fields) => fields.values().find_map(find_filter_config),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentages() {
        assert_eq!(percent(2_500), "25%");
        assert_eq!(percent(0), "0%");
        assert_eq!(percent(250), "2.50%");
    }

    #[test]
    fn the_feed_is_found_in_the_escaped_configuration() {
        let document = json!({"version": "v1", "feed": {"canary_weights": {"a-canary": 2500}}});
        let dump = json!({"configs": [{"ecds_filter": {"typed_config": {"config": {
            "configuration": {"value": document.to_string()}}}}}]});
        let found = find_filter_config(&dump).unwrap();
        assert_eq!(found["feed"]["canary_weights"]["a-canary"], 2500);
        assert!(find_filter_config(&json!({"configs": []})).is_none());
    }

    #[test]
    fn moved_sla_scores_are_told_in_one_line() {
        let clock = Clock::start();
        let clusters = json!({"clusters": [
            {"cluster": "ingest-us", "score": 0.62, "p99_ms": 345.0, "target_p99_ms": 250.0},
            {"cluster": "ingest-eu", "score": 1.0, "p99_ms": 3.0, "target_p99_ms": 250.0},
            {"cluster": "ingest-ap", "score": 0.8, "p99_ms": null}
        ]});
        let now = published_scores(&clusters);
        let before: BTreeMap<String, f64> = [
            ("ingest-us".to_owned(), 1.0),
            ("ingest-eu".to_owned(), 1.0),
            ("ingest-ap".to_owned(), 0.8),
        ]
        .into();
        let line = score_line(&clock, &before, &now, &clusters).unwrap();
        assert!(
            line.ends_with("weir: SLA scores ingest-ap 0.80 · ingest-us 0.62 (p99 345 ms)"),
            "{line}"
        );
        assert!(score_line(&clock, &now, &now, &clusters).is_none());
        let whole: BTreeMap<String, f64> = now.keys().map(|c| (c.clone(), 1.0)).collect();
        let recovered = json!({"clusters": [
            {"cluster": "ingest-us", "score": 1.0}, {"cluster": "ingest-eu", "score": 1.0},
            {"cluster": "ingest-ap", "score": 1.0}
        ]});
        let line = score_line(&clock, &now, &whole, &recovered).unwrap();
        assert!(
            line.ends_with("ingest-ap 1.00 · ingest-us 1.00 — all recovered"),
            "{line}"
        );
    }

    #[test]
    fn a_rollback_is_told_with_its_evidence() {
        let clock = Clock::start();
        let decision = json!({
            "at_ms": epoch_ms(), "canary": "ingest-us-canary", "from": "progressing",
            "to": "rolled_back", "step": 1, "from_weight_bp": 2500, "weight_bp": 0,
            "reason": "canary is bad at 25 %: errors",
            "evidence": {"window_ms": 10000,
                "canary": {"requests": 80, "errors": 20, "p99_ms": 4.0},
                "stable": {"requests": 300, "errors": 0, "p99_ms": null}}
        });
        let text = describe_decision(&clock, &decision);
        assert!(text.contains("ingest-us-canary"), "{text}");
        assert!(text.contains("25% → 0%"), "{text}");
        assert!(text.contains("ROLLED BACK: canary is bad"), "{text}");
        assert!(
            text.contains("canary 80 requests, 20 errors, p99 4.0 ms | stable 300 requests, 0 errors, no latency yet (last 10 s)"),
            "{text}"
        );
    }
}
