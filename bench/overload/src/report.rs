//! The numbers as Markdown, and the targets they are held to.

use std::fmt::Write as _;
use std::time::Duration;

use weir_testbed::procfs::Machine;
use weir_testbed::stats::{Summary, ms};
use weir_testbed::traffic::{self, Answer, Tally};

use crate::variant::Variant;
use crate::{Args, Measurement};

pub(crate) struct Report<'a> {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) args: &'a Args,
    pub(crate) measurements: &'a [Measurement],
}

/// The share of the backend's capacity in the offered window that went to
/// requests served within it.
fn goodput(m: &Measurement, capacity: f64) -> f64 {
    let window = m.window.as_secs_f64();
    let served = m
        .arrivals
        .iter()
        .zip(&m.outcomes)
        .filter(|(a, o)| o.answer == Answer::Served && (a.at + o.latency).as_secs_f64() <= window)
        .count();
    served as f64 / (capacity * window).max(1.0)
}

/// One variant at one load, over every round.
struct Cell {
    tallies: Vec<Tally>,
    goodputs: Vec<f64>,
}

impl Cell {
    fn of(measurements: &[&Measurement], classes: usize, capacity: f64) -> Self {
        Self {
            tallies: traffic::tally(classes, measurements.iter().flat_map(|m| &m.outcomes)),
            goodputs: measurements.iter().map(|m| goodput(m, capacity)).collect(),
        }
    }

    fn goodput_range(&self) -> (f64, f64) {
        let min = self.goodputs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .goodputs
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    /// The share of `class`'s requests not served (shed, timed out, failed).
    fn lost(&self, class: usize) -> f64 {
        self.tallies.get(class).map_or(0.0, |t| {
            if t.sent == 0 {
                0.0
            } else {
                (t.sent - t.served) as f64 / t.sent as f64
            }
        })
    }

    fn lost_total(&self) -> u64 {
        self.tallies.iter().map(|t| t.sent - t.served).sum()
    }

    fn latency(&self, class: usize) -> Option<Summary> {
        Summary::of(&self.tallies.get(class)?.served_latencies)
    }

    /// Every served request's latency, whatever its class.
    fn latency_all(&self) -> Option<Summary> {
        let all: Vec<Duration> = self
            .tallies
            .iter()
            .flat_map(|t| t.served_latencies.iter().copied())
            .collect();
        Summary::of(&all)
    }
}

fn pct(share: f64) -> String {
    if share == 0.0 {
        "0 %".to_owned()
    } else if share < 0.001 {
        "<0.1 %".to_owned()
    } else {
        format!("{:.1} %", share * 100.0)
    }
}

fn range(min: f64, max: f64) -> String {
    if (max - min).abs() < 0.0005 {
        pct(min)
    } else {
        format!("{}–{}", pct(min), pct(max))
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn load_label(load: f64) -> String {
    format!("{load}×")
}

impl Report<'_> {
    fn cell(&self, variant: Variant, load: f64) -> Option<Cell> {
        let ms: Vec<&Measurement> = self
            .measurements
            .iter()
            .filter(|m| m.variant == variant && m.load == load)
            .collect();
        (!ms.is_empty()).then(|| Cell::of(&ms, traffic::device_mix().len(), self.args.capacity()))
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let args = self.args;
        let mix = traffic::device_mix();
        let m = &self.machine;
        writeln!(
            out,
            "## Overload: priority admission against Envoy's own mechanisms\n"
        )?;
        writeln!(out, "```\n{}\n```\n", self.command)?;
        writeln!(out, "- date: {}", self.date)?;
        writeln!(
            out,
            "- machine: {} CPUs (`nproc`), {}, Linux {}, Envoy {}",
            m.cpus, m.cpu_model, m.kernel, m.envoy
        )?;
        writeln!(
            out,
            "- load average before / after: {} / {}",
            self.load_start, self.load_end
        )?;
        writeln!(
            out,
            "- set-up: one backend of fixed capacity, {} requests at a time × {} ms each = {:.0} requests/s \
             (more wait in line at the backend, as at a saturated server); one Envoy per mechanism \
             (`--concurrency {}`), route timeout {} ms, in front of it; devices on {} HTTP/2 connections \
             giving up after {} ms; open-loop Poisson arrivals, {} % alarms, {} % commands, {} % telemetry, \
             {} % heartbeats from {} devices; {} s per load, {} rounds, every mechanism on the same arrivals \
             in a round",
            args.slots,
            args.service_ms,
            args.capacity(),
            args.workers,
            args.route_timeout_ms,
            args.connections,
            args.client_timeout_ms,
            mix[0].weight,
            mix[1].weight,
            mix[2].weight,
            mix[3].weight,
            args.devices,
            args.duration,
            args.rounds.max(1),
        )?;
        writeln!(
            out,
            "- Weir: `admission.concurrency_limit: {}` (the backend's slots), the example policy's waits \
             (alarm 2 s, command 1 s, telemetry 500 ms, heartbeat 100 ms); the breaker: `max_requests: {}`; \
             `admission_control`: success-rate threshold 95 % over 1 s; `adaptive_concurrency`: gradient \
             controller on the p90, limit updated every 100 ms",
            args.slots, args.slots
        )?;
        writeln!(
            out,
            "- *goodput*: requests served within the offered window, as a share of what the backend \
             could serve in it (ranges over the rounds); *not served*: shed by the proxy, timed out or \
             failed (the part that timed out in brackets); latency from each request's scheduled time\n"
        )?;
        self.write_targets(out)?;
        self.write_summary(out)?;
        self.write_details(out)
    }

    fn write_summary(&self, out: &mut String) -> std::fmt::Result {
        let mix = traffic::device_mix();
        writeln!(out, "### Per load\n")?;
        write!(out, "| load | mechanism | goodput |")?;
        for class in &mix {
            write!(out, " {} not served |", class.name)?;
        }
        writeln!(out, " alarm p50 / p99 (ms) |")?;
        writeln!(out, "|---|---|---|---|---|---|---|---|")?;
        for &load in &self.args.loads {
            for &variant in &self.args.variants {
                let Some(cell) = self.cell(variant, load) else {
                    continue;
                };
                let (min, max) = cell.goodput_range();
                write!(
                    out,
                    "| {} | {} | {} |",
                    load_label(load),
                    variant.label(),
                    range(min, max)
                )?;
                for (i, tally) in cell.tallies.iter().enumerate() {
                    let late = if tally.timed_out > 0 && tally.sent > 0 {
                        format!(
                            " ({} late)",
                            pct(tally.timed_out as f64 / tally.sent as f64)
                        )
                    } else {
                        String::new()
                    };
                    write!(out, " {}{late} |", pct(cell.lost(i)))?;
                }
                match cell.latency(0) {
                    Some(s) => writeln!(out, " {} / {} |", ms(s.p50), ms(s.p99))?,
                    None => writeln!(out, " – |")?,
                }
            }
        }
        writeln!(out)
    }

    fn write_details(&self, out: &mut String) -> std::fmt::Result {
        let mix = traffic::device_mix();
        writeln!(
            out,
            "<details><summary>Every class at every load (all rounds together)</summary>\n"
        )?;
        writeln!(
            out,
            "| load | mechanism | class | offered | served | shed | timed out | failed | p50 (ms) | p99 (ms) |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|---|---|---|")?;
        for &load in &self.args.loads {
            for &variant in &self.args.variants {
                let Some(cell) = self.cell(variant, load) else {
                    continue;
                };
                for (i, t) in cell.tallies.iter().enumerate() {
                    let (p50, p99) = cell
                        .latency(i)
                        .map_or(("–".to_owned(), "–".to_owned()), |s| {
                            (ms(s.p50), ms(s.p99))
                        });
                    writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {p50} | {p99} |",
                        load_label(load),
                        variant.label(),
                        mix[i].name,
                        t.sent,
                        t.served,
                        t.shed,
                        t.timed_out,
                        t.failed
                    )?;
                }
            }
        }
        writeln!(out, "\n</details>\n")
    }

    fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        if !self.args.variants.contains(&Variant::Weir) {
            return Ok(());
        }
        writeln!(out, "### Weir's targets\n")?;
        writeln!(out, "| target | measured | |")?;
        writeln!(out, "|---|---|---|")?;
        let loads = &self.args.loads;
        let unloaded = loads.first().copied().unwrap_or(0.1);
        for &load in loads.iter().filter(|&&l| l < 1.0) {
            if let Some(cell) = self.cell(Variant::Weir, load) {
                let lost = cell.lost_total();
                let sent: u64 = cell.tallies.iter().map(|t| t.sent).sum();
                writeln!(
                    out,
                    "| nothing of any class shed below capacity ({}) | {lost} of {sent} not served | {} |",
                    load_label(load),
                    met(lost == 0)
                )?;
            }
        }
        for &load in loads.iter().filter(|&&l| l >= 3.0) {
            let (Some(weir), breaker) = (
                self.cell(Variant::Weir, load),
                self.cell(Variant::Breaker, load),
            ) else {
                continue;
            };
            let (min, max) = weir.goodput_range();
            let breaker_best = breaker.map(|b| b.goodput_range().1);
            let shown =
                breaker_best.map_or(String::new(), |b| format!(" (breaker: up to {})", pct(b)));
            writeln!(
                out,
                "| goodput ≥ 95 % of capacity and ≥ the breaker's ({}) | {}{shown} | {} |",
                load_label(load),
                range(min, max),
                met(min >= 0.95 && breaker_best.is_none_or(|b| min >= b - 0.005))
            )?;
        }
        let top = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if let Some(cell) = self.cell(Variant::Weir, top) {
            let alarms = &cell.tallies[0];
            writeln!(
                out,
                "| no alarm shed ({}) | {} of {} alarms not served | {} |",
                load_label(top),
                alarms.sent - alarms.served,
                alarms.sent,
                met(alarms.sent == alarms.served)
            )?;
            let reference = self
                .cell(Variant::Weir, unloaded)
                .and_then(|c| c.latency_all());
            if let (Some(loaded), Some(reference)) = (cell.latency(0), reference) {
                writeln!(
                    out,
                    "| alarm p99 ≤ 2× the unloaded p99 ({} against {}, every class) | {} ms against {} ms: {:.2}× | {} |",
                    load_label(top),
                    load_label(unloaded),
                    ms(loaded.p99),
                    ms(reference.p99),
                    loaded.p99.as_secs_f64() / reference.p99.as_secs_f64().max(1e-9),
                    met(loaded.p99 <= reference.p99 * 2)
                )?;
            }
        }
        let mut ordered = true;
        let mut shown = Vec::new();
        for &load in loads {
            let Some(cell) = self.cell(Variant::Weir, load) else {
                continue;
            };
            let lost: Vec<f64> = (0..cell.tallies.len()).map(|i| cell.lost(i)).collect();
            // Highest class first: each class loses no larger a share than the one below it.
            ordered &= lost.windows(2).all(|w| w[0] <= w[1]);
            if lost.iter().any(|&l| l > 0.0) {
                let shares: Vec<String> = lost.iter().map(|&l| pct(l)).collect();
                shown.push(format!("{}: {}", load_label(load), shares.join(" ≤ ")));
            }
        }
        writeln!(
            out,
            "| commands shed only after every lower class (not served, alarm ≤ command ≤ telemetry ≤ heartbeat) | {} | {} |",
            if shown.is_empty() {
                "nothing shed".to_owned()
            } else {
                shown.join("; ")
            },
            met(ordered)
        )?;
        writeln!(out)
    }
}
