//! Every error a policy can have, one test each: the diagnostic's exact line,
//! column and field path, and the words of its message that say what is wrong.
//!
//! Cases are built by precise edits of the example policy (each edit must
//! apply exactly once, so a stale edit fails instead of passing vacuously) or
//! from small inline documents. Expected positions are given as a piece of the
//! edited text with `»` before the character the diagnostic must point at;
//! [`caret`] turns that into a line and a column.

// The helpers below fail the way tests do, by panicking; clippy.toml allows
// that in `#[test]` functions only.
#![allow(clippy::panic, clippy::indexing_slicing)]

use weir_policy::source::{Diagnostic, load};
use weir_policy::{Feed, Policy};

const FILE: &str = "iot-fleet.yaml";
const EXAMPLE: &str = include_str!("../../examples/policies/iot-fleet.yaml");

/// A small valid policy, for errors the example cannot show without others.
const MINIMAL: &str = "\
device_types: [sensor]
regions: { default_rtt_ms: 10 }
clusters:
  - name: backend
    region: home
    endpoints: [\"10.0.0.1:80\"]
services:
  - name: everything
    match: { path_prefix: / }
    placements:
      - cluster: backend
priority:
  classes: [only]
  default: only
admission:
  concurrency_limit: 10
  retry_after: 1s
  classes:
    only: { max_wait: 0ms }
";

/// Marks the character a diagnostic points at, inside a marker.
const CARET: char = '»';

/// `text` with each `(from, to)` applied in turn; each `from` must occur
/// exactly once in the text it is applied to.
#[track_caller]
fn edit(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for &(from, to) in edits {
        assert_eq!(
            out.matches(from).count(),
            1,
            "{from:?} must occur exactly once in the text it edits"
        );
        let next = out.replacen(from, to, 1);
        assert_ne!(next, out, "replacing {from:?} by {to:?} changed nothing");
        out = next;
    }
    out
}

/// The example with `edits` applied.
#[track_caller]
fn example_with(edits: &[(&str, &str)]) -> String {
    edit(EXAMPLE, edits)
}

/// The 1-based (line, column) of the character after `»` in `marker`, whose
/// text without the `»` must occur exactly once in `text`. Columns count
/// characters, as the YAML library does.
#[track_caller]
fn caret(text: &str, marker: &str) -> (u64, u64) {
    let (before, after) = marker
        .split_once(CARET)
        .unwrap_or_else(|| panic!("marker {marker:?} has no {CARET}"));
    let context = format!("{before}{after}");
    let found: Vec<usize> = text.match_indices(&context).map(|(at, _)| at).collect();
    assert_eq!(
        found.len(),
        1,
        "marker {marker:?} must occur exactly once in the text"
    );
    let head = &text[..found[0] + before.len()];
    let line = head.matches('\n').count() + 1;
    let column = head.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u64, column as u64)
}

fn listed(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}\n"))
        .collect::<String>()
}

/// Loads `text` and checks that it fails with exactly the `expected`
/// diagnostics, in order: `(path, marker of the position, part of the message)`.
#[track_caller]
fn assert_diagnostics(text: &str, expected: &[(&str, &str, &str)]) {
    let diagnostics = match load(FILE, text) {
        Ok(_) => panic!("expected {} diagnostic(s), but it loaded", expected.len()),
        Err(diagnostics) => diagnostics,
    };
    let shown = listed(&diagnostics);
    assert_eq!(
        diagnostics.len(),
        expected.len(),
        "wrong number of diagnostics:\n{shown}"
    );
    for (diagnostic, &(path, marker, says)) in diagnostics.iter().zip(expected) {
        assert_eq!(diagnostic.file, FILE);
        assert_eq!(diagnostic.path, path, "path, in:\n{shown}");
        assert_eq!(
            (diagnostic.line, diagnostic.column),
            caret(text, marker),
            "position of `{path}` (expected at {marker:?}), in:\n{shown}"
        );
        assert!(
            diagnostic.message.contains(says),
            "the message of `{path}` should contain {says:?}, in:\n{shown}"
        );
    }
}

/// Shorthand for a single expected diagnostic.
#[track_caller]
fn assert_one(text: &str, path: &str, marker: &str, says: &str) {
    assert_diagnostics(text, &[(path, marker, says)]);
}

// ---------------------------------------------------------------------------
// The helpers and the valid documents
// ---------------------------------------------------------------------------

#[test]
fn caret_counts_lines_and_characters() {
    assert_eq!(caret("ab\ncd", "»ab"), (1, 1));
    assert_eq!(caret("ab\ncd", "c»d"), (2, 2));
    assert_eq!(caret("ab\nüb: x", "ü»b"), (2, 2));
    assert_eq!(caret("a\r\nb: x", "b: »x"), (2, 4));
}

#[test]
fn the_example_is_valid() {
    let policy = load(FILE, EXAMPLE).unwrap_or_else(|d| panic!("{}", listed(&d)));
    assert!(weir_policy::validate(&policy).is_empty());
    assert_eq!(policy.services.len(), 2);
}

#[test]
fn the_minimal_policy_is_valid() {
    let policy = load(FILE, MINIMAL).unwrap_or_else(|d| panic!("{}", listed(&d)));
    assert!(weir_policy::validate(&policy).is_empty());
}

#[test]
fn diagnostics_display_like_a_compiler() {
    let text = example_with(&[("concurrency_limit: 200", "concurrency_limit: 0")]);
    let diagnostics = load(FILE, &text).expect_err("a zero limit is refused");
    let (line, column) = caret(&text, "concurrency_limit: »0");
    assert_eq!(
        diagnostics[0].to_string(),
        format!("{FILE}:{line}:{column}: error: admission.concurrency_limit: must be at least 1")
    );
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = example_with(&[
        (
            "device_types: [sensor, gateway, vehicle]",
            "device_types: [sensor, gateway, vehicle, sensor]",
        ),
        (
            "endpoints: [\"127.0.0.1:18083\"]",
            "endpoints: [\"127.0.0.1:99999\"]",
        ),
        (
            "steps: [1, 5, 10, 25, 50, 100]",
            "steps: [1, 5, 10, 10, 50, 100]",
        ),
        ("method: PUT", "method: put"),
        (
            "telemetry: { max_wait: 500ms }",
            "telemetry: { share: 70, max_wait: 500ms }",
        ),
        ("spread: 0.05", "spread: 1.5"),
    ]);
    assert_diagnostics(
        &text,
        &[
            (
                "device_types[3]",
                "vehicle, »sensor]",
                "`sensor` is already defined at device_types[0]",
            ),
            (
                "clusters[2].endpoints[0]",
                "endpoints: [»\"127.0.0.1:99999\"]",
                "the port must be a number from 1 to 65535",
            ),
            (
                "services[1].placements[0].canary.steps[3]",
                "10, »10, 50",
                "steps must increase: 10 follows 10",
            ),
            (
                "priority.rules[4].match.method",
                "method: »put",
                "`put` is not an HTTP method in upper case",
            ),
            (
                "admission.classes.telemetry.share",
                "telemetry: { share: »70,",
                "`share` was removed: admission is work-conserving",
            ),
            (
                "routing.spread",
                "spread: »1.5",
                "a score margin must be between 0 and 1, not 1.5",
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Structural errors (the source layer): the first one stops reading
// ---------------------------------------------------------------------------

#[test]
fn yaml_syntax_error_points_at_the_offending_character() {
    // `variant` indented one space more than its siblings.
    let text = example_with(&[(
        "    region: eu-west\n    variant: canary\n",
        "    region: eu-west\n     variant: canary\n",
    )]);
    assert_one(
        &text,
        "",
        "     variant»: canary",
        "mapping values are not allowed in this context",
    );
}

#[test]
fn yaml_unclosed_quote_points_at_the_quote() {
    let text = example_with(&[("retry_after: 2s", "retry_after: \"2s")]);
    assert_one(&text, "", "retry_after: »\"2s", "unclosed quote");
}

#[test]
fn yaml_duplicate_key_points_at_the_second_key() {
    let text = example_with(&[(
        "  retry_after: 2s\n",
        "  retry_after: 2s\n  retry_after: 3s\n",
    )]);
    let diagnostics = load(FILE, &text).expect_err("duplicate keys are refused");
    assert_one(
        &text,
        "",
        "2s\n  »retry_after: 3s",
        "duplicate mapping key `retry_after`",
    );
    // Users are not told about the YAML library's options.
    assert!(
        !diagnostics[0].message.contains("Options"),
        "{diagnostics:?}"
    );
}

#[test]
fn yaml_second_document_is_refused() {
    let text = format!("{EXAMPLE}\n---\nextra: 1\n");
    assert_one(
        &text,
        "",
        "---\n»extra: 1",
        "only single YAML document expected but multiple found",
    );
}

#[test]
fn empty_file_is_refused() {
    assert_one("", "", "»", "unexpected end of file");
}

#[test]
fn document_that_is_not_a_mapping_is_refused() {
    assert_one("- sensor\n", "", "»- sensor", "expected mapping start");
}

#[test]
fn unknown_top_level_field() {
    let text = example_with(&[("\nrouting:\n", "\nrouteing:\n")]);
    assert_one(
        &text,
        "routeing",
        "»routeing:",
        "unknown field `routeing`, expected one of",
    );
}

#[test]
fn unknown_nested_field_points_at_its_key() {
    let text = example_with(&[(
        "          hold: 30s\n",
        "          hold: 30s\n          hodl: 30s\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[0].canary.hodl",
        "»hodl: 30s",
        "unknown field `hodl`, expected one of cluster, steps, hold",
    );
}

#[test]
fn unknown_field_in_a_flow_mapping() {
    let text = example_with(&[("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2, p99: 1.5, p50: 1.1 }")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.analysis.max_latency_ratio.p50",
        "p99: 1.5, »p50",
        "unknown field `p50`, expected one of p95, p99",
    );
}

#[test]
fn only_the_first_structural_error_is_reported() {
    let text = example_with(&[
        ("\nrouting:\n", "\nrouteing:\n"),
        ("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2, p99: 1.5, p50: 1.1 }"),
    ]);
    assert_one(
        &text,
        "services[1].placements[0].canary.analysis.max_latency_ratio.p50",
        "p99: 1.5, »p50",
        "unknown field `p50`",
    );
}

#[test]
fn wrong_type_integer() {
    let text = example_with(&[("concurrency_limit: 200", "concurrency_limit: lots")]);
    assert_one(
        &text,
        "admission.concurrency_limit",
        "concurrency_limit: »lots",
        "invalid u32",
    );
}

#[test]
fn wrong_type_negative_integer() {
    let text = example_with(&[("min_samples: 200", "min_samples: -5")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.analysis.min_samples",
        "min_samples: »-5",
        "invalid u32",
    );
}

#[test]
fn wrong_type_number_in_a_list() {
    let text = example_with(&[(
        "steps: [1, 5, 10, 25, 50, 100]",
        "steps: [1, 5, ten, 25, 50, 100]",
    )]);
    assert_one(
        &text,
        "services[1].placements[0].canary.steps[2]",
        "5, »ten,",
        "invalid floating point",
    );
}

#[test]
fn wrong_type_scalar_for_a_list() {
    let text = example_with(&[(
        "device_types: [sensor, gateway, vehicle]",
        "device_types: sensor",
    )]);
    assert_one(
        &text,
        "device_types",
        "device_types: »sensor\n",
        "expected sequence start",
    );
}

#[test]
fn wrong_type_list_for_a_string() {
    let text = example_with(&[("hold: 30s", "hold: [30s]")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.hold",
        "hold: »[30s]",
        "expected string scalar",
    );
}

#[test]
fn wrong_type_null_for_a_string() {
    let text = example_with(&[("hold: 30s", "hold: ~")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.hold",
        "hold: »~",
        "null is not allowed here",
    );
}

#[test]
fn unknown_enum_variant() {
    let text = example_with(&[("variant: canary", "variant: blue")]);
    assert_one(
        &text,
        "clusters[1].variant",
        "variant: »blue",
        "unknown variant `blue`, expected one of stable, canary",
    );
}

#[test]
fn missing_field_points_at_its_mapping() {
    let text = example_with(&[("  default: telemetry\n", "")]);
    assert_one(&text, "priority", "»priority:", "missing field `default`");
}

#[test]
fn missing_nested_field_points_at_its_mapping() {
    let text = example_with(&[("          hold: 30s\n", "")]);
    assert_one(
        &text,
        "services[1].placements[0].canary",
        "        »canary:",
        "missing field `hold`",
    );
}

#[test]
fn missing_field_in_a_flow_mapping() {
    let text = example_with(&[("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2 }")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.analysis.max_latency_ratio",
        "»max_latency_ratio: { p95: 1.2 }",
        "missing field `p99`",
    );
}

#[test]
fn missing_field_in_a_list_item() {
    let text = example_with(&[("    endpoints: [\"127.0.0.1:18086\"]\n", "")]);
    assert_one(
        &text,
        "clusters[5]",
        "  - »name: commands-us",
        "missing field `endpoints`",
    );
}

#[test]
fn missing_top_level_field() {
    assert_one(
        "device_types: [sensor]\n",
        "",
        "»device_types",
        "missing field `regions`",
    );
}

#[test]
fn positions_hold_with_crlf_line_endings() {
    let text = example_with(&[("p99_ms: 300", "p99_ms: 0")]).replace('\n', "\r\n");
    assert_one(
        &text,
        "services[0].sla.p99_ms",
        "p99_ms: »0",
        "a p99 target in ms must be between 1 and 600000, not 0",
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = example_with(&[(
        "device_types: [sensor, gateway, vehicle]",
        "device_types: [sensor, gateway, véhicule, Truck]",
    )]);
    assert_diagnostics(
        &text,
        &[
            (
                "device_types[2]",
                "gateway, »véhicule",
                "`véhicule` is not a valid name",
            ),
            (
                "device_types[3]",
                "véhicule, »Truck",
                "`Truck` is not a valid name",
            ),
        ],
    );
}

#[test]
fn numeric_looking_keys_are_placed_as_written() {
    // `007` is a valid region name; its row must be found under that name.
    let text = example_with(&[(
        "    ap-south: { ap-south: 5 }\n",
        "    ap-south: { ap-south: 5 }\n    007: { ap-south: -5 }\n",
    )]);
    assert_one(
        &text,
        "regions.rtt_ms.007.ap-south",
        "007: { ap-south: »-5 }",
        "an RTT in ms must be between 0 and 60000, not -5",
    );
}

#[test]
fn non_finite_number_is_reported_by_validation() {
    let text = example_with(&[("spread: 0.05", "spread: .nan")]);
    assert_one(
        &text,
        "routing.spread",
        "spread: ».nan",
        "a score margin must be between 0 and 1, not NaN",
    );
}

#[test]
fn non_finite_spelling_is_a_fine_string() {
    let text = example_with(&[(
        "          hold: 30s\n",
        "          hold: 30s\n          salt: .inf\n",
    )]);
    let policy = load(FILE, &text).unwrap_or_else(|d| panic!("{}", listed(&d)));
    let canary = policy.services[1].placements[0].canary.as_ref();
    assert_eq!(canary.and_then(|c| c.salt.as_deref()), Some(".inf"));
}

// ---------------------------------------------------------------------------
// Device types and regions
// ---------------------------------------------------------------------------

#[test]
fn device_type_name_invalid() {
    let text = example_with(&[(
        "device_types: [sensor, gateway, vehicle]",
        "device_types: [sensor, gateway, Vehicle]",
    )]);
    assert_one(
        &text,
        "device_types[2]",
        "gateway, »Vehicle]",
        "`Vehicle` is not a valid name: use 1 to 63 lower-case letters",
    );
}

#[test]
fn device_type_duplicated() {
    let text = example_with(&[(
        "device_types: [sensor, gateway, vehicle]",
        "device_types: [sensor, gateway, vehicle, gateway]",
    )]);
    assert_one(
        &text,
        "device_types[3]",
        "vehicle, »gateway]",
        "`gateway` is already defined at device_types[1]",
    );
}

#[test]
fn device_types_empty() {
    let text = example_with(&[
        (
            "device_types: [sensor, gateway, vehicle]",
            "device_types: []",
        ),
        (
            "    device_types: [sensor, gateway]       # no vehicle backend in ap-south\n",
            "",
        ),
    ]);
    assert_one(
        &text,
        "device_types",
        "device_types: »[]",
        "list at least one device type",
    );
}

#[test]
fn default_rtt_out_of_range() {
    let text = example_with(&[("default_rtt_ms: 250", "default_rtt_ms: 60001")]);
    assert_one(
        &text,
        "regions.default_rtt_ms",
        "default_rtt_ms: »60001",
        "an RTT in ms must be between 0 and 60000, not 60001",
    );
}

#[test]
fn rtt_row_region_name_invalid() {
    let text = example_with(&[(
        "    ap-south: { ap-south: 5 }\n",
        "    ap-south: { ap-south: 5 }\n    EU: { eu-west: 7 }\n",
    )]);
    assert_one(
        &text,
        "regions.rtt_ms.EU",
        "    »EU: {",
        "`EU` is not a valid name",
    );
}

#[test]
fn rtt_column_region_name_invalid() {
    // The path of a key holding a scalar is also its value's, and scalars are
    // pointed at themselves: the diagnostic is on the key's line, at the value.
    let text = example_with(&[("{ ap-south: 5 }", "{ ap-south: 5, AP: 9 }")]);
    assert_one(
        &text,
        "regions.rtt_ms.ap-south.AP",
        "AP: »9 }",
        "`AP` is not a valid name",
    );
}

#[test]
fn rtt_out_of_range() {
    let text = example_with(&[("us-east: 80,", "us-east: -1,")]);
    assert_one(
        &text,
        "regions.rtt_ms.eu-west.us-east",
        "us-east: »-1,",
        "an RTT in ms must be between 0 and 60000, not -1",
    );
}

#[test]
fn rtt_contradicting_the_other_direction() {
    let text = example_with(&[(
        "{ us-east: 5, ap-south: 210 }",
        "{ us-east: 5, ap-south: 210, eu-west: 90 }",
    )]);
    assert_one(
        &text,
        "regions.rtt_ms.us-east.eu-west",
        "eu-west: »90 }",
        "90 ms contradicts 80 ms given for the same pair at regions.rtt_ms.eu-west.us-east",
    );
}

#[test]
fn rtt_missing_without_a_default() {
    let text = example_with(&[
        ("  default_rtt_ms: 250\n", ""),
        ("{ us-east: 5, ap-south: 210 }", "{ us-east: 5 }"),
    ]);
    assert_diagnostics(
        &text,
        &[
            // Reported once, at the pair's first cluster in the file.
            (
                "clusters[2].region",
                "name: ingest-us\n    region: »us-east",
                "no RTT from `us-east` to `ap-south`; add them under regions.rtt_ms or set regions.default_rtt_ms",
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

/// The example with one more cluster, `block`, after the last one.
fn example_with_cluster(block: &str) -> String {
    let last = "    endpoints: [\"127.0.0.1:18086\"]\n";
    example_with(&[(last, &format!("{last}{block}"))])
}

#[test]
fn clusters_empty() {
    let text = edit(
        MINIMAL,
        &[(
            "clusters:\n  - name: backend\n    region: home\n    endpoints: [\"10.0.0.1:80\"]\n",
            "clusters: []\n",
        )],
    );
    assert_diagnostics(
        &text,
        &[
            ("clusters", "clusters: »[]", "define at least one cluster"),
            (
                "services[0].placements[0].cluster",
                "- cluster: »backend",
                "unknown cluster `backend`; defined clusters are none",
            ),
        ],
    );
}

#[test]
fn cluster_name_invalid() {
    let text = example_with_cluster(
        "  - name: Spare\n    region: eu-west\n    endpoints: [\"127.0.0.1:18099\"]\n",
    );
    assert_one(
        &text,
        "clusters[6].name",
        "name: »Spare",
        "`Spare` is not a valid name",
    );
}

#[test]
fn cluster_name_duplicated() {
    let text = example_with_cluster(
        "  - name: ingest-us\n    region: ap-south\n    endpoints: [\"127.0.0.1:18099\"]\n",
    );
    assert_one(
        &text,
        "clusters[6].name",
        "  - name: »ingest-us\n    region: ap-south",
        "`ingest-us` is already defined at clusters[2]",
    );
}

#[test]
fn cluster_region_name_invalid() {
    let text = example_with(&[("    region: ap-south\n", "    region: AP-south\n")]);
    assert_one(
        &text,
        "clusters[3].region",
        "region: »AP-south",
        "`AP-south` is not a valid name",
    );
}

#[test]
fn cluster_device_types_empty() {
    let text = example_with(&[("device_types: [sensor, gateway] ", "device_types: [] ")]);
    assert_one(
        &text,
        "clusters[3].device_types",
        "    device_types: »[]",
        "list at least one device type, or omit the field to serve all",
    );
}

#[test]
fn cluster_device_type_unknown() {
    let text = example_with(&[(
        "device_types: [sensor, gateway] ",
        "device_types: [sensor, drone] ",
    )]);
    assert_one(
        &text,
        "clusters[3].device_types[1]",
        "sensor, »drone]",
        "unknown device type `drone`; the fleet's are `gateway`, `sensor`, `vehicle`",
    );
}

#[test]
fn cluster_endpoints_empty() {
    let text = example_with(&[("endpoints: [\"127.0.0.1:18086\"]", "endpoints: []")]);
    assert_one(
        &text,
        "clusters[5].endpoints",
        "endpoints: »[]",
        "list at least one endpoint (`host:port`)",
    );
}

#[test]
fn cluster_endpoints_invalid() {
    let text = example_with(&[(
        "endpoints: [\"127.0.0.1:18086\"]",
        "endpoints: [\"127.0.0.1\", \"host:0\", \"host:+80\", \"bad host:80\"]",
    )]);
    assert_diagnostics(
        &text,
        &[
            (
                "clusters[5].endpoints[0]",
                "endpoints: [»\"127.0.0.1\",",
                "`127.0.0.1` is not a valid endpoint: write it as `host:port`",
            ),
            (
                "clusters[5].endpoints[1]",
                "»\"host:0\"",
                "`host:0` is not a valid endpoint: the port must be a number from 1 to 65535",
            ),
            (
                "clusters[5].endpoints[2]",
                "»\"host:+80\"",
                "`host:+80` is not a valid endpoint: the port must be a number from 1 to 65535",
            ),
            (
                "clusters[5].endpoints[3]",
                "»\"bad host:80\"",
                "`bad host:80` is not a valid endpoint: the host must be an IP address or a DNS name",
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Services and placements
// ---------------------------------------------------------------------------

#[test]
fn services_empty() {
    let text = edit(
        MINIMAL,
        &[(
            "services:\n  - name: everything\n    match: { path_prefix: / }\n    placements:\n      - cluster: backend\n",
            "services: []\n",
        )],
    );
    assert_one(
        &text,
        "services",
        "services: »[]",
        "define at least one service",
    );
}

#[test]
fn service_name_invalid() {
    let text = example_with(&[("  - name: commands\n", "  - name: Commands\n")]);
    assert_one(
        &text,
        "services[0].name",
        "name: »Commands\n",
        "`Commands` is not a valid name",
    );
}

#[test]
fn service_name_duplicated() {
    let text = example_with(&[("  - name: ingest\n", "  - name: commands\n")]);
    assert_one(
        &text,
        "services[1].name",
        "  - name: »commands\n    match: { path_prefix: /v1/ }",
        "`commands` is already defined at services[0]",
    );
}

#[test]
fn service_path_prefix_without_slash() {
    let text = example_with(&[(
        "match: { path_prefix: /v1/ }",
        "match: { path_prefix: v1/ }",
    )]);
    assert_one(
        &text,
        "services[1].match.path_prefix",
        "path_prefix: »v1/ }",
        "`v1/` must start with `/`",
    );
}

#[test]
fn service_host_invalid() {
    let text = example_with(&[(
        "match: { path_prefix: /v1/ }",
        "match: { hosts: [ingest.example.com, \"*\"], path_prefix: /v1/ }",
    )]);
    assert_one(
        &text,
        "services[1].match.hosts[1]",
        "example.com, »\"*\"",
        "`*` is not a host name (or `*.` and a host name)",
    );
}

#[test]
fn service_sla_out_of_range() {
    let text = example_with(&[("p99_ms: 300", "p99_ms: 0")]);
    assert_one(
        &text,
        "services[0].sla.p99_ms",
        "p99_ms: »0",
        "a p99 target in ms must be between 1 and 600000, not 0",
    );
}

#[test]
fn service_placements_empty() {
    let text = example_with(&[(
        "    placements:\n      - cluster: commands-eu\n      - cluster: commands-us\n",
        "    placements: []\n",
    )]);
    assert_one(
        &text,
        "services[0].placements",
        "placements: »[]",
        "place the service on at least one cluster",
    );
}

#[test]
fn placement_cluster_unknown() {
    let text = example_with(&[(
        "      - cluster: ingest-ap\n",
        "      - cluster: ingest-asia\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[2].cluster",
        "cluster: »ingest-asia",
        "unknown cluster `ingest-asia`; defined clusters are `commands-eu`, `commands-us`, `ingest-ap`, `ingest-eu`, `ingest-eu-canary`, `ingest-us`",
    );
}

#[test]
fn placement_cluster_is_a_canary() {
    let text = example_with(&[(
        "      - cluster: ingest-ap\n",
        "      - cluster: ingest-eu-canary\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[2].cluster",
        "      - cluster: »ingest-eu-canary",
        "`ingest-eu-canary` is a canary cluster; place stable clusters and name canaries under `canary`",
    );
}

#[test]
fn placement_cluster_placed_twice() {
    let text = example_with(&[(
        "      - cluster: ingest-ap\n",
        "      - cluster: ingest-us\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[2].cluster",
        "- cluster: ingest-us\n      - cluster: »ingest-us",
        "`ingest-us` is already placed at services[1].placements[1]",
    );
}

// ---------------------------------------------------------------------------
// Canaries
// ---------------------------------------------------------------------------

const CANARY: &str = "services[1].placements[0].canary";

#[test]
fn canary_cluster_serving_two_rollouts() {
    let text = example_with(&[(
        "      - cluster: ingest-us\n",
        "      - cluster: ingest-us\n        canary:\n          cluster: ingest-eu-canary\n          steps: [50, 100]\n          hold: 1m\n          analysis:\n            max_error_rate_increase: 2\n            max_latency_ratio: { p95: 2, p99: 2 }\n            min_samples: 10\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[1].canary.cluster",
        "cluster: »ingest-eu-canary\n          steps: [50, 100]",
        "`ingest-eu-canary` is already the canary at services[1].placements[0].canary; each canary cluster serves one rollout",
    );
}

#[test]
fn canary_cluster_unknown() {
    let text = example_with(&[("cluster: ingest-eu-canary", "cluster: ingest-eu-canery")]);
    assert_one(
        &text,
        &format!("{CANARY}.cluster"),
        "cluster: »ingest-eu-canery",
        "unknown cluster `ingest-eu-canery`; defined clusters are",
    );
}

#[test]
fn canary_cluster_same_as_stable() {
    let text = example_with(&[(
        "          cluster: ingest-eu-canary\n",
        "          cluster: ingest-eu\n",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.cluster"),
        "          cluster: »ingest-eu\n",
        "the canary cluster must differ from the placement's stable cluster",
    );
}

#[test]
fn canary_cluster_not_a_canary() {
    let text = example_with(&[(
        "          cluster: ingest-eu-canary\n",
        "          cluster: ingest-us\n",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.cluster"),
        "          cluster: »ingest-us\n",
        "`ingest-us` is not a canary cluster: set `variant: canary` on it",
    );
}

#[test]
fn canary_steps_empty() {
    let text = example_with(&[("steps: [1, 5, 10, 25, 50, 100]", "steps: []")]);
    assert_one(
        &text,
        &format!("{CANARY}.steps"),
        "steps: »[]",
        "list the rollout's weights in percent",
    );
}

#[test]
fn canary_step_out_of_range() {
    let text = example_with(&[(
        "steps: [1, 5, 10, 25, 50, 100]",
        "steps: [0, 5, 10, 25, 50, 100]",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.steps[0]"),
        "steps: [»0,",
        "a weight must be above 0 and at most 100 percent, not 0",
    );
}

#[test]
fn canary_steps_not_increasing() {
    let text = example_with(&[(
        "steps: [1, 5, 10, 25, 50, 100]",
        "steps: [1, 5, 10, 8, 50, 100]",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.steps[3]"),
        "10, »8, 50",
        "steps must increase: 8 follows 10",
    );
}

#[test]
fn canary_last_step_not_100() {
    let text = example_with(&[(
        "steps: [1, 5, 10, 25, 50, 100]",
        "steps: [1, 5, 10, 25, 50]",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.steps[4]"),
        "25, »50]",
        "the last step must be 100, not 50",
    );
}

#[test]
fn canary_hold_not_a_duration() {
    let text = example_with(&[("hold: 30s", "hold: 30sec")]);
    assert_one(
        &text,
        &format!("{CANARY}.hold"),
        "hold: »30sec",
        "`30sec` is not a duration: write a whole number and ms, s, m or h",
    );
}

#[test]
fn canary_hold_zero() {
    let text = example_with(&[("hold: 30s", "hold: 0s")]);
    assert_one(
        &text,
        &format!("{CANARY}.hold"),
        "hold: »0s",
        "must be longer than 0",
    );
}

#[test]
fn canary_error_rate_increase_out_of_range() {
    let text = example_with(&[(
        "max_error_rate_increase: 1.0",
        "max_error_rate_increase: 101",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.analysis.max_error_rate_increase"),
        "max_error_rate_increase: »101",
        "an increase in percentage points must be between 0 and 100, not 101",
    );
}

#[test]
fn canary_p95_ratio_out_of_range() {
    let text = example_with(&[("{ p95: 1.2, p99: 1.5 }", "{ p95: 0.9, p99: 1.5 }")]);
    assert_one(
        &text,
        &format!("{CANARY}.analysis.max_latency_ratio.p95"),
        "p95: »0.9",
        "a latency ratio must be between 1 and 100, not 0.9",
    );
}

#[test]
fn canary_p99_ratio_out_of_range() {
    let text = example_with(&[("{ p95: 1.2, p99: 1.5 }", "{ p95: 1.2, p99: 101 }")]);
    assert_one(
        &text,
        &format!("{CANARY}.analysis.max_latency_ratio.p99"),
        "p99: »101",
        "a latency ratio must be between 1 and 100, not 101",
    );
}

#[test]
fn canary_min_samples_zero() {
    let text = example_with(&[("min_samples: 200", "min_samples: 0")]);
    assert_one(
        &text,
        &format!("{CANARY}.analysis.min_samples"),
        "min_samples: »0",
        "at least one sample is needed for a verdict",
    );
}

/// The example's canary with `line` added after its `hold`.
fn example_canary_with(line: &str) -> String {
    let hold = "          hold: 30s\n";
    example_with(&[(hold, &format!("{hold}          {line}\n"))])
}

#[test]
fn canary_sticky_header_invalid() {
    let text = example_canary_with("sticky_header: X-Device");
    assert_one(
        &text,
        &format!("{CANARY}.sticky_header"),
        "sticky_header: »X-Device",
        "`X-Device` is not a valid header name: use lower-case letters, digits, `-` and the other characters of an HTTP token",
    );
}

#[test]
fn canary_sticky_header_internal() {
    let text = example_canary_with("sticky_header: x-weir-cluster");
    assert_one(
        &text,
        &format!("{CANARY}.sticky_header"),
        "sticky_header: »x-weir-cluster",
        "`x-weir-cluster` is one of Weir's internal headers, which clients cannot set",
    );
}

#[test]
fn canary_salt_empty() {
    let text = example_canary_with("salt: \"  \"");
    assert_one(
        &text,
        &format!("{CANARY}.salt"),
        "salt: »\"  \"",
        "must not be empty (omit it to use the canary cluster's name)",
    );
}

// ---------------------------------------------------------------------------
// Priority
// ---------------------------------------------------------------------------

#[test]
fn priority_classes_empty() {
    let text = edit(
        MINIMAL,
        &[
            ("classes: [only]", "classes: []"),
            (
                "  classes:\n    only: { max_wait: 0ms }\n",
                "  classes: {}\n",
            ),
        ],
    );
    assert_diagnostics(
        &text,
        &[
            (
                "priority.classes",
                "classes: »[]",
                "list the classes, highest first",
            ),
            (
                "priority.default",
                "default: »only",
                "unknown priority class `only`; the classes are none",
            ),
        ],
    );
}

#[test]
fn priority_class_name_invalid() {
    let text = example_with(&[
        (
            "classes: [alarm, command, telemetry, heartbeat]",
            "classes: [alarm, command, telemetry, heartbeat, Bulk]",
        ),
        (
            "  # shed first\n",
            "  # shed first\n    Bulk:      { max_wait: 0ms }\n",
        ),
    ]);
    assert_one(
        &text,
        "priority.classes[4]",
        "heartbeat, »Bulk]",
        "`Bulk` is not a valid name",
    );
}

#[test]
fn priority_class_duplicated() {
    let text = example_with(&[(
        "classes: [alarm, command, telemetry, heartbeat]",
        "classes: [alarm, command, telemetry, heartbeat, heartbeat]",
    )]);
    assert_one(
        &text,
        "priority.classes[4]",
        "heartbeat, »heartbeat]",
        "`heartbeat` is already defined at priority.classes[3]",
    );
}

#[test]
fn priority_default_unknown() {
    let text = example_with(&[("default: telemetry", "default: bulk")]);
    assert_one(
        &text,
        "priority.default",
        "default: »bulk",
        "unknown priority class `bulk`; the classes are `alarm`, `command`, `telemetry`, `heartbeat`",
    );
}

#[test]
fn rule_class_unknown() {
    let text = example_with(&[("    - class: command\n", "    - class: commands\n")]);
    assert_one(
        &text,
        "priority.rules[2].class",
        "class: »commands",
        "unknown priority class `commands`",
    );
}

#[test]
fn rule_without_conditions() {
    let text = example_with(&[(
        "      match: { path_prefix: /v1/heartbeat }",
        "      match: {}",
    )]);
    assert_one(
        &text,
        "priority.rules[3].match",
        "match: »{}",
        "give at least one condition: path_prefix, method or headers",
    );
}

#[test]
fn rule_path_prefix_without_slash() {
    let text = example_with(&[("{ path_prefix: /v1/alarms }", "{ path_prefix: v1/alarms }")]);
    assert_one(
        &text,
        "priority.rules[0].match.path_prefix",
        "path_prefix: »v1/alarms",
        "`v1/alarms` must start with `/`",
    );
}

#[test]
fn rule_method_not_upper_case() {
    let text = example_with(&[("method: PUT", "method: Put")]);
    assert_one(
        &text,
        "priority.rules[4].match.method",
        "method: »Put",
        "`Put` is not an HTTP method in upper case, e.g. `POST`",
    );
}

#[test]
fn rule_header_name_invalid() {
    let text = example_with(&[(
        "{ name: x-message-type, equals: alarm }",
        "{ name: X-Message-Type, equals: alarm }",
    )]);
    assert_one(
        &text,
        "priority.rules[1].match.headers[0].name",
        "name: »X-Message-Type",
        "`X-Message-Type` is not a valid header name",
    );
}

#[test]
fn rule_header_not_exactly_one_condition() {
    let text = example_with(&[
        (
            "{ name: x-message-type, equals: alarm }",
            "{ name: x-message-type, equals: alarm, prefix: al }",
        ),
        (
            "{ name: x-message-type, equals: heartbeat }",
            "{ name: x-message-type }",
        ),
    ]);
    assert_diagnostics(
        &text,
        &[
            (
                "priority.rules[1].match.headers[0]",
                "headers: [»{ name: x-message-type, equals: alarm, prefix: al }]",
                "give exactly one of `equals`, `prefix` or `present`",
            ),
            (
                "priority.rules[4].match.headers[0]",
                "headers: [»{ name: x-message-type }]",
                "give exactly one of `equals`, `prefix` or `present`",
            ),
        ],
    );
}

// ---------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------

#[test]
fn admission_limit_zero() {
    let text = example_with(&[("concurrency_limit: 200", "concurrency_limit: 0")]);
    assert_one(
        &text,
        "admission.concurrency_limit",
        "concurrency_limit: »0",
        "must be at least 1",
    );
}

#[test]
fn admission_retry_after_not_a_duration() {
    let text = example_with(&[("retry_after: 2s", "retry_after: soon")]);
    assert_one(
        &text,
        "admission.retry_after",
        "retry_after: »soon",
        "`soon` is not a duration",
    );
}

#[test]
fn admission_retry_after_zero() {
    let text = example_with(&[("retry_after: 2s", "retry_after: 0ms")]);
    assert_one(
        &text,
        "admission.retry_after",
        "retry_after: »0ms",
        "must be longer than 0",
    );
}

#[test]
fn admission_class_unknown() {
    let text = example_with(&[(
        "  # shed first\n",
        "  # shed first\n    bulk:      { max_wait: 0ms }\n",
    )]);
    assert_one(
        &text,
        "admission.classes.bulk",
        "    »bulk:",
        "unknown priority class `bulk`; the classes are `alarm`, `command`, `telemetry`, `heartbeat`",
    );
}

#[test]
fn admission_class_missing() {
    let text = example_with(&[("    heartbeat: { max_wait: 100ms }  # shed first\n", "")]);
    assert_one(
        &text,
        "admission.classes",
        "  »classes:\n    alarm:",
        "no admission settings for class `heartbeat`",
    );
}

#[test]
fn a_policy_that_still_sets_share_is_told_it_was_removed() {
    let text = example_with(&[(
        "heartbeat: { max_wait: 100ms }",
        "heartbeat: { share: 40, max_wait: 100ms }",
    )]);
    assert_one(
        &text,
        "admission.classes.heartbeat.share",
        "share: »40",
        "`share` was removed: admission is work-conserving, every class may use any free slot and classes are protected by their order (a freed slot goes to the highest class waiting, the lowest is shed first); delete it",
    );
}

#[test]
fn admission_max_wait_not_a_duration() {
    let text = example_with(&[("max_wait: 500ms", "max_wait: 500")]);
    assert_one(
        &text,
        "admission.classes.telemetry.max_wait",
        "max_wait: »500 }",
        "`500` is not a duration",
    );
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[test]
fn routing_header_invalid() {
    let text = example_with(&[("region: x-region", "region: X-Region")]);
    assert_one(
        &text,
        "routing.headers.region",
        "region: »X-Region",
        "`X-Region` is not a valid header name",
    );
}

#[test]
fn routing_header_internal() {
    let text = example_with(&[("device_id: x-device-id", "device_id: x-weir-device")]);
    assert_one(
        &text,
        "routing.headers.device_id",
        "device_id: »x-weir-device",
        "`x-weir-device` is one of Weir's internal headers",
    );
}

#[test]
fn routing_header_used_twice() {
    let text = example_with(&[("device_id: x-device-id", "device_id: x-region")]);
    assert_one(
        &text,
        "routing.headers.device_id",
        "device_id: »x-region",
        "`x-region` is already used by routing.headers.region",
    );
}

#[test]
fn routing_weight_out_of_range() {
    let text = example_with(&[(
        "{ geo: 0.4, device: 0.3, sla: 0.3 }",
        "{ geo: 1.25, device: -0.25, sla: 0 }",
    )]);
    assert_diagnostics(
        &text,
        &[
            (
                "routing.weights.geo",
                "geo: »1.25",
                "a weight must be between 0 and 1, not 1.25",
            ),
            (
                "routing.weights.device",
                "device: »-0.25",
                "a weight must be between 0 and 1, not -0.25",
            ),
        ],
    );
}

#[test]
fn routing_weights_not_adding_up_to_1() {
    let text = example_with(&[(
        "{ geo: 0.4, device: 0.3, sla: 0.3 }",
        "{ geo: 0.5, device: 0.25, sla: 0.5 }",
    )]);
    assert_one(
        &text,
        "routing.weights",
        "  »weights:",
        "geo + device + sla must add up to 1, not 1.25",
    );
}

#[test]
fn routing_spread_out_of_range() {
    let text = example_with(&[("spread: 0.05", "spread: -0.5")]);
    assert_one(
        &text,
        "routing.spread",
        "spread: »-0.5",
        "a score margin must be between 0 and 1, not -0.5",
    );
}

// ---------------------------------------------------------------------------
// The live feed (paths only: a feed has no source positions)
// ---------------------------------------------------------------------------

fn example_policy() -> Policy {
    load(FILE, EXAMPLE).unwrap_or_else(|d| panic!("{}", listed(&d)))
}

/// The problems of `feed` with the example policy, as (path, message).
fn feed_problems(feed: &Feed) -> Vec<(String, String)> {
    feed.validate(&example_policy())
        .into_iter()
        .map(|invalid| (invalid.path, invalid.message))
        .collect()
}

fn empty_feed() -> Feed {
    Feed {
        canary_mirrors: Default::default(),
        rtt_ms: Default::default(),
        canary_weights: Default::default(),
        sla_scores: Default::default(),
        concurrency_limit: None,
    }
}

#[track_caller]
fn assert_feed_problems(feed: &Feed, expected: &[(&str, &str)]) {
    let problems = feed_problems(feed);
    assert_eq!(problems.len(), expected.len(), "{problems:?}");
    for ((path, message), &(want_path, says)) in problems.iter().zip(expected) {
        assert_eq!(path, want_path, "{problems:?}");
        assert!(
            message.contains(says),
            "{message:?} should contain {says:?}"
        );
    }
}

#[test]
fn feed_initial_and_boundaries_are_valid() {
    let policy = example_policy();
    assert!(Feed::initial(&policy).validate(&policy).is_empty());
    let mut feed = empty_feed();
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    feed.sla_scores.insert("ingest-eu".into(), 0.0);
    feed.sla_scores.insert("ingest-us".into(), 1.0);
    feed.concurrency_limit = Some(1);
    assert_feed_problems(&feed, &[]);
}

#[test]
fn feed_weight_for_an_unknown_canary() {
    let mut feed = empty_feed();
    // A cluster, but not any placement's canary.
    feed.canary_weights.insert("ingest-us".into(), 100);
    assert_feed_problems(
        &feed,
        &[(
            "feed.canary_weights.ingest-us",
            "`ingest-us` is not the canary of any placement",
        )],
    );
}

#[test]
fn feed_weight_above_10000() {
    let mut feed = empty_feed();
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_001);
    assert_feed_problems(
        &feed,
        &[(
            "feed.canary_weights.ingest-eu-canary",
            "a weight is at most 10000 basis points, not 10001",
        )],
    );
}

#[test]
fn feed_score_for_an_unknown_cluster() {
    let mut feed = empty_feed();
    feed.sla_scores.insert("ingest-mars".into(), 0.5);
    assert_feed_problems(
        &feed,
        &[(
            "feed.sla_scores.ingest-mars",
            "unknown cluster `ingest-mars`",
        )],
    );
}

#[test]
fn feed_score_out_of_range() {
    let mut feed = empty_feed();
    feed.sla_scores.insert("commands-eu".into(), 1.5);
    feed.sla_scores.insert("commands-us".into(), -0.1);
    feed.sla_scores.insert("ingest-ap".into(), f64::NAN);
    assert_feed_problems(
        &feed,
        &[
            (
                "feed.sla_scores.commands-eu",
                "a score is between 0 and 1, not 1.5",
            ),
            (
                "feed.sla_scores.commands-us",
                "a score is between 0 and 1, not -0.1",
            ),
            (
                "feed.sla_scores.ingest-ap",
                "a score is between 0 and 1, not NaN",
            ),
        ],
    );
}

#[test]
fn feed_limit_zero() {
    let mut feed = empty_feed();
    feed.concurrency_limit = Some(0);
    assert_feed_problems(&feed, &[("feed.concurrency_limit", "must be at least 1")]);
}

#[test]
fn one_bad_step_is_one_error() {
    let text = example_with(&[("steps: [1, 5, 10, 25, 50, 100]", "steps: [1, 200, 50, 100]")]);
    assert_one(
        &text,
        "services[1].placements[0].canary.steps[1]",
        "steps: [1, »200",
        "a weight must be above 0 and at most 100 percent, not 200",
    );
}

#[test]
fn adaptive_limit_is_valid_between_one_and_the_ceiling() {
    let text = example_with(&[(
        "concurrency_limit: 200",
        "concurrency_limit: 200\n  adaptive_limit: { min: 20 }",
    )]);
    let policy = load(FILE, &text).unwrap_or_else(|d| panic!("{}", listed(&d)));
    assert!(weir_policy::validate(&policy).is_empty());
    assert_eq!(policy.admission.adaptive_limit.map(|a| a.min), Some(20));
}

#[test]
fn adaptive_limit_floor_above_the_ceiling() {
    let text = example_with(&[(
        "concurrency_limit: 200",
        "concurrency_limit: 200\n  adaptive_limit: { min: 500 }",
    )]);
    assert_one(
        &text,
        "admission.adaptive_limit.min",
        "min: »500",
        "above admission.concurrency_limit (200)",
    );
}

#[test]
fn adaptive_limit_floor_of_zero() {
    let text = example_with(&[(
        "concurrency_limit: 200",
        "concurrency_limit: 200\n  adaptive_limit: { min: 0 }",
    )]);
    assert_one(
        &text,
        "admission.adaptive_limit.min",
        "min: »0",
        "at least 1",
    );
}

#[test]
fn adaptive_limit_needs_a_latency_target() {
    let text = edit(
        MINIMAL,
        &[(
            "concurrency_limit: 10",
            "concurrency_limit: 10\n  adaptive_limit: { min: 2 }",
        )],
    );
    assert_one(
        &text,
        "admission.adaptive_limit",
        "»adaptive_limit: {",
        "no service has an `sla`",
    );
}

/// The example's canary analysis with `segments` set to `yaml` (flow style).
fn example_segments(yaml: &str) -> String {
    example_with(&[(
        "            min_samples: 200\n",
        &format!("            min_samples: 200\n            segments: {yaml}\n"),
    )])
}

#[test]
fn canary_segments_valid() {
    let text = example_segments(
        "{ by: [device_type, region, \"header:x-firmware\"], top: 4, on_bad: hold }",
    );
    let policy = load(FILE, &text).unwrap_or_else(|d| panic!("{}", listed(&d)));
    assert!(weir_policy::validate(&policy).is_empty());
}

#[test]
fn canary_segments_unknown_dimension() {
    let text = example_segments("{ by: [device_type, firmware] }");
    assert_one(
        &text,
        &format!("{CANARY}.analysis.segments.by[1]"),
        "device_type, »firmware",
        "`firmware` is not a segment dimension: use `device_type`, `region` or `header:NAME`",
    );
}

#[test]
fn canary_segments_same_header_twice() {
    let text = example_segments("{ by: [device_type, \"header:x-device-type\"] }");
    assert_one(
        &text,
        &format!("{CANARY}.analysis.segments.by[1]"),
        "device_type, »\"header",
        "`header:x-device-type` reads header `x-device-type`, as",
    );
}

#[test]
fn canary_segments_top_out_of_range() {
    let text = example_segments("{ by: [region], top: 0 }");
    assert_one(
        &text,
        &format!("{CANARY}.analysis.segments.top"),
        "top: »0",
        "values per dimension must be between 1 and 32, not 0",
    );
}

#[test]
fn canary_segments_unknown_action() {
    let text = example_segments("{ by: [region], on_bad: ignore }");
    let problems = load(FILE, &text).expect_err("refused");
    assert!(
        listed(&problems).contains("on_bad"),
        "{}",
        listed(&problems)
    );
}

#[test]
fn canary_error_ceiling_defaults_and_range() {
    let text = example_with(&[(
        "            min_samples: 200\n",
        "            min_samples: 200\n            error_ceiling: {}\n",
    )]);
    let policy = load(FILE, &text).unwrap_or_else(|d| panic!("{}", listed(&d)));
    let ceiling = policy
        .services
        .iter()
        .flat_map(|s| &s.placements)
        .find_map(|p| p.canary.as_ref()?.analysis.error_ceiling.clone())
        .unwrap();
    assert_eq!((ceiling.base, ceiling.per_p99_ratio), (0.03, 0.02));
    let text = example_with(&[(
        "            min_samples: 200\n",
        "            min_samples: 200\n            error_ceiling: { base: 1.5 }\n",
    )]);
    assert_one(
        &text,
        &format!("{CANARY}.analysis.error_ceiling.base"),
        "base: »1.5",
        "an error rate (0 to 1) must be between 0 and 1, not 1.5",
    );
}

#[test]
fn a_throughput_limit_needs_no_sla() {
    let text = MINIMAL.replace(
        "admission:\n",
        "admission:\n  adaptive_limit: { min: 10, by: throughput }\n",
    );
    assert_ne!(text, MINIMAL);
    let policy = load(FILE, &text).unwrap_or_else(|d| panic!("{}", listed(&d)));
    assert!(policy.services.iter().all(|s| s.sla.is_none()));
    assert!(
        weir_policy::validate(&policy).is_empty(),
        "{:?}",
        weir_policy::validate(&policy)
    );
}

#[test]
fn canary_segments_attribute_of_an_unnamed_dimension() {
    let text = example_segments("{ by: [region], attributes: { device_type: device.type } }");
    assert_one(
        &text,
        &format!("{CANARY}.analysis.segments.attributes.device_type"),
        "device_type: »device.type",
        "`device_type` is not one of `by`",
    );
}

#[test]
fn header_targeting_loads() {
    let text = example_with(&[
        (
            "      - cluster: ingest-us\n",
            "      - cluster: ingest-us\n        match:\n          headers: [{ name: x-firmware, prefix: \"2.\" }]\n",
        ),
        (
            "          hold: 30s\n",
            "          hold: 30s\n          never: { headers: [{ name: x-critical, present: true }] }\n",
        ),
    ]);
    let policy = load(FILE, &text).expect("targeting loads");
    let ingest = &policy.services[1];
    assert!(ingest.placements[1].matches.is_some());
    let canary = ingest.placements[0].canary.as_ref().unwrap();
    assert_eq!(canary.always.as_ref().unwrap().headers[0].name, "x-tester");
    assert_eq!(
        canary.never.as_ref().unwrap().headers[0].present,
        Some(true)
    );
}

#[test]
fn canary_never_without_conditions() {
    let text = example_canary_with("never: { headers: [] }");
    assert_one(
        &text,
        &format!("{CANARY}.never.headers"),
        "never: { headers: »[]",
        "give at least one header condition",
    );
}

#[test]
fn canary_never_on_an_internal_header() {
    let text = example_canary_with("never: { headers: [{ name: x-weir-class, equals: alarm }] }");
    assert_one(
        &text,
        &format!("{CANARY}.never.headers[0].name"),
        "name: »x-weir-class",
        "one of Weir's internal headers",
    );
}

#[test]
fn placement_match_with_two_tests_in_one_condition() {
    let text = example_with(&[(
        "      - cluster: ingest-us\n",
        "      - cluster: ingest-us\n        match: { headers: [{ name: x-firmware, prefix: \"2.\", present: true }] }\n",
    )]);
    assert_one(
        &text,
        "services[1].placements[1].match.headers[0]",
        "headers: [»{ name: x-firmware",
        "give exactly one of `equals`, `prefix` or `present`",
    );
}

#[test]
fn every_placement_targeted_leaves_other_requests_nowhere() {
    let text = example_with(&[
        (
            "      - cluster: commands-eu\n",
            "      - cluster: commands-eu\n        match: { headers: [{ name: x-firmware, prefix: \"2.\" }] }\n",
        ),
        (
            "      - cluster: commands-us\n",
            "      - cluster: commands-us\n        match: { headers: [{ name: x-firmware, prefix: \"1.\" }] }\n",
        ),
    ]);
    assert_one(
        &text,
        "services[0].placements",
        "»placements:\n      - cluster: commands-eu",
        "every placement has a `match`",
    );
}

#[test]
fn canary_mirror_share_out_of_range_and_bad_hold() {
    let text = example_canary_with("mirror: { percent: 0, hold: 5 }");
    assert_diagnostics(
        &text,
        &[
            (
                &format!("{CANARY}.mirror.percent"),
                "percent: »0",
                "a share must be above 0 and at most 100 percent, not 0",
            ),
            (&format!("{CANARY}.mirror.hold"), "hold: »5 }", "duration"),
        ],
    );
}
