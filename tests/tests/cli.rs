//! The operator's command line against a real `weir serve` steering a real
//! Envoy: `weir status`, `weir rollout pause` and `weir rollout history`, as
//! tables and as JSON, and what it says when weir is not there.

use std::process::Output;

use serde_json::Value;
use weir_testbed::canary::{self, CANARY, STABLE};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::served::Served;
use weir_testbed::{http_client, paths};

const NODE: &str = "cli-envoy";

const TYPES: [&str; 5] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
];

/// The canary fleet at its first step (50 %), held there for an hour, and
/// an Envoy that has taken everything weir serves.
async fn world() -> Served {
    let yaml = canary::policy_yaml("[50, 100]", "1h", 40, 2.0);
    let policy = policy_from_yaml("cli.yaml", &yaml).unwrap();
    let served = Served::start(policy, NODE, 1).await.unwrap();
    for type_url in TYPES {
        served.weir.wait_acked(NODE, type_url).await.unwrap();
    }
    served
}

/// Runs `weir ARGS` with `WEIR_SERVER` set to `server`.
async fn weir(server: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(paths::weir_binary())
        .args(args)
        .env("WEIR_SERVER", server)
        .env_remove("WEIR_ADMIN_TOKEN")
        .output()
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "weir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The lines of the table titled `title`, header first.
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

/// The row whose first cell is `first`, as words.
fn row<'a>(table: &[&'a str], first: &str) -> Vec<&'a str> {
    table
        .iter()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in {table:#?}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn status_tables_json_and_a_pause_in_the_history() {
    let world = world().await;
    let server = world.weir.admin_addr().to_string();

    // Tables: the rollout at its first step, both clusters, the Envoy in sync.
    let status = stdout(&weir(&server, &["status"]).await);
    let rollouts = section(&status, "ROLLOUTS");
    assert_eq!(
        rollouts[0].split_whitespace().collect::<Vec<_>>(),
        [
            "CANARY", "STABLE", "PHASE", "STEP", "WEIGHT", "VERDICT", "LAST", "DECISION"
        ],
        "{status}"
    );
    let rollout = row(&rollouts, CANARY);
    assert_eq!(
        rollout[..6],
        [CANARY, STABLE, "progressing", "1/2", "50", "%"],
        "{status}"
    );
    assert!(
        rollouts[1].contains("rollout started: step 1 of 2, 50 %"),
        "{status}"
    );
    // Columns line up: each header starts where its cells do.
    let verdict_at = rollouts[0].find("VERDICT").unwrap();
    assert!(
        ["inconclusive", "healthy", "bad"]
            .iter()
            .any(|v| rollouts[1][verdict_at..].starts_with(v)),
        "{status}"
    );
    let clusters = section(&status, "CLUSTERS");
    assert_eq!(row(&clusters, STABLE)[..2], [STABLE, "1.00"], "{status}");
    assert!(
        clusters
            .iter()
            .any(|l| l.starts_with(CANARY) && l.ends_with("250 ms")),
        "{status}"
    );
    assert!(
        status.contains("CONCURRENCY LIMIT  1000 per Envoy (fixed by the policy)"),
        "{status}"
    );
    let envoys = section(&status, "ENVOYS");
    assert!(
        envoys[0]
            .starts_with("NODE       STREAMS  STATE    CDS  EDS  LDS  RDS  ECDS  LAST REQUEST"),
        "{status}"
    );
    assert!(
        envoys[1].starts_with("cli-envoy  1        in sync  ok   ok   ok   ok   ok    "),
        "{status}"
    );

    // JSON, for scripts.
    let json: Value =
        serde_json::from_str(&stdout(&weir(&server, &["status", "--json"]).await)).unwrap();
    assert_eq!(json["rollouts"][0]["canary"], CANARY);
    assert_eq!(json["rollouts"][0]["weight_bp"], 5000);
    assert_eq!(json["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(json["limit"]["served"], 1000);
    assert_eq!(json["nodes"][0]["id"], NODE);
    assert_eq!(json["nodes"][0]["in_sync"], true);
    assert_eq!(json["nodes"][0]["types"]["ecds"]["nack"], Value::Null);

    // A pause, and what a second one says.
    let paused = stdout(&weir(&server, &["rollout", "pause", CANARY]).await);
    assert_eq!(
        paused,
        "app-canary: paused at 50 % (step 1): paused by an operator at 50 %\n"
    );
    let again = weir(&server, &["rollout", "pause", CANARY]).await;
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        "error: cannot pause `app-canary`: it is paused\n"
    );
    let unknown = weir(&server, &["rollout", "abort", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        "error: `nope` is not the canary of any placement; canaries are: app-canary\n"
    );
    assert_eq!(world.weir.rollout(CANARY).await.unwrap()["phase"], "paused");

    // The history: each decision, then its reason and evidence.
    let history = stdout(&weir(&server, &["rollout", "history", CANARY]).await);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TIME", "KIND", "PHASE", "STEP", "WEIGHT"],
        "{history}"
    );
    let pause = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some("pause"))
        .unwrap_or_else(|| panic!("no pause in:\n{history}"));
    assert_eq!(
        lines[pause].split_whitespace().skip(1).collect::<Vec<_>>(),
        ["pause", "progressing", "→", "paused", "1/2", "50", "%"],
        "{history}"
    );
    assert_eq!(lines[pause + 1], "    paused by an operator at 50 %");
    assert!(lines[pause + 2].starts_with("      verdict: "), "{history}");
    assert!(lines[pause + 3].starts_with("      canary: "), "{history}");
    assert!(lines[pause + 4].starts_with("      stable: "), "{history}");

    let json: Value = serde_json::from_str(&stdout(
        &weir(
            &server,
            &["rollout", "history", CANARY, "--json", "--limit", "1"],
        )
        .await,
    ))
    .unwrap();
    let decisions = json["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["kind"], "pause");
    assert_eq!(decisions[0]["to"], "paused");
    assert!(decisions[0]["evidence"]["findings"].is_array(), "{json}");
    assert_eq!(json["total"], 2);

    // weir's own metrics saw the Envoy and the pause.
    let metrics = http_client()
        .get(format!("http://{server}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert_eq!(value("weir_xds_nodes_connected"), 1.0);
    for t in ["cds", "eds", "lds", "rds", "ecds"] {
        assert!(
            value(&format!("weir_xds_acks_total{{type=\"{t}\"}}")) >= 1.0,
            "{t}"
        );
        assert_eq!(
            value(&format!("weir_xds_nacks_total{{type=\"{t}\"}}")),
            0.0,
            "{t}"
        );
    }
    assert_eq!(
        value(
            r#"weir_rollout_decisions_total{canary="app-canary",kind="pause",phase="paused",origin="operator"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"weir_canary_weight_basis_points{canary="app-canary"}"#),
        5000.0
    );
}

#[tokio::test]
async fn an_unreachable_server_is_one_line_and_exit_code_1() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let expected = format!(
        "error: cannot reach weir at {server} (connection refused); is `weir serve` running? set --server or WEIR_SERVER\n"
    );
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["rollout", "pause", CANARY],
        vec!["rollout", "history", CANARY],
    ] {
        // From WEIR_SERVER, as host:port…
        let out = weir(&format!("127.0.0.1:{port}"), &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{args:?}");
        assert!(out.stdout.is_empty());
        // …and from --server, which wins over it.
        let mut with_flag = args.clone();
        with_flag.extend(["--server", &server]);
        let out = weir("127.0.0.1:1", &with_flag).await;
        assert_eq!(out.status.code(), Some(1), "{with_flag:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            expected,
            "{with_flag:?}"
        );
    }
}
