//! The filter's extension configuration (ECDS): the Weir wasm module with
//! its configuration document.
//!
//! The document is exactly what `weir compile` prints for the policy and the
//! feed, so a static Envoy and one served by `weir` run the filter on the
//! same input. It is the only resource that holds the feed: a new feed is a
//! new extension configuration and nothing else.

use envoy_types::pb::envoy::config::core::v3::{
    AsyncDataSource, BackoffStrategy, DataSource, HttpUri, RemoteDataSource, RetryPolicy,
    TypedExtensionConfig, async_data_source, data_source, http_uri,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
use envoy_types::pb::google::protobuf::{StringValue, UInt32Value};
use envoy_types::util::pack_any;
use weir_policy::{Feed, Policy};

use super::{FILTER_NAME, Options, WASM_CLUSTER, WasmSource, millis};

/// The plugin's name, its root context's id and its VM's id.
const PLUGIN: &str = "weir";
/// The wasm runtime the module runs in.
const RUNTIME: &str = "envoy.wasm.runtime.v8";
/// How long one fetch of a remote module may take.
const FETCH_TIMEOUT_MS: u32 = 10_000;
/// How often a failed fetch is retried, and the backoff between tries.
const FETCH_RETRIES: u32 = 3;
const FETCH_BACKOFF_MS: u32 = 500;
const FETCH_BACKOFF_MAX_MS: u32 = 4_000;

/// The filter's extension configuration, or why it cannot be made.
pub(super) fn extension_config(
    policy: &Policy,
    feed: &Feed,
    options: &Options,
) -> Result<TypedExtensionConfig, Vec<String>> {
    let code = code(&options.wasm);
    let document = document(policy, feed, options.version_header);
    let (code, document) = match (code, document) {
        (Ok(code), Ok(document)) => (code, document),
        (code, document) => {
            return Err([code.err(), document.err()].into_iter().flatten().collect());
        }
    };
    let wasm = Wasm {
        config: Some(PluginConfig {
            name: PLUGIN.to_owned(),
            root_id: PLUGIN.to_owned(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: PLUGIN.to_owned(),
                runtime: RUNTIME.to_owned(),
                code: Some(code),
                ..Default::default()
            })),
            configuration: Some(pack_any(StringValue { value: document })),
            ..Default::default()
        }),
    };
    Ok(TypedExtensionConfig {
        name: FILTER_NAME.to_owned(),
        typed_config: Some(pack_any(wasm)),
    })
}

/// The filter's configuration document, as `weir compile` prints it.
pub(super) fn document(
    policy: &Policy,
    feed: &Feed,
    version_header: bool,
) -> Result<String, String> {
    let mut config = weir_policy::source::with_feed(policy, feed.clone());
    config.version_header = version_header;
    serde_json::to_string(&config)
        .map_err(|err| format!("the filter's configuration cannot be written: {err}"))
}

/// Where Envoy gets the module.
fn code(wasm: &WasmSource) -> Result<AsyncDataSource, String> {
    let specifier = match wasm {
        WasmSource::Local(path) => {
            let filename = path.to_str().ok_or_else(|| {
                format!(
                    "the filter module's path {} is not UTF-8",
                    path.to_string_lossy()
                )
            })?;
            async_data_source::Specifier::Local(DataSource {
                specifier: Some(data_source::Specifier::Filename(filename.to_owned())),
                ..Default::default()
            })
        }
        WasmSource::Remote {
            uri,
            sha256,
            server,
        } => {
            // The cluster weir serves speaks plain HTTP; the bootstrap's, TLS.
            let scheme = if server.is_some() {
                "http://"
            } else {
                "https://"
            };
            if !uri.starts_with(scheme) {
                return Err(format!(
                    "the filter module's URI `{uri}` must start with `{scheme}`"
                ));
            }
            // Envoy compares it with the lower-case hex digest of what it fetched.
            if sha256.len() != 64
                || !sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(format!(
                    "the filter module's SHA-256 `{sha256}` must be 64 lower-case hex digits"
                ));
            }
            async_data_source::Specifier::Remote(RemoteDataSource {
                http_uri: Some(HttpUri {
                    uri: uri.clone(),
                    timeout: Some(millis(FETCH_TIMEOUT_MS)),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        WASM_CLUSTER.to_owned(),
                    )),
                }),
                sha256: sha256.clone(),
                retry_policy: Some(RetryPolicy {
                    num_retries: Some(UInt32Value {
                        value: FETCH_RETRIES,
                    }),
                    retry_back_off: Some(BackoffStrategy {
                        base_interval: Some(millis(FETCH_BACKOFF_MS)),
                        max_interval: Some(millis(FETCH_BACKOFF_MAX_MS)),
                    }),
                    ..Default::default()
                }),
            })
        }
    };
    Ok(AsyncDataSource {
        specifier: Some(specifier),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use envoy_types::pb::google::protobuf::Duration;
    use weir_policy::FilterConfig;

    use super::*;
    use crate::resources::testing::{SHA256, decode, fleet, local_options, remote_options};
    use crate::resources::{Options, build};
    use crate::snapshot::type_url;

    /// The plugin configuration Envoy receives, and its VM configuration.
    fn served(policy: &Policy, feed: &Feed, options: &Options) -> (PluginConfig, VmConfig) {
        let snapshot = build(policy, feed, options).unwrap();
        let extension: TypedExtensionConfig =
            decode(&snapshot.of_type(type_url::EXTENSION_CONFIG).items[FILTER_NAME].body);
        assert_eq!(extension.name, FILTER_NAME);
        let wasm: Wasm = decode(extension.typed_config.as_ref().unwrap());
        let plugin = wasm.config.unwrap();
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm.clone() else {
            panic!("a VM configuration: {plugin:?}");
        };
        (plugin, vm)
    }

    fn configuration(plugin: &PluginConfig) -> String {
        let value: StringValue = decode(plugin.configuration.as_ref().unwrap());
        value.value
    }

    #[test]
    fn the_document_is_what_weir_compile_prints() {
        let policy = fleet();
        let feed = Feed::initial(&policy);
        let (plugin, vm) = served(&policy, &feed, &local_options());
        assert_eq!(plugin.name, "weir");
        assert_eq!(plugin.root_id, "weir");
        assert_eq!(vm.vm_id, "weir");
        assert_eq!(vm.runtime, "envoy.wasm.runtime.v8");
        assert!(vm.configuration.is_none(), "the document is the plugin's");

        let json = configuration(&plugin);
        assert_eq!(
            json,
            serde_json::to_string(&weir_policy::source::compile(&policy)).unwrap()
        );
        let parsed = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(parsed, weir_policy::source::with_feed(&policy, feed));
        assert!(parsed.engine().is_some());
    }

    #[test]
    fn the_document_carries_the_feed() {
        let policy = fleet();
        let mut feed = Feed::initial(&policy);
        feed.canary_weights.insert("ingest-eu-canary".into(), 2500);
        feed.sla_scores.insert("commands-us".into(), 0.25);
        feed.concurrency_limit = Some(150);
        let (plugin, _) = served(&policy, &feed, &local_options());
        let json = configuration(&plugin);
        assert_eq!(
            json,
            serde_json::to_string(&weir_policy::source::with_feed(&policy, feed.clone())).unwrap()
        );
        let parsed = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(parsed.feed, Some(feed));
    }

    #[test]
    fn the_version_header_is_stamped_only_when_asked_for() {
        let policy = fleet();
        let feed = Feed::initial(&policy);
        let stamps = |options: &Options| {
            let json = configuration(&served(&policy, &feed, options).0);
            FilterConfig::from_json(json.as_bytes())
                .unwrap()
                .version_header
        };
        assert!(!stamps(&local_options()));
        let mut options = local_options();
        options.version_header = true;
        assert!(stamps(&options));
    }

    #[test]
    fn a_local_module_is_read_from_its_file() {
        let policy = fleet();
        let (_, vm) = served(&policy, &Feed::initial(&policy), &local_options());
        let Some(async_data_source::Specifier::Local(local)) = vm.code.unwrap().specifier else {
            panic!("a local module");
        };
        assert_eq!(
            local.specifier,
            Some(data_source::Specifier::Filename(
                "/opt/weir/weir_filter.wasm".into()
            ))
        );
    }

    #[test]
    fn a_remote_module_is_fetched_through_the_wasm_cluster() {
        let policy = fleet();
        let (_, vm) = served(&policy, &Feed::initial(&policy), &remote_options());
        let Some(async_data_source::Specifier::Remote(remote)) = vm.code.unwrap().specifier else {
            panic!("a remote module");
        };
        let uri = remote.http_uri.unwrap();
        assert_eq!(uri.uri, "http://127.0.0.1:9902/filter.wasm");
        assert_eq!(
            uri.http_upstream_type,
            Some(http_uri::HttpUpstreamType::Cluster(WASM_CLUSTER.into()))
        );
        assert_eq!(
            uri.timeout,
            Some(Duration {
                seconds: 10,
                nanos: 0
            })
        );
        assert_eq!(remote.sha256, SHA256);
        let retry = remote.retry_policy.unwrap();
        assert_eq!(retry.num_retries, Some(UInt32Value { value: 3 }));
        let backoff = retry.retry_back_off.unwrap();
        assert_eq!(backoff.base_interval, Some(millis(500)));
        assert_eq!(backoff.max_interval, Some(millis(4000)));
    }

    #[test]
    fn an_unusable_module_source_is_refused() {
        let policy = fleet();
        let feed = Feed::initial(&policy);
        let remote = |uri: &str, sha256: &str| WasmSource::Remote {
            uri: uri.into(),
            sha256: sha256.into(),
            server: Some("127.0.0.1:9902".parse().unwrap()),
        };
        let upper = SHA256.to_uppercase();
        let through_bootstrap = WasmSource::Remote {
            uri: "http://x/filter.wasm".into(),
            sha256: SHA256.into(),
            server: None,
        };
        for (wasm, expected) in [
            (
                remote("https://x/filter.wasm", SHA256),
                "must start with `http://`",
            ),
            (through_bootstrap, "must start with `https://`"),
            (
                remote("http://x/filter.wasm", "abc"),
                "64 lower-case hex digits",
            ),
            (
                remote("http://x/filter.wasm", &upper),
                "64 lower-case hex digits",
            ),
        ] {
            let err = extension_config(&policy, &feed, &Options::new(wasm)).unwrap_err();
            assert!(err.iter().any(|e| e.contains(expected)), "{err:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/opt/\xff.wasm"));
            let options = Options::new(WasmSource::Local(path));
            let err = extension_config(&policy, &feed, &options).unwrap_err();
            assert!(err[0].contains("not UTF-8"), "{err:?}");
        }
    }
}
