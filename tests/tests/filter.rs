//! The filter in a real Envoy, with real backends, on loopback.

use std::collections::BTreeMap;

use weir_testbed::backend::{BACKEND_HEADER, Echo};
use weir_testbed::{Backend, EnvoyBuilder};

const CONFIG: &str = r#"{"version": "test-1"}"#;
const CONFIG_WITH_VERSION_HEADER: &str = r#"{"version": "test-1", "version_header": true}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_a_backend_and_carries_the_filters_header() {
    let backend = Backend::start("alpha").unwrap();
    let envoy = EnvoyBuilder::new()
        .cluster("alpha", &[backend.addr()])
        .weir_filter(CONFIG_WITH_VERSION_HEADER)
        .start()
        .await
        .unwrap();

    let response = weir_testbed::http_client()
        .get(envoy.url("/v1/telemetry"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[BACKEND_HEADER], "alpha");
    assert_eq!(
        response.headers()["x-weir-filter"],
        env!("CARGO_PKG_VERSION"),
        "the filter stamps its version"
    );
    let echo: Echo = response.json().await.unwrap();
    assert_eq!(echo.path, "/v1/telemetry");
    assert_eq!(backend.served(), 1);
    assert!(
        envoy
            .log()
            .contains("weir filter 0.1.0 configured with version \"test-1\""),
        "the filter logged its configuration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_supplied_weir_headers_never_reach_a_backend() {
    let honest = Backend::start("honest").unwrap();
    let target = Backend::start("target").unwrap();
    // The route sends a request carrying x-weir-cluster to the cluster it names:
    // a spoofed header must neither reach a backend nor steer the request.
    let envoy = EnvoyBuilder::new()
        .cluster("honest", &[honest.addr()])
        .cluster("target", &[target.addr()])
        .weir_filter(CONFIG)
        .start()
        .await
        .unwrap();

    let client = weir_testbed::http_client();
    for _ in 0..20 {
        let response = client
            .get(envoy.url("/v1/commands"))
            .header("x-weir-cluster", "target")
            .header("X-Weir-Priority", "alarm")
            .header("x-weir-canary", "always")
            .header("x-weir-", "bare prefix")
            .header("x-weird-but-fine", "kept")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: Echo = response.json().await.unwrap();
        assert_eq!(
            echo.backend, "honest",
            "a spoofed x-weir-cluster steered the request"
        );
        let internal: BTreeMap<_, _> = echo
            .headers
            .iter()
            .filter(|(name, _)| name.starts_with("x-weir-"))
            .collect();
        assert!(
            internal.is_empty(),
            "client x-weir-* headers reached the backend: {internal:?}"
        );
        assert_eq!(
            echo.headers.get("x-weird-but-fine").map(String::as_str),
            Some("kept")
        );
    }
    assert_eq!(target.served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_filter_the_same_spoofed_header_does_steer() {
    // The control for the test above: it proves the route really follows
    // x-weir-cluster, so the filter is what stops the spoofing.
    let honest = Backend::start("honest").unwrap();
    let target = Backend::start("target").unwrap();
    let envoy = EnvoyBuilder::new()
        .cluster("honest", &[honest.addr()])
        .cluster("target", &[target.addr()])
        .start()
        .await
        .unwrap();

    let echo: Echo = weir_testbed::http_client()
        .get(envoy.url("/"))
        .header("x-weir-cluster", "target")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo.backend, "target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_configuration_is_refused_with_the_reason_in_envoys_log() {
    let backend = Backend::start("alpha").unwrap();
    let (status, log) = EnvoyBuilder::new()
        .cluster("alpha", &[backend.addr()])
        .weir_filter("{\"version\": \"v1\",\n \"colour\": \"blue\"}")
        .start_expecting_failure()
        .await
        .unwrap();

    assert!(
        !status.success(),
        "Envoy accepted a malformed configuration"
    );
    assert!(
        log.contains(
            "weir filter refused its configuration: invalid plugin configuration at line 2 column"
        ),
        "the filter's reason is in Envoy's log:\n{log}"
    );
    assert!(log.contains("unknown field `colour`"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_is_not_json_is_refused() {
    let backend = Backend::start("alpha").unwrap();
    let (status, log) = EnvoyBuilder::new()
        .cluster("alpha", &[backend.addr()])
        .weir_filter("version: v1")
        .start_expecting_failure()
        .await
        .unwrap();

    assert!(!status.success());
    assert!(
        log.contains("weir filter refused its configuration"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_static_yaml_runs_the_filter_in_front_of_its_backends() {
    let backends: Vec<Backend> = ["a", "b", "c"]
        .iter()
        .map(|name| Backend::start(name).unwrap())
        .collect();
    let addrs: Vec<_> = backends.iter().map(Backend::addr).collect();
    let bootstrap = weir_testbed::static_mode::static_bootstrap(&addrs).unwrap();
    let envoy = weir_testbed::Envoy::start(&bootstrap, 2).await.unwrap();

    let client = weir_testbed::http_client();
    for _ in 0..30 {
        let response = client
            .get(envoy.url("/v1/heartbeat"))
            .header("x-weir-cluster", "backends")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            !response.headers().contains_key("x-weir-filter"),
            "the version is not told to clients unless configured"
        );
        let echo: Echo = response.json().await.unwrap();
        assert!(!echo.headers.contains_key("x-weir-cluster"));
    }
    for backend in &backends {
        assert!(
            backend.served() > 0,
            "backend {} got no traffic",
            backend.name()
        );
    }
    assert!(
        envoy
            .log()
            .contains("configured with version \"static-example\"")
    );
}
