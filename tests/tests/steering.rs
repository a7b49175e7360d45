//! The filter steering real traffic in a real Envoy: classes, routes, canary
//! split, configuration updates. Overload has its own file.

use weir_policy::Feed;
use weir_testbed::backend::Echo;
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::{Envoy, http_client};

/// Sends one request; returns the status and what the backend saw.
async fn send(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<Echo>) {
    let mut request = http_client().request(method.parse().unwrap(), envoy.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json::<Echo>().await.ok())
}

/// The example's feed with its canary at 0 %, so that routing alone decides.
fn no_canary() -> Option<Feed> {
    let policy = example_policy();
    let mut feed = Feed::initial(&policy);
    feed.canary_weights.values_mut().for_each(|w| *w = 0);
    Some(feed)
}

async fn backend_for(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, echo) = send(envoy, "POST", path, headers).await;
    assert_eq!(status, 200, "{path} {headers:?}");
    echo.expect("a backend answered").backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_their_regions_cluster_and_unserved_device_types_elsewhere() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();

    for (region, cluster) in [
        ("eu-west", "ingest-eu"),
        ("us-east", "ingest-us"),
        ("ap-south", "ingest-ap"),
    ] {
        for _ in 0..5 {
            let got = backend_for(
                &envoy,
                "/v1/telemetry",
                &[("x-region", region), ("x-device-type", "sensor")],
            )
            .await;
            assert_eq!(got, cluster, "from {region}");
        }
    }
    assert_eq!(
        backend_for(&envoy, "/v1/commands/reboot", &[("x-region", "us-east")]).await,
        "commands-us"
    );
    // ingest-ap does not serve vehicles: they go to the best cluster that does.
    let got = backend_for(
        &envoy,
        "/v1/telemetry",
        &[("x-region", "ap-south"), ("x-device-type", "vehicle")],
    )
    .await;
    assert_eq!(got, "ingest-eu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_travels_upstream_and_client_weir_headers_are_ignored() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();

    let (status, echo) = send(
        &envoy,
        "GET",
        "/v1/heartbeat",
        &[
            ("x-region", "eu-west"),
            ("x-weir-priority", "alarm"),
            ("x-weir-cluster", "ingest-us"),
            ("x-weir-variant", "canary"),
            ("x-weir-shed", "no"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let echo = echo.unwrap();
    assert_eq!(
        echo.backend, "ingest-eu",
        "a spoofed x-weir-cluster must not steer"
    );
    assert_eq!(echo.headers["x-weir-priority"], "heartbeat");
    assert_eq!(echo.headers["x-weir-cluster"], "ingest-eu");
    assert_eq!(echo.headers.get("x-weir-shed"), None);
    assert_ne!(
        echo.headers.get("x-weir-variant").map(String::as_str),
        Some("canary")
    );
}
