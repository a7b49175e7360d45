//! The bodies of Weir's fuzz targets, one module per parser or state machine
//! that faces the network or an operator. Each takes the fuzzer's bytes, so
//! that the committed corpus and every crash found replay through the same
//! code on the stable toolchain (`cargo test` in this folder) as under
//! libFuzzer (`fuzz_targets/`, run by `make fuzz`).
//!
//! A target fails by panicking: on a crash of the code under test, and on a
//! broken property that the module's documentation states.

pub mod ads;
pub mod filter_config;
pub mod otlp;
pub mod policy_yaml;
pub mod request;

use std::sync::OnceLock;

use weir_policy::Policy;

/// The example policies, the inputs most targets start from.
pub fn example_policies() -> &'static [Policy] {
    static POLICIES: OnceLock<Vec<Policy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        [
            (
                "iot-fleet.yaml",
                include_str!("../../examples/policies/iot-fleet.yaml"),
            ),
            (
                "three-regions.yaml",
                include_str!("../../examples/policies/three-regions.yaml"),
            ),
        ]
        .into_iter()
        .map(|(file, text)| match weir_policy::source::load(file, text) {
            Ok(policy) => policy,
            Err(problems) => panic!("{file} does not load: {problems:?}"),
        })
        .collect()
    })
}

/// A target's body: the fuzzer's bytes in, a panic on a fault.
pub type Target = fn(&[u8]);

/// Every target by the name of its folder under `corpus/`.
pub const TARGETS: [(&str, Target); 6] = [
    ("policy_yaml", policy_yaml::run),
    ("filter_config", filter_config::run),
    ("otlp_protobuf", otlp::run_protobuf),
    ("otlp_json", otlp::run_json),
    ("ads", ads::run),
    ("request", request::run),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TARGETS;

    /// The committed seeds and every input that once crashed a target
    /// (`regressions/<target>/`) pass, on the stable toolchain.
    #[test]
    fn the_corpus_and_the_regressions_replay_cleanly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (target, run) in TARGETS {
            let mut replayed = 0;
            for folder in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.expect("a readable folder").path();
                    let input = std::fs::read(&path).expect("a readable input");
                    eprintln!("{target}: {}", path.display());
                    run(&input);
                    replayed += 1;
                }
            }
            assert!(replayed > 0, "{target} has no seed in corpus/{target}");
        }
    }
}
