//! The filter's admission metrics, as Envoy's stats sink names them: the
//! filter's names (`weir_policy::metrics`, the one table of them) under
//! Envoy's `wasmcustom.` prefix, e.g. `wasmcustom.weir.class.alarm.admitted`
//! (a sum without attributes) and `wasmcustom.weir.in_flight` (a gauge).

use std::sync::OnceLock;

use weir_policy::metrics::{IN_FLIGHT, Outcome, QUEUED_NOW, class_outcome};

/// The prefix Envoy gives the stats a wasm module defines.
pub const WASM_CUSTOM_PREFIX: &str = "wasmcustom.";

/// An admission metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// `weir.class.<class>.<outcome>`, a counter.
    Class(&'a str, Outcome),
    /// `weir.in_flight`, a gauge.
    InFlight,
    /// `weir.queue.depth`, a gauge.
    QueueDepth,
}

/// The class counters' names around the class: (prefix, suffix) per outcome,
/// taken from the filter's own table.
fn class_names() -> &'static [(String, String, Outcome); 4] {
    static NAMES: OnceLock<[(String, String, Outcome); 4]> = OnceLock::new();
    NAMES.get_or_init(|| {
        Outcome::ALL.map(|outcome| {
            let probe = class_outcome("\u{0}", outcome);
            let (prefix, suffix) = probe.split_once('\u{0}').unwrap_or((&probe, ""));
            (prefix.to_owned(), suffix.to_owned(), outcome)
        })
    })
}

/// Which admission metric `name` is, with or without Envoy's prefix.
pub(crate) fn kind(name: &str) -> Option<Kind<'_>> {
    let name = name.strip_prefix(WASM_CUSTOM_PREFIX).unwrap_or(name);
    if name == IN_FLIGHT {
        return Some(Kind::InFlight);
    }
    if name == QUEUED_NOW {
        return Some(Kind::QueueDepth);
    }
    class_names().iter().find_map(|(prefix, suffix, outcome)| {
        let class = name
            .strip_prefix(prefix.as_str())?
            .strip_suffix(suffix.as_str())?;
        (!class.is_empty()).then_some(Kind::Class(class, *outcome))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_filters() {
        assert_eq!(
            kind("wasmcustom.weir.class.alarm.admitted"),
            Some(Kind::Class("alarm", Outcome::Admitted))
        );
        assert_eq!(
            kind("weir.class.heart.beat.shed"),
            Some(Kind::Class("heart.beat", Outcome::Shed))
        );
        assert_eq!(kind("wasmcustom.weir.in_flight"), Some(Kind::InFlight));
        assert_eq!(kind("wasmcustom.weir.queue.depth"), Some(Kind::QueueDepth));
        for other in [
            "wasmcustom.weir.class..admitted",
            "wasmcustom.weir.class.alarm.dropped",
            "wasmcustom.weir.canary.c.canary",
            "cluster.upstream_rq_xx",
        ] {
            assert_eq!(kind(other), None, "{other}");
        }
    }
}
