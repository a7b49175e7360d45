use serde_json::{Value, json};

use super::*;

const FLEET: &str = include_str!("../../examples/policies/iot-fleet.yaml");

fn run(request: Value) -> Value {
    serde_json::from_str(&simulate_json(FLEET, &request.to_string(), "")).unwrap()
}

fn stage<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} stage in {answer:#}"))
}

fn names(answer: &Value) -> Vec<&str> {
    answer["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[test]
fn every_stage_is_answered_in_order() {
    let answer = run(json!({
        "method": "POST", "path": "/v1/alarms",
        "headers": {"x-region": "eu-west", "x-device-id": "abc"}
    }));
    assert_eq!(answer["ok"], true, "{answer:#}");
    assert_eq!(
        names(&answer),
        [
            "policy", "request", "classify", "admit", "route", "split", "cluster"
        ]
    );
    assert_eq!(stage(&answer, "policy")["outcome"], "valid");
    assert_eq!(stage(&answer, "classify")["outcome"], "alarm");
    assert_eq!(
        stage(&answer, "classify")["lines"][0],
        "classify   alarm (rank 1 of 4), matched priority.rules[0]"
    );
    assert_eq!(stage(&answer, "admit")["outcome"], "admit");
    assert_eq!(stage(&answer, "route")["outcome"], "ingest-eu");
    let variant = stage(&answer, "split")["outcome"].as_str().unwrap();
    let cluster = stage(&answer, "cluster")["outcome"].as_str().unwrap();
    let expected = if variant == "canary" {
        "ingest-eu-canary"
    } else {
        "ingest-eu"
    };
    assert_eq!(cluster, expected);
    assert_eq!(answer["decision"]["cluster"], cluster);
    assert_eq!(answer["decision"]["class"]["name"], "alarm");
}

#[test]
fn the_explain_text_is_the_stages_lines_after_the_policy() {
    let answer = run(json!({"path": "/v1/commands/x", "headers": [["X-Region", "us-east"]]}));
    let lines: Vec<&str> = answer["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] != "policy")
        .flat_map(|s| s["lines"].as_array().unwrap())
        .map(|l| l.as_str().unwrap())
        .collect();
    let explain = answer["explain"].as_str().unwrap();
    assert_eq!(explain, format!("{}\n", lines.join("\n")));
    // Header names are lower-cased as `weir explain --header` does.
    assert!(
        explain
            .starts_with("request    GET /v1/commands/x  host (any)  headers [x-region=us-east]\n"),
        "{explain}"
    );
    assert!(explain.contains("\nservice    commands\n"), "{explain}");
    assert!(explain.ends_with("cluster    commands-us\n"), "{explain}");
}

#[test]
fn headers_as_an_object_or_as_pairs_decide_alike() {
    let object =
        run(json!({"path": "/v1/t", "headers": {"x-device-id": "d-7", "x-region": "ap-south"}}));
    let pairs = run(
        json!({"path": "/v1/t", "headers": [["x-device-id", "d-7"], ["x-region", "ap-south"]]}),
    );
    assert_eq!(object["decision"], pairs["decision"]);
}

#[test]
fn admission_queues_and_sheds_with_load() {
    let queued = run(json!({"path": "/v1/telemetry", "in_flight": 100_000}));
    assert_eq!(stage(&queued, "admit")["outcome"], "queue", "{queued:#}");
    let text = stage(&queued, "admit")["lines"][0].as_str().unwrap();
    assert!(text.contains("waits at most"), "{text}");
}

#[test]
fn a_request_no_service_takes_is_not_steered() {
    let answer = run(json!({"path": "/health"}));
    assert_eq!(answer["ok"], true);
    assert_eq!(
        names(&answer),
        ["policy", "request", "classify", "admit", "route"]
    );
    assert_eq!(stage(&answer, "route")["outcome"], "not steered");
    assert_eq!(answer["decision"]["cluster"], Value::Null);
}

#[test]
fn a_given_feed_moves_the_split() {
    let request =
        json!({"path": "/v1/t", "headers": {"x-region": "eu-west", "x-device-id": "d-1"}})
            .to_string();
    let full = json!({"canary_weights": {"ingest-eu-canary": 10_000}}).to_string();
    let none = json!({"canary_weights": {"ingest-eu-canary": 0}}).to_string();
    let at = |feed: &str| -> Value {
        let answer: Value = serde_json::from_str(&simulate_json(FLEET, &request, feed)).unwrap();
        answer["decision"]["cluster"].clone()
    };
    assert_eq!(at(&full), "ingest-eu-canary");
    assert_eq!(at(&none), "ingest-eu");
}

#[test]
fn a_feed_that_does_not_fit_the_policy_is_a_problem() {
    let feed = json!({"canary_weights": {"nope": 10}}).to_string();
    let answer: Value = serde_json::from_str(&simulate_json(FLEET, "{}", &feed)).unwrap();
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["problems"][0]["kind"], "feed");
    assert_eq!(answer["problems"][0]["path"], "feed.canary_weights.nope");
    let garbled: Value = serde_json::from_str(&simulate_json(FLEET, "{}", "{")).unwrap();
    assert_eq!(garbled["problems"][0]["kind"], "feed");
}

#[test]
fn yaml_errors_carry_line_and_column() {
    let broken = FLEET.replacen(
        "device_types: [sensor, gateway, vehicle]",
        "device_types: [sensor",
        1,
    );
    let answer: Value = serde_json::from_str(&simulate_json(&broken, "{}", "")).unwrap();
    assert_eq!(answer["ok"], false);
    let problem = &answer["problems"][0];
    assert_eq!(problem["kind"], "parse", "{answer:#}");
    assert!(problem["line"].as_u64().unwrap() > 0, "{problem}");
    assert!(problem["column"].as_u64().unwrap() > 0, "{problem}");
    assert!(
        problem["text"]
            .as_str()
            .unwrap()
            .starts_with("policy.yaml:"),
        "{problem}"
    );
    assert_eq!(names(&answer), ["policy"]);
    assert_eq!(stage(&answer, "policy")["outcome"], "parse error");
}

#[test]
fn validation_errors_point_at_the_field() {
    let text = "device_types: [sensor]\nregions: {}\nclusters: []\nservices: []\npriority:\n  classes: [a]\n  default: b\nadmission:\n  concurrency_limit: 10\n  retry_after: 1s\n  classes: {}\n";
    let answer: Value = serde_json::from_str(&simulate_json(text, "{}", "")).unwrap();
    assert_eq!(answer["ok"], false);
    let problem = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "priority.default")
        .unwrap_or_else(|| panic!("{answer:#}"));
    assert_eq!(problem["kind"], "validation");
    assert_eq!(
        (problem["line"].as_u64(), problem["column"].as_u64()),
        (Some(7), Some(12))
    );
}

#[test]
fn bad_requests_are_problems_not_panics() {
    for request in [
        "",
        "5",
        "{\"method\": 5}",
        "{\"unknown\": 1}",
        "{\"headers\": {\" \": \"v\"}}",
        "{\"headers\": [[\"a\"]]}",
        "{\"in_flight\": -1}",
    ] {
        let answer: Value = serde_json::from_str(&simulate_json(FLEET, request, "")).unwrap();
        assert_eq!(answer["ok"], false, "{request}: {answer:#}");
        assert_eq!(answer["problems"][0]["kind"], "request", "{request}");
    }
    for policy in ["", "[", "\u{0}", "a: [b", "clusters: 5"] {
        let answer: Value = serde_json::from_str(&simulate_json(policy, "{}", "")).unwrap();
        assert_eq!(answer["ok"], false, "{policy:?}");
    }
}

#[test]
fn a_testers_request_is_shown_on_the_canary_by_its_always_conditions() {
    let answer = run(json!({
        "method": "POST", "path": "/v1/telemetry",
        "headers": {"x-region": "eu-west", "x-device-id": "abc", "x-tester": "1"}
    }));
    assert_eq!(answer["ok"], true, "{answer:#}");
    let split = stage(&answer, "split");
    assert_eq!(split["outcome"], "canary");
    assert!(
        split["lines"][0]
            .as_str()
            .unwrap()
            .ends_with("the canary's `always` conditions hold → canary"),
        "{split:#}"
    );
    assert_eq!(answer["decision"]["route"]["split"]["targeted"], "always");
    assert_eq!(answer["decision"]["cluster"], "ingest-eu-canary");
}
