//! The `weir` binary, run as a user runs it.

use std::process::Command;

fn weir(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("run weir")
}

#[test]
fn check_filter_config_accepts_valid_and_reports_invalid_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(&good, r#"{"version": "v7"}"#).unwrap();
    std::fs::write(&bad, "{\n  \"version\": \"v7\",\n  \"colour\": 1\n}").unwrap();

    let ok = weir(&["check-filter-config".as_ref(), good.as_os_str()]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (version \"v7\")"));

    let failed = weir(&[
        "check-filter-config".as_ref(),
        good.as_os_str(),
        bad.as_os_str(),
    ]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", bad.display())),
        "error names file and line: {stderr}"
    );
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
}

#[test]
fn missing_file_is_an_error_not_a_crash() {
    let out = weir(&[
        "check-filter-config".as_ref(),
        "/nonexistent/weir.json".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies/iot-fleet.yaml")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_accepts_the_example_and_reports_every_error_with_its_position() {
    let ok = weir(&["validate".as_ref(), example().as_os_str()]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(text(&ok.stdout).ends_with("iot-fleet.yaml: ok\n"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let original = std::fs::read_to_string(example()).unwrap();
    let edited = original
        .replace(
            "steps: [1, 5, 10, 25, 50, 100]",
            "steps: [1, 5, 10, 25, 50, 90]",
        )
        .replace("default: telemetry", "default: telemtry");
    assert_ne!(edited, original);
    std::fs::write(&bad, &edited).unwrap();

    let failed = weir(&["validate".as_ref(), example().as_os_str(), bad.as_os_str()]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    let line_of = |needle: &str| edited.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let steps_line = line_of("steps: [1, 5, 10, 25, 50, 90]");
    let default_line = line_of("default: telemtry");
    assert!(
        stderr.contains(&format!("{}:{steps_line}:", bad.display()))
            && stderr.contains(
                "services[1].placements[0].canary.steps[5]: the last step must be 100, not 90"
            ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:{default_line}:12: error: priority.default: unknown priority class `telemtry`",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("2 errors"), "{stderr}");
}

#[test]
fn compile_prints_a_configuration_the_filter_accepts() {
    let out = weir(&["compile".as_ref(), example().as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    let config = weir_policy::FilterConfig::from_json(&out.stdout).expect("the filter accepts it");
    assert!(
        config.version.starts_with("p-") && config.version.len() == 14,
        "{}",
        config.version
    );
    let feed = config.feed.expect("an initial feed");
    assert_eq!(
        feed.canary_weights["ingest-eu-canary"], 100,
        "the canary starts at its first step"
    );
    assert_eq!(
        feed.sla_scores.len(),
        6,
        "every cluster has a neutral SLA score"
    );
    assert!(feed.sla_scores.values().all(|&s| s == 1.0));
    assert_eq!(feed.concurrency_limit, Some(200));
    let policy = config.policy.expect("the policy");
    assert_eq!(policy.routing.weights.geo, 0.4);
    assert!(
        !config.version_header,
        "responses are not stamped by default"
    );
    let stamped = weir(&[
        "compile".as_ref(),
        "--version-header".as_ref(),
        example().as_os_str(),
    ]);
    assert!(
        weir_policy::FilterConfig::from_json(&stamped.stdout)
            .unwrap()
            .version_header
    );

    // The version is derived from the content: same content, same version.
    let again = weir(&[
        "compile".as_ref(),
        "--compact".as_ref(),
        example().as_os_str(),
    ]);
    let again = weir_policy::FilterConfig::from_json(&again.stdout).unwrap();
    assert_eq!(again.version, config.version);
    assert_eq!(
        text(
            &weir(&[
                "compile".as_ref(),
                "--compact".as_ref(),
                example().as_os_str()
            ])
            .stdout
        )
        .lines()
        .count(),
        1
    );

    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed.yaml");
    let original = std::fs::read_to_string(example()).unwrap();
    std::fs::write(
        &changed,
        original.replace("concurrency_limit: 200", "concurrency_limit: 300"),
    )
    .unwrap();
    let other = weir(&["compile".as_ref(), changed.as_os_str()]);
    let other = weir_policy::FilterConfig::from_json(&other.stdout).unwrap();
    assert_ne!(other.version, config.version);
}

#[test]
fn compile_refuses_an_invalid_policy() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "device_types: [sensor]\nclusters: []\n").unwrap();
    let out = weir(&["compile".as_ref(), bad.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing is printed for an invalid policy"
    );
    assert!(
        text(&out.stderr).contains("missing field"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_shows_each_stage() {
    let args = [
        "explain",
        "--path",
        "/v1/alarms",
        "--method",
        "POST",
        "--header",
        "x-region=eu-west",
        "--header",
        "x-device-id=sensor-000042",
    ];
    let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let policy = example();
    argv.insert(1, policy.as_os_str());
    let out = weir(&argv);
    assert!(out.status.success(), "{out:?}");
    let shown = text(&out.stdout);
    for expected in [
        "classify   alarm (rank 1 of 4), matched priority.rules[0]",
        "admit      admit: 0 in flight < limit 200",
        "service    ingest",
        "route      ingest-eu",
        "split      canary ingest-eu-canary at 1.00% (100 bp): bucket 7827 (sticky on the device id) → stable",
        "cluster    ingest-eu",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in\n{shown}");
    }

    argv.push("--json".as_ref());
    argv.push("--in-flight".as_ref());
    argv.push("250".as_ref());
    let out = weir(&argv);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["class"]["name"], "alarm");
    assert_eq!(json["admission"]["verdict"], "queue");
    assert_eq!(json["admission"]["max_wait_ms"], 2000);
    assert_eq!(json["cluster"], "ingest-eu");
    assert_eq!(json["route"]["split"]["bucket"], 7827);
    assert_eq!(json["route"]["candidates"].as_array().unwrap().len(), 3);
}

#[test]
fn schema_describes_the_policy_format() {
    let out = weir(&["schema".as_ref()]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are refused"
    );
    let top: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "admission",
        "clusters",
        "device_types",
        "priority",
        "regions",
        "routing",
        "services",
    ] {
        assert!(top.contains(&key), "{key} missing from {top:?}");
    }
    let required = schema["required"].as_array().unwrap();
    assert!(
        !required.contains(&"routing".into()),
        "routing has defaults"
    );
}
