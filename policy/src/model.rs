//! The policy document operators edit, as Rust types.
//!
//! These types only describe the document's shape; [`crate::validate`] checks
//! what the shape cannot (references, ranges, ordering) and reports every
//! problem with the path of the field at fault. Unknown fields are refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// A Weir routing policy: one file, all of a fleet's steering rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Round-trip times between regions, which the geo score is computed from
    /// where the fleet has not measured them (the feed's `rtt_ms`).
    pub regions: Regions,
    /// The device types of the fleet, e.g. `sensor`, `gateway`, `vehicle`.
    pub device_types: Vec<String>,
    /// The upstream clusters requests can be sent to.
    pub clusters: Vec<Cluster>,
    /// The services: which requests they take and where they are placed.
    pub services: Vec<Service>,
    /// Priority classes and the rules that assign them.
    pub priority: Priority,
    /// Admission under overload: the concurrency limit, queueing and shedding.
    pub admission: Admission,
    /// Header names and score weights for routing.
    #[serde(default)]
    pub routing: Routing,
}

impl Policy {
    /// Every region the policy names: in the RTT table (on either side) or
    /// as a cluster's region.
    pub fn region_names(&self) -> BTreeSet<&str> {
        self.regions
            .rtt_ms
            .iter()
            .flat_map(|(from, row)| std::iter::once(from).chain(row.keys()))
            .chain(self.clusters.iter().map(|c| &c.region))
            .map(String::as_str)
            .collect()
    }
}

/// The region round-trip-time table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Regions {
    /// RTT in milliseconds for any pair of distinct regions not in `rtt_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rtt_ms: Option<f64>,
    /// RTT in milliseconds from one region to others; a pair given in one
    /// direction holds in both. A region's RTT to itself is 0 unless given.
    #[serde(default)]
    pub rtt_ms: BTreeMap<String, BTreeMap<String, f64>>,
}

/// An upstream cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name: lower-case letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The region the cluster runs in.
    pub region: String,
    /// Device types it serves; all of the fleet's when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_types: Option<Vec<String>>,
    /// `stable` (the default) or `canary`.
    #[serde(default)]
    pub variant: Variant,
    /// Endpoints as `host:port`; the host is an IP address or a DNS name.
    pub endpoints: Vec<String>,
}

/// Whether a cluster runs the current release or a candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The current release.
    #[default]
    Stable,
    /// A candidate release, reached only through a placement's canary.
    Canary,
}

/// A service: the requests it takes and the clusters it is placed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Which requests belong to the service; the first service that matches takes a request.
    #[serde(rename = "match")]
    pub matches: ServiceMatch,
    /// The service's latency objective, which cluster SLA scores are judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    /// The clusters that can serve it; routing picks among them per request.
    pub placements: Vec<Placement>,
}

/// How requests are matched to a service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceMatch {
    /// Host names (`api.example.com`, or `*.example.com` for any subdomain); any host when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefix; `/` when omitted.
    #[serde(default = "root_path")]
    pub path_prefix: String,
}

fn root_path() -> String {
    "/".to_owned()
}

/// A service's latency objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Sla {
    /// Target 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
}

/// One cluster a service is placed on, with an optional canary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// The stable cluster.
    pub cluster: String,
    /// Header conditions that target requests at this placement: a request
    /// that satisfies some placements' `match` is routed among those alone
    /// (firmware `2.*` to the v2 cluster), any other among the placements
    /// without one. Every service keeps at least one placement without.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<HeaderConditions>,
    /// A canary release of this placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// A canary rollout: a share of the placement's devices, growing step by step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The canary cluster (its `variant` must be `canary`).
    pub cluster: String,
    /// Canary weights in percent, increasing and ending at 100.
    pub steps: Vec<f64>,
    /// How long each step must stay healthy before the next.
    pub hold: Duration,
    /// When the canary counts as healthy.
    pub analysis: Analysis,
    /// The request header whose value keeps a device on its variant; the
    /// routing's device id header when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Salt of the sticky hash; change it to reshuffle which devices are in
    /// the canary. The canary cluster's name when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Requests that go to the canary whatever its weight (internal
    /// testers' devices), while the canary takes any traffic at all: not
    /// once it is rolled back, nor while it is only mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<HeaderConditions>,
    /// Requests that never go to the canary, whatever its weight (devices
    /// that must not run a candidate); `never` wins over `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never: Option<HeaderConditions>,
    /// A dark launch before the first step: a share of the placement's
    /// requests is copied to the canary, whose responses are dropped, and the
    /// canary is judged on them; only a healthy mirror phase starts the split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// A canary's mirror phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The share of the placement's devices whose requests are mirrored, in
    /// percent: those with the lowest sticky buckets, who are also the first
    /// to get the canary once the split starts.
    pub percent: f64,
    /// How long the mirror phase must stay healthy before the first step;
    /// the canary's `hold` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Duration>,
}

/// Conditions on request headers, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderConditions {
    /// The conditions; at least one.
    pub headers: Vec<HeaderMatch>,
}

/// Analysis thresholds: canary compared with stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Largest acceptable increase of the error rate over stable, in percentage points.
    pub max_error_rate_increase: f64,
    /// Largest acceptable ratio of canary to stable latency.
    pub max_latency_ratio: LatencyRatios,
    /// Requests each variant needs in a window before any verdict (and each
    /// variant of a segment before that segment's).
    pub min_samples: u32,
    /// Device segments judged one by one besides the whole: a canary bad for
    /// one device type or region alone is found out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Segments>,
    /// An absolute ceiling on the canary's error rate that rises with its
    /// latency degradation (the seed's formula), besides the comparison
    /// with stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ceiling: Option<ErrorCeiling>,
}

/// `base + per_p99_ratio × (canary p99 / stable p99)`, as error rates (0–1):
/// the seed's `0.03 + 0.02 × (p99 / baseline_p99)` by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ErrorCeiling {
    /// The ceiling with no latency degradation left over: 0.03.
    #[serde(default = "default_ceiling_base")]
    pub base: f64,
    /// How much each unit of p99 ratio adds: 0.02.
    #[serde(default = "default_ceiling_per_ratio")]
    pub per_p99_ratio: f64,
}

fn default_ceiling_base() -> f64 {
    0.03
}

fn default_ceiling_per_ratio() -> f64 {
    0.02
}

/// The segments a canary is judged in (see [`crate::segments`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// What tells segments apart: `device_type`, `region` (the routing
    /// headers' values) or `header:NAME` (any request header's value).
    pub by: Vec<String>,
    /// Values of each dimension judged on their own, the most requested;
    /// the rest are pooled as `other`.
    #[serde(default = "default_segment_top")]
    pub top: u32,
    /// What a segment judged bad does: `rollback` (the default) or `hold`
    /// (the canary stays at its step until the segment recovers).
    #[serde(default)]
    pub on_bad: OnBadSegment,
    /// The attribute of an application's `http.server.request.duration`
    /// data points that carries each dimension's value, by dimension;
    /// `http.request.header.<header>` (the semantic conventions' captured
    /// request header) when not named.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn default_segment_top() -> u32 {
    8
}

/// What a segment judged bad does to its canary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnBadSegment {
    /// Roll the canary back, as a bad whole would.
    #[default]
    Rollback,
    /// Keep the canary at its step (no advance) while the segment is bad.
    Hold,
}

/// Latency ratio limits by percentile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LatencyRatios {
    /// Limit for the 95th percentile.
    pub p95: f64,
    /// Limit for the 99th percentile.
    pub p99: f64,
}

/// Priority classes and their rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Priority {
    /// Class names, highest priority first.
    pub classes: Vec<String>,
    /// The class of a request no rule matches.
    pub default: String,
    /// Rules in order; the first that matches assigns its class.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A classification rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The class a matching request gets.
    pub class: String,
    /// Conditions, all of which must hold.
    #[serde(rename = "match")]
    pub matches: RuleMatch,
}

/// A rule's conditions; at least one must be given, and all must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// The request path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The request method is this (upper case, e.g. `POST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
}

/// A condition on one request header: exactly one of `equals`, `prefix`, `present`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (lower case).
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The header is present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Admission control under overload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Admission {
    /// Requests in flight through one Envoy, all classes together; the
    /// ceiling when the limit adapts.
    pub concurrency_limit: u32,
    /// Let `weir` adapt the limit to the fleet's latency, between
    /// `adaptive_limit.min` and `concurrency_limit`; fixed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_limit: Option<AdaptiveLimit>,
    /// The `retry-after` a shed request is answered with.
    pub retry_after: Duration,
    /// Per class: how long it may wait for a slot.
    pub classes: BTreeMap<String, ClassAdmission>,
}

/// The bounds of an adaptive concurrency limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AdaptiveLimit {
    /// The lowest the limit goes, however slow the clusters are.
    pub min: u32,
    /// What moves it: the clusters' latency against their SLA (the
    /// default), or the fleet's request rate against its own baseline.
    #[serde(default, skip_serializing_if = "LimitSignal::is_latency")]
    pub by: LimitSignal,
}

/// What an adaptive concurrency limit follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimitSignal {
    /// Cut while the clusters' p99 is over their `sla.p99_ms`, raised back
    /// while under (AIMD).
    #[default]
    Latency,
    /// The seed's `max(min, ceiling × baseline_rps / current_rps)`: a surge
    /// over the usual request rate (a reconnect storm) lowers the limit in
    /// proportion.
    Throughput,
}

impl LimitSignal {
    fn is_latency(&self) -> bool {
        *self == Self::Latency
    }
}

/// One class's admission settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClassAdmission {
    /// Removed: admission is work-conserving, so every class may use every
    /// free slot. Kept in the model only so that a policy which still sets it
    /// is refused with a message saying so, rather than "unknown field".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub share: Option<f64>,
    /// Longest time a request of the class waits in the queue before it is shed.
    pub max_wait: Duration,
}

/// Routing settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Request headers that identify the device and where it is.
    #[serde(default)]
    pub headers: RoutingHeaders,
    /// Weights of the score's parts; they add up to 1.
    #[serde(default)]
    pub weights: ScoreWeights,
    /// Candidates within this much of the best score share the traffic, so
    /// that near-equal clusters are not herded onto one.
    #[serde(default = "default_spread")]
    pub spread: f64,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            headers: RoutingHeaders::default(),
            weights: ScoreWeights::default(),
            spread: default_spread(),
        }
    }
}

fn default_spread() -> f64 {
    0.05
}

/// Names of the headers routing reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RoutingHeaders {
    /// The client's region (`x-region` by default).
    #[serde(default = "default_region_header")]
    pub region: String,
    /// The device type (`x-device-type` by default).
    #[serde(default = "default_device_type_header")]
    pub device_type: String,
    /// The device id, which canary stickiness hashes (`x-device-id` by default).
    #[serde(default = "default_device_id_header")]
    pub device_id: String,
}

impl Default for RoutingHeaders {
    fn default() -> Self {
        Self {
            region: default_region_header(),
            device_type: default_device_type_header(),
            device_id: default_device_id_header(),
        }
    }
}

fn default_region_header() -> String {
    "x-region".to_owned()
}
fn default_device_type_header() -> String {
    "x-device-type".to_owned()
}
fn default_device_id_header() -> String {
    "x-device-id".to_owned()
}

/// Weights of the route score `geo·w_geo + device·w_device + sla·w_sla`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ScoreWeights {
    /// Weight of closeness (0.4 by default).
    #[serde(default = "default_geo_weight")]
    pub geo: f64,
    /// Weight of serving the device type (0.3 by default).
    #[serde(default = "default_other_weight")]
    pub device: f64,
    /// Weight of live SLA health (0.3 by default).
    #[serde(default = "default_other_weight")]
    pub sla: f64,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            geo: default_geo_weight(),
            device: default_other_weight(),
            sla: default_other_weight(),
        }
    }
}

fn default_geo_weight() -> f64 {
    0.4
}
fn default_other_weight() -> f64 {
    0.3
}
