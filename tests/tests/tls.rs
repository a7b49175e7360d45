//! `weir serve` over TLS and mutual TLS, with certificates made at test time:
//! a real Envoy from `envoy/bootstrap-tls.yaml` gets its configuration and
//! serves; clients without a trusted certificate, and plaintext, are refused;
//! a certificate rotated on disk is served to new connections while Envoy's
//! stream stays up.

use std::path::Path;
use std::time::Duration;

use weir_testbed::Envoy;
use weir_testbed::certs::{Ca, Https, Pem, served_certificate};
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap_tls, with_wasm_over_https};

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const PATIENCE: Duration = Duration::from_secs(20);

struct World {
    ca: Ca,
    server: Pem,
    client: Pem,
    fleet: Fleet,
    weir: Weir,
    dir: tempfile::TempDir,
}

/// A CA, weir's certificate and a client's, backends for the example policy,
/// and `weir serve` over TLS, requiring client certificates on the ports in
/// `mutual` (`WEIR_CLIENT_CA`, `WEIR_ADMIN_CLIENT_CA`).
async fn world(mutual: &[&str]) -> World {
    world_with(mutual, &[]).await
}

/// [`world`], with more of weir's environment.
async fn world_with(mutual: &[&str], extra: &[(&str, &str)]) -> World {
    world_delivering(mutual, extra, WasmDelivery::Local).await
}

/// [`world_with`], delivering the filter module as `delivery` says.
async fn world_delivering(
    mutual: &[&str],
    extra: &[(&str, &str)],
    delivery: WasmDelivery,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("tls"), "fleet").unwrap();
    let server = ca.server("weir").unwrap();
    let client = ca.client("envoy", "spiffe://fleet.example/envoy").unwrap();
    let fleet = Fleet::start(example_policy()).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, serde_json::to_string(fleet.policy()).unwrap()).unwrap();
    let (cert, key, ca_path) = (path(&server.cert), path(&server.key), path(&ca.cert_path()));
    let mut env = vec![
        ("WEIR_TLS_CERT", cert.as_str()),
        ("WEIR_TLS_KEY", key.as_str()),
    ];
    env.extend(mutual.iter().map(|var| (*var, ca_path.as_str())));
    env.extend_from_slice(extra);
    let weir = Weir::start_with_env(&policy, delivery, &env).await.unwrap();
    let identity = mutual.contains(&"WEIR_ADMIN_CLIENT_CA").then_some(&client);
    let weir = weir.over_https(Https::new(&ca.cert_path(), identity).unwrap());
    World {
        ca,
        server,
        client,
        fleet,
        weir,
        dir,
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_over_mutual_tls_is_configured_serves_and_reports_its_metrics() {
    let w = world(&["WEIR_CLIENT_CA"]).await;
    let bootstrap =
        ads_bootstrap_tls(w.weir.xds_addr(), "envoy-tls", &w.ca.cert_path(), &w.client).unwrap();
    let envoy = Envoy::start(&bootstrap, 2).await.unwrap();
    w.weir.wait_acked("envoy-tls", LDS).await.unwrap();
    w.weir.wait_acked("envoy-tls", ECDS).await.unwrap();
    let cluster = envoy
        .backend_for("/v1/telemetry", &[("x-region", "us-east")])
        .await
        .unwrap();
    assert_eq!(cluster, "ingest-us");
    // The stats sink shares the cluster, so its OTLP arrives over mTLS too.
    eventually("Envoy's OTLP export over TLS", PATIENCE, || async {
        let status = w.weir.status().await.ok()?;
        (status["otlp"]["requests"]["grpc"].as_u64()? > 0).then_some(())
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", w.weir.log()));
    drop(w.fleet);
}

/// `--wasm-delivery https`: the Envoy fetches the filter module from weir's
/// admin port over mutual TLS, through the `weir_wasm` cluster of its
/// bootstrap, checks its sha256 and runs it.
#[tokio::test]
async fn envoy_fetches_the_module_over_mutual_tls() {
    let w = world_delivering(
        &["WEIR_CLIENT_CA", "WEIR_ADMIN_CLIENT_CA"],
        &[],
        WasmDelivery::Https,
    )
    .await;
    let mut bootstrap = ads_bootstrap_tls(
        w.weir.xds_addr(),
        "envoy-https",
        &w.ca.cert_path(),
        &w.client,
    )
    .unwrap();
    with_wasm_over_https(&mut bootstrap, w.weir.admin_addr()).unwrap();
    let envoy = Envoy::start(&bootstrap, 2).await.unwrap();
    w.weir.wait_acked("envoy-https", ECDS).await.unwrap();
    // The filter runs: it steers the request by its region.
    let cluster = envoy
        .backend_for("/v1/telemetry", &[("x-region", "us-east")])
        .await
        .unwrap();
    assert_eq!(cluster, "ingest-us");
    drop(w.fleet);
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_and_plaintext_are_refused() {
    let w = world(&["WEIR_CLIENT_CA", "WEIR_ADMIN_CLIENT_CA"]).await;
    let ca = w.ca.cert_path();
    let admin = format!("https://{}/healthz", w.weir.admin_addr());
    let xds = format!("https://{}/", w.weir.xds_addr());

    // With the CA's client certificate: answered on both ports.
    let trusted = Https::new(&ca, Some(&w.client)).unwrap();
    let (status, body) = trusted.send("GET", &admin, None).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
    trusted.send("GET", &xds, None).await.unwrap();

    // Without a certificate, or with another CA's: refused on both ports.
    let other_ca = Ca::new(&w.dir.path().join("other"), "other").unwrap();
    let stranger = other_ca.client("stranger", "spiffe://elsewhere/x").unwrap();
    for (who, client) in [
        ("no certificate", Https::new(&ca, None).unwrap()),
        ("another CA's", Https::new(&ca, Some(&stranger)).unwrap()),
    ] {
        for url in [&admin, &xds] {
            let refused = client.send("GET", url, None).await;
            assert!(refused.is_err(), "{who} at {url}: {refused:?}");
        }
    }
    // A client that does not trust weir's CA does not talk to it either.
    let wrong_trust = Https::new(&other_ca.cert_path(), Some(&w.client)).unwrap();
    assert!(wrong_trust.send("GET", &admin, None).await.is_err());

    // Plaintext: refused, and the log says why.
    let plain = format!("http://{}/healthz", w.weir.admin_addr());
    assert!(
        weir_testbed::http_client()
            .get(&plain)
            .send()
            .await
            .is_err()
    );
    eventually("the refusal in the log", PATIENCE, || async {
        w.weir
            .log()
            .contains("refused a plaintext connection")
            .then_some(())
    })
    .await
    .unwrap();
    drop(w.fleet);
}

#[tokio::test]
async fn only_client_certificates_naming_an_allowed_san_are_accepted() {
    let w = world_with(
        &["WEIR_CLIENT_CA"],
        &[(
            "WEIR_CLIENT_SANS",
            "spiffe://fleet.example/envoy,spiffe://fleet.example/edge/*",
        )],
    )
    .await;
    let ca = w.ca.cert_path();
    let xds = format!("https://{}/", w.weir.xds_addr());
    let edge =
        w.ca.client("edge-7", "spiffe://fleet.example/edge/gw-7")
            .unwrap();
    let intruder =
        w.ca.client("intruder", "spiffe://fleet.example/intruder")
            .unwrap();
    for allowed in [&w.client, &edge] {
        let client = Https::new(&ca, Some(allowed)).unwrap();
        client.send("GET", &xds, None).await.unwrap();
    }
    let refused = Https::new(&ca, Some(&intruder))
        .unwrap()
        .send("GET", &xds, None)
        .await;
    assert!(refused.is_err(), "{refused:?}");
    eventually("the refusal in the log", PATIENCE, || async {
        let log = w.weir.log();
        (log.contains("names no allowed SAN") && log.contains("spiffe://fleet.example/intruder"))
            .then_some(())
    })
    .await
    .unwrap();
    drop(w.fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_connections_while_envoys_stream_stays_up() {
    let w = world(&["WEIR_CLIENT_CA"]).await;
    let bootstrap =
        ads_bootstrap_tls(w.weir.xds_addr(), "envoy-tls", &w.ca.cert_path(), &w.client).unwrap();
    let envoy = Envoy::start(&bootstrap, 1).await.unwrap();
    w.weir.wait_acked("envoy-tls", ECDS).await.unwrap();
    let connections = envoy
        .stat("cluster.weir_xds.upstream_cx_total")
        .await
        .unwrap();
    let (ca, admin) = (w.ca.cert_path(), w.weir.admin_addr());
    let before = served_certificate(admin, &ca).await.unwrap();

    // The operator replaces the certificate and key (a new key pair).
    let rotated = w.ca.server("weir").unwrap();
    assert_eq!(rotated.cert, w.server.cert);
    let after = eventually("the new certificate served", PATIENCE, || async {
        let now = served_certificate(admin, &ca).await.ok()?;
        (now != before).then_some(now)
    })
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", w.weir.log()));

    // A broken file is not taken: the new certificate stays.
    std::fs::write(&w.server.cert, "not a certificate").unwrap();
    eventually("the bad file reported", PATIENCE, || async {
        w.weir.log().contains("cannot be used").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(served_certificate(admin, &ca).await.unwrap(), after);

    // Envoy's stream was never dropped: still its one connection, and a
    // change still reaches it over it.
    let version = w.weir.snapshot_version().await.unwrap();
    let mut feed = weir_policy::Feed::initial(w.fleet.policy());
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    let changed = w.weir.put_feed(&feed).await.unwrap().unwrap();
    assert_ne!(changed, version);
    w.weir.wait_acked("envoy-tls", ECDS).await.unwrap();
    assert_eq!(
        envoy
            .stat("cluster.weir_xds.upstream_cx_total")
            .await
            .unwrap(),
        connections,
        "Envoy kept its connection to weir"
    );
    drop(w.fleet);
}

/// `weir serve` with `args` on loopback ports: it must exit at once; what it
/// printed.
fn serve_refused(policy: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(weir_testbed::paths::weir_binary())
        .arg("serve")
        .arg("--policy")
        .arg(policy)
        .args([
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
        ])
        .args(["--listener-address", "127.0.0.1:0"])
        .arg("--wasm")
        .arg(weir_testbed::paths::filter_wasm())
        .arg("--state")
        .arg(policy.with_extension("redb"))
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "weir serve {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_tls_files_and_unsupported_combinations_are_refused_at_start_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("tls"), "fleet").unwrap();
    let server = ca.server("weir").unwrap();
    let other = ca.server("other").unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, serde_json::to_string(&example_policy()).unwrap()).unwrap();
    let (cert, key, other_key) = (path(&server.cert), path(&server.key), path(&other.key));

    let mismatched = serve_refused(&policy, &["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(
        mismatched.contains("the key does not go with the certificate")
            && mismatched.contains(&cert),
        "{mismatched}"
    );
    let not_pem = dir.path().join("garbage.crt");
    std::fs::write(&not_pem, "garbage").unwrap();
    let garbage = serve_refused(&policy, &["--tls-cert", &path(&not_pem), "--tls-key", &key]);
    assert!(garbage.contains("no certificate in it"), "{garbage}");
    let alone = serve_refused(&policy, &["--tls-cert", &cert]);
    assert!(alone.contains("--tls-key"), "{alone}");
    let http_module = serve_refused(
        &policy,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--wasm-delivery",
            "http",
        ],
    );
    assert!(
        http_module.contains("--wasm-delivery http cannot be used with --tls-cert")
            && http_module.contains("--wasm-delivery https"),
        "{http_module}"
    );
    let https_without_tls = serve_refused(&policy, &["--wasm-delivery", "https"]);
    assert!(
        https_without_tls.contains("--wasm-delivery https needs --tls-cert"),
        "{https_without_tls}"
    );
}

/// `weir` (the CLI) with `args`: its exit status, stdout and stderr.
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(weir_testbed::paths::weir_binary())
        .args(args)
        .env_remove("WEIR_SERVER")
        .env_remove("WEIR_CA_FILE")
        .env_remove("WEIR_CLIENT_CERT")
        .env_remove("WEIR_CLIENT_KEY")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_tls_weir_with_its_ca_and_a_client_certificate() {
    let w = world(&["WEIR_ADMIN_CLIENT_CA"]).await;
    let server = format!("https://{}", w.weir.admin_addr());
    let (ca, cert, key) = (
        path(&w.ca.cert_path()),
        path(&w.client.cert),
        path(&w.client.key),
    );
    let status = ["status", "--server", &server];
    let (ok, stdout, stderr) = cli(&[
        &status[..],
        &[
            "--ca-file",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
    ]
    .concat());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("canary"), "{stdout}");
    let history = [
        "rollout",
        "history",
        "ingest-eu-canary",
        "--server",
        &server,
    ];
    let (ok, _, stderr) = cli(&[
        &history[..],
        &[
            "--ca-file",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
    ]
    .concat());
    assert!(ok, "{stderr}");
    // Without the CA, weir's certificate is not trusted; without a client
    // certificate, weir refuses the connection. One line each.
    let (ok, _, stderr) =
        cli(&[&status[..], &["--client-cert", &cert, "--client-key", &key]].concat());
    assert!(!ok && stderr.lines().count() == 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach weir") && stderr.contains("certificate"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&[&status[..], &["--ca-file", &ca]].concat());
    assert!(!ok && stderr.contains("cannot reach weir"), "{stderr}");
    let (ok, _, stderr) = cli(&[&status[..], &["--ca-file", &ca, "--client-cert", &cert]].concat());
    assert!(!ok && stderr.contains("--client-key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_mutual_tls_forward_commands_and_metrics_to_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(&dir.path().join("tls"), "fleet").unwrap();
    let peer = ca.peer("replica").unwrap();
    let operator = ca
        .client("operator", "spiffe://fleet.example/operator")
        .unwrap();
    let etcd = weir_testbed::etcd::Etcd::start().await.unwrap();
    let fleet = Fleet::start(example_policy()).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, serde_json::to_string(fleet.policy()).unwrap()).unwrap();
    let (cert, key, ca_path, store) = (
        path(&peer.cert),
        path(&peer.key),
        path(&ca.cert_path()),
        etcd.store_url(),
    );
    let https = Https::new(&ca.cert_path(), Some(&operator)).unwrap();
    let mut replicas = Vec::new();
    for id in ["r0", "r1"] {
        let env = [
            ("WEIR_TLS_CERT", cert.as_str()),
            ("WEIR_TLS_KEY", key.as_str()),
            ("WEIR_ADMIN_CLIENT_CA", ca_path.as_str()),
            ("WEIR_PEER_CA", ca_path.as_str()),
            ("WEIR_STORE", store.as_str()),
            ("WEIR_REPLICA_ID", id),
        ];
        let weir = Weir::start_with_env(&policy, WasmDelivery::Local, &env)
            .await
            .unwrap()
            .over_https(https.clone());
        if id == "r0" {
            eventually("r0 to lead", PATIENCE, || async {
                let status = weir.status().await.ok()?;
                (status["replication"]["deciding"] == true).then_some(())
            })
            .await
            .unwrap_or_else(|err| panic!("{err}\n{}", weir.log()));
        }
        replicas.push(weir);
    }
    let (leader, follower) = (&replicas[0], &replicas[1]);
    eventually("r1 to follow r0", PATIENCE, || async {
        let status = follower.status().await.ok()?;
        (status["replication"]["leader"] == "r0").then_some(())
    })
    .await
    .unwrap();

    // A command on the follower reaches the leader over mutual TLS.
    let url = |weir: &Weir, path: &str| format!("https://{}{path}", weir.admin_addr());
    let (status, body) = https
        .send(
            "POST",
            &url(follower, "/v1/rollouts/ingest-eu-canary/pause"),
            None,
        )
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}\n{}", follower.log());
    assert!(body.contains("\"paused\""), "{body}");
    assert_eq!(
        leader.rollout("ingest-eu-canary").await.unwrap()["phase"],
        "paused"
    );

    // Metrics exported to the follower are forwarded to the leader.
    let export = serde_json::json!({"resourceMetrics": [{
        "resource": {"attributes": []},
        "scopeMetrics": [{"metrics": [{
            "name": "cluster.upstream_rq_xx",
            "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{
                "asInt": "10",
                "attributes": [
                    {"key": "envoy.cluster_name", "value": {"stringValue": "ingest-eu-canary"}},
                    {"key": "envoy.response_code_class", "value": {"stringValue": "2"}}
                ]
            }]}
        }]}]
    }]});
    let (status, _) = https
        .send(
            "POST",
            &url(follower, "/v1/metrics"),
            Some(export.to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    eventually(
        "the leader to receive the follower's metrics",
        PATIENCE,
        || async {
            let status = leader.status().await.ok()?;
            (status["otlp"]["requests"]["replicas"].as_u64()? > 0).then_some(())
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}\n{}", follower.log()));
    let forwarding = &follower.status().await.unwrap()["otlp"]["forwarding"];
    assert_eq!(forwarding["batches_failed"], 0, "{forwarding}");
}
