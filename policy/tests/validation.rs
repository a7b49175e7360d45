//! scratch
#![allow(missing_docs, clippy::unwrap_used, clippy::panic)]
use weir_policy::source::load;
const EX: &str = include_str!("../../examples/policies/iot-fleet.yaml");

fn show(name: &str, text: &str) {
    match load("f.yaml", text) {
        Ok(_) => println!("== {name}: OK"),
        Err(ds) => {
            println!("== {name}:");
            for d in ds {
                println!("   {}:{} [{}] {}", d.line, d.column, d.path, d.message);
            }
        }
    }
}

#[test]
fn explore() {
    show("example", EX);
    show("empty", "");
    show("null", "~");
    show("list", "- a\n");
    show(
        "syntax",
        &EX.replace("  default: telemetry\n", "  default: [telemetry\n"),
    );
    show("syntax2", "a: b\n c: d\n");
    show("tab", "a:\n\tb: c\n");
    show("unknown top", &EX.replace("routing:\n", "routeing:\n"));
    show(
        "unknown nested",
        &EX.replace(
            "          hold: 30s\n",
            "          hold: 30s\n          hodl: 30s\n",
        ),
    );
    show(
        "unknown flow",
        &EX.replace("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2, p99: 1.5, p50: 1.1 }"),
    );
    show(
        "wrong type u32",
        &EX.replace("concurrency_limit: 200", "concurrency_limit: lots"),
    );
    show(
        "wrong type neg",
        &EX.replace("concurrency_limit: 200", "concurrency_limit: -1"),
    );
    show("wrong type f64", &EX.replace("p99_ms: 300", "p99_ms: fast"));
    show(
        "wrong type list",
        &EX.replace(
            "device_types: [sensor, gateway, vehicle]",
            "device_types: sensor",
        ),
    );
    show("wrong type hold int", &EX.replace("hold: 30s", "hold: 30"));
    show(
        "wrong type variant",
        &EX.replace("variant: canary", "variant: blue"),
    );
    show("missing top", &EX.replace("  default: telemetry\n", ""));
    show("missing nested", &EX.replace("          hold: 30s\n", ""));
    show(
        "missing flow",
        &EX.replace("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2 }"),
    );
    show(
        "missing in list",
        &EX.replace("    endpoints: [\"127.0.0.1:18086\"]\n", ""),
    );
    show(
        "dup key",
        &EX.replace(
            "  retry_after: 2s\n",
            "  retry_after: 2s\n  retry_after: 3s\n",
        ),
    );
    show("key name to", &EX.replace("us-east: 80,", "US: 80,"));
    show("nan", &EX.replace("spread: 0.05", "spread: .nan"));
    show(
        "bool key",
        &EX.replace("    alarm:     {", "    true:     {"),
    );
    show(
        "anchors",
        &EX.replace("sla: { p99_ms: 300 }", "sla: &s { p99_ms: 300 }")
            .replace("sla: { p99_ms: 250 }", "sla: *s"),
    );
    show("no routing", &EX.replace("routing:\n  headers:\n    region: x-region\n    device_type: x-device-type\n    device_id: x-device-id\n  weights: { geo: 0.4, device: 0.3, sla: 0.3 }\n  spread: 0.05", ""));
    show(
        "bad routing default",
        &EX.replace("  weights: { geo: 0.4, device: 0.3, sla: 0.3 }\n", "")
            .replace("spread: 0.05", "spread: 0.05\n  weights: { geo: 0.5 }"),
    );

    show(
        "salt nan",
        &EX.replace(
            "          hold: 30s\n",
            "          hold: 30s\n          salt: .nan\n",
        ),
    );
    show(
        "salt bigint",
        &EX.replace(
            "          hold: 30s\n",
            "          hold: 30s\n          salt: 999999999999999999999999999999999999999999\n",
        ),
    );
    show("missing root", &EX.replace("priority:\n", "priorty:\n"));
    show("missing root2", "device_types: [a]\n");
    show("hold null", &EX.replace("hold: 30s", "hold: ~"));
    show("hold seq", &EX.replace("hold: 30s", "hold: [30s]"));
    show(
        "steps str",
        &EX.replace(
            "steps: [1, 5, 10, 25, 50, 100]",
            "steps: [1, 5, ten, 25, 50, 100]",
        ),
    );
    show(
        "crlf",
        &EX.replace("\n", "\r\n").replace("p99_ms: 300", "p99_ms: 0"),
    );
    show(
        "bom",
        &format!("\u{feff}{}", EX.replace("p99_ms: 300", "p99_ms: 0")),
    );
    show(
        "unicode col",
        &EX.replace(
            "device_types: [sensor, gateway, vehicle]",
            "device_types: [sensör, gateway, vehicle, x y]",
        ),
    );
    show(
        "unicode col2",
        &EX.replace(
            "device_types: [sensor, gateway, vehicle]",
            "device_types: [\"ü\", gateway, vehicle, sensor]",
        ),
    );
    show("multi doc", &format!("{EX}\n---\na: b\n"));
    show("tab in value", &EX.replace("hold: 30s", "hold:\t30s x"));
    show(
        "empty steps",
        &EX.replace("steps: [1, 5, 10, 25, 50, 100]", "steps: []"),
    );
    show(
        "empty block",
        &EX.replace(
            "  - name: ingest-ap\n    region: ap-south\n",
            "  - name: ingest-ap\n    region: ap-south\n    device_types:\n",
        ),
    );
    show(
        "merge",
        &EX.replace("sla: { p99_ms: 300 }", "sla: &s { p99_ms: 300 }")
            .replace("sla: { p99_ms: 250 }", "sla: { <<: *s }"),
    );
    show(
        "missing alias",
        &EX.replace("sla: { p99_ms: 250 }", "sla: *nope"),
    );
    show(
        "complex key",
        &EX.replace(
            "    alarm:     {",
            "    ? [a]\n    : {share: 1, max_wait: 1s}\n    alarm:     {",
        ),
    );
    show(
        "int key",
        &EX.replace(
            "    alarm:     {",
            "    1:     {share: 1, max_wait: 1s}\n    alarm:     {",
        ),
    );
    show(
        "dup class",
        &EX.replace(
            "classes: [alarm, command, telemetry, heartbeat]",
            "classes: [alarm, command, telemetry, heartbeat, alarm]",
        ),
    );
    show(
        "dup rtt row",
        &EX.replace(
            "    ap-south: { ap-south: 5 }\n",
            "    ap-south: { ap-south: 5 }\n    eu-west: {}\n",
        ),
    );
    show(
        "dup path",
        &EX.replace(
            "    ap-south: { ap-south: 5 }\n",
            "    ap-south: { ap-south: 5 }\n    \"a.b\": { c: 5 }\n    a: { \"b.c\": 5 }\n",
        ),
    );
}
