//! No input makes Weir panic while reading a policy or a filter configuration:
//! `source::load`, `validate`, `source::compile` and `FilterConfig::from_json`
//! either succeed or say what is wrong, whatever they are given.
//!
//! Inputs are random strings and bytes, YAML-like lines, the example policy
//! truncated at every character or mutated a character at a time, policies
//! with random values in any field, and random JSON documents. Every loop and
//! every property is bounded so that the file runs in seconds in debug builds.

// The helpers below fail the way tests do, by panicking; clippy.toml allows
// that in `#[test]` functions only.
#![allow(clippy::panic, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;
use weir_policy::model::{Canary, HeaderMatch, Variant};
use weir_policy::source::{compile, load, with_feed};
use weir_policy::{Duration, Feed, FilterConfig, Policy, validate};

const FILE: &str = "fuzz.yaml";
const EXAMPLE: &str = include_str!("../../examples/policies/iot-fleet.yaml");

/// Most truncated copies of the example that one test loads.
const MAX_CUTS: usize = 4_000;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure is reported with its minimal input; nothing is written
        // next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The example policy, read once.
fn example() -> Policy {
    static EXAMPLE_POLICY: LazyLock<Policy> =
        LazyLock::new(|| load(FILE, EXAMPLE).expect("the example is valid"));
    EXAMPLE_POLICY.clone()
}

/// A valid policy must compile into a configuration the filter accepts.
fn check_valid(policy: &Policy) {
    let config = compile(policy);
    let json = serde_json::to_vec(&config).expect("a configuration serialises");
    match FilterConfig::from_json(&json) {
        Ok(parsed) => assert_eq!(parsed.version, config.version),
        Err(err) => panic!("the filter refuses a compiled valid policy: {err}"),
    }
}

/// Loads `text`: a policy must be valid (and compile), a refusal must be
/// well formed and point inside the text.
fn check_load(text: &str) {
    match load(FILE, text) {
        Ok(policy) => {
            let problems = validate(&policy);
            assert!(problems.is_empty(), "load accepted {problems:?}");
            check_valid(&policy);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "a refusal says why");
            // YAML breaks lines at CR LF, LF and a lone CR.
            let lines: Vec<&str> = text
                .split("\r\n")
                .flat_map(|part| part.split(['\r', '\n']))
                .collect();
            for d in &diagnostics {
                assert_eq!(d.file, FILE);
                assert!(!d.message.is_empty(), "{d:?}");
                if d.line == 0 {
                    continue;
                }
                let line = usize::try_from(d.line).expect("a line fits");
                let column = usize::try_from(d.column).expect("a column fits");
                assert!(line <= lines.len(), "{d} is past the last line");
                let width = lines[line - 1].chars().count();
                assert!(
                    (1..=width + 1).contains(&column),
                    "{d} is outside its line of {width} characters"
                );
            }
        }
    }
}

/// Parses a filter configuration: what it accepts must be valid.
fn check_filter_config(bytes: &[u8]) {
    if let Ok(config) = FilterConfig::from_json(bytes)
        && let Some(policy) = &config.policy
    {
        assert!(
            validate(policy).is_empty(),
            "from_json accepted an invalid policy"
        );
        if let Some(feed) = &config.feed {
            assert!(
                feed.validate(policy).is_empty(),
                "from_json accepted an invalid feed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// Lines that look like policy YAML.
const LINES: &[&str] = &[
    "device_types: [sensor, gateway]",
    "regions:",
    "default_rtt_ms: 10",
    "rtt_ms:",
    "eu: { us: 80 }",
    "clusters:",
    "- name: a",
    "region: eu",
    "variant: canary",
    "endpoints: [\"10.0.0.1:80\"]",
    "services:",
    "- name: s",
    "match: { path_prefix: / }",
    "placements:",
    "- cluster: a",
    "canary:",
    "steps: [1, 100]",
    "hold: 1s",
    "analysis: { max_error_rate_increase: 1, max_latency_ratio: { p95: 2, p99: 2 }, min_samples: 1 }",
    "priority:",
    "classes: [high]",
    "default: high",
    "rules:",
    "- class: high",
    "admission:",
    "concurrency_limit: 1",
    "retry_after: 1s",
    "high: { max_wait: 0ms }",
    "routing: {}",
];

/// Lines with the YAML features most likely to upset a reader.
const TRICKY_LINES: &[&str] = &[
    "&anchor a: 1",
    "b: *anchor",
    "<<: *anchor",
    "? [complex, key]",
    ": value",
    "---",
    "...",
    "- ",
    "- - -",
    "text: |",
    "  literal",
    "folded: >-",
    "!!str 1: !!int x",
    "!custom tag",
    "%YAML 1.2",
    "'unclosed",
    "\"esc\\u00e9\\x\"",
    "{a: [b, {c: d}]}",
    "~: ~",
    ".nan: .inf",
    "\t- tab",
    "# comment",
    "",
];

/// Lines of [`LINES`] and a few of [`TRICKY_LINES`], each indented like the
/// one before, one level more or one or two less: often well-formed YAML, so
/// that the typed pass is reached too.
fn yaml_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![20 => select(LINES), 1 => select(TRICKY_LINES)];
    prop::collection::vec((select(vec![-2i32, -1, 0, 0, 1]), line), 0..30).prop_map(|lines| {
        let mut indent = 0i32;
        let mut text = String::new();
        for (step, line) in lines {
            indent = (indent + step).clamp(0, 4);
            let spaces = "  ".repeat(usize::try_from(indent).unwrap_or(0));
            text.push_str(&format!("{spaces}{line}\n"));
        }
        text
    })
}

/// One edit of a text: delete, replace or insert a character.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Replace(usize, char),
    Insert(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let significant: Vec<char> = " \t\n\r:-[]{},#&*!|>'\"%@`?~.0123456789aZ_/é\u{feff}\0"
        .chars()
        .collect();
    let replacement = prop_oneof![4 => select(significant), 1 => any::<char>()];
    let at = any::<prop::sample::Index>();
    prop_oneof![
        at.clone()
            .prop_map(|i| Mutation::Delete(i.index(usize::MAX))),
        (at.clone(), replacement.clone())
            .prop_map(|(i, c)| Mutation::Replace(i.index(usize::MAX), c)),
        (at, replacement).prop_map(|(i, c)| Mutation::Insert(i.index(usize::MAX), c)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let len = chars.len();
    match *mutation {
        Mutation::Delete(i) if len > 0 => {
            chars.remove(i % len);
        }
        Mutation::Replace(i, c) if len > 0 => chars[i % len] = c,
        Mutation::Insert(i, c) => chars.insert(i % (len + 1), c),
        _ => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn load_survives_random_strings(text in any::<String>()) {
        check_load(&text);
    }

    #[test]
    fn load_survives_yaml_alphabet_soup(text in "[a-z0-9 :\\-\\[\\]{},#&*!|>'\"%@`?~.\n\t]{0,300}") {
        check_load(&text);
    }

    #[test]
    fn load_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_load(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn load_survives_yaml_like_lines(text in yaml_like()) {
        check_load(&text);
    }

    #[test]
    fn load_survives_one_mutation_of_the_example(edit in mutation()) {
        check_load(&apply(EXAMPLE, &edit));
    }

    #[test]
    fn load_survives_a_few_mutations_of_the_example(edits in prop::collection::vec(mutation(), 2..6)) {
        let text = edits.iter().fold(EXAMPLE.to_owned(), |text, edit| apply(&text, edit));
        check_load(&text);
    }
}

/// Loads the example cut at every `parts`-th character boundary, starting at
/// the `part`-th, so that the cuts can run in parallel.
fn load_truncated(part: usize, parts: usize) {
    let mut cuts: Vec<usize> = EXAMPLE.char_indices().map(|(at, _)| at).collect();
    cuts.push(EXAMPLE.len());
    let stride = cuts.len().div_ceil(MAX_CUTS).max(1) * parts;
    for &cut in cuts.iter().skip(part).step_by(stride) {
        check_load(&EXAMPLE[..cut]);
    }
}

#[test]
fn load_survives_truncation_1_of_4() {
    load_truncated(0, 4);
}

#[test]
fn load_survives_truncation_2_of_4() {
    load_truncated(1, 4);
}

#[test]
fn load_survives_truncation_3_of_4() {
    load_truncated(2, 4);
}

#[test]
fn load_survives_truncation_4_of_4() {
    load_truncated(3, 4);
}

#[test]
fn mutations_apply_where_they_say() {
    assert_eq!(apply("abc", &Mutation::Delete(4)), "ac");
    assert_eq!(apply("abc", &Mutation::Replace(0, 'é')), "ébc");
    assert_eq!(apply("abc", &Mutation::Insert(6, 'x')), "abxc");
    assert_eq!(apply("", &Mutation::Delete(3)), "");
}

// ---------------------------------------------------------------------------
// Policies with random values
// ---------------------------------------------------------------------------

/// Numbers: ordinary ones with exact JSON round trips, and every kind of
/// extreme.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-2_000i32..20_000).prop_map(|n| f64::from(n) / 100.0),
        1 => select(vec![
            0.0,
            -0.0,
            1.0,
            100.0,
            60_000.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::EPSILON,
        ]),
    ]
}

/// Text: the example's own names (so references resolve), and names,
/// headers, hosts, endpoints and durations both good and bad.
fn text() -> impl Strategy<Value = String> {
    let known = vec![
        "",
        " ",
        "a",
        "eu-west",
        "us-east",
        "mars",
        "sensor",
        "gateway",
        "ingest-eu",
        "ingest-eu-canary",
        "ingest-us",
        "commands-eu",
        "alarm",
        "command",
        "telemetry",
        "heartbeat",
        "x-region",
        "x-device-id",
        "x-weir-cluster",
        "X-Upper",
        "*.example.com",
        "*",
        "/",
        "/v1/",
        "10.0.0.1:80",
        "[::1]:443",
        "host:0",
        "0ms",
        "1s",
        "99999999999999999999h",
        "18446744073709551615h",
        "ü",
        "a.b[0]",
        "POST",
    ];
    prop_oneof![
        3 => select(known).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9.:/*\\[\\] _-]{0,12}",
        1 => any::<String>(),
    ]
}

/// One change to a policy: which field (`target`), which element
/// (`index`, taken modulo the length), and the values to put there.
#[derive(Clone, Debug)]
struct Change {
    target: u8,
    index: usize,
    number: f64,
    numbers: Vec<f64>,
    text: String,
    other: String,
    count: u32,
}

fn change() -> impl Strategy<Value = Change> {
    (
        0u8..40,
        0usize..8,
        number(),
        prop::collection::vec(number(), 0..5),
        text(),
        text(),
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()],
    )
        .prop_map(
            |(target, index, number, numbers, text, other, count)| Change {
                target,
                index,
                number,
                numbers,
                text,
                other,
                count,
            },
        )
}

/// The element at `index` modulo the length, if any.
fn pick<T>(items: &mut [T], index: usize) -> Option<&mut T> {
    let len = items.len();
    items.get_mut(index.checked_rem(len)?)
}

/// The `index`-th canary (modulo their number), if the policy has any.
fn canary_of(policy: &mut Policy, index: usize) -> Option<&mut Canary> {
    let mut canaries: Vec<&mut Canary> = policy
        .services
        .iter_mut()
        .flat_map(|service| service.placements.iter_mut())
        .filter_map(|placement| placement.canary.as_mut())
        .collect();
    let at = index.checked_rem(canaries.len())?;
    Some(canaries.swap_remove(at))
}

fn apply_change(policy: &mut Policy, c: &Change) {
    let (i, x, s) = (c.index, c.number, c.text.clone());
    match c.target {
        0 => policy.regions.default_rtt_ms = (c.count.is_multiple_of(2)).then_some(x),
        1 => {
            policy
                .regions
                .rtt_ms
                .entry(s)
                .or_default()
                .insert(c.other.clone(), x);
        }
        2 => policy.device_types.push(s),
        3 => policy.device_types.clear(),
        4 => {
            if let Some(cluster) = pick(&mut policy.clusters, i) {
                cluster.name = s;
            }
        }
        5 => {
            if let Some(cluster) = pick(&mut policy.clusters, i) {
                cluster.region = s;
            }
        }
        6 => {
            if let Some(cluster) = pick(&mut policy.clusters, i) {
                cluster.device_types = Some(if c.count.is_multiple_of(2) {
                    vec![s]
                } else {
                    vec![]
                });
            }
        }
        7 => {
            if let Some(cluster) = pick(&mut policy.clusters, i) {
                cluster.endpoints = if c.count.is_multiple_of(2) {
                    vec![s]
                } else {
                    vec![]
                };
            }
        }
        8 => {
            if let Some(cluster) = pick(&mut policy.clusters, i) {
                cluster.variant = match cluster.variant {
                    Variant::Stable => Variant::Canary,
                    Variant::Canary => Variant::Stable,
                };
            }
        }
        9 => {
            if !policy.clusters.is_empty() {
                policy.clusters.remove(i % policy.clusters.len());
            }
        }
        10 => {
            if let Some(service) = pick(&mut policy.services, i) {
                service.matches.path_prefix = s;
            }
        }
        11 => {
            if let Some(service) = pick(&mut policy.services, i) {
                service.matches.hosts.push(s);
            }
        }
        12 => {
            if let Some(sla) = pick(&mut policy.services, i).and_then(|s| s.sla.as_mut()) {
                sla.p99_ms = x;
            }
        }
        13 => {
            if let Some(service) = pick(&mut policy.services, i)
                && let Some(placement) = pick(&mut service.placements, i / 2)
            {
                placement.cluster = s;
            }
        }
        14 => {
            if let Some(service) = pick(&mut policy.services, i) {
                service.placements.clear();
            }
        }
        15 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.steps = c.numbers.clone();
            }
        }
        16 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.hold = Duration(s);
            }
        }
        17 => {
            if let Some(canary) = canary_of(policy, i) {
                match c.count % 3 {
                    0 => canary.analysis.max_error_rate_increase = x,
                    1 => canary.analysis.max_latency_ratio.p95 = x,
                    _ => canary.analysis.max_latency_ratio.p99 = x,
                }
            }
        }
        18 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.analysis.min_samples = c.count;
            }
        }
        19 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.sticky_header = Some(s);
            }
        }
        20 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.salt = Some(s);
            }
        }
        21 => {
            if let Some(canary) = canary_of(policy, i) {
                canary.cluster = s;
            }
        }
        22 => {
            if let Some(service) = pick(&mut policy.services, i)
                && let Some(placement) = pick(&mut service.placements, i)
            {
                placement.canary = None;
            }
        }
        23 => policy.priority.classes.push(s),
        24 => {
            if !policy.priority.classes.is_empty() {
                policy
                    .priority
                    .classes
                    .remove(i % policy.priority.classes.len());
            }
        }
        25 => policy.priority.default = s,
        26 => {
            if let Some(rule) = pick(&mut policy.priority.rules, i) {
                match c.count % 4 {
                    0 => rule.class = s,
                    1 => rule.matches.path_prefix = Some(s),
                    2 => rule.matches.method = Some(s),
                    _ => rule.matches = Default::default(),
                }
            }
        }
        27 => {
            if let Some(rule) = pick(&mut policy.priority.rules, i) {
                rule.matches.headers.push(HeaderMatch {
                    name: s,
                    equals: (c.count & 1 != 0).then(|| c.other.clone()),
                    prefix: (c.count & 2 != 0).then(|| c.other.clone()),
                    present: (c.count & 4 != 0).then_some(c.count & 8 != 0),
                });
            }
        }
        28 => policy.admission.concurrency_limit = c.count,
        29 => policy.admission.retry_after = Duration(s),
        30 => {
            let classes = &mut policy.admission.classes;
            if let Some(name) = classes.keys().nth(i % classes.len().max(1)).cloned()
                && let Some(class) = classes.get_mut(&name)
            {
                if c.count.is_multiple_of(2) {
                    class.share = Some(x);
                } else {
                    class.max_wait = Duration(s);
                }
            }
        }
        31 => {
            let classes = &mut policy.admission.classes;
            if let Some(name) = classes.keys().nth(i % classes.len().max(1)).cloned() {
                let class = classes.remove(&name);
                if let Some(class) = class.filter(|_| c.count.is_multiple_of(2)) {
                    classes.insert(s, class);
                }
            }
        }
        32 => match c.count % 3 {
            0 => policy.routing.headers.region = s,
            1 => policy.routing.headers.device_type = s,
            _ => policy.routing.headers.device_id = s,
        },
        33 => match c.count % 3 {
            0 => policy.routing.weights.geo = x,
            1 => policy.routing.weights.device = x,
            _ => policy.routing.weights.sla = x,
        },
        34 => policy.routing.spread = x,
        35 => {
            if !policy.services.is_empty() {
                policy.services.remove(i % policy.services.len());
            }
        }
        36 => {
            if let Some(service) = pick(&mut policy.services, i) {
                service.name = s;
            }
        }
        37 => policy.regions.rtt_ms.clear(),
        38 => {
            // A second rollout with a copy of an existing canary.
            let canary = canary_of(policy, 0).cloned();
            if let Some(service) = pick(&mut policy.services, i)
                && let Some(placement) = pick(&mut service.placements, i + 1)
            {
                placement.canary = canary;
            }
        }
        _ => policy.device_types = vec![s, c.other.clone()],
    }
}

/// A random live feed for a policy.
fn feed() -> impl Strategy<Value = Feed> {
    (
        prop::collection::btree_map(text(), prop_oneof![0u32..=10_001, any::<u32>()], 0..4),
        prop::collection::btree_map(text(), prop_oneof![0u32..=10_001, any::<u32>()], 0..2),
        prop::collection::btree_map(text(), number(), 0..4),
        prop::collection::btree_map(
            text(),
            prop::collection::btree_map(text(), number(), 0..2),
            0..2,
        ),
        prop::option::of(prop_oneof![Just(0u32), 1u32..1_000]),
    )
        .prop_map(
            |(canary_weights, canary_mirrors, sla_scores, rtt_ms, concurrency_limit)| Feed {
                canary_weights,
                canary_mirrors,
                rtt_ms,
                sla_scores,
                concurrency_limit,
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// Whatever a policy holds, validation answers; a policy it finds valid
    /// compiles into a configuration the filter accepts.
    #[test]
    fn validate_survives_any_values(changes in prop::collection::vec(change(), 1..6)) {
        let mut policy = example();
        for change in &changes {
            apply_change(&mut policy, change);
        }
        let problems = validate(&policy);
        for problem in &problems {
            prop_assert!(!problem.message.is_empty(), "{problem:?}");
        }
        if problems.is_empty() {
            check_valid(&policy);
        }
    }

    /// The same for a live feed, with the example policy or a changed one.
    #[test]
    fn feed_validation_survives_any_feed(changes in prop::collection::vec(change(), 0..3), feed in feed()) {
        let mut policy = example();
        for change in &changes {
            apply_change(&mut policy, change);
        }
        let problems = feed.validate(&policy);
        if problems.is_empty() && validate(&policy).is_empty() {
            let json = serde_json::to_vec(&with_feed(&policy, feed)).expect("a configuration serialises");
            prop_assert!(FilterConfig::from_json(&json).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------
// Filter configurations
// ---------------------------------------------------------------------------

/// Field names of the configuration, the policy and the feed, so that random
/// documents reach past the first `unknown field`.
const KEYS: &[&str] = &[
    "version",
    "policy",
    "feed",
    "regions",
    "default_rtt_ms",
    "rtt_ms",
    "device_types",
    "clusters",
    "name",
    "region",
    "variant",
    "endpoints",
    "services",
    "match",
    "hosts",
    "path_prefix",
    "sla",
    "p99_ms",
    "placements",
    "cluster",
    "canary",
    "steps",
    "hold",
    "analysis",
    "priority",
    "classes",
    "default",
    "rules",
    "admission",
    "concurrency_limit",
    "retry_after",
    "share",
    "max_wait",
    "routing",
    "canary_weights",
    "sla_scores",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![3 => select(KEYS).prop_map(str::to_owned), 1 => text()];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Every node of `value`, as a JSON pointer.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{escaped}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn from_json_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_filter_config(&bytes);
    }

    #[test]
    fn from_json_survives_random_values(value in json()) {
        check_filter_config(&serde_json::to_vec(&value).expect("a value serialises"));
    }

    #[test]
    fn from_json_survives_random_configurations(version in json(), policy in json(), feed in json()) {
        let value = serde_json::json!({ "version": version, "policy": policy, "feed": feed });
        check_filter_config(&serde_json::to_vec(&value).expect("a value serialises"));
    }

    /// The compiled example with one node replaced by a random value: mostly
    /// well-typed, so the policy's validation is reached.
    #[test]
    fn from_json_survives_a_changed_compiled_policy(
        node in any::<prop::sample::Index>(),
        replacement in prop_oneof![
            2 => number().prop_map(Value::from),
            2 => text().prop_map(Value::from),
            1 => prop_oneof![Just(0u64), Just(1), Just(u64::from(u32::MAX) + 1)].prop_map(Value::from),
            2 => json(),
        ],
    ) {
        static COMPILED: LazyLock<Value> = LazyLock::new(|| {
            serde_json::to_value(compile(&example())).expect("a configuration serialises")
        });
        let mut value = COMPILED.clone();
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        let pointer = node.get(&all).clone();
        if let Some(target) = value.pointer_mut(&pointer) {
            *target = replacement;
        }
        check_filter_config(&serde_json::to_vec(&value).expect("a value serialises"));
    }
}
