//! Validation: everything about a policy that its shape alone cannot say.
//!
//! Every problem is reported, not just the first, each with the path of the
//! field at fault (`services[2].canary.steps[3]`); the source layer turns
//! paths into lines and columns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::model::{
    Admission, Canary, Cluster, HeaderConditions, HeaderMatch, Policy, Priority, Regions, Routing,
    Rule, Service, Variant,
};
use crate::names;

/// One problem with a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Where: the path of the field at fault, e.g. `services[2].canary.steps[3]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks a policy; an empty list means it is valid.
pub fn validate(policy: &Policy) -> Vec<Invalid> {
    let mut check = Check::default();
    let device_types = check.unique_names("device_types", policy.device_types.iter());
    if policy.device_types.is_empty() {
        check.fail("device_types", "list at least one device type");
    }
    check.regions(&policy.regions, &policy.clusters);
    let clusters = check.clusters(&policy.clusters, &device_types);
    check.services(&policy.services, &clusters);
    check.priority(&policy.priority);
    check.admission(
        &policy.admission,
        &policy.priority,
        policy.services.iter().any(|s| s.sla.is_some()),
    );
    check.routing(&policy.routing);
    check.canary_segments(policy);
    check.errors
}

#[derive(Default)]
struct Check {
    errors: Vec<Invalid>,
}

fn at(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn item(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Upper bound for any RTT: beyond a minute something is mistyped.
const MAX_RTT_MS: f64 = 60_000.0;

impl Check {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Invalid {
            path: path.into(),
            message: message.into(),
        });
    }

    fn name(&mut self, path: &str, name: &str) {
        if let Err(why) = names::check_name(name) {
            self.fail(path, why);
        }
    }

    /// Checks each name in a list and that none repeats; returns the set.
    fn unique_names<'a>(
        &mut self,
        list: &str,
        names: impl Iterator<Item = &'a String>,
    ) -> BTreeSet<&'a str> {
        let mut seen = BTreeMap::new();
        for (i, name) in names.enumerate() {
            let path = item(list, i);
            self.name(&path, name);
            if let Some(first) = seen.insert(name.as_str(), i) {
                self.fail(
                    path,
                    format!("`{name}` is already defined at {}", item(list, first)),
                );
                seen.insert(name.as_str(), first);
            }
        }
        seen.into_keys().collect()
    }

    fn unique_field_names<'a, T>(
        &mut self,
        list: &str,
        items: &'a [T],
        name_of: impl Fn(&'a T) -> &'a String,
    ) -> BTreeMap<&'a str, usize> {
        let mut seen = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            let path = at(&item(list, i), "name");
            let name = name_of(it);
            self.name(&path, name);
            if let Some(&first) = seen.get(name.as_str()) {
                self.fail(
                    path,
                    format!("`{name}` is already defined at {}", item(list, first)),
                );
            } else {
                seen.insert(name.as_str(), i);
            }
        }
        seen
    }

    fn header_name(&mut self, path: &str, name: &str) {
        if let Err(why) = names::check_header_name(name) {
            self.fail(path, why);
        }
    }

    fn duration(&mut self, path: &str, duration: &crate::Duration, allow_zero: bool) -> u64 {
        match duration.millis() {
            None => {
                self.fail(
                    path,
                    format!("`{duration}` is not a duration: write a whole number and ms, s, m or h, e.g. `500ms` or `30s`"),
                );
                0
            }
            Some(0) if !allow_zero => {
                self.fail(path, "must be longer than 0");
                0
            }
            Some(ms) => ms,
        }
    }

    /// Every canary's `analysis.segments`, against the routing headers.
    fn canary_segments(&mut self, policy: &Policy) {
        for (i, service) in policy.services.iter().enumerate() {
            for (j, placement) in service.placements.iter().enumerate() {
                let Some(segments) = placement
                    .canary
                    .as_ref()
                    .and_then(|c| c.analysis.segments.as_ref())
                else {
                    continue;
                };
                let path = at(
                    &item(&at(&item("services", i), "placements"), j),
                    "canary.analysis.segments",
                );
                self.segments(&path, segments, &policy.routing.headers);
            }
        }
    }

    fn segments(
        &mut self,
        path: &str,
        segments: &crate::model::Segments,
        routing: &crate::model::RoutingHeaders,
    ) {
        use crate::segments::{MAX_DIMENSIONS, MAX_TOP, dimension};
        let by = at(path, "by");
        if segments.by.is_empty() || segments.by.len() > MAX_DIMENSIONS {
            self.fail(
                &by,
                format!(
                    "name 1 to {MAX_DIMENSIONS} dimensions, not {}",
                    segments.by.len()
                ),
            );
        }
        let mut headers = BTreeMap::new();
        for (i, written) in segments.by.iter().enumerate() {
            match dimension(written, routing) {
                Err(why) => self.fail(item(&by, i), why),
                Ok(d) => {
                    if let Some(first) = headers.insert(d.header.clone(), i) {
                        self.fail(
                            item(&by, i),
                            format!(
                                "`{written}` reads header `{}`, as {} does",
                                d.header,
                                item(&by, first)
                            ),
                        );
                    }
                }
            }
        }
        for (dimension, attribute) in &segments.attributes {
            let path = at(&at(path, "attributes"), dimension);
            if !segments.by.contains(dimension) {
                self.fail(&path, format!("`{dimension}` is not one of `by`"));
            }
            if attribute.trim().is_empty() || attribute.len() > 255 {
                self.fail(&path, "an attribute name of 1 to 255 characters");
            }
        }
        if segments.top == 0 || segments.top > MAX_TOP {
            self.fail(
                at(path, "top"),
                format!(
                    "values per dimension must be between 1 and {MAX_TOP}, not {}",
                    segments.top
                ),
            );
        }
    }

    fn within(&mut self, path: &str, value: f64, low: f64, high: f64, what: &str) {
        if !value.is_finite() || value < low || value > high {
            self.fail(
                path,
                format!("{what} must be between {low} and {high}, not {value}"),
            );
        }
    }

    fn regions(&mut self, regions: &Regions, clusters: &[Cluster]) {
        if let Some(default) = regions.default_rtt_ms {
            self.within(
                "regions.default_rtt_ms",
                default,
                0.0,
                MAX_RTT_MS,
                "an RTT in ms",
            );
        }
        let mut pairs: HashMap<(&str, &str), (f64, String)> = HashMap::new();
        let mut known: BTreeSet<&str> = BTreeSet::new();
        for (from, row) in &regions.rtt_ms {
            let row_path = at("regions.rtt_ms", from);
            self.name(&row_path, from);
            known.insert(from);
            for (to, &rtt) in row {
                let path = at(&row_path, to);
                self.name(&path, to);
                known.insert(to);
                self.within(&path, rtt, 0.0, MAX_RTT_MS, "an RTT in ms");
                let key = if from <= to {
                    (from.as_str(), to.as_str())
                } else {
                    (to.as_str(), from.as_str())
                };
                match pairs.get(&key) {
                    Some((other, other_path)) if *other != rtt => {
                        let message = format!(
                            "{rtt} ms contradicts {other} ms given for the same pair at {other_path}"
                        );
                        self.fail(path, message);
                    }
                    Some(_) => {}
                    None => {
                        pairs.insert(key, (rtt, path));
                    }
                }
            }
        }
        let mut first_use: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, cluster) in clusters.iter().enumerate() {
            first_use.entry(cluster.region.as_str()).or_insert(i);
            known.insert(&cluster.region);
        }
        if regions.default_rtt_ms.is_some() {
            return;
        }
        // Without a default, every pair of regions a request can come from or go
        // to needs an RTT; each missing pair is reported once, at the first
        // cluster (in file order) of the pair.
        let mut by_first_use: Vec<(&str, usize)> = first_use.into_iter().collect();
        by_first_use.sort_by_key(|&(_, cluster)| cluster);
        let mut reported: BTreeSet<(&str, &str)> = BTreeSet::new();
        for &(region, cluster) in &by_first_use {
            let missing: Vec<&str> = known
                .iter()
                .copied()
                .filter(|&other| other != region)
                .filter(|&other| {
                    let key = if region <= other {
                        (region, other)
                    } else {
                        (other, region)
                    };
                    !pairs.contains_key(&key) && reported.insert(key)
                })
                .collect();
            if !missing.is_empty() {
                self.fail(
                    at(&item("clusters", cluster), "region"),
                    format!(
                        "no RTT from `{region}` to {}; add them under regions.rtt_ms or set regions.default_rtt_ms",
                        quoted_list(&missing)
                    ),
                );
            }
        }
    }

    fn clusters<'a>(
        &mut self,
        clusters: &'a [Cluster],
        device_types: &BTreeSet<&str>,
    ) -> BTreeMap<&'a str, &'a Cluster> {
        if clusters.is_empty() {
            self.fail("clusters", "define at least one cluster");
        }
        let index = self.unique_field_names("clusters", clusters, |c| &c.name);
        for (i, cluster) in clusters.iter().enumerate() {
            let path = item("clusters", i);
            self.name(&at(&path, "region"), &cluster.region);
            if let Some(types) = &cluster.device_types {
                let types_path = at(&path, "device_types");
                if types.is_empty() {
                    self.fail(
                        &types_path,
                        "list at least one device type, or omit the field to serve all",
                    );
                }
                for (j, device_type) in types.iter().enumerate() {
                    if !device_types.contains(device_type.as_str()) {
                        self.fail(
                            item(&types_path, j),
                            format!(
                                "unknown device type `{device_type}`; the fleet's are {}",
                                quoted_list(device_types)
                            ),
                        );
                    }
                }
            }
            let endpoints_path = at(&path, "endpoints");
            if cluster.endpoints.is_empty() {
                self.fail(&endpoints_path, "list at least one endpoint (`host:port`)");
            }
            for (j, endpoint) in cluster.endpoints.iter().enumerate() {
                if let Err(why) = names::check_endpoint(endpoint) {
                    self.fail(item(&endpoints_path, j), why);
                }
            }
        }
        index
            .into_iter()
            .filter_map(|(name, i)| Some((name, clusters.get(i)?)))
            .collect()
    }

    fn services(&mut self, services: &[Service], clusters: &BTreeMap<&str, &Cluster>) {
        if services.is_empty() {
            self.fail("services", "define at least one service");
        }
        self.unique_field_names("services", services, |s| &s.name);
        let mut canary_owner: BTreeMap<&str, String> = BTreeMap::new();
        for (i, service) in services.iter().enumerate() {
            let path = item("services", i);
            let match_path = at(&path, "match");
            if !service.matches.path_prefix.starts_with('/') {
                self.fail(
                    at(&match_path, "path_prefix"),
                    format!("`{}` must start with `/`", service.matches.path_prefix),
                );
            }
            for (j, host) in service.matches.hosts.iter().enumerate() {
                if let Err(why) = names::check_host_pattern(host) {
                    self.fail(item(&at(&match_path, "hosts"), j), why);
                }
            }
            if let Some(sla) = &service.sla {
                self.within(
                    &at(&path, "sla.p99_ms"),
                    sla.p99_ms,
                    1.0,
                    600_000.0,
                    "a p99 target in ms",
                );
            }
            let placements_path = at(&path, "placements");
            if service.placements.is_empty() {
                self.fail(
                    &placements_path,
                    "place the service on at least one cluster",
                );
            }
            if !service.placements.is_empty()
                && service.placements.iter().all(|p| p.matches.is_some())
            {
                self.fail(
                    &placements_path,
                    "every placement has a `match`: keep one without, for the requests none matches",
                );
            }
            let mut placed = BTreeMap::new();
            for (j, placement) in service.placements.iter().enumerate() {
                let placement_path = item(&placements_path, j);
                let cluster_path = at(&placement_path, "cluster");
                match clusters.get(placement.cluster.as_str()) {
                    None => self.unknown_cluster(&cluster_path, &placement.cluster, clusters),
                    Some(cluster) if cluster.variant != Variant::Stable => self.fail(
                        &cluster_path,
                        format!("`{}` is a canary cluster; place stable clusters and name canaries under `canary`", placement.cluster),
                    ),
                    Some(_) => {}
                }
                if let Some(first) = placed.insert(placement.cluster.as_str(), j) {
                    self.fail(
                        &cluster_path,
                        format!(
                            "`{}` is already placed at {}",
                            placement.cluster,
                            item(&placements_path, first)
                        ),
                    );
                }
                if let Some(conditions) = &placement.matches {
                    self.header_conditions(&at(&placement_path, "match"), conditions);
                }
                if let Some(canary) = &placement.canary {
                    let canary_path = at(&placement_path, "canary");
                    self.canary(&canary_path, canary, &placement.cluster, clusters);
                    if let Some(owner) =
                        canary_owner.insert(canary.cluster.as_str(), canary_path.clone())
                    {
                        self.fail(
                            at(&canary_path, "cluster"),
                            format!("`{}` is already the canary at {owner}; each canary cluster serves one rollout", canary.cluster),
                        );
                    }
                }
            }
        }
    }

    fn unknown_cluster(&mut self, path: &str, name: &str, clusters: &BTreeMap<&str, &Cluster>) {
        let known: Vec<&str> = clusters.keys().copied().collect();
        self.fail(
            path,
            format!(
                "unknown cluster `{name}`; defined clusters are {}",
                quoted_list(&known)
            ),
        );
    }

    fn canary(
        &mut self,
        path: &str,
        canary: &Canary,
        stable: &str,
        clusters: &BTreeMap<&str, &Cluster>,
    ) {
        let cluster_path = at(path, "cluster");
        match clusters.get(canary.cluster.as_str()) {
            None => self.unknown_cluster(&cluster_path, &canary.cluster, clusters),
            Some(_) if canary.cluster == stable => self.fail(
                &cluster_path,
                "the canary cluster must differ from the placement's stable cluster",
            ),
            Some(cluster) if cluster.variant != Variant::Canary => self.fail(
                &cluster_path,
                format!(
                    "`{}` is not a canary cluster: set `variant: canary` on it",
                    canary.cluster
                ),
            ),
            Some(_) => {}
        }
        let steps_path = at(path, "steps");
        if canary.steps.is_empty() {
            self.fail(
                &steps_path,
                "list the rollout's weights in percent, e.g. [1, 5, 25, 50, 100]",
            );
        }
        let mut previous: Option<f64> = None;
        for (k, &step) in canary.steps.iter().enumerate() {
            let step_path = item(&steps_path, k);
            if !step.is_finite() || step <= 0.0 || step > 100.0 {
                self.fail(
                    &step_path,
                    format!("a weight must be above 0 and at most 100 percent, not {step}"),
                );
            } else if let Some(before) = previous.filter(|&before| step <= before) {
                self.fail(
                    &step_path,
                    format!("steps must increase: {step} follows {before}"),
                );
            }
            if step.is_finite() && step > 0.0 && step <= 100.0 {
                // Only valid steps are compared with the next, so one bad value is one error.
                previous = Some(step);
            }
        }
        if let Some(&last) = canary.steps.last()
            && last != 100.0
        {
            self.fail(
                item(&steps_path, canary.steps.len() - 1),
                format!("the last step must be 100, not {last}"),
            );
        }
        self.duration(&at(path, "hold"), &canary.hold, false);
        let analysis = at(path, "analysis");
        self.within(
            &at(&analysis, "max_error_rate_increase"),
            canary.analysis.max_error_rate_increase,
            0.0,
            100.0,
            "an increase in percentage points",
        );
        let ratios = at(&analysis, "max_latency_ratio");
        self.within(
            &at(&ratios, "p95"),
            canary.analysis.max_latency_ratio.p95,
            1.0,
            100.0,
            "a latency ratio",
        );
        self.within(
            &at(&ratios, "p99"),
            canary.analysis.max_latency_ratio.p99,
            1.0,
            100.0,
            "a latency ratio",
        );
        if let Some(ceiling) = &canary.analysis.error_ceiling {
            let path = at(&analysis, "error_ceiling");
            let what = "an error rate (0 to 1)";
            self.within(&at(&path, "base"), ceiling.base, 0.0, 1.0, what);
            self.within(
                &at(&path, "per_p99_ratio"),
                ceiling.per_p99_ratio,
                0.0,
                1.0,
                what,
            );
        }
        if canary.analysis.min_samples == 0 {
            self.fail(
                at(&analysis, "min_samples"),
                "at least one sample is needed for a verdict",
            );
        }
        if let Some(header) = &canary.sticky_header {
            self.header_name(&at(path, "sticky_header"), header);
        }
        if let Some(conditions) = &canary.always {
            self.header_conditions(&at(path, "always"), conditions);
        }
        if let Some(conditions) = &canary.never {
            self.header_conditions(&at(path, "never"), conditions);
        }
        if let Some(mirror) = &canary.mirror {
            let mirror_path = at(path, "mirror");
            let share = mirror.percent;
            if !share.is_finite() || share <= 0.0 || share > 100.0 {
                self.fail(
                    at(&mirror_path, "percent"),
                    format!("a share must be above 0 and at most 100 percent, not {share}"),
                );
            }
            if let Some(hold) = &mirror.hold {
                self.duration(&at(&mirror_path, "hold"), hold, false);
            }
        }
        if canary
            .salt
            .as_deref()
            .is_some_and(|salt| salt.trim().is_empty())
        {
            self.fail(
                at(path, "salt"),
                "must not be empty (omit it to use the canary cluster's name)",
            );
        }
    }

    fn priority(&mut self, priority: &Priority) {
        if priority.classes.is_empty() {
            self.fail(
                "priority.classes",
                "list the classes, highest first, e.g. [alarm, command, telemetry, heartbeat]",
            );
        }
        self.unique_names("priority.classes", priority.classes.iter());
        if !priority.classes.contains(&priority.default) {
            self.fail(
                "priority.default",
                unknown_class(&priority.default, &priority.classes),
            );
        }
        for (i, rule) in priority.rules.iter().enumerate() {
            self.rule(&item("priority.rules", i), rule, &priority.classes);
        }
    }

    fn rule(&mut self, path: &str, rule: &Rule, classes: &[String]) {
        if !classes.contains(&rule.class) {
            self.fail(at(path, "class"), unknown_class(&rule.class, classes));
        }
        let conditions = at(path, "match");
        let m = &rule.matches;
        if m.path_prefix.is_none() && m.method.is_none() && m.headers.is_empty() {
            self.fail(
                &conditions,
                "give at least one condition: path_prefix, method or headers",
            );
        }
        if let Some(prefix) = &m.path_prefix
            && !prefix.starts_with('/')
        {
            self.fail(
                at(&conditions, "path_prefix"),
                format!("`{prefix}` must start with `/`"),
            );
        }
        if let Some(method) = &m.method
            && (method.is_empty()
                || !method
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_'))
        {
            self.fail(
                at(&conditions, "method"),
                format!("`{method}` is not an HTTP method in upper case, e.g. `POST`"),
            );
        }
        for (k, header) in m.headers.iter().enumerate() {
            self.header_match(&item(&at(&conditions, "headers"), k), header);
        }
    }

    fn header_conditions(&mut self, path: &str, conditions: &HeaderConditions) {
        let headers = at(path, "headers");
        if conditions.headers.is_empty() {
            self.fail(
                &headers,
                "give at least one header condition, e.g. `{ name: x-tester, equals: \"1\" }`",
            );
        }
        for (k, header) in conditions.headers.iter().enumerate() {
            self.header_match(&item(&headers, k), header);
        }
    }

    fn header_match(&mut self, path: &str, header: &HeaderMatch) {
        self.header_name(&at(path, "name"), &header.name);
        let given = [
            header.equals.is_some(),
            header.prefix.is_some(),
            header.present.is_some(),
        ]
        .into_iter()
        .filter(|&g| g)
        .count();
        if given != 1 {
            self.fail(path, "give exactly one of `equals`, `prefix` or `present`");
        }
    }

    fn admission(&mut self, admission: &Admission, priority: &Priority, has_sla: bool) {
        if admission.concurrency_limit == 0 {
            self.fail("admission.concurrency_limit", "must be at least 1");
        }
        if let Some(adaptive) = &admission.adaptive_limit {
            let min = adaptive.min;
            if min == 0 {
                self.fail("admission.adaptive_limit.min", "must be at least 1");
            } else if min > admission.concurrency_limit {
                self.fail(
                    "admission.adaptive_limit.min",
                    format!(
                        "{min} is above admission.concurrency_limit ({}), the limit's ceiling",
                        admission.concurrency_limit
                    ),
                );
            }
            if !has_sla && adaptive.by == crate::model::LimitSignal::Latency {
                self.fail(
                    "admission.adaptive_limit",
                    "the limit adapts to latency against the services' `sla.p99_ms`, and no service has an `sla`",
                );
            }
        }
        self.duration("admission.retry_after", &admission.retry_after, false);
        let classes_path = "admission.classes";
        for name in admission.classes.keys() {
            if !priority.classes.contains(name) {
                self.fail(
                    at(classes_path, name),
                    unknown_class(name, &priority.classes),
                );
            }
        }
        for class in &priority.classes {
            let Some(settings) = admission.classes.get(class) else {
                self.fail(
                    classes_path,
                    format!("no admission settings for class `{class}`"),
                );
                continue;
            };
            let path = at(classes_path, class);
            if settings.share.is_some() {
                self.fail(
                    at(&path, "share"),
                    "`share` was removed: admission is work-conserving, every class may use any free slot and classes are protected by their order (a freed slot goes to the highest class waiting, the lowest is shed first); delete it",
                );
            }
            self.duration(&at(&path, "max_wait"), &settings.max_wait, true);
        }
    }

    fn routing(&mut self, routing: &Routing) {
        let headers = &routing.headers;
        let named = [
            ("routing.headers.region", &headers.region),
            ("routing.headers.device_type", &headers.device_type),
            ("routing.headers.device_id", &headers.device_id),
        ];
        for (i, (path, name)) in named.iter().enumerate() {
            self.header_name(path, name);
            if let Some((other, _)) = named.iter().take(i).find(|(_, n)| n == name) {
                self.fail(*path, format!("`{name}` is already used by {other}"));
            }
        }
        let w = &routing.weights;
        for (path, value) in [
            ("routing.weights.geo", w.geo),
            ("routing.weights.device", w.device),
            ("routing.weights.sla", w.sla),
        ] {
            self.within(path, value, 0.0, 1.0, "a weight");
        }
        let sum = w.geo + w.device + w.sla;
        if sum.is_finite() && (sum - 1.0).abs() > 1e-6 {
            self.fail(
                "routing.weights",
                format!("geo + device + sla must add up to 1, not {sum}"),
            );
        }
        self.within("routing.spread", routing.spread, 0.0, 1.0, "a score margin");
    }
}

fn unknown_class(name: &str, classes: &[String]) -> String {
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    format!(
        "unknown priority class `{name}`; the classes are {}",
        quoted_list(&names)
    )
}

fn quoted_list<'a>(names: impl IntoIterator<Item = &'a &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if quoted.is_empty() {
        "none".to_owned()
    } else {
        quoted.join(", ")
    }
}
