//! Instructions per request, counted by valgrind's callgrind: Envoy's whole
//! work (every thread, V8's compiled wasm included) for a fixed number of
//! requests. Unlike CPU time on a shared two-core machine, the count is the
//! same from run to run (within a fraction of a percent), so differences of
//! a few percent between filters can be told apart, and what a change to
//! the filter costs or saves is known before the noisy timing runs.
//!
//! Each variant's Envoy starts under callgrind with instrumentation off,
//! serves a warm-up (V8 compiles the module, connections open), then counts
//! only the measured requests: instrumentation is switched on and the counts
//! dumped with `callgrind_control`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use weir_testbed::fleet::Fleet;

use crate::{Variant, load};

/// Requests before counting, and counted.
const WARMUP: u64 = 500;
const COUNTED: u64 = 2_000;
/// Requests in flight (valgrind runs Envoy far slower than the client).
const IN_FLIGHT: u64 = 4;

/// One variant's count.
pub(crate) struct Counted {
    pub(crate) label: &'static str,
    pub(crate) requests: u64,
    pub(crate) instructions: u64,
}

impl Counted {
    fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

/// Whether valgrind and callgrind_control can be run.
pub(crate) fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Counts the instructions Envoy spends on [`COUNTED`] requests through `variant`.
pub(crate) async fn count(
    variant: Variant,
    label: &'static str,
    fleet: &Fleet,
    module: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Counted> {
    let dir = tempfile::Builder::new()
        .prefix("weir-callgrind-")
        .tempdir()?;
    let out = dir.path().join("callgrind.out");
    let valgrind_args = [
        "--tool=callgrind".to_owned(),
        "--instr-atstart=no".to_owned(),
        // V8 writes the code it compiles into memory it then runs.
        "--smc-check=all-non-file".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let envoy = variant
        .builder(fleet, module)
        .under("valgrind", &valgrind_args)
        .start()
        .await?;
    variant.check(&envoy, client).await?;
    let url = envoy.url(load::PATH);
    let pid = envoy.pid().to_string();
    let failed = load::each_device_once(client, &url, 0..WARMUP, IN_FLIGHT).await?;
    anyhow::ensure!(failed == 0, "{label}: {failed} warm-up requests failed");
    control(&["-i", "on", &pid])?;
    let failed = load::each_device_once(client, &url, WARMUP..WARMUP + COUNTED, IN_FLIGHT).await?;
    control(&["-i", "off", &pid])?;
    control(&["-d", &pid])?;
    anyhow::ensure!(failed == 0, "{label}: {failed} counted requests failed");
    drop(envoy);
    Ok(Counted {
        label,
        requests: COUNTED,
        instructions: dumped_instructions(dir.path())?,
    })
}

fn control(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "callgrind_control {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// The instructions of every dump in `dir` (one per `callgrind_control -d`;
/// with instrumentation off before and after, only the counted requests').
fn dumped_instructions(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut dumps = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_dump = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callgrind.out."));
        if !is_dump {
            continue;
        }
        dumps += 1;
        total += std::fs::read_to_string(&path)?
            .lines()
            .find_map(|line| line.strip_prefix("totals:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    anyhow::ensure!(dumps > 0, "callgrind wrote no dump in {}", dir.display());
    Ok(total)
}

/// The variants counted: the runner's own, and the do-nothing module pruned
/// to the callbacks Weir's module exports (the floor of a filter of Weir's shape).
pub(crate) async fn count_all(
    fleet: &Fleet,
    noop: &Path,
    noop_pruned: &Path,
    client: &reqwest::Client,
) -> anyhow::Result<Vec<Counted>> {
    let runs = [
        (Variant::None, Variant::None.label(), noop),
        (Variant::Noop, Variant::Noop.label(), noop),
        (Variant::Noop, NOOP_PRUNED, noop_pruned),
        (Variant::Steer, STEER_PRUNED, noop_pruned),
        (Variant::Weir, Variant::Weir.label(), noop),
        (Variant::Lua, Variant::Lua.label(), noop),
    ];
    let mut counted = Vec::new();
    for (variant, label, module) in runs {
        eprintln!("weir-bench: counting instructions under callgrind: {label}");
        let c = count(variant, label, fleet, module, client).await?;
        eprintln!(
            "weir-bench:   {label}: {:.0} instructions per request",
            c.per_request()
        );
        counted.push(c);
    }
    Ok(counted)
}

/// The pruned do-nothing module's label.
pub(crate) const NOOP_PRUNED: &str = "wasm, does nothing, Weir's callbacks only";

/// The pruned module making only the host calls of steering.
pub(crate) const STEER_PRUNED: &str =
    "wasm, only reads the headers and sets two, Weir's callbacks only";

/// Weir may cost at most this many times the do-nothing module's instructions.
const NOOP_TARGET: f64 = 1.05;

/// The section of `bench/RESULTS.md`.
pub(crate) fn markdown(counted: &[Counted], command: &str, date: &str) -> String {
    let mut out = String::new();
    let per = |label: &str| {
        counted
            .iter()
            .find(|c| c.label == label)
            .map(Counted::per_request)
    };
    let none = per(Variant::None.label());
    let noop = per(Variant::Noop.label());
    let weir = per(Variant::Weir.label());
    let lua = per(Variant::Lua.label());
    let steer = per(STEER_PRUNED);
    let _ = writeln!(out, "## Instructions per request (callgrind)\n");
    let _ = writeln!(out, "Produced by `{command}` on {date}.\n");
    let _ = writeln!(
        out,
        "Every instruction Envoy executes (all threads, V8's compiled wasm included) for {COUNTED} requests, one from each of {COUNTED} devices, {IN_FLIGHT} in flight, after {WARMUP} uncounted ones; counted by valgrind's callgrind, so the same from run to run whatever else the machine does. Instructions are not time — V8's code and Lua's interpreter run at other rates per instruction than Envoy's C++ — but what a filter adds to Envoy's work shows here to a fraction of a percent.\n"
    );
    let _ = writeln!(
        out,
        "| variant | instructions per request | ÷ no filter | ÷ wasm, does nothing |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for c in counted {
        let v = c.per_request();
        let ratio = |base: Option<f64>| base.map_or("—".to_owned(), |b| format!("{:.3}×", v / b));
        let _ = writeln!(
            out,
            "| {} | {v:.0} | {} | {} |",
            c.label,
            ratio(none),
            ratio(noop)
        );
    }
    let _ = writeln!(out, "\nTargets:\n");
    if let (Some(weir), Some(noop)) = (weir, noop) {
        let ratio = weir / noop;
        let verdict = if ratio <= NOOP_TARGET {
            "met"
        } else {
            "**NOT met**"
        };
        let _ = writeln!(
            out,
            "- Weir's instructions per request at most {NOOP_TARGET:.2}× the do-nothing module's: {ratio:.3}× — {verdict}"
        );
    }
    if let (Some(weir), Some(lua)) = (weir, lua) {
        let ratio = weir / lua;
        let verdict = if ratio < 1.0 { "met" } else { "**NOT met**" };
        let _ = writeln!(
            out,
            "- Weir's instructions per request below the one-line Lua filter's: {ratio:.3}× Lua's — {verdict}"
        );
    }
    if let (Some(steer), Some(noop), Some(lua), Some(weir)) = (steer, noop, lua, weir) {
        let _ = writeln!(
            out,
            "\nThe floor of steering: a module that only reads the request headers and sets two (the host calls any filter routing by header makes, no decisions) costs {:.3}× the do-nothing module's instructions and {:.3}× Lua's; Weir's own work above that floor — classifying, routing, splitting, admitting, counting — is {:.0} instructions per request.",
            steer / noop,
            steer / lua,
            weir - steer
        );
    }
    out
}
