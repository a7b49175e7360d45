//! The admission mechanisms compared: none, Envoy's own three, and Weir's
//! filter; each an Envoy in front of the same fixed-capacity backend.

use std::time::Duration;

use serde_json::json;
use weir_testbed::envoy::FilterChoice;
use weir_testbed::fleet::Fleet;
use weir_testbed::{CircuitBreaker, EnvoyBuilder};

/// One admission mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    /// No admission: circuit breakers too high to trip.
    None,
    /// Envoy's circuit breaker, `max_requests` at the backend's slots.
    Breaker,
    /// Envoy's `admission_control` filter: rejects by the recent success rate.
    AdmissionControl,
    /// Envoy's `adaptive_concurrency` filter: a gradient-controlled limit.
    AdaptiveConcurrency,
    /// Weir's filter: priority admission, the limit at the backend's slots.
    Weir,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "no admission",
            Self::Breaker => "circuit breaker (`max_requests`)",
            Self::AdmissionControl => "`admission_control`",
            Self::AdaptiveConcurrency => "`adaptive_concurrency`",
            Self::Weir => "Weir",
        }
    }

    /// The Envoy for this variant in front of `fleet`'s one backend with
    /// `slots` request slots.
    pub(crate) fn envoy(self, fleet: &Fleet, slots: u32, route_timeout: Duration) -> EnvoyBuilder {
        let builder = fleet.envoy(None).route_timeout(route_timeout);
        match self {
            Self::Weir => builder.circuit_breaker(CircuitBreaker::OPEN),
            Self::None => builder
                .filter(FilterChoice::None)
                .circuit_breaker(CircuitBreaker::OPEN),
            Self::Breaker => builder
                .filter(FilterChoice::None)
                .circuit_breaker(CircuitBreaker {
                    max_requests: slots,
                    ..CircuitBreaker::OPEN
                }),
            Self::AdmissionControl => builder
                .filter(FilterChoice::Native(admission_control()))
                .circuit_breaker(CircuitBreaker::OPEN),
            Self::AdaptiveConcurrency => builder
                .filter(FilterChoice::Native(adaptive_concurrency()))
                .circuit_breaker(CircuitBreaker::OPEN),
        }
    }
}

/// Rejects a share of requests that grows as the success rate of the last
/// second falls below 95 % (5xx and the route's timeouts count as failures).
fn admission_control() -> serde_json::Value {
    json!({
        "name": "envoy.filters.http.admission_control",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl",
            "enabled": {"default_value": true, "runtime_key": "admission_control.enabled"},
            "success_criteria": {"http_criteria": {"http_success_status": [{"start": 100, "end": 500}]}},
            "sampling_window": "1s",
            "aggression": {"default_value": 1.0, "runtime_key": "admission_control.aggression"},
            "sr_threshold": {"default_value": {"value": 95.0}, "runtime_key": "admission_control.sr_threshold"},
            "rps_threshold": {"default_value": 5, "runtime_key": "admission_control.rps_threshold"},
            "max_rejection_probability": {"default_value": {"value": 95.0}, "runtime_key": "admission_control.max_rejection_probability"}
        }
    })
}

/// A concurrency limit moved every 100 ms by the gradient of the p90
/// latency against the minimum one (measured at start and every 60 s).
fn adaptive_concurrency() -> serde_json::Value {
    json!({
        "name": "envoy.filters.http.adaptive_concurrency",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
            "gradient_controller_config": {
                "sample_aggregate_percentile": {"value": 90},
                "concurrency_limit_params": {
                    "concurrency_update_interval": "0.1s",
                    "max_concurrency_limit": 1000
                },
                "min_rtt_calc_params": {
                    "interval": "60s",
                    "request_count": 50,
                    "jitter": {"value": 10},
                    "buffer": {"value": 25},
                    "min_concurrency": 3
                }
            }
        }
    })
}
