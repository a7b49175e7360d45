//! The numbers as Markdown, and the section of `bench/RESULTS.md` they go in.

use std::fmt::Write as _;
use std::time::Duration;

use weir_testbed::procfs::Machine;
use weir_testbed::stats::{Summary, median, ms};

use crate::ingestion::{self, Measurement, Variant};
use crate::payload::{CLASSES, ENVOY_BOUNDS_MS};
use crate::reaction::{self, CONTROL_INTERVAL, RunResult, STATS_FLUSH};

/// The ingestion target (from the issue), in data points per second.
const INGESTION_TARGET: f64 = 1_000_000.0;

pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) ingestion: Option<ingestion::Run>,
    pub(crate) reaction: Option<reaction::Run>,
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// Data points per second, in millions with two decimals.
fn mdps(rate: f64) -> String {
    format!("{:.2} M", rate / 1e6)
}

fn mb(kb: u64) -> String {
    format!("{:.0}", kb as f64 / 1024.0)
}

/// Microseconds of CPU per 1,000 data points.
fn us_per_k(cpu: Option<Duration>, data_points: u64) -> Option<f64> {
    let cpu = cpu?;
    (data_points > 0).then(|| cpu.as_secs_f64() * 1e6 / (data_points as f64 / 1_000.0))
}

fn opt1(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
}

/// One variant's figures over the rounds.
struct Row {
    variant: Variant,
    rates: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
    own_us_per_k: Option<f64>,
    weir_us_per_k: Option<f64>,
}

fn rows(measurements: &[Measurement]) -> Vec<Row> {
    Variant::ALL
        .iter()
        .filter_map(|&variant| {
            let of: Vec<&Measurement> = measurements
                .iter()
                .filter(|m| m.variant == variant)
                .collect();
            let rates: Vec<f64> = of.iter().map(|m| m.rate()).collect();
            let per_k = |pick: fn(&Measurement) -> Option<Duration>| {
                let values: Vec<f64> = of
                    .iter()
                    .filter_map(|m| us_per_k(pick(m), m.data_points))
                    .collect();
                median(&values)
            };
            Some(Row {
                variant,
                median: median(&rates)?,
                min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                max: rates.iter().copied().fold(0.0, f64::max),
                own_us_per_k: per_k(|m| m.own_cpu),
                weir_us_per_k: per_k(|m| m.weir_cpu),
                rates,
            })
        })
        .collect()
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
        writeln!(out, "## OTLP: ingestion rate and rollback reaction time\n")?;
        writeln!(
            out,
            "Produced by `make bench-otlp` (package `weir-otlp-bench`, `bench/otlp/`), which ran:\n"
        )?;
        writeln!(out, "```\n{}\n```\n", self.command)?;
        writeln!(out, "- date: {}", self.date)?;
        writeln!(
            out,
            "- machine: {} CPUs (`nproc`), {}, Linux {}",
            m.cpus, m.cpu_model, m.kernel
        )?;
        writeln!(out, "- Envoy: {}", m.envoy)?;
        write!(
            out,
            "- load average (1, 5, 15 min): {} at the start",
            self.load_start
        )?;
        if let Some(run) = &self.ingestion {
            write!(
                out,
                "; ingestion {} before, {} after",
                run.load_before, run.load_after
            )?;
        }
        if let Some(run) = &self.reaction {
            write!(
                out,
                "; reaction {} before, {} after",
                run.load_before, run.load_after
            )?;
        }
        writeln!(out, "; {} at the end", self.load_end)?;
        writeln!(
            out,
            "- everything on 127.0.0.1, sharing the same {} CPUs: `weir serve`, this benchmark's \
             processes (the load generator over the network, two worker processes in-process), \
             Envoy and the backends\n",
            m.cpus
        )?;
        self.write_targets(out)?;
        if let Some(run) = &self.ingestion {
            write_ingestion(out, run, m.cpus)?;
        }
        if let Some(run) = &self.reaction {
            write_reaction(out, run)?;
        }
        Ok(())
    }

    fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "### Targets\n")?;
        writeln!(out, "| target | measured | |")?;
        writeln!(out, "|---|---|---|")?;
        if let Some(run) = &self.ingestion {
            // The decode beside a store is a diagnostic, not a path.
            for row in rows(&run.measurements)
                .into_iter()
                .filter(|r| r.variant != Variant::DecodeBesideStore)
            {
                writeln!(
                    out,
                    "| ingestion ≥ 1,000,000 data points/s on {} cores: {} | {} data points/s (median of {}) | {} |",
                    self.machine.cpus,
                    row.variant.label(),
                    mdps(row.median),
                    row.rates.len(),
                    met(row.median >= INGESTION_TARGET)
                )?;
            }
        }
        if let Some(run) = &self.reaction {
            let sample: Vec<Duration> = run.results.iter().map(|r| r.reaction).collect();
            if let Some(s) = Summary::of(&sample) {
                writeln!(
                    out,
                    "| reaction: first bad canary response → Envoy's configuration updated, p50 / p99 over {} runs (no target set) | p50 {} ms, p99 {} ms (max {} ms) | reported |",
                    s.count,
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.max)
                )?;
            }
        }
        writeln!(out)
    }
}

fn write_ingestion(out: &mut String, run: &ingestion::Run, cpus: usize) -> std::fmt::Result {
    let s = &run.settings;
    writeln!(out, "### Ingestion\n")?;
    writeln!(
        out,
        "Every export request is one flush of Envoy's stats sink as `envoy/bootstrap.yaml` \
         configures it (deltas, tags as attributes, tag-extracted names): one `ResourceMetrics` \
         with Envoy's `telemetry.sdk.*` resource attributes, one `ScopeMetrics`, and one \
         `Metric` per stat with one data point, as Envoy 1.40 sends them without \
         `custom_metric_conversions`. {} clusters, each with `cluster.upstream_rq_xx` for the \
         response classes {} (monotonic delta sums, attributes `envoy.cluster_name` and \
         `envoy.response_code_class`) and one `cluster.upstream_rq_time` (a delta histogram \
         with Envoy's {} default bounds, 0.5 ms to 1 h): {} data points per request, all of \
         them of metrics weir uses, {:.0} kB encoded. 16 such requests with different values \
         are encoded once, before anything is measured, and sent in turn. Data points are \
         counted as OTLP counts them: each sum point and each histogram point is one.\n",
        s.clusters,
        CLASSES.map(|c| c.to_string()).join(", "),
        ENVOY_BOUNDS_MS.len(),
        run.data_points_per_request,
        run.bytes_per_request as f64 / 1000.0,
    )?;
    writeln!(
        out,
        "- **decode-only**: `weir::otlp::decode_protobuf` (`prost`) of the bytes, the result \
         dropped: the floor of any receiver. It runs in a worker process of its own that \
         keeps nothing.\n\
         - **decode + aggregate in-process**: `Ingest::ingest_bytes`, what a receiver does \
         with a request's bytes — decode, add the data points up per cluster, add those \
         totals to the metrics store — on an `Ingest` in a second worker process, with no \
         network.\n\
         - **decode-only beside a full metrics store**: the decode-only loop again, in that \
         second worker, whose heap holds its full store: the same code as the first row, in \
         a process like weir's.\n\
         - **OTLP/gRPC** and **OTLP/HTTP**: a real `weir serve` (its gRPC port, shared with \
         ADS, and `POST /v1/metrics` on its admin port, `application/x-protobuf`), from {} \
         concurrent clients in this process, each with one request in flight (gRPC: one \
         HTTP/2 connection per client, the pre-encoded bytes sent as they are; HTTP: HTTP/1.1 \
         keep-alive). Each response is checked: no `partial_success`, HTTP 200.\n",
        s.clients
    )?;
    writeln!(
        out,
        "Each measurement is {} requests ({} data points; at most {} s); {} rounds, each \
         measuring every variant once in an order rotated every round. Before the first round, \
         requests went for {} s through the worker's `Ingest` and for as long to weir (shared \
         among the protocols measured) — {:.1} s in all —, so that both metrics stores hold a \
         full retention (60 s of 250 ms slots per cluster, after which each new slot reuses \
         the oldest) and every connection is open. The workers are this binary again (`--worker`), run on plain threads and \
         answer over a pipe with their own timings; the network clients run on a tokio \
         runtime with one worker per CPU in the main process. CPU is `schedstat` run time: \
         the worker threads' in-process, the sum over the load generator's threads and over \
         weir's threads over the network.\n",
        s.requests,
        s.requests * run.data_points_per_request,
        s.max_time.as_secs(),
        s.rounds,
        s.warmup.as_secs(),
        run.warmup_elapsed.as_secs_f64()
    )?;
    let rows = rows(&run.measurements);
    let median_of = |variant: Variant| rows.iter().find(|r| r.variant == variant).map(|r| r.median);
    writeln!(
        out,
        "| path | data points/s, median | min | max | ratio to decode-only¹ | worker's or load generator's CPU µs per 1,000 points | weir's CPU µs per 1,000 points |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for row in &rows {
        let baseline = row.variant.baseline();
        let ratio = median_of(baseline)
            .map_or_else(|| "–".to_owned(), |b| format!("{:.2}×", row.median / b));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.variant.label(),
            mdps(row.median),
            mdps(row.min),
            mdps(row.max),
            ratio,
            opt1(row.own_us_per_k),
            opt1(row.weir_us_per_k),
        )?;
    }
    writeln!(
        out,
        "\n¹ The ratio of the medians to decode-only on as many threads (in-process), or on 2 \
         threads (over the network: weir has the whole machine's cores).\n"
    )?;
    writeln!(
        out,
        "Per round, in millions of data points per second (within a round the variants ran \
         one after the other, starting one further down the list each round):\n"
    )?;
    write!(out, "| path |")?;
    for r in 1..=s.rounds {
        write!(out, " {r} |")?;
    }
    writeln!(out)?;
    write!(out, "|---|")?;
    for _ in 0..s.rounds {
        write!(out, "---:|")?;
    }
    writeln!(out)?;
    for row in &rows {
        write!(out, "| {} |", row.variant.label())?;
        for rate in &row.rates {
            write!(out, " {:.2} |", rate / 1e6)?;
        }
        writeln!(out)?;
    }
    writeln!(out)?;

    // What weir's own CPU time says, and the checks.
    for variant in [Variant::Grpc, Variant::Http] {
        if let Some(row) = rows.iter().find(|r| r.variant == variant)
            && let Some(weir_us) = row.weir_us_per_k
        {
            let own = row.own_us_per_k.unwrap_or(0.0);
            writeln!(
                out,
                "- {}: weir spent {:.0} µs of CPU per 1,000 data points and the load generator \
                 {:.0} µs ({:.0} % of the two together); weir alone on {cpus} dedicated cores, \
                 if it used them all, would be bounded by about {} data points/s.",
                variant.label(),
                weir_us,
                own,
                100.0 * own / (own + weir_us).max(1e-9),
                mdps(cpus as f64 * 1e9 / weir_us)
            )?;
        }
    }
    if let (Some(beside), Some(clean)) = (
        rows.iter()
            .find(|r| r.variant == Variant::DecodeBesideStore),
        rows.iter().find(|r| r.variant == Variant::Decode(1)),
    ) {
        writeln!(
            out,
            "- The same decoding loop ran at {:.2}× its clean rate ({} against {} data points/s, \
             {} against {} µs of CPU per 1,000 points) in the worker whose heap holds a full \
             metrics store: allocating is slower in a process like weir's, and that is part of \
             every in-process and network row.",
            beside.median / clean.median,
            mdps(beside.median),
            mdps(clean.median),
            opt1(beside.own_us_per_k),
            opt1(clean.own_us_per_k),
        )?;
    }
    let otlp = &run.weir_otlp;
    writeln!(
        out,
        "- weir's `/v1/status` at the end: {} gRPC and {} HTTP export requests, {} data points \
         accepted ({} used), {} rejected, {} partial successes; this benchmark sent {} data \
         points to it. weir's resident memory at the end {} MB (peak {} MB); the in-process \
         worker's after its warm-up {} MB, the decode-only worker's {} MB: the store holds, \
         for each of the {} clusters, 250 ms slots over its 60 s retention, each with its \
         request and error counts and its latency bucket counts.",
        otlp["requests"]["grpc"],
        otlp["requests"]["http"],
        otlp["data_points"]["accepted"],
        otlp["data_points"]["used"],
        otlp["data_points"]["rejected"],
        otlp["partial_successes"],
        run.sent_to_weir,
        mb(run.weir_rss_kb),
        mb(run.weir_hwm_kb),
        run.store_worker_rss_kb.map_or_else(|| "?".to_owned(), mb),
        run.decode_worker_rss_kb.map_or_else(|| "?".to_owned(), mb),
        s.clusters,
    )?;
    writeln!(
        out,
        "- The load generator shares the {cpus} CPUs with weir in the network rows; in the \
         in-process rows the worker has them to itself (the other processes idle): the \
         in-process rows are what the code does per core, the network rows what a {cpus}-core \
         machine does with its load generator on it.\n"
    )?;
    Ok(())
}

fn write_reaction(out: &mut String, run: &reaction::Run) -> std::fmt::Result {
    let s = &run.settings;
    writeln!(
        out,
        "### Reaction time: first bad canary response → Envoy's configuration\n"
    )?;
    writeln!(
        out,
        "Each run starts its own processes: a backend for `app` and one for `app-canary`, \
         `weir serve` on the rollout tests' one-service policy (canary at {}%, steps [{}, \
         100], `min_samples` {}, `max_error_rate_increase` {} points, hold 30 s), and an Envoy \
         (`--concurrency {}`) from `envoy/bootstrap.yaml` alone, whose stats sink sends its \
         counters and histograms to weir over OTLP/gRPC every {} s. Once Envoy runs the canary \
         at {}%, the canary backend answers 503 to one request in five (evenly spread, from its \
         first requests), and {} requests/s go through Envoy from {} device ids (10 lanes). The \
         clock starts when the client receives the first 503 from the canary and stops when \
         Envoy's `/config_dump?resource=ecds_filters`, read every {} ms, shows canary weight 0 \
         in the filter configuration Envoy runs. *weir decided* is the `at_ms` of the rollback \
         in weir's `/v1/rollouts` (ms resolution, the same clock).\n",
        reaction::CANARY_PERCENT,
        reaction::CANARY_PERCENT,
        reaction::MIN_SAMPLES,
        reaction::MAX_ERROR_RATE_INCREASE_PP,
        reaction::ENVOY_WORKERS,
        STATS_FLUSH.as_secs(),
        reaction::CANARY_PERCENT,
        s.rate,
        10 * reaction::DEVICES_PER_LANE,
        s.poll.as_millis(),
    )?;
    let results = &run.results;
    let pick = |f: fn(&RunResult) -> Option<Duration>| -> Vec<Duration> {
        results.iter().filter_map(f).collect()
    };
    writeln!(out, "| {} runs | min | p50 | p99 | max |", results.len())?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for (what, sample) in [
        (
            "**first canary 503 → Envoy runs weight 0** (ms)",
            pick(|r| Some(r.reaction)),
        ),
        (
            "first canary 503 → weir decided (ms)",
            pick(|r| r.to_decision),
        ),
        (
            "weir decided → Envoy runs weight 0 (ms)",
            pick(|r| r.to_decision.map(|d| r.reaction.saturating_sub(d))),
        ),
        (
            "first canary 503 → the next stats flush reaches weir (ms)",
            pick(|r| r.to_first_flush),
        ),
        (
            "the flush weir decided on → weir decided (ms)",
            pick(|r| r.flush_to_decision),
        ),
        (
            "traffic start → first canary 503 (ms)",
            pick(|r| Some(r.traffic_to_error)),
        ),
    ] {
        if let Some(sm) = Summary::of(&sample) {
            writeln!(
                out,
                "| {what} | {} | {} | {} | {} |",
                ms(sm.min),
                ms(sm.p50),
                ms(sm.p99),
                ms(sm.max)
            )?;
        }
    }
    writeln!(out)?;
    let rtts: Vec<Duration> = results.iter().map(|r| r.poll_rtt).collect();
    let rtt = Summary::of(&rtts).map_or_else(|| "?".to_owned(), |s| ms(s.p50));
    writeln!(
        out,
        "p99 is by nearest rank: with {} runs it is the largest. A config dump read takes {} ms \
         (median), so each reaction is late by up to about {} ms.{}\n",
        results.len(),
        rtt,
        ms(s.poll + Summary::of(&rtts).map_or(Duration::ZERO, |s| s.p50)),
        if run.failures.is_empty() {
            String::new()
        } else {
            format!(
                " {} runs failed and are left out: {}.",
                run.failures.len(),
                run.failures.join("; ")
            )
        }
    )?;
    let mut deciding: Vec<usize> = results.iter().filter_map(|r| r.deciding_flush).collect();
    deciding.sort_unstable();
    let on_first = deciding.iter().filter(|&&k| k == 1).count();
    writeln!(
        out,
        "weir decided on the first stats flush after the first 503 in {on_first} of {} runs, on \
         a later one in the others. Each run below, in order (the pauses before Envoy's start \
         and before the traffic are spread over a control interval and a flush interval, so \
         that the runs meet both clocks at every phase); *at each flush* is what the client \
         had received by the time each flush after the first 503 reached weir, up to the one \
         weir decided on: canary answers / of which 503 · stable answers (Envoy counts a \
         request when it completes, so its own counts are about these):\n",
        results.len()
    )?;
    writeln!(
        out,
        "| run | pause before Envoy / traffic ms | reaction ms | first 503 → weir decided ms | decided → Envoy ms | decided on flush # | at each flush | canary requests / errors in weir's window at the decision | stable requests | requests sent |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")?;
    for r in results {
        let decided = r
            .to_decision
            .map_or_else(|| "?".to_owned(), |d| d.as_millis().to_string());
        let after = r
            .to_decision
            .map_or_else(|| "?".to_owned(), |d| ms(r.reaction.saturating_sub(d)));
        let counts: Vec<String> = r
            .at_flushes
            .iter()
            .map(|(c, e, s)| format!("{c} / {e} · {s}"))
            .collect();
        writeln!(
            out,
            "| {} | {} / {} | {} | {decided} | {after} | {} | {} | {} / {} | {} | {} |",
            r.run,
            r.phases.before_envoy.as_millis(),
            r.phases.before_traffic.as_millis(),
            ms(r.reaction),
            r.deciding_flush
                .map_or_else(|| "?".to_owned(), |k| k.to_string()),
            counts.join(", "),
            r.canary_requests,
            r.canary_errors,
            r.stable_requests,
            r.sent
        )?;
    }
    writeln!(out)?;
    if let Some(r) = results.first() {
        writeln!(
            out,
            "weir's reason for the rollback (run {}): {}\n",
            r.run, r.reason
        )?;
    }
    let canary_rate = s.rate as f64 * f64::from(reaction::CANARY_PERCENT) / 100.0;
    // The canary's first 503 is its 5th request; the verdict needs its 40th.
    let to_enough = f64::from(reaction::MIN_SAMPLES - 5) * 1000.0 / canary_rate;
    let flush_ms = STATS_FLUSH.as_secs_f64() * 1000.0;
    let control_ms = CONTROL_INTERVAL.as_secs_f64() * 1000.0;
    writeln!(
        out,
        "What bounds it: weir learns about the canary only from Envoy's stats sink, which \
         flushes every {:.0} ms (`stats_flush_interval` in `envoy/bootstrap.yaml`); it evaluates \
         every {:.0} ms (`weir serve --control-interval-ms`); and it reaches no verdict until \
         both variants have `min_samples` ({}) requests in its 10 s window. At about {:.0} \
         canary requests/s the first 503 is the canary's 5th request and its {}th comes about \
         {:.0} ms later, so the first flush that can carry a verdict reaches weir {:.0}–{:.0} ms \
         after the first 503, depending on the flush's phase (the ten traffic lanes \
         send together every 100 ms, and the sticky split gives either variant a few more or \
         fewer of the first devices: a little earlier or later). With 40 requests, a fifth of \
         them failed, against none, the error test already rejects (p ≈ 0.006 < 0.01), so that \
         flush is enough. The next evaluation adds 0–{:.0} ms, and saving the decision, \
         pushing the filter configuration over ECDS and Envoy applying it add about 10 ms \
         (*weir decided → Envoy runs weight 0*). Altogether about {:.0} to {:.0} ms, spread \
         evenly by the phases of the two clocks: the flush interval is most of the spread and \
         `min_samples` at this traffic most of the floor. A shorter `stats_flush_interval`, \
         a shorter control interval or fewer `min_samples` (less statistical power) lower it; \
         ingestion and the push are a few milliseconds of it.\n",
        flush_ms,
        control_ms,
        reaction::MIN_SAMPLES,
        canary_rate,
        reaction::MIN_SAMPLES,
        to_enough,
        to_enough,
        to_enough + flush_ms,
        control_ms,
        to_enough,
        to_enough + flush_ms + control_ms + 10.0,
    )?;
    Ok(())
}

/// The segment-detection section: detection time of a failure of one device
/// segment only, beside a whole-cluster failure in the same run.
pub(crate) fn segments_markdown(
    command: &str,
    date: &str,
    machine: &Machine,
    whole: Option<&reaction::Run>,
    segment: Option<&reaction::Run>,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_segments(&mut out, command, date, machine, whole, segment);
    out
}

fn write_segments(
    out: &mut String,
    command: &str,
    date: &str,
    machine: &Machine,
    whole: Option<&reaction::Run>,
    segment: Option<&reaction::Run>,
) -> std::fmt::Result {
    writeln!(
        out,
        "## Segment verdicts: detection time of a segment-only failure\n"
    )?;
    writeln!(
        out,
        "Produced by `make bench-segments` (package `weir-otlp-bench --segments`), which ran:\n"
    )?;
    writeln!(out, "```\n{command}\n```\n")?;
    writeln!(out, "- date: {date}")?;
    writeln!(
        out,
        "- machine: {} CPUs (`nproc`), {}, Linux {}; Envoy {}",
        machine.cpus, machine.cpu_model, machine.kernel, machine.envoy
    )?;
    let rate = segment.or(whole).map_or(0, |r| r.settings.rate);
    writeln!(
        out,
        "- each run starts its own backends, `weir serve` and Envoy, as in the OTLP reaction \
         runs above: canary at {}%, `min_samples` {}, `max_error_rate_increase` {} points, {} \
         requests/s from {} devices, one in {} of them a camera (`x-device-type`)\n",
        reaction::CANARY_PERCENT,
        reaction::MIN_SAMPLES,
        reaction::MAX_ERROR_RATE_INCREASE_PP,
        rate,
        10 * reaction::DEVICES_PER_LANE,
        reaction::CAMERA_EVERY,
    )?;
    writeln!(
        out,
        "- **whole cluster**: the canary answers 503 to one request in five; its policy has no \
         segments.\n- **segment only**: the canary answers 503 to one camera request in {:.0} \
         ({} basis points) and to no other: +{:.1} points on the whole canary cluster, under its \
         limit, so only the segment verdict (`segments: {{ by: [device_type] }}`) can see it.\n",
        10_000.0 / f64::from(reaction::SEGMENT_FAIL_BASIS_POINTS),
        reaction::SEGMENT_FAIL_BASIS_POINTS,
        f64::from(reaction::SEGMENT_FAIL_BASIS_POINTS) / 100.0 / reaction::CAMERA_EVERY as f64,
    )?;
    writeln!(
        out,
        "The clock starts when the client receives the first 503 from the canary and stops when \
         Envoy's configuration has canary weight 0.\n"
    )?;
    writeln!(
        out,
        "| failure | runs | p50 ms | p99 ms | max ms | first 503 → weir decided, p50 ms | failed runs |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (name, run) in [
        ("whole cluster", whole),
        ("segment only (cameras)", segment),
    ] {
        let Some(run) = run else { continue };
        let reactions: Vec<Duration> = run.results.iter().map(|r| r.reaction).collect();
        let decided: Vec<Duration> = run.results.iter().filter_map(|r| r.to_decision).collect();
        let (Some(s), decided) = (Summary::of(&reactions), Summary::of(&decided)) else {
            writeln!(out, "| {name} | 0 | | | | | {} |", run.failures.len())?;
            continue;
        };
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            s.count,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            decided.map_or_else(|| "?".to_owned(), |d| ms(d.p50)),
            run.failures.len()
        )?;
    }
    writeln!(out)?;
    if let Some(run) = segment {
        writeln!(
            out,
            "Reasons of the segment runs' rollbacks (first three):\n"
        )?;
        for r in run.results.iter().take(3) {
            writeln!(out, "- run {}: {}", r.run, r.reason)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::POINTS_PER_CLUSTER;

    #[test]
    fn points_per_cluster_match_the_classes() {
        assert_eq!(POINTS_PER_CLUSTER, CLASSES.len() + 1);
    }
}
