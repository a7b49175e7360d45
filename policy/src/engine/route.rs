//! Stages 3 and 4: score the service's placements, pick among the best, and
//! split the chosen placement between stable and canary.
//!
//! `score = w_geo·geo + w_device·device + w_sla·sla`, where
//! `geo = 1 − min(1, rtt_ms / 200)`, `device` is 1 if the cluster serves the
//! device type and 0.3 otherwise, and `sla` is the feed's score (1 = healthy).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::rtt::RttTable;
use super::{Request, all_hold};
use crate::feed::{Feed, percent_to_basis_points};
use crate::model::{HeaderMatch, Policy, RoutingHeaders, ScoreWeights, Variant};
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
    /// Whether that RTT was measured (the feed's `rtt_ms`) rather than
    /// taken from the policy's table.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rtt_measured: bool,
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
    /// Set when the canary's `always` or `never` conditions chose the
    /// variant rather than the weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeted: Option<Targeted>,
    /// The share mirrored to the canary in its mirror phase, in basis points.
    #[serde(skip_serializing_if = "split::is_zero")]
    pub mirror_bp: u32,
    /// Whether a copy of the request goes to the canary (its response is
    /// dropped): a stable request whose bucket is below the mirrored share.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mirrored: bool,
}

/// Which of a canary's header conditions decided a request's variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Targeted {
    /// `always`: to the canary whatever the weight.
    Always,
    /// `never`: kept on stable whatever the weight.
    Never,
}

/// The route chosen for a request, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Routed {
    /// The service that matched.
    pub service: String,
    /// Whether the request satisfied some placements' `match`, so that
    /// only those were candidates (else only the placements without one).
    pub targeted: bool,
    /// The candidate placements, scored, in policy order.
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
    /// Index into [`RttTable::regions`].
    region: usize,
    device_types: Option<BTreeSet<String>>,
    sla: f64,
}

/// A placement with what scoring needs of its cluster, looked up once per
/// configuration rather than per request.
#[derive(Clone, Debug)]
struct PlacementPlan {
    cluster: String,
    /// The placement's `match`: requests it is targeted at.
    matches: Option<Vec<HeaderMatch>>,
    /// RTT measured from each client region (by index into
    /// [`RttTable::regions`]) to the cluster, where the feed has one.
    measured_rtt: Vec<Option<f64>>,
    facts: Option<ClusterFacts>,
    canary: Option<CanaryPlan>,
}

/// The client's region, as the request names it.
#[derive(Clone, Copy)]
enum ClientRegion {
    /// No region header.
    Absent,
    /// A region of the policy: an index into [`RttTable::regions`].
    Known(usize),
    /// A region the policy does not know: only the default RTT applies.
    Unknown,
}

#[derive(Clone, Debug)]
struct CanaryPlan {
    cluster: String,
    salt: String,
    sticky_header: String,
    weight_bp: u32,
    mirror_bp: u32,
    always: Option<Vec<HeaderMatch>>,
    never: Option<Vec<HeaderMatch>>,
}

impl CanaryPlan {
    /// The variant the canary's header conditions force on `request`, if
    /// any: `never` first, and `always` only while the canary takes traffic.
    fn targeted(&self, request: &Request<'_>) -> Option<(Targeted, Variant)> {
        let holds = |conditions: &Option<Vec<HeaderMatch>>| {
            conditions.as_deref().is_some_and(|c| all_hold(c, request))
        };
        if holds(&self.never) {
            Some((Targeted::Never, Variant::Stable))
        } else if self.weight_bp > 0 && holds(&self.always) {
            Some((Targeted::Always, Variant::Canary))
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
struct ServicePlan {
    name: String,
    hosts: Vec<String>,
    path_prefix: String,
    placements: Vec<PlacementPlan>,
}

#[derive(Clone, Debug)]
pub(super) struct Router {
    headers: RoutingHeaders,
    weights: ScoreWeights,
    spread: f64,
    /// The policy's RTT table; a request's region is found in it once,
    /// then RTTs are read by index.
    table: RttTable,
    services: Vec<ServicePlan>,
}

impl Router {
    pub(super) fn new(policy: &Policy, feed: &Feed) -> Self {
        let table = RttTable::of(policy);
        let regions = table.regions();
        let clusters: BTreeMap<&str, ClusterFacts> = policy
            .clusters
            .iter()
            .filter_map(|c| {
                let facts = ClusterFacts {
                    region: table.index(&c.region)?,
                    device_types: c.device_types.as_ref().map(|t| t.iter().cloned().collect()),
                    sla: feed
                        .sla_scores
                        .get(&c.name)
                        .copied()
                        .unwrap_or(1.0)
                        .clamp(0.0, 1.0),
                };
                Some((c.name.as_str(), facts))
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
                    .map(|p| PlacementPlan {
                        cluster: p.cluster.clone(),
                        matches: p.matches.as_ref().map(|m| m.headers.clone()),
                        measured_rtt: regions
                            .iter()
                            .map(|region| {
                                feed.rtt_ms
                                    .get(region)
                                    .and_then(|row| row.get(&p.cluster))
                                    .copied()
                                    .filter(|ms| ms.is_finite() && *ms >= 0.0)
                            })
                            .collect(),
                        facts: clusters.get(p.cluster.as_str()).cloned(),
                        canary: p.canary.as_ref().map(|c| CanaryPlan {
                            cluster: c.cluster.clone(),
                            salt: c.salt.clone().unwrap_or_else(|| c.cluster.clone()),
                            sticky_header: c
                                .sticky_header
                                .clone()
                                .unwrap_or_else(|| policy.routing.headers.device_id.clone()),
                            weight_bp: feed.canary_weights.get(&c.cluster).copied().unwrap_or_else(
                                || percent_to_basis_points(c.steps.first().copied().unwrap_or(0.0)),
                            ),
                            mirror_bp: feed.canary_mirrors.get(&c.cluster).copied().unwrap_or(0),
                            always: c.always.as_ref().map(|m| m.headers.clone()),
                            never: c.never.as_ref().map(|m| m.headers.clone()),
                        }),
                    })
                    .collect(),
            })
            .collect();
        Self {
            headers: policy.routing.headers.clone(),
            weights: policy.routing.weights.clone(),
            spread: policy.routing.spread,
            table,
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

    fn client_region(&self, name: Option<&str>) -> ClientRegion {
        match name {
            None => ClientRegion::Absent,
            Some(name) => self
                .table
                .index(name)
                .map_or(ClientRegion::Unknown, ClientRegion::Known),
        }
    }

    fn service(&self, request: &Request<'_>) -> Option<&ServicePlan> {
        let host = host_without_port(request.host);
        self.services.iter().find(|s| {
            request.path.starts_with(&s.path_prefix)
                && (s.hosts.is_empty() || s.hosts.iter().any(|pattern| host_matches(pattern, host)))
        })
    }

    /// The score of a placement's cluster for a client in `region` with
    /// `device_type`: with the RTT measured from the region if there is one,
    /// else the table's.
    fn score(
        &self,
        placement: &PlacementPlan,
        region: ClientRegion,
        device_type: Option<&str>,
    ) -> Scored {
        let facts = placement.facts.as_ref();
        let measured = match region {
            ClientRegion::Known(from) => placement.measured_rtt.get(from).copied().flatten(),
            _ => None,
        };
        let rtt_ms = match (region, facts) {
            _ if measured.is_some() => measured,
            (ClientRegion::Known(from), Some(facts)) => self.table.by_index(from, facts.region),
            (ClientRegion::Unknown, Some(_)) => self.table.default_rtt_ms(),
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
            in_play: true,
            rtt_ms,
            rtt_measured: measured.is_some(),
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
        let region = self.client_region(
            request
                .header(&self.headers.region)
                .filter(|r| !r.is_empty()),
        );
        let device_type = request
            .header(&self.headers.device_type)
            .filter(|t| !t.is_empty());
        let targeted_at = |p: &PlacementPlan| {
            p.matches
                .as_deref()
                .map(|conditions| all_hold(conditions, request))
        };
        // Targeted placements take what they match; the others the rest.
        // Each `match` is evaluated once.
        let mut targeted = false;
        scores.clear();
        scores.extend(service.placements.iter().map(|p| {
            let target = targeted_at(p);
            targeted |= target == Some(true);
            Scored {
                in_play: target.unwrap_or(true),
                ..self.score(p, region, device_type)
            }
        }));
        if targeted {
            for (scored, placement) in scores.iter_mut().zip(&service.placements) {
                if placement.matches.is_none() {
                    scored.in_play = false;
                }
            }
        }
        let best = scores
            .iter()
            .filter(|c| c.in_play)
            .map(|c| c.score)
            .fold(f64::NEG_INFINITY, f64::max);
        let served_near = scores
            .iter()
            .any(|c| c.in_play && self.near(c, best) && c.device >= 1.0);
        let eligible = |c: &Scored| self.eligible(c, best, served_near);
        let count = scores.iter().filter(|c| eligible(c)).count();
        if count == 0 {
            // Validation keeps a placement without `match` in every service.
            return None;
        }
        let pick = usize::try_from(spread_key % count as u64).unwrap_or(0);
        let chosen = scores
            .iter()
            .enumerate()
            .filter(|(_, c)| eligible(c))
            .nth(pick)
            .map_or(0, |(i, _)| i);
        let chosen = service.placements.get(chosen)?;
        let placement = &chosen.cluster;
        let split = chosen.canary.as_ref().map(|canary| {
            let (bucket, sticky) = match request.header(&canary.sticky_header) {
                Some(id) if !id.is_empty() => (split::bucket(&canary.salt, id), true),
                _ => ((spread_key % u64::from(BUCKETS)) as u32, false),
            };
            let (targeted, variant) = match canary.targeted(request) {
                Some((why, variant)) => (Some(why), variant),
                None if split::in_canary(bucket, canary.weight_bp) => (None, Variant::Canary),
                None => (None, Variant::Stable),
            };
            // Devices kept off the canary are not mirrored to it either: a
            // copy of a command still runs there.
            let mirrored = variant == Variant::Stable
                && targeted != Some(Targeted::Never)
                && split::in_canary(bucket, canary.mirror_bp);
            ChosenSplit {
                canary,
                bucket,
                sticky,
                variant,
                targeted,
                mirrored,
            }
        });
        Some(Choice {
            service,
            placement,
            split,
            targeted,
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
        c.in_play && self.near(c, best) && (!served_near || c.device >= 1.0)
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
            .as_ref()
            .map(|split| (split.canary.cluster.as_str(), split.variant));
        let cluster = match split {
            Some((canary, Variant::Canary)) => canary,
            _ => choice.placement.as_str(),
        };
        let mirror = choice
            .split
            .filter(|split| split.mirrored)
            .map(|split| split.canary.cluster.as_str());
        Some(Steered {
            cluster,
            split,
            mirror,
        })
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
            .filter(|(_, s)| s.in_play)
            .map(|(p, s)| Candidate {
                cluster: p.cluster.clone(),
                rtt_ms: s.rtt_ms,
                rtt_measured: s.rtt_measured,
                geo: s.geo,
                device: s.device,
                sla: s.sla,
                score: s.score,
            })
            .collect();
        let near_best = choice
            .service
            .placements
            .iter()
            .zip(&scores)
            .filter(|(_, s)| self.eligible(s, choice.best, choice.served_near))
            .map(|(p, _)| p.cluster.clone())
            .collect();
        let split = choice.split.map(|split| Split {
            canary_cluster: split.canary.cluster.clone(),
            weight_bp: split.canary.weight_bp,
            bucket: split.bucket,
            sticky: split.sticky,
            variant: split.variant,
            targeted: split.targeted,
            mirror_bp: split.canary.mirror_bp,
            mirrored: split.mirrored,
        });
        Some(Routed {
            service: choice.service.name.clone(),
            targeted: choice.targeted,
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
    /// Whether the placement is a candidate for the request at all (its
    /// `match` decides).
    in_play: bool,
    rtt_ms: Option<f64>,
    rtt_measured: bool,
    geo: f64,
    device: f64,
    sla: f64,
    score: f64,
}

/// What [`Router::choose`] picked.
struct Choice<'p> {
    service: &'p ServicePlan,
    placement: &'p String,
    split: Option<ChosenSplit<'p>>,
    /// Whether the candidates were the placements targeted at the request.
    targeted: bool,
    /// The best score, and whether a near-best candidate serves the device type.
    best: f64,
    served_near: bool,
}

/// The canary split of the chosen placement, before names are copied.
struct ChosenSplit<'p> {
    canary: &'p CanaryPlan,
    bucket: u32,
    sticky: bool,
    variant: Variant,
    targeted: Option<Targeted>,
    mirrored: bool,
}

/// The cluster a request goes to, borrowed from the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steered<'p> {
    /// The upstream cluster: the canary if the split chose it.
    pub cluster: &'p str,
    /// The canary cluster of the chosen placement and the variant, if it has a canary.
    pub split: Option<(&'p str, Variant)>,
    /// The canary cluster a copy of the request goes to, in its mirror phase.
    pub mirror: Option<&'p str>,
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

/// Whether `host` (in any case) matches a lower-case `pattern`: the same
/// name, or with `*.domain` any name below the domain.
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.as_bytes();
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            let domain = domain.as_bytes();
            host.len() > domain.len() + 1
                && host
                    .get(host.len() - domain.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(domain))
                && host.get(host.len() - domain.len() - 1) == Some(&b'.')
        }
        None => host.eq_ignore_ascii_case(pattern.as_bytes()),
    }
}
