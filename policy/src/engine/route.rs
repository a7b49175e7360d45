//! Stages 3 and 4: score the service's placements, pick among the best, and
//! split the chosen placement between stable and canary.
//!
//! `score = w_geo·geo + w_device·device + w_sla·sla`, where
//! `geo = 1 − min(1, rtt_ms / 200)`, `device` is 1 if the cluster serves the
//! device type and 0.3 otherwise, and `sla` is the feed's score (1 = healthy).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::Request;
use crate::feed::{Feed, percent_to_basis_points};
use crate::model::{Policy, RoutingHeaders, ScoreWeights, Variant};
use crate::split::{self, BUCKETS};

/// RTT at and beyond which a cluster counts as far (geo score 0).
const FAR_RTT_MS: f64 = 200.0;
/// Device score of a cluster that does not serve the device type.
const UNSERVED_DEVICE_SCORE: f64 = 0.3;
/// Geo score when the client's region is unknown: no preference.
const UNKNOWN_GEO_SCORE: f64 = 0.5;

/// The geo score of a cluster `rtt_ms` away: 1 next door, 0 at 200 ms or more.
pub fn geo_score(rtt_ms: f64) -> f64 {
    if rtt_ms.is_nan() {
        return 0.0;
    }
    1.0 - (rtt_ms / FAR_RTT_MS).clamp(0.0, 1.0)
}

/// One scored candidate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// The placement's (stable) cluster.
    pub cluster: String,
    /// RTT from the client's region, when known.
    pub rtt_ms: Option<f64>,
    /// Geo part, 0–1.
    pub geo: f64,
    /// Device part, 0.3 or 1.
    pub device: f64,
    /// SLA part, 0–1.
    pub sla: f64,
    /// The weighted total.
    pub score: f64,
}

/// The canary split of the chosen placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Split {
    /// The canary cluster.
    pub canary_cluster: String,
    /// Its weight in basis points.
    pub weight_bp: u32,
    /// The request's bucket (0..10,000).
    pub bucket: u32,
    /// Whether the bucket came from the device id (`false`: no id, not sticky).
    pub sticky: bool,
    /// The variant chosen.
    pub variant: Variant,
}

/// The route chosen for a request, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Routed {
    /// The service that matched.
    pub service: String,
    /// Every placement, scored, in policy order.
    pub candidates: Vec<Candidate>,
    /// The candidates within `spread` of the best, which share the traffic.
    pub near_best: Vec<String>,
    /// The placement chosen among them.
    pub placement: String,
    /// The canary split, if the placement has a canary.
    pub split: Option<Split>,
}

impl Routed {
    /// The cluster the request goes to: the canary if the split chose it.
    pub fn cluster(&self) -> &str {
        match &self.split {
            Some(split) if split.variant == Variant::Canary => &split.canary_cluster,
            _ => &self.placement,
        }
    }
}

#[derive(Clone, Debug)]
struct ClusterFacts {
    region: String,
    device_types: Option<BTreeSet<String>>,
    sla: f64,
}

#[derive(Clone, Debug)]
struct CanaryPlan {
    cluster: String,
    salt: String,
    sticky_header: String,
    weight_bp: u32,
}

#[derive(Clone, Debug)]
struct ServicePlan {
    name: String,
    hosts: Vec<String>,
    path_prefix: String,
    placements: Vec<(String, Option<CanaryPlan>)>,
}

#[derive(Clone, Debug)]
pub(super) struct Router {
    headers: RoutingHeaders,
    weights: ScoreWeights,
    spread: f64,
    /// RTT by region, then by region: looked up with borrowed names.
    rtt: HashMap<String, HashMap<String, f64>>,
    default_rtt_ms: Option<f64>,
    clusters: BTreeMap<String, ClusterFacts>,
    services: Vec<ServicePlan>,
}

impl Router {
    pub(super) fn new(policy: &Policy, feed: &Feed) -> Self {
        let mut rtt: HashMap<String, HashMap<String, f64>> = HashMap::new();
        for (from, row) in &policy.regions.rtt_ms {
            for (to, &ms) in row {
                rtt.entry(from.clone()).or_default().insert(to.clone(), ms);
                rtt.entry(to.clone())
                    .or_default()
                    .entry(from.clone())
                    .or_insert(ms);
            }
        }
        let clusters = policy
            .clusters
            .iter()
            .map(|c| {
                let facts = ClusterFacts {
                    region: c.region.clone(),
                    device_types: c.device_types.as_ref().map(|t| t.iter().cloned().collect()),
                    sla: feed
                        .sla_scores
                        .get(&c.name)
                        .copied()
                        .unwrap_or(1.0)
                        .clamp(0.0, 1.0),
                };
                (c.name.clone(), facts)
            })
            .collect();
        let services = policy
            .services
            .iter()
            .map(|s| ServicePlan {
                name: s.name.clone(),
                hosts: s
                    .matches
                    .hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                path_prefix: s.matches.path_prefix.clone(),
                placements: s
                    .placements
                    .iter()
                    .map(|p| {
                        let canary = p.canary.as_ref().map(|c| CanaryPlan {
                            cluster: c.cluster.clone(),
                            salt: c.salt.clone().unwrap_or_else(|| c.cluster.clone()),
                            sticky_header: c
                                .sticky_header
                                .clone()
                                .unwrap_or_else(|| policy.routing.headers.device_id.clone()),
                            weight_bp: feed.canary_weights.get(&c.cluster).copied().unwrap_or_else(
                                || percent_to_basis_points(c.steps.first().copied().unwrap_or(0.0)),
                            ),
                        });
                        (p.cluster.clone(), canary)
                    })
                    .collect(),
            })
            .collect();
        Self {
            headers: policy.routing.headers.clone(),
            weights: policy.routing.weights.clone(),
            spread: policy.routing.spread,
            rtt,
            default_rtt_ms: policy.regions.default_rtt_ms,
            clusters,
            services,
        }
    }

    pub(super) fn spread_key(&self, request: &Request<'_>, fallback: u64) -> u64 {
        match request.header(&self.headers.device_id) {
            Some(id) if !id.is_empty() => split::stable_hash(&[id.as_bytes()]),
            // Hashed, so that consecutive counter values spread evenly.
            _ => split::stable_hash(&[&fallback.to_le_bytes()]),
        }
    }

    fn rtt_ms(&self, from: &str, to: &str) -> Option<f64> {
        self.rtt
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .or(if from == to { Some(0.0) } else { None })
            .or(self.default_rtt_ms)
    }

    fn service(&self, request: &Request<'_>) -> Option<&ServicePlan> {
        let host = host_without_port(request.host).to_ascii_lowercase();
        self.services.iter().find(|s| {
            request.path.starts_with(&s.path_prefix)
                && (s.hosts.is_empty()
                    || s.hosts.iter().any(|pattern| host_matches(pattern, &host)))
        })
    }

    /// The score of `cluster` for a client in `region` with `device_type`.
    fn score(&self, cluster: &str, region: Option<&str>, device_type: Option<&str>) -> Scored {
        let facts = self.clusters.get(cluster);
        let rtt_ms = match (region, facts) {
            (Some(region), Some(facts)) => self.rtt_ms(region, &facts.region),
            _ => None,
        };
        let geo = rtt_ms.map_or(UNKNOWN_GEO_SCORE, geo_score);
        let serves = match (device_type, facts.and_then(|f| f.device_types.as_ref())) {
            (Some(device_type), Some(types)) => types.contains(device_type),
            _ => true,
        };
        let device = if serves { 1.0 } else { UNSERVED_DEVICE_SCORE };
        let sla = facts.map_or(1.0, |f| f.sla);
        let w = &self.weights;
        Scored {
            rtt_ms,
            geo,
            device,
            sla,
            score: w.geo * geo + w.device * device + w.sla * sla,
        }
    }

    /// Scores the placements of the service the request matches into
    /// `scores` (cleared first) and picks one: the core of routing, without
    /// an allocation once `scores` has room (the filter's hot path).
    fn choose<'p>(
        &'p self,
        request: &Request<'_>,
        spread_key: u64,
        scores: &mut Vec<Scored>,
    ) -> Option<Choice<'p>> {
        let service = self.service(request)?;
        let region = request
            .header(&self.headers.region)
            .filter(|r| !r.is_empty());
        let device_type = request
            .header(&self.headers.device_type)
            .filter(|t| !t.is_empty());
        scores.clear();
        scores.extend(
            service
                .placements
                .iter()
                .map(|(cluster, _)| self.score(cluster, region, device_type)),
        );
        let best = scores
            .iter()
            .map(|c| c.score)
            .fold(f64::NEG_INFINITY, f64::max);
        let served_near = scores.iter().any(|c| self.near(c, best) && c.device >= 1.0);
        let eligible = |c: &Scored| self.eligible(c, best, served_near);
        let count = scores.iter().filter(|c| eligible(c)).count();
        let pick = usize::try_from(spread_key % count.max(1) as u64).unwrap_or(0);
        let chosen = scores
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c))
            .nth(pick)
            .map_or(0, |(i, _)| i);
        let (placement, canary) = service.placements.get(chosen)?;
        let split = canary.as_ref().map(|canary| {
            let (bucket, sticky) = match request.header(&canary.sticky_header) {
                Some(id) if !id.is_empty() => (split::bucket(&canary.salt, id), true),
                _ => ((spread_key % u64::from(BUCKETS)) as u32, false),
            };
            let variant = if split::in_canary(bucket, canary.weight_bp) {
                Variant::Canary
            } else {
                Variant::Stable
            };
            (canary, bucket, sticky, variant)
        });
        Some(Choice {
            service,
            placement,
            split,
            best,
            served_near,
        })
    }

    /// Within `spread` of the best score.
    fn near(&self, c: &Scored, best: f64) -> bool {
        c.score >= best - self.spread - 1e-12
    }

    /// Whether a candidate shares the traffic: near the best, and — spreading
    /// balances near-equal clusters, it never sends a device to a cluster that
    /// does not serve its type when a near-equal one does — serving the
    /// device type if any near one does.
    fn eligible(&self, c: &Scored, best: f64, served_near: bool) -> bool {
        self.near(c, best) && (!served_near || c.device >= 1.0)
    }

    /// The cluster for the request and its canary split, with nothing
    /// allocated once `scores` has room: what the filter needs per request.
    pub(super) fn steer<'p>(
        &'p self,
        request: &Request<'_>,
        spread_key: u64,
        scores: &mut Vec<Scored>,
    ) -> Option<Steered<'p>> {
        let choice = self.choose(request, spread_key, scores)?;
        let split = choice
            .split
            .map(|(canary, _, _, variant)| (canary.cluster.as_str(), variant));
        let cluster = match split {
            Some((canary, Variant::Canary)) => canary,
            _ => choice.placement.as_str(),
        };
        Some(Steered { cluster, split })
    }

    /// The route with its evidence: every candidate scored, the near-best,
    /// the split (for `weir explain`, the simulator and tests).
    pub(super) fn route(&self, request: &Request<'_>, spread_key: u64) -> Option<Routed> {
        let mut scores = Vec::new();
        let choice = self.choose(request, spread_key, &mut scores)?;
        let candidates: Vec<Candidate> = choice
            .service
            .placements
            .iter()
            .zip(&scores)
            .map(|((cluster, _), s)| Candidate {
                cluster: cluster.clone(),
                rtt_ms: s.rtt_ms,
                geo: s.geo,
                device: s.device,
                sla: s.sla,
                score: s.score,
            })
            .collect();
        let near_best = candidates
            .iter()
            .zip(&scores)
            .filter(|(_, s)| self.eligible(s, choice.best, choice.served_near))
            .map(|(c, _)| c.cluster.clone())
            .collect();
        let split = choice.split.map(|(canary, bucket, sticky, variant)| Split {
            canary_cluster: canary.cluster.clone(),
            weight_bp: canary.weight_bp,
            bucket,
            sticky,
            variant,
        });
        Some(Routed {
            service: choice.service.name.clone(),
            near_best,
            candidates,
            placement: choice.placement.clone(),
            split,
        })
    }
}

/// A candidate's score and its parts, before names are attached.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scored {
    rtt_ms: Option<f64>,
    geo: f64,
    device: f64,
    sla: f64,
    score: f64,
}

/// What [`Router::choose`] picked.
struct Choice<'p> {
    service: &'p ServicePlan,
    placement: &'p String,
    /// The canary plan, the request's bucket, whether it is sticky, the variant.
    split: Option<(&'p CanaryPlan, u32, bool, Variant)>,
    /// The best score, and whether a near-best candidate serves the device type.
    best: f64,
    served_near: bool,
}

/// The cluster a request goes to, borrowed from the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steered<'p> {
    /// The upstream cluster: the canary if the split chose it.
    pub cluster: &'p str,
    /// The canary cluster of the chosen placement and the variant, if it has a canary.
    pub split: Option<(&'p str, Variant)>,
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host[..host.len() - domain.len()].ends_with('.')
        }
        None => pattern == host,
    }
}
