//! The listener (LDS): where device traffic arrives, and the HTTP filters it
//! goes through — the Weir filter, configured over ECDS, then the router.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::ExtensionConfigSource;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_filter,
};
use envoy_types::util::pack_any;
use prost::Name;

use super::{FILTER_NAME, LISTENER_NAME, ROUTE_NAME, ads, ip_address};

/// The HTTP connection manager's name in a filter chain.
pub(super) const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
/// The router's name in the HTTP filters.
pub(super) const ROUTER: &str = "envoy.filters.http.router";
/// Prefix of the connection manager's statistics (`http.weir.…`).
const STAT_PREFIX: &str = "weir";

/// The listener on `address`.
pub(super) fn listener(address: SocketAddr) -> Listener {
    Listener {
        name: LISTENER_NAME.to_owned(),
        address: Some(ip_address(address.ip(), address.port())),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(
                    http_connection_manager(),
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn http_connection_manager() -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: STAT_PREFIX.to_owned(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: ROUTE_NAME.to_owned(),
        })),
        http_filters: vec![weir_filter(), router()],
        ..Default::default()
    }
}

/// The Weir filter, by name only: its configuration comes over ECDS. There is
/// no default configuration, so the listener warms (takes no traffic) until
/// the configuration has arrived, and no request passes unfiltered.
fn weir_filter() -> HttpFilter {
    HttpFilter {
        name: FILTER_NAME.to_owned(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(ads()),
                type_urls: vec![Wasm::type_url()],
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    HttpFilter {
        name: ROUTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::address;
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use weir_policy::Feed;

    use super::*;
    use crate::resources::testing::{decode, fleet, local_options};
    use crate::resources::{Options, build};
    use crate::snapshot::type_url;

    /// The listener as Envoy receives it, and its connection manager.
    fn served(options: &Options) -> (Listener, HttpConnectionManager) {
        let policy = fleet();
        let snapshot = build(&policy, &Feed::initial(&policy), options).unwrap();
        let listener: Listener =
            decode(&snapshot.of_type(type_url::LISTENER).items[LISTENER_NAME].body);
        let [chain] = listener.filter_chains.as_slice() else {
            panic!("one filter chain: {listener:?}");
        };
        let [filter] = chain.filters.as_slice() else {
            panic!("one network filter: {chain:?}");
        };
        assert_eq!(filter.name, HTTP_CONNECTION_MANAGER);
        let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            panic!("a typed configuration: {filter:?}");
        };
        let hcm: HttpConnectionManager = decode(any);
        (listener, hcm)
    }

    fn socket(listener: &Listener) -> (String, u32) {
        let Some(address::Address::SocketAddress(socket)) =
            listener.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            panic!("a socket address: {listener:?}");
        };
        let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else {
            panic!("a port: {socket:?}");
        };
        (socket.address.clone(), port)
    }

    #[test]
    fn the_listener_listens_where_told() {
        let (listener, _) = served(&local_options());
        assert_eq!(listener.name, LISTENER_NAME);
        assert_eq!(socket(&listener), ("127.0.0.1".to_owned(), 10000));

        let mut options = local_options();
        options.listener = "[::1]:0".parse().unwrap();
        let (listener, _) = served(&options);
        assert_eq!(socket(&listener), ("::1".to_owned(), 0));
    }

    #[test]
    fn routes_come_over_rds_from_ads() {
        let (_, hcm) = served(&local_options());
        assert_eq!(hcm.stat_prefix, "weir");
        assert_eq!(hcm.codec_type, CodecType::Auto as i32);
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("routes over RDS");
        };
        assert_eq!(rds.route_config_name, ROUTE_NAME);
        let source = rds.config_source.unwrap();
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(source.resource_api_version, 2, "V3");
    }

    #[test]
    fn the_weir_filter_comes_over_ecds_before_the_router() {
        let (_, hcm) = served(&local_options());
        let [weir, router] = hcm.http_filters.as_slice() else {
            panic!("two HTTP filters: {:?}", hcm.http_filters);
        };
        assert_eq!(weir.name, FILTER_NAME);
        assert!(!weir.is_optional && !weir.disabled);
        let Some(http_filter::ConfigType::ConfigDiscovery(discovery)) = &weir.config_type else {
            panic!("discovered: {weir:?}");
        };
        assert_eq!(
            discovery.type_urls,
            ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
        );
        assert!(discovery.default_config.is_none(), "warm until it arrives");
        assert!(!discovery.apply_default_config_without_warming);
        let source = discovery.config_source.as_ref().unwrap();
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(source.resource_api_version, 2, "V3");

        assert_eq!(router.name, ROUTER);
        let Some(http_filter::ConfigType::TypedConfig(any)) = &router.config_type else {
            panic!("a typed router: {router:?}");
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
    }
}
