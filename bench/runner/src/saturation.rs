//! The closed-loop run at saturation, where an Envoy worker does nothing but
//! serve requests, so the filter's cost per request is not diluted by idle
//! time: per-round ratios of CPU per request, their spread, and the targets.

use std::fmt::Write as _;

use crate::Variant;
use crate::report::{Measurement, Settings, median, variants_of};

/// Weir's CPU per request at saturation may be at most this many times the
/// do-nothing module's.
const NOOP_TARGET: f64 = 1.05;

/// The ratios of one variant's value to another's, one per round both were
/// measured in.
fn per_round(
    all: &[Measurement],
    variant: Variant,
    base: Variant,
    value: fn(&Measurement) -> f64,
) -> Vec<f64> {
    all.iter()
        .filter(|m| m.variant == variant)
        .filter_map(|m| {
            let b = all
                .iter()
                .find(|b| b.variant == base && b.round == m.round)?;
            let b = value(b);
            (b > 0.0).then(|| value(m) / b)
        })
        .collect()
}

/// "median (min–max)" of some ratios, or a dash without any.
fn spread(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "—".to_owned();
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}× ({min:.2}–{max:.2})", median(ratios))
}

fn cpu(m: &Measurement) -> f64 {
    m.sched_us_per_req.unwrap_or(m.cpu_us_per_req)
}

/// One target's line: its per-round ratios and whether their median meets it.
fn write_target(
    out: &mut String,
    target: &str,
    ratios: &[f64],
    met: impl Fn(f64) -> bool,
) -> std::fmt::Result {
    if ratios.is_empty() {
        return writeln!(out, "- {target}: not judged (not both measured)");
    }
    let verdict = if met(median(ratios)) {
        "met"
    } else {
        "**NOT met**"
    };
    writeln!(out, "- {target}: {} — {verdict}", spread(ratios))
}

/// Writes the saturation section.
pub(crate) fn write(out: &mut String, all: &[Measurement], s: &Settings) -> std::fmt::Result {
    writeln!(out, "## At saturation (closed loop)\n")?;
    if all.is_empty() {
        return writeln!(out, "Not measured (`--saturation 0`).\n");
    }
    writeln!(
        out,
        "Every round, right after its open-loop measurement, each variant's Envoy gets {} s of closed-loop load: \
         {} requests in flight, each lane sending its next as soon as its last is answered, after {} ms \
         unmeasured. CPU per request from `schedstat` (all threads); ratios are per round (the variant's value \
         divided by the other's in the same round), as median (min–max) over the rounds.\n",
        s.saturation_s,
        s.lanes,
        crate::SATURATION_WARMUP.as_millis()
    )?;
    writeln!(
        out,
        "| variant | req/s | CPU µs/req | ÷ no filter | ÷ wasm, does nothing | p50 ms | p99 ms | errors |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for v in variants_of(all) {
        let of: Vec<&Measurement> = all.iter().filter(|m| m.variant == v).collect();
        let pick =
            |f: fn(&Measurement) -> f64| median(&of.iter().map(|m| f(m)).collect::<Vec<_>>());
        writeln!(
            out,
            "| {} | {:.0} | {:.1} | {} | {} | {:.3} | {:.3} | {} |",
            v.label(),
            pick(|m| m.achieved_rate),
            pick(cpu),
            spread(&per_round(all, v, Variant::None, cpu)),
            spread(&per_round(all, v, Variant::Noop, cpu)),
            pick(|m| m.p50_ms),
            pick(|m| m.p99_ms),
            of.iter().map(|m| m.errors).sum::<u64>(),
        )?;
    }
    writeln!(out, "\nTargets at saturation:\n")?;
    let over_noop = per_round(all, Variant::Weir, Variant::Noop, cpu);
    write_target(
        out,
        &format!("Weir's CPU per request at most {NOOP_TARGET}× the do-nothing module's"),
        &over_noop,
        |m| m <= NOOP_TARGET,
    )?;
    let over_lua = per_round(all, Variant::Weir, Variant::Lua, cpu);
    write_target(
        out,
        "Weir's CPU per request below the one-line Lua filter's (as a share of Lua's)",
        &over_lua,
        |m| m < 1.0,
    )?;
    writeln!(
        out,
        "\n| round | variant | requests | req/s | CPU µs/req | p99 ms |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|")?;
    for m in all {
        writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} | {:.3} |",
            m.round,
            m.variant.label(),
            m.sent,
            m.achieved_rate,
            cpu(m),
            m.p99_ms
        )?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(round: u32, variant: Variant, cpu: f64) -> Measurement {
        Measurement {
            round,
            variant,
            sent: 1,
            errors: 0,
            cpu_ticks: 0,
            cpu_us_per_req: cpu,
            sched_us_per_req: Some(cpu),
            p50_ms: 0.0,
            p99_ms: 0.0,
            achieved_rate: 0.0,
            max_lag_ms: 0.0,
        }
    }

    #[test]
    fn ratios_pair_the_rounds() {
        let all = [
            m(1, Variant::Noop, 100.0),
            m(1, Variant::Weir, 110.0),
            m(2, Variant::Weir, 120.0),
            m(2, Variant::Noop, 100.0),
            m(3, Variant::Weir, 90.0),
        ];
        let ratios = per_round(&all, Variant::Weir, Variant::Noop, cpu);
        assert_eq!(ratios.len(), 2, "round 3 has no do-nothing measurement");
        assert!((ratios[0] - 1.1).abs() < 1e-9 && (ratios[1] - 1.2).abs() < 1e-9);
        assert_eq!(spread(&ratios), "1.15× (1.10–1.20)");
        assert_eq!(spread(&[]), "—");
    }
}
