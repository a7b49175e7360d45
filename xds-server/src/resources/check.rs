//! The consistency check every snapshot passes before it is served: nothing
//! in it may refer to something it does not hold, and the filter must accept
//! its configuration. Envoy would otherwise reject a resource, or worse,
//! accept it and fail requests (a route to a cluster it does not know).
//!
//! The check reads the resources as built, the way Envoy will, rather than
//! trusting the code that built them.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{async_data_source, http_uri};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config;
use envoy_types::pb::google::protobuf::{Any, StringValue};
use prost::{Message, Name};
use weir_policy::{FilterConfig, Policy};

use super::Built;
use super::listener::HTTP_CONNECTION_MANAGER;

/// Every inconsistency of `built`, the resources for `policy`; empty when
/// there is none.
pub(super) fn check(built: &Built, policy: &Policy) -> Vec<String> {
    let mut problems = Vec::new();
    let clusters = unique(
        "clusters",
        built.clusters.iter().map(|c| c.name.as_str()),
        &mut problems,
    );
    unique(
        "endpoint assignments",
        built.assignments.iter().map(|a| a.cluster_name.as_str()),
        &mut problems,
    );
    unique(
        "listeners",
        built.listeners.iter().map(|l| l.name.as_str()),
        &mut problems,
    );
    let routes = unique(
        "route configurations",
        built.routes.iter().map(|r| r.name.as_str()),
        &mut problems,
    );
    let extensions: BTreeMap<&str, Option<&Any>> = built
        .extensions
        .iter()
        .map(|e| (e.name.as_str(), e.typed_config.as_ref()))
        .collect();
    unique(
        "extension configurations",
        built.extensions.iter().map(|e| e.name.as_str()),
        &mut problems,
    );

    policy_references(policy, &clusters, &mut problems);
    endpoints(&built.clusters, &built.assignments, &mut problems);
    for listener in &built.listeners {
        listener_references(listener, &routes, &extensions, &mut problems);
    }
    // A module may be fetched through a cluster of the Envoys' bootstrap too.
    let mut fetchable = clusters.clone();
    fetchable.extend(built.bootstrap_clusters.iter().copied());
    for extension in &built.extensions {
        match extension.typed_config.as_ref() {
            Some(any) if any.type_url == Wasm::type_url() => {
                wasm(&extension.name, any, &fetchable, &mut problems);
            }
            _ => problems.push(format!(
                "extension configuration `{}` is not a wasm filter",
                extension.name
            )),
        }
    }
    problems
}

/// The names, each once; a name given twice is a problem (the snapshot would
/// keep one of the two).
fn unique<'a>(
    kind: &str,
    names: impl Iterator<Item = &'a str>,
    problems: &mut Vec<String>,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            problems.push(format!("two {kind} named `{name}`"));
        }
    }
    seen
}

/// Every cluster the filter can send a request to exists.
fn policy_references(policy: &Policy, clusters: &BTreeSet<&str>, problems: &mut Vec<String>) {
    for service in &policy.services {
        for placement in &service.placements {
            if !clusters.contains(placement.cluster.as_str()) {
                problems.push(format!(
                    "service `{}` is placed on `{}`, but there is no such cluster",
                    service.name, placement.cluster
                ));
            }
            if let Some(canary) = &placement.canary
                && !clusters.contains(canary.cluster.as_str())
            {
                problems.push(format!(
                    "service `{}` has the canary `{}`, but there is no such cluster",
                    service.name, canary.cluster
                ));
            }
        }
    }
}

/// Every EDS cluster has its assignment, every assignment its EDS cluster,
/// and every cluster at least one endpoint.
fn endpoints(
    clusters: &[Cluster],
    assignments: &[ClusterLoadAssignment],
    problems: &mut Vec<String>,
) {
    let by_name: BTreeMap<&str, &ClusterLoadAssignment> = assignments
        .iter()
        .map(|a| (a.cluster_name.as_str(), a))
        .collect();
    let mut eds = BTreeSet::new();
    for cluster in clusters {
        let name = cluster.name.as_str();
        let is_eds = cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        let assignment = if is_eds {
            eds.insert(name);
            let service_name = cluster
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.as_str());
            if !matches!(service_name, Some("")) {
                problems.push(format!(
                    "EDS cluster `{name}` must ask for the endpoints named after it"
                ));
            }
            let found = by_name.get(name).copied();
            if found.is_none() {
                problems.push(format!("EDS cluster `{name}` has no endpoint assignment"));
            }
            found
        } else {
            cluster.load_assignment.as_ref()
        };
        let count = assignment.map_or(0, |a| {
            a.endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>()
        });
        // A missing EDS assignment is reported above, not twice.
        if count == 0 && (assignment.is_some() || !is_eds) {
            problems.push(format!("cluster `{name}` has no endpoints"));
        }
    }
    for name in by_name.keys() {
        if !eds.contains(name) {
            problems.push(format!(
                "endpoint assignment `{name}` belongs to no EDS cluster"
            ));
        }
    }
}

/// The listener's routes and discovered filters exist, with the right type.
fn listener_references(
    listener: &Listener,
    routes: &BTreeSet<&str>,
    extensions: &BTreeMap<&str, Option<&Any>>,
    problems: &mut Vec<String>,
) {
    let name = &listener.name;
    let managers: Vec<&Any> = listener
        .filter_chains
        .iter()
        .flat_map(|chain| &chain.filters)
        .filter(|f| f.name == HTTP_CONNECTION_MANAGER)
        .filter_map(|f| match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        })
        .collect();
    if managers.is_empty() {
        problems.push(format!("listener `{name}` has no HTTP connection manager"));
    }
    for any in managers {
        let manager = match unpack::<HttpConnectionManager>(any) {
            Ok(manager) => manager,
            Err(why) => {
                problems.push(format!("listener `{name}`: {why}"));
                continue;
            }
        };
        match &manager.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => {
                if !routes.contains(rds.route_config_name.as_str()) {
                    problems.push(format!(
                        "listener `{name}` reads routes `{}`, but there is no such route configuration",
                        rds.route_config_name
                    ));
                }
            }
            Some(RouteSpecifier::RouteConfig(_)) => {}
            _ => problems.push(format!("listener `{name}` has no routes")),
        }
        for http_filter in &manager.http_filters {
            let Some(http_filter::ConfigType::ConfigDiscovery(discovery)) =
                &http_filter.config_type
            else {
                continue;
            };
            let filter_name = &http_filter.name;
            match extensions.get(filter_name.as_str()) {
                None => problems.push(format!(
                    "listener `{name}` runs the filter `{filter_name}`, but there is no such extension configuration"
                )),
                Some(config) => {
                    let type_url = config.map_or("", |any| any.type_url.as_str());
                    if !discovery.type_urls.iter().any(|t| t == type_url) {
                        problems.push(format!(
                            "listener `{name}` takes the filter `{filter_name}` as one of {:?}, but its configuration is `{type_url}`",
                            discovery.type_urls
                        ));
                    }
                }
            }
        }
    }
}

/// A wasm filter's module can be fetched and the filter accepts its configuration.
fn wasm(name: &str, any: &Any, clusters: &BTreeSet<&str>, problems: &mut Vec<String>) {
    let plugin = match unpack::<Wasm>(any) {
        Ok(Wasm {
            config: Some(plugin),
        }) => plugin,
        Ok(_) => {
            problems.push(format!("filter `{name}` has no plugin configuration"));
            return;
        }
        Err(why) => {
            problems.push(format!("filter `{name}`: {why}"));
            return;
        }
    };
    let code = match &plugin.vm {
        Some(plugin_config::Vm::VmConfig(vm)) => {
            vm.code.as_ref().and_then(|c| c.specifier.as_ref())
        }
        None => None,
    };
    match code {
        Some(async_data_source::Specifier::Local(_)) => {}
        Some(async_data_source::Specifier::Remote(remote)) => {
            let cluster = remote
                .http_uri
                .as_ref()
                .and_then(|uri| uri.http_upstream_type.as_ref());
            match cluster {
                Some(http_uri::HttpUpstreamType::Cluster(cluster))
                    if clusters.contains(cluster.as_str()) => {}
                Some(http_uri::HttpUpstreamType::Cluster(cluster)) => problems.push(format!(
                    "filter `{name}` fetches its module through `{cluster}`, but there is no such cluster"
                )),
                None => problems.push(format!(
                    "filter `{name}` fetches its module through no cluster"
                )),
            }
        }
        None => problems.push(format!("filter `{name}` has no module")),
    }
    let document = plugin
        .configuration
        .as_ref()
        .ok_or_else(|| "no configuration".to_owned())
        .and_then(unpack::<StringValue>);
    match document {
        Ok(document) => {
            if let Err(err) = FilterConfig::from_json(document.value.as_bytes()) {
                problems.push(format!(
                    "filter `{name}`: the filter would refuse its configuration: {err}"
                ));
            }
        }
        Err(why) => problems.push(format!("filter `{name}`: {why}")),
    }
}

/// Reads `any` as an `M`, as Envoy would.
fn unpack<M: Message + Name + Default>(any: &Any) -> Result<M, String> {
    if any.type_url != M::type_url() {
        return Err(format!(
            "expected a `{}`, found a `{}`",
            M::full_name(),
            any.type_url
        ));
    }
    M::decode(any.value.as_slice()).map_err(|err| format!("{}: {err}", M::full_name()))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints;
    use weir_policy::Feed;

    use super::*;
    use crate::resources::testing::{fleet, local_options, remote_options};
    use crate::resources::{self, FILTER_NAME, ROUTE_NAME, WASM_CLUSTER, clusters, filter};

    /// The resources `build` makes for the example, before any check.
    fn built(options: &resources::Options) -> (Policy, Built) {
        let policy = fleet();
        let feed = Feed::initial(&policy);
        let mut built = Built::default();
        for cluster in &policy.clusters {
            let (cluster, assignment) = clusters::policy_cluster(cluster).unwrap();
            built.clusters.push(cluster);
            built.assignments.extend(assignment);
        }
        match &options.wasm {
            resources::WasmSource::Remote {
                server: Some(server),
                ..
            } => built.clusters.push(clusters::wasm_cluster(server)),
            resources::WasmSource::Remote { server: None, .. } => {
                built.bootstrap_clusters.push(WASM_CLUSTER);
            }
            resources::WasmSource::Local(_) => {}
        }
        built
            .listeners
            .push(resources::listener::listener(options.listener));
        built
            .routes
            .push(resources::routes::route_configuration(false));
        built
            .extensions
            .push(filter::extension_config(&policy, &feed, options).unwrap());
        (policy, built)
    }

    fn assert_problem(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no {needle:?} in {problems:#?}"
        );
    }

    #[test]
    fn what_build_makes_is_consistent() {
        for options in [local_options(), remote_options()] {
            let (policy, built) = built(&options);
            assert_eq!(check(&built, &policy), Vec::<String>::new());
        }
    }

    #[test]
    fn a_missing_route_configuration_is_found() {
        let (policy, mut built) = built(&local_options());
        built.routes.clear();
        assert_problem(
            &check(&built, &policy),
            &format!("reads routes `{ROUTE_NAME}`, but there is no such route configuration"),
        );
    }

    #[test]
    fn a_missing_filter_configuration_is_found() {
        let (policy, mut built) = built(&local_options());
        built.extensions.clear();
        assert_problem(
            &check(&built, &policy),
            &format!("runs the filter `{FILTER_NAME}`, but there is no such extension"),
        );
    }

    #[test]
    fn a_missing_assignment_is_found_and_so_is_an_orphan() {
        let (policy, mut built) = built(&local_options());
        let mut assignment = built.assignments.remove(0);
        let problems = check(&built, &policy);
        assert_problem(
            &problems,
            &format!(
                "EDS cluster `{}` has no endpoint assignment",
                assignment.cluster_name
            ),
        );
        assignment.cluster_name = "elsewhere".into();
        built.assignments.push(assignment);
        assert_problem(
            &check(&built, &policy),
            "endpoint assignment `elsewhere` belongs to no EDS cluster",
        );
    }

    #[test]
    fn an_empty_cluster_is_found() {
        let (policy, mut built) = built(&local_options());
        built.assignments[0].endpoints = vec![LocalityLbEndpoints::default()];
        let name = built.assignments[0].cluster_name.clone();
        assert_problem(
            &check(&built, &policy),
            &format!("cluster `{name}` has no endpoints"),
        );
    }

    #[test]
    fn a_missing_wasm_cluster_is_found() {
        let (policy, mut built) = built(&remote_options());
        built.clusters.retain(|c| c.name != WASM_CLUSTER);
        assert_problem(
            &check(&built, &policy),
            &format!("fetches its module through `{WASM_CLUSTER}`, but there is no such cluster"),
        );
    }

    #[test]
    fn a_module_fetched_through_the_bootstraps_cluster_needs_none_served() {
        let mut options = remote_options();
        if let resources::WasmSource::Remote { uri, server, .. } = &mut options.wasm {
            *uri = uri.replace("http://", "https://");
            *server = None;
        }
        let (policy, built) = built(&options);
        assert!(built.clusters.iter().all(|c| c.name != WASM_CLUSTER));
        assert_eq!(check(&built, &policy), Vec::<String>::new());
    }

    #[test]
    fn a_missing_canary_cluster_is_found() {
        let (policy, mut built) = built(&local_options());
        built.clusters.retain(|c| c.name != "ingest-eu-canary");
        built
            .assignments
            .retain(|a| a.cluster_name != "ingest-eu-canary");
        assert_problem(
            &check(&built, &policy),
            "service `ingest` has the canary `ingest-eu-canary`, but there is no such cluster",
        );
    }
}
