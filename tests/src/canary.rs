//! A one-service fleet with a canary — the rollout tests' and the reaction
//! benchmark's — and how to read the canary weight Envoy runs.

use crate::Envoy;

/// The stable cluster.
pub const STABLE: &str = "app";
/// The canary cluster.
pub const CANARY: &str = "app-canary";

/// The policy: `app` and its canary `app-canary` in one region, with the
/// canary's `steps` (a YAML list of percentages), `hold`, `min_samples` and
/// largest allowed error-rate increase (percentage points). Endpoints are
/// placeholders: [`crate::fleet::Fleet`] points them at its backends.
pub fn policy_yaml(
    steps: &str,
    hold: &str,
    min_samples: u32,
    max_error_rate_increase_pp: f64,
) -> String {
    policy_yaml_with(steps, hold, min_samples, max_error_rate_increase_pp, &[])
}

/// [`policy_yaml`] whose canary analysis also has these fields, each
/// `(name, flow YAML)`: `("segments", "{ by: [device_type] }")`.
pub fn policy_yaml_with(
    steps: &str,
    hold: &str,
    min_samples: u32,
    max_error_rate_increase_pp: f64,
    analysis: &[(&str, &str)],
) -> String {
    let segments: String = analysis
        .iter()
        .map(|(name, value)| format!("\n            {name}: {value}"))
        .collect();
    format!(
        r#"
device_types: [sensor, camera]
regions: {{ rtt_ms: {{ eu-west: {{ eu-west: 1 }} }} }}
clusters:
  - {{ name: {STABLE}, region: eu-west, endpoints: ["127.0.0.1:9"] }}
  - {{ name: {CANARY}, region: eu-west, variant: canary, endpoints: ["127.0.0.1:9"] }}
services:
  - name: app
    match: {{ path_prefix: / }}
    sla: {{ p99_ms: 250 }}
    placements:
      - cluster: {STABLE}
        canary:
          cluster: {CANARY}
          steps: {steps}
          hold: {hold}
          analysis:
            max_error_rate_increase: {max_error_rate_increase_pp}
            max_latency_ratio: {{ p95: 1.5, p99: 2.0 }}
            min_samples: {min_samples}{segments}
priority:
  classes: [telemetry]
  default: telemetry
admission:
  concurrency_limit: 1000
  retry_after: 1s
  classes: {{ telemetry: {{ max_wait: 1s }} }}
"#
    )
}

/// The canary weight (basis points) in the filter configuration Envoy runs
/// now, `None` if its config dump has none.
pub async fn envoy_weight(envoy: &Envoy) -> anyhow::Result<Option<u64>> {
    let dump = envoy
        .admin_text("/config_dump?resource=ecds_filters")
        .await?;
    Ok(weight_in_dump(&dump))
}

/// Waits until Envoy runs canary weight `weight` (basis points), at most `deadline`.
pub async fn wait_envoy_weight(
    envoy: &Envoy,
    weight: u64,
    deadline: std::time::Duration,
) -> anyhow::Result<()> {
    crate::wait::eventually(&format!("Envoy to run {weight} bp"), deadline, || async {
        (envoy_weight(envoy).await.ok().flatten() == Some(weight)).then_some(())
    })
    .await
}

/// The feed's concurrency limit in the filter configuration Envoy runs now,
/// `None` if its config dump has none.
pub async fn envoy_concurrency_limit(envoy: &Envoy) -> anyhow::Result<Option<u64>> {
    let dump = envoy
        .admin_text("/config_dump?resource=ecds_filters")
        .await?;
    Ok(number_after(&dump, "\\\"feed\\\":", "concurrency_limit"))
}

/// The filter configuration is a JSON string inside the dump, so its keys
/// appear with escaped quotes.
pub fn weight_in_dump(dump: &str) -> Option<u64> {
    number_after(dump, "canary_weights", CANARY)
}

/// The number under the escaped key `key`, first found after `section`.
fn number_after(dump: &str, section: &str, key: &str) -> Option<u64> {
    let key = format!("\\\"{key}\\\":");
    let at = dump.find(section)?;
    let rest = dump.get(at..)?;
    let start = rest.find(&key)? + key.len();
    rest.get(start..)?
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_is_read_from_the_escaped_filter_configuration() {
        let dump = r#"{"configs":[{"ecds_filter":{"typed_config":{"value":"{\"feed\":{\"canary_weights\":{\"app-canary\":5000}}}"}}}]}"#;
        assert_eq!(weight_in_dump(dump), Some(5_000));
        let zero = dump.replace("5000", "0");
        assert_eq!(weight_in_dump(&zero), Some(0));
        assert_eq!(weight_in_dump("{}"), None);
    }

    #[test]
    fn the_feed_limit_is_read_not_the_policy_one() {
        let dump = r#"{"value":"{\"policy\":{\"admission\":{\"concurrency_limit\":1000}},\"feed\":{\"concurrency_limit\":120}}"}"#;
        assert_eq!(
            number_after(dump, "\\\"feed\\\":", "concurrency_limit"),
            Some(120)
        );
    }

    #[test]
    fn the_policy_is_valid() {
        let yaml = policy_yaml("[50, 100]", "30s", 40, 2.0);
        assert!(weir_policy::source::load("canary.yaml", &yaml).is_ok());
    }
}
