//! The routes (RDS): a request goes to the cluster the filter named in
//! `x-weir-cluster`, and — while a canary is in its mirror phase — a copy of
//! it to the canary named in `x-weir-mirror` if the filter set one; a request
//! the filter assigned no cluster (no service of the policy matches it) is
//! answered 404.
//!
//! The mirror policy is on the route only while some canary mirrors: Envoy's
//! router works for it on every request the route takes, mirrored or not
//! (about 16,600 instructions, 7 % of Envoy's work per request, counted with
//! callgrind). Routes go out before the filter's configuration, so the policy
//! is in place before the filter names a canary, and gone only after it
//! stopped.
//!
//! The filter removes any `x-weir-*` header a client sends before it decides,
//! so only the filter can set the header the first route reads.

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, route,
};
use weir_policy::headers::{CLUSTER as CLUSTER_HEADER, MIRROR as MIRROR_HEADER};

use super::{ROUTE_NAME, millis};

/// The one virtual host's name.
const VIRTUAL_HOST: &str = "weir";
/// How long an upstream may take to answer, once the filter has let a request through.
const UPSTREAM_TIMEOUT_MS: u32 = 15_000;
/// The answer to a request no service matches.
const UNROUTED_STATUS: u32 = 404;
/// Its body.
const UNROUTED_BODY: &str = "no service of the policy matches this request\n";

/// The route configuration the listener asks for; `mirroring`: some canary
/// is in its mirror phase.
pub(super) fn route_configuration(mirroring: bool) -> RouteConfiguration {
    RouteConfiguration {
        name: ROUTE_NAME.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: VIRTUAL_HOST.to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![to_named_cluster(mirroring), unrouted()],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn to_named_cluster(mirroring: bool) -> Route {
    // Without the header Envoy mirrors nothing.
    let mirror = RequestMirrorPolicy {
        cluster_header: MIRROR_HEADER.to_owned(),
        ..Default::default()
    };
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            headers: vec![HeaderMatcher {
                name: CLUSTER_HEADER.to_owned(),
                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::ClusterHeader(CLUSTER_HEADER.to_owned())),
            timeout: Some(millis(UPSTREAM_TIMEOUT_MS)),
            request_mirror_policies: mirroring.then_some(mirror).into_iter().collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn unrouted() -> Route {
    Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: UNROUTED_STATUS,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    UNROUTED_BODY.to_owned(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Duration;
    use weir_policy::Feed;

    use super::*;
    use crate::resources::build;
    use crate::resources::testing::{decode, fleet, local_options};
    use crate::snapshot::type_url;

    #[test]
    fn requests_go_to_the_cluster_the_filter_named_or_get_a_404() {
        let policy = fleet();
        let snapshot = build(&policy, &Feed::initial(&policy), &local_options()).unwrap();
        let config: RouteConfiguration =
            decode(&snapshot.of_type(type_url::ROUTE).items[ROUTE_NAME].body);
        assert_eq!(config.name, ROUTE_NAME);
        let [host] = config.virtual_hosts.as_slice() else {
            panic!("one virtual host: {config:?}");
        };
        assert_eq!(host.name, "weir");
        assert_eq!(host.domains, ["*"]);
        let [named, unrouted] = host.routes.as_slice() else {
            panic!("two routes: {host:?}");
        };

        let matched = named.r#match.as_ref().unwrap();
        assert_eq!(
            matched.path_specifier,
            Some(PathSpecifier::Prefix("/".into()))
        );
        let [header] = matched.headers.as_slice() else {
            panic!("one header condition: {matched:?}");
        };
        assert_eq!(header.name, "x-weir-cluster");
        assert!(!header.invert_match);
        assert_eq!(
            header.header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        let Some(route::Action::Route(action)) = &named.action else {
            panic!("a route action: {named:?}");
        };
        assert_eq!(
            action.cluster_specifier,
            Some(ClusterSpecifier::ClusterHeader("x-weir-cluster".into()))
        );
        assert_eq!(
            action.timeout,
            Some(Duration {
                seconds: 15,
                nanos: 0
            })
        );
        // No canary mirrors: no mirror policy for Envoy to work on.
        assert!(action.request_mirror_policies.is_empty(), "{action:?}");

        let matched = unrouted.r#match.as_ref().unwrap();
        assert_eq!(
            matched.path_specifier,
            Some(PathSpecifier::Prefix("/".into()))
        );
        assert!(matched.headers.is_empty());
        let Some(route::Action::DirectResponse(response)) = &unrouted.action else {
            panic!("a direct response: {unrouted:?}");
        };
        assert_eq!(response.status, 404);
        assert_eq!(
            response.body.as_ref().unwrap().specifier,
            Some(data_source::Specifier::InlineString(
                "no service of the policy matches this request\n".into()
            ))
        );
    }

    /// The mirror policy of the named-cluster route.
    fn mirror_policies(feed: &Feed) -> Vec<RequestMirrorPolicy> {
        let policy = fleet();
        let snapshot = build(&policy, feed, &local_options()).unwrap();
        let config: RouteConfiguration =
            decode(&snapshot.of_type(type_url::ROUTE).items[ROUTE_NAME].body);
        match &config.virtual_hosts[0].routes[0].action {
            Some(route::Action::Route(action)) => action.request_mirror_policies.clone(),
            other => panic!("a route action: {other:?}"),
        }
    }

    #[test]
    fn the_route_mirrors_by_header_only_while_a_canary_is_in_its_mirror_phase() {
        let policy = fleet();
        let mut feed = Feed::initial(&policy);
        assert!(mirror_policies(&feed).is_empty());

        let canary = feed.canary_weights.keys().next().unwrap().clone();
        feed.canary_mirrors.insert(canary.clone(), 1_000);
        let [mirror] = mirror_policies(&feed).try_into().unwrap();
        assert_eq!(mirror.cluster_header, "x-weir-mirror");
        assert!(mirror.cluster.is_empty());

        // A phase at nothing mirrors nothing.
        feed.canary_mirrors.insert(canary, 0);
        assert!(mirror_policies(&feed).is_empty());
    }
}
