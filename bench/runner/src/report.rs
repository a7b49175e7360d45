//! The numbers, summarised and written as `bench/RESULTS.md`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Variant;
use weir_testbed::procfs::Machine;

use crate::smaps::WasmMemory;

/// Weir's CPU per request may be at most this many times no filter's.
const CPU_TARGET: f64 = 1.25;
/// Weir's p99 latency may be at most this many times no filter's.
const P99_TARGET: f64 = 1.15;

/// How the benchmark ran.
pub(crate) struct Settings {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) rate: u32,
    pub(crate) duration_s: u32,
    pub(crate) warmup: u64,
    pub(crate) rounds: u32,
    pub(crate) devices: u64,
    pub(crate) clock_ticks: u64,
    pub(crate) workers: u32,
    pub(crate) saturation_s: u32,
    pub(crate) lanes: u64,
    pub(crate) canary_percent: u32,
    pub(crate) lua_source: &'static str,
}

/// One variant's measured load in one round.
pub(crate) struct Measurement {
    pub(crate) round: u32,
    pub(crate) variant: Variant,
    pub(crate) sent: u64,
    pub(crate) errors: u64,
    pub(crate) cpu_ticks: u64,
    pub(crate) cpu_us_per_req: f64,
    pub(crate) sched_us_per_req: Option<f64>,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) achieved_rate: f64,
    pub(crate) max_lag_ms: f64,
}

impl Measurement {
    /// One line for the progress log.
    pub(crate) fn summary(&self) -> String {
        format!(
            "round {} {:<26} {:>6.1} µs/req CPU ({} ticks, schedstat {}), p50 {:.3} ms, p99 {:.3} ms, {} errors",
            self.round,
            self.variant.label(),
            self.cpu_us_per_req,
            self.cpu_ticks,
            self.sched_us_per_req
                .map_or("n/a".to_owned(), |v| format!("{v:.1} µs/req")),
            self.p50_ms,
            self.p99_ms,
            self.errors
        )
    }
}

/// A reading of the memory run.
pub(crate) struct MemoryPoint {
    /// Distinct device ids sent so far (0: after the warm-up).
    pub(crate) distinct: u64,
    /// Envoy's VmRSS.
    pub(crate) rss_kb: u64,
    /// The wasm VMs' linear memories.
    pub(crate) wasm: WasmMemory,
}

/// The memory run of one variant.
pub(crate) struct MemoryRun {
    pub(crate) variant: Variant,
    pub(crate) points: Vec<MemoryPoint>,
    pub(crate) failed: u64,
    pub(crate) sent: u64,
    /// Envoy's own `wasm` stats at the end (the filter's `wasmcustom.*` left out).
    pub(crate) wasm_stats: Vec<String>,
}

/// Everything measured.
pub(crate) struct Report {
    pub(crate) settings: Settings,
    pub(crate) measurements: Vec<Measurement>,
    /// The closed-loop measurements at saturation.
    pub(crate) saturation: Vec<Measurement>,
    pub(crate) memory: Vec<MemoryRun>,
}

/// The `q` quantile (nearest rank) of sorted latencies, in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// The median of some values (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// The variants measured, in the order first measured.
pub(crate) fn variants_of(measurements: &[Measurement]) -> Vec<Variant> {
    let mut seen = Vec::new();
    for m in measurements {
        if !seen.contains(&m.variant) {
            seen.push(m.variant);
        }
    }
    seen
}

/// A variant's medians over the rounds.
struct Summary {
    cpu: f64,
    sched: f64,
    p50: f64,
    p99: f64,
    /// The median over rounds of this round's CPU ÷ no filter's CPU in the same round.
    paired_cpu_ratio: f64,
    paired_p99_ratio: f64,
    errors: u64,
    sent: u64,
    rate: f64,
    max_lag_ms: f64,
}

impl Report {
    fn variants(&self) -> Vec<Variant> {
        variants_of(&self.measurements)
    }

    fn of(&self, variant: Variant) -> impl Iterator<Item = &Measurement> {
        self.measurements
            .iter()
            .filter(move |m| m.variant == variant)
    }

    fn summary(&self, variant: Variant) -> Summary {
        let pick = |f: fn(&Measurement) -> f64| -> f64 {
            median(&self.of(variant).map(f).collect::<Vec<_>>())
        };
        let paired = |f: fn(&Measurement) -> f64| -> f64 {
            let ratios: Vec<f64> = self
                .of(variant)
                .filter_map(|m| {
                    let base = self.of(Variant::None).find(|b| b.round == m.round).map(f)?;
                    Some(f(m) / base)
                })
                .collect();
            median(&ratios)
        };
        Summary {
            cpu: pick(|m| m.cpu_us_per_req),
            sched: pick(|m| m.sched_us_per_req.unwrap_or(f64::NAN)),
            p50: pick(|m| m.p50_ms),
            p99: pick(|m| m.p99_ms),
            paired_cpu_ratio: paired(|m| m.cpu_us_per_req),
            paired_p99_ratio: paired(|m| m.p99_ms),
            errors: self.of(variant).map(|m| m.errors).sum(),
            sent: self.of(variant).map(|m| m.sent).sum(),
            rate: pick(|m| m.achieved_rate),
            max_lag_ms: self.of(variant).map(|m| m.max_lag_ms).fold(0.0, f64::max),
        }
    }

    /// The report, as Markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let s = &self.settings;
        let count = u64::from(s.rate) * u64::from(s.duration_s);
        writeln!(out, "# Benchmark results\n")?;
        writeln!(
            out,
            "Produced by `make bench`, which builds the filter and the do-nothing module and runs:\n"
        )?;
        writeln!(out, "```\n{}\n```\n", s.command)?;
        writeln!(out, "- date: {}", s.date)?;
        writeln!(
            out,
            "- machine: {} CPUs ({}), Linux {}; load average {} before, {} after",
            s.machine.cpus, s.machine.cpu_model, s.machine.kernel, s.load_before, s.load_after
        )?;
        writeln!(out, "- Envoy: {}", s.machine.envoy)?;
        writeln!(
            out,
            "- set-up: one Envoy per variant, `--concurrency {}`, HTTP/1.1 on 127.0.0.1, in front of one backend per cluster of \
             `examples/policies/iot-fleet.yaml`; the load generator, Envoy and the backends share the machine",
            s.workers
        )?;
        writeln!(
            out,
            "- requests: `POST {}` with a {}-byte JSON body, `x-region: eu-west`, `x-device-type: sensor`, \
             `x-device-id` cycling over {} ids",
            crate::load::PATH,
            crate::load::BODY.len(),
            s.devices
        )?;
        writeln!(
            out,
            "- load: open loop (sent on schedule, answered or not) at {} req/s for {} s ({count} requests) per \
             measurement, after {} unmeasured requests at the same rate; {} rounds, every variant once per round, the \
             order rotated each round; every Envoy also got {} requests before the first round",
            s.rate,
            s.duration_s,
            s.warmup,
            s.rounds,
            s.warmup * 4
        )?;
        writeln!(
            out,
            "- CPU: Envoy's `utime + stime` from `/proc/<pid>/stat` (all threads) just before and after the measured \
             load, in clock ticks of 1/{} s, divided by the requests sent. Latency: from sending a request to the end \
             of its answer, at the client.\n",
            s.clock_ticks
        )?;

        let variants = self.variants();
        let base = variants
            .contains(&Variant::None)
            .then(|| self.summary(Variant::None));
        let ratio = |value: f64, base: Option<f64>| match base {
            Some(b) if b > 0.0 => format!("{:.2}×", value / b),
            _ => "—".to_owned(),
        };

        writeln!(out, "## Results (medians of {} rounds)\n", s.rounds)?;
        writeln!(
            out,
            "| variant | CPU µs/req median | ratio | p50 ms | p99 ms | ratio |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
        for &v in &variants {
            let m = self.summary(v);
            writeln!(
                out,
                "| {} | {:.1} | {} | {:.3} | {:.3} | {} |",
                v.label(),
                m.cpu,
                ratio(m.cpu, base.as_ref().map(|b| b.cpu)),
                m.p50,
                m.p99,
                ratio(m.p99, base.as_ref().map(|b| b.p99)),
            )?;
        }
        writeln!(
            out,
            "\nRatios are to \"no filter\". The Lua filter is `{}`; the native split sends {}% to \
             `ingest-eu-canary`, as Weir's feed does for its canary.\n",
            s.lua_source, s.canary_percent
        )?;

        self.write_targets(out, base.as_ref())?;

        writeln!(out, "## Cross-checks\n")?;
        writeln!(
            out,
            "CPU time also read at nanosecond resolution (the sum over Envoy's threads of \
             `/proc/<pid>/task/<tid>/schedstat`); paired ratios are the median over rounds of the variant's value \
             divided by no filter's in the same round.\n"
        )?;
        writeln!(
            out,
            "| variant | CPU µs/req (schedstat) | ratio | paired CPU ratio | paired p99 ratio | requests | errors | achieved req/s | worst generator lag ms |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for &v in &variants {
            let m = self.summary(v);
            writeln!(
                out,
                "| {} | {:.1} | {} | {:.2}× | {:.2}× | {} | {} | {:.0} | {:.1} |",
                v.label(),
                m.sched,
                ratio(m.sched, base.as_ref().map(|b| b.sched)),
                m.paired_cpu_ratio,
                m.paired_p99_ratio,
                m.sent,
                m.errors,
                m.rate,
                m.max_lag_ms
            )?;
        }

        writeln!(out, "\n## Every measurement\n")?;
        writeln!(
            out,
            "| round | variant | requests | errors | CPU ticks | CPU µs/req | schedstat µs/req | p50 ms | p99 ms | achieved req/s |"
        )?;
        writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for m in &self.measurements {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {:.3} | {:.3} | {:.0} |",
                m.round,
                m.variant.label(),
                m.sent,
                m.errors,
                m.cpu_ticks,
                m.cpu_us_per_req,
                m.sched_us_per_req
                    .map_or("n/a".to_owned(), |v| format!("{v:.1}")),
                m.p50_ms,
                m.p99_ms,
                m.achieved_rate
            )?;
        }
        writeln!(out)?;
        crate::saturation::write(out, &self.saturation, &self.settings)?;
        self.write_memory(out)
    }

    fn write_targets(&self, out: &mut String, base: Option<&Summary>) -> std::fmt::Result {
        writeln!(out, "## Targets\n")?;
        let Some(base) = base else {
            return writeln!(out, "Not judged: \"no filter\" was not measured.\n");
        };
        let verdict = |ok: bool| if ok { "met" } else { "**NOT met**" };
        let variants = self.variants();
        if variants.contains(&Variant::Weir) {
            let weir = self.summary(Variant::Weir);
            let cpu = weir.cpu / base.cpu;
            let p99 = weir.p99 / base.p99;
            writeln!(
                out,
                "- Weir's CPU per request at most {CPU_TARGET}× no filter: {cpu:.2}× — {}",
                verdict(cpu <= CPU_TARGET)
            )?;
            writeln!(
                out,
                "- Weir's p99 latency at most {P99_TARGET}× no filter: {p99:.2}× — {}",
                verdict(p99 <= P99_TARGET)
            )?;
        }
        for (variant, expected) in [(Variant::Noop, "about 1.15×"), (Variant::Lua, "about 1.4×")]
        {
            if variants.contains(&variant) {
                let m = self.summary(variant);
                writeln!(
                    out,
                    "- reference: {} costs {:.2}× no filter's CPU per request (expected {expected})",
                    variant.label(),
                    m.cpu / base.cpu
                )?;
            }
        }
        if let Some(run) = self.memory.iter().find(|r| r.variant == Variant::Weir) {
            let (bounded, why) = run.bounded();
            writeln!(
                out,
                "- the wasm VM's memory stays bounded over {} distinct device ids: {} — {why}",
                run.points.last().map_or(0, |p| p.distinct),
                verdict(bounded)
            )?;
        }
        writeln!(out)
    }

    fn write_memory(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "## Memory\n")?;
        if self.memory.is_empty() {
            return writeln!(out, "Not measured (`--memory-devices 0`).");
        }
        writeln!(
            out,
            "A fresh Envoy per variant (`--concurrency {}`), the warm-up's requests from 16 devices, then one \
             request from each of many distinct device ids, {MEMORY_IN_FLIGHT} in flight. VmRSS is Envoy's, from \
             `/proc/<pid>/status`. Envoy 1.40 has no stat for a wasm VM's memory, so the wasm memories are read \
             from `/proc/<pid>/smaps`: V8 reserves about 8 GiB of address space for each wasm memory and makes \
             accessible only what the module has grown into, at its start. \"wasm memory\" is that accessible \
             size summed over Envoy's VMs (one on the main thread, one per worker, and those it clones \
             them from; their number is the last column), and \"resident\" the part of it in RAM. Everything a filter keeps lives in its \
             wasm memory, and a wasm memory never shrinks: per-device state would show as growth.\n",
            self.settings.workers
        )?;
        for run in &self.memory {
            writeln!(
                out,
                "### {} ({} requests, {} failed)\n",
                run.variant.label(),
                run.sent,
                run.failed
            )?;
            writeln!(
                out,
                "| after | Envoy VmRSS MiB | wasm memory KiB | of which resident KiB | wasm VMs |"
            )?;
            writeln!(out, "|---|---:|---:|---:|---:|")?;
            for p in &run.points {
                let after = if p.distinct == 0 {
                    "warm-up".to_owned()
                } else {
                    format!("{} distinct device ids", thousands(p.distinct))
                };
                writeln!(
                    out,
                    "| {after} | {:.1} | {} | {} | {} |",
                    p.rss_kb as f64 / 1024.0,
                    p.wasm.size_kb,
                    p.wasm.rss_kb,
                    p.wasm.memories
                )?;
            }
            writeln!(out)?;
            if run.variant == Variant::Weir {
                let (_, why) = run.bounded();
                writeln!(out, "Verdict: {why}.\n")?;
            }
            if run.wasm_stats.is_empty() {
                writeln!(
                    out,
                    "Envoy's `/stats` has no `wasm` stats for this variant.\n"
                )?;
            } else {
                writeln!(
                    out,
                    "Envoy's own `wasm` stats at the end (`/stats?filter=wasm`, the filter's `wasmcustom.*` \
                     counters left out); none of them is a memory size:\n"
                )?;
                writeln!(out, "```\n{}\n```\n", run.wasm_stats.join("\n"))?;
            }
        }
        Ok(())
    }
}

/// Requests in flight during the memory run (for the report's text).
const MEMORY_IN_FLIGHT: u64 = crate::MEMORY_IN_FLIGHT;

impl MemoryRun {
    /// Whether the VM's memory stopped growing with new devices, and why.
    fn bounded(&self) -> (bool, String) {
        let first = self.points.iter().find(|p| p.distinct > 0);
        let (Some(first), Some(last)) = (first, self.points.last()) else {
            return (false, "too few readings to judge".to_owned());
        };
        if last.wasm.memories == 0 {
            return (
                false,
                "no wasm memory was found in Envoy's mappings, so it could not be judged"
                    .to_owned(),
            );
        }
        let grew_kb = last.wasm.size_kb.saturating_sub(first.wasm.size_kb);
        let text = format!(
            "the wasm memories held {} KiB after {} distinct device ids and {} KiB after {} ({} KiB more); \
             Envoy's VmRSS {:.1} → {:.1} MiB",
            first.wasm.size_kb,
            thousands(first.distinct),
            last.wasm.size_kb,
            thousands(last.distinct),
            grew_kb,
            first.rss_kb as f64 / 1024.0,
            last.rss_kb as f64 / 1024.0,
        );
        (grew_kb == 0, text)
    }
}

/// 100000 → "100,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 0.50), 50.0);
        assert_eq!(percentile_ms(&ms, 0.99), 99.0);
        assert_eq!(percentile_ms(&ms[..1], 0.99), 1.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
