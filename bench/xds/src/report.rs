//! The numbers as Markdown, and the section of `bench/RESULTS.md` they go in.

use std::fmt::Write as _;
use std::time::Duration;

use weir_testbed::procfs::Machine;
use weir_testbed::stats::{Summary, ms};

use crate::convergence::{self, ENVOY_WORKERS};
use crate::edits::Kind;
use crate::scale::{self, Protocol};

/// Targets of the benchmark (from the issue).
const CONVERGENCE_P99_TARGET: Duration = Duration::from_millis(200);
/// Per number of streams: every change ACKed by all within, and weir's
/// resident memory (connected and peak) at most.
fn scale_targets(streams: usize) -> Option<(Duration, u64)> {
    match streams {
        1_000 => Some((Duration::from_secs(1), 100 * 1024)),
        10_000 => Some((Duration::from_secs(1), 200 * 1024)),
        50_000 => Some((Duration::from_secs(3), 1024 * 1024)),
        _ => None,
    }
}

pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) convergence: Option<convergence::Run>,
    pub(crate) scale: Vec<scale::Run>,
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn cpu(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), ms)
}

impl Report {
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let m = &self.machine;
        writeln!(out, "## Control plane: `weir serve` (xDS)\n")?;
        writeln!(
            out,
            "Produced by `make bench-xds` (package `weir-xds-bench`, `bench/xds/`), which ran:\n"
        )?;
        writeln!(out, "```\n{}\n```\n", self.command)?;
        writeln!(out, "- date: {}", self.date)?;
        writeln!(
            out,
            "- machine: {} CPUs (`nproc`), {}, Linux {}",
            m.cpus, m.cpu_model, m.kernel
        )?;
        writeln!(out, "- Envoy: {}", m.envoy)?;
        writeln!(out, "- open files limit (soft / hard): {}", m.open_files)?;
        writeln!(
            out,
            "- load average before / after: {} / {}",
            self.load_before, self.load_after
        )?;
        writeln!(
            out,
            "- everything on 127.0.0.1, sharing the same CPUs: weir, Envoy or the load client, \
             the backends\n"
        )?;
        self.write_targets(out)?;
        if let Some(run) = &self.convergence {
            write_convergence(out, run)?;
        }
        // One section per number of streams, its protocols side by side.
        let mut rest = self.scale.as_slice();
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take_while(|r| r.settings.streams == first.settings.streams)
                .count();
            let (group, after) = rest.split_at(same);
            write_scale(out, group)?;
            rest = after;
        }
        if !self
            .scale
            .iter()
            .any(|r| r.settings.protocol == Protocol::Delta)
        {
            writeln!(
                out,
                "Delta xDS was not measured at scale in this run (`--protocols` left it out).\n"
            )?;
        }
        Ok(())
    }

    fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "### Targets\n")?;
        writeln!(out, "| target | measured | |")?;
        writeln!(out, "|---|---|---|")?;
        if let Some(run) = &self.convergence {
            let acked: Vec<Duration> = run.edits.iter().map(|e| e.acked).collect();
            if let Some(s) = Summary::of(&acked) {
                writeln!(
                    out,
                    "| convergence, policy write → Envoy ACK, p99 ≤ 200 ms | p99 {} ms (p50 {} ms, max {} ms, {} edits) | {} |",
                    ms(s.p99),
                    ms(s.p50),
                    ms(s.max),
                    s.count,
                    met(s.p99 <= CONVERGENCE_P99_TARGET)
                )?;
            }
        }
        for run in &self.scale {
            let label = run.settings.label();
            let streams = run.settings.streams;
            let Some((ack_target, memory_target_kb)) = scale_targets(streams) else {
                continue;
            };
            let alls: Vec<Duration> = run.changes.iter().map(|c| c.all).collect();
            if let Some(s) = Summary::of(&alls) {
                writeln!(
                    out,
                    "| scale ({label}), policy change → all {streams} streams ACKed ≤ {} s | worst of {} changes {} ms (median {} ms) | {} |",
                    ack_target.as_secs(),
                    s.count,
                    ms(s.max),
                    ms(s.p50),
                    met(s.max <= ack_target)
                )?;
            }
            writeln!(
                out,
                "| scale ({label}), weir's resident memory with {streams} streams ≤ {} MB | VmRSS {} MB connected, peak (VmHWM) {} MB | {} |",
                memory_target_kb / 1024,
                mb(run.rss_connected_kb),
                mb(run.hwm_kb),
                met(run.hwm_kb.max(run.rss_connected_kb) <= memory_target_kb)
            )?;
        }
        writeln!(out)
    }
}

fn write_convergence(out: &mut String, run: &convergence::Run) -> std::fmt::Result {
    writeln!(out, "### Convergence: policy file write → Envoy's ACK\n")?;
    writeln!(
        out,
        "`weir serve` on a copy of `examples/policies/iot-fleet.yaml` (endpoints on loopback \
         backends), one Envoy (`--concurrency {ENVOY_WORKERS}`) started from \
         `envoy/bootstrap.yaml` alone, state-of-the-world ADS. {} edits, cycling through the four \
         kinds below; each is written atomically (a new file renamed over the policy) after a \
         pause spread evenly over 0–{} ms, so that writes fall at every phase of weir's file \
         poll. The clock starts just before the rename and stops when `GET /v1/status`, polled \
         every {} ms, shows Envoy (node `{}`) has ACKed the version weir serves of every type \
         whose version changed. A status request takes {} ms (median), so each figure is late by \
         up to about {} ms. *published* is when the status first showed the new snapshot.\n",
        run.edits.len(),
        crate::WEIR_FILE_POLL.as_millis(),
        run.poll.as_millis(),
        convergence::NODE,
        ms(run.status_rtt),
        ms(run.poll + run.status_rtt),
    )?;
    let acked: Vec<Duration> = run.edits.iter().map(|e| e.acked).collect();
    let published: Vec<Duration> = run.edits.iter().map(|e| e.published).collect();
    let delivery: Vec<Duration> = run
        .edits
        .iter()
        .map(|e| e.acked.saturating_sub(e.published))
        .collect();
    writeln!(out, "| edits | types changed | | min | p50 | p99 | max |")?;
    writeln!(out, "|---|---|---|---:|---:|---:|---:|")?;
    for (what, sample) in [
        ("write → ACKed", &acked),
        ("write → published", &published),
        ("published → ACKed", &delivery),
    ] {
        if let Some(s) = Summary::of(sample) {
            writeln!(
                out,
                "| all {} | | {what} (ms) | {} | {} | {} | {} |",
                s.count,
                ms(s.min),
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            )?;
        }
    }
    for kind in Kind::ALL {
        let of_kind: Vec<&convergence::Edit> =
            run.edits.iter().filter(|e| e.kind == kind).collect();
        let mut types: Vec<String> = of_kind.iter().map(|e| e.changed.join("+")).collect();
        types.sort();
        types.dedup();
        let sample: Vec<Duration> = of_kind.iter().map(|e| e.acked).collect();
        if let Some(s) = Summary::of(&sample) {
            writeln!(
                out,
                "| {} ({}) | {} | write → ACKed (ms) | {} | {} | {} | {} |",
                kind.label(),
                s.count,
                types.join(", "),
                ms(s.min),
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "When the status first showed each changed type ACKed, from the write (median / max, ms; \
         weir pushes clusters, endpoints, listeners, routes, then the filter's configuration):\n"
    )?;
    writeln!(out, "| edits | CDS | EDS | ECDS |")?;
    writeln!(out, "|---|---:|---:|---:|")?;
    for kind in Kind::ALL {
        let of_kind: Vec<&convergence::Edit> =
            run.edits.iter().filter(|e| e.kind == kind).collect();
        let cell = |name: &str| {
            let sample: Vec<Duration> = of_kind
                .iter()
                .flat_map(|e| e.per_type.iter())
                .filter(|(t, _)| *t == name)
                .map(|(_, d)| *d)
                .collect();
            Summary::of(&sample).map_or_else(
                || "–".to_owned(),
                |s| format!("{} / {}", ms(s.p50), ms(s.max)),
            )
        };
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            kind.label(),
            cell("CDS"),
            cell("EDS"),
            cell("ECDS")
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "p99 is by nearest rank: with {} samples it is the largest. weir looks at the policy file \
         every {} ms (`POLL_INTERVAL` in `xds-server/src/policy_source.rs`) and reads a change \
         once the file has held still for one more look, so {}–{} ms of *write → published* is \
         waiting for the poll. NACKs from Envoy during the run: {}. weir's VmRSS at the end: {} \
         MB.\n",
        run.edits.len(),
        crate::WEIR_FILE_POLL.as_millis(),
        crate::WEIR_FILE_POLL.as_millis(),
        2 * crate::WEIR_FILE_POLL.as_millis(),
        run.nacks,
        mb(run.weir_rss_kb)
    )
}

fn write_scale(out: &mut String, runs: &[scale::Run]) -> std::fmt::Result {
    let first = &runs[0].settings;
    writeln!(out, "### Scale: {} ADS streams\n", first.streams)?;
    writeln!(
        out,
        "A fresh `weir serve` per protocol, on the same policy, and a load client in the \
         benchmark's process (tonic + envoy-types, on weir's allocator, mimalloc): {} streams, each a distinct node \
         (`bench-node-<i>`), over {} HTTP/2 connections (tonic multiplexes the streams). Each \
         stream subscribes as Envoy does — clusters and listeners by wildcard, the endpoints of \
         every EDS cluster it is sent (re-subscribing when the set changes), `weir_routes` and \
         `weir_filter` once it has the listener — and ACKs every response; it records when it \
         sends the ACK of each new version of each type. A change has reached a stream when it \
         has ACKed the version weir serves of every type that changed; the client checks every \
         {} ms, but the times are the streams' own. CPU is `schedstat` run time summed over the \
         threads of weir and of the client (the client shares the CPUs with weir). With \
         replicas (*N replicas*), N `weir serve` share one etcd (one member) and the connections \
         are spread over them evenly; memory is the largest replica's (per stream: of its share), \
         CPU the sum of all.\n",
        first.streams,
        first.channels,
        first.poll.as_millis()
    )?;
    writeln!(
        out,
        "| protocol | all streams ACKed their first configuration | weir / client CPU for it | nodes connected (weir's status) | weir VmRSS idle | with the streams | per stream | peak (VmHWM) while connecting | after the changes | peak (VmHWM) |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for run in runs {
        // With replicas, memory is the largest replica's, which holds its
        // share of the streams.
        let per_replica = run.settings.streams / run.settings.replicas.max(1);
        let per_stream_kb =
            run.rss_connected_kb.saturating_sub(run.rss_idle_kb) as f64 / per_replica.max(1) as f64;
        writeln!(
            out,
            "| {} | {} ms | {} / {} ms | {} | {} MB | {} MB | {:.1} kB | {} MB | {} MB | {} MB |",
            run.settings.label(),
            ms(run.initial),
            cpu(run.initial_weir_cpu),
            cpu(run.initial_client_cpu),
            run.nodes_connected,
            mb(run.rss_idle_kb),
            mb(run.rss_connected_kb),
            per_stream_kb,
            mb(run.hwm_connected_kb),
            mb(run.rss_after_kb),
            mb(run.hwm_kb)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Each policy change, from the write (times in ms; *first*, *median* and *all*: when the \
         first stream, half of them, all of them had ACKed it; *all − first*: the fan-out to every \
         stream once weir had the new snapshot; CPU from the write until all had ACKed):\n"
    )?;
    writeln!(
        out,
        "| protocol | change | types changed | first | median | all | all − first | weir CPU | client CPU | weir VmRSS after |"
    )?;
    writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for run in runs {
        for change in &run.changes {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} MB |",
                run.settings.label(),
                change.kind.label(),
                change.changed.join("+"),
                ms(change.first),
                ms(change.median),
                ms(change.all),
                ms(change.all.saturating_sub(change.first)),
                cpu(change.weir_cpu),
                cpu(change.client_cpu),
                mb(change.rss_kb)
            )?;
        }
    }
    writeln!(out)?;
    for run in runs {
        let alls: Vec<Duration> = run.changes.iter().map(|c| c.all).collect();
        if let Some(s) = Summary::of(&alls) {
            writeln!(
                out,
                "- {}: change → all {} ACKed, over {} changes: min {} ms, median {} ms, max {} ms",
                run.settings.label(),
                run.settings.streams,
                s.count,
                ms(s.min),
                ms(s.p50),
                ms(s.max)
            )?;
        }
    }
    writeln!(out)
}
