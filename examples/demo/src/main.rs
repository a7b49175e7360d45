//! Weir's demo: `weir serve` on `examples/policies/three-regions.yaml`, an
//! Envoy started from `envoy/bootstrap.yaml` alone (everything else arrives
//! over ADS, and its stats sink feeds weir), a stable and a canary backend in
//! each of three regions, and a fleet of meters, cameras and gateways sending
//! alarms, commands, telemetry and heartbeats. A scripted scenario shows weir
//! promote a good canary, roll back a failing one and a slow one by itself,
//! and the filter shed heartbeats, not alarms, under overload — narrated as it
//! happens. Then everything stays up for exploring (the dashboard is at weir's
//! admin address) until Ctrl-C, or for `--seconds N` / `DEMO_SECONDS=N`.
//!
//! Run it with `make demo` (or `make demo DEMO_SECONDS=0` to end right after
//! the scenario); docs/demo.md walks through it.

mod narrator;
mod scenario;
mod traffic;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use narrator::{Clock, Narrator};
use scenario::World;
use traffic::Steady;

const USAGE: &str = "\
usage: weir-demo [--seconds N]

Runs Weir's demo scenario, then keeps everything running for exploring.

  --seconds N   stop by itself N seconds after the scenario (0: right after it);
                default: run until Ctrl-C. Also set by DEMO_SECONDS=N.";

/// The exit code when the demo is interrupted before its scenario is over.
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let seconds = match linger(std::env::args().skip(1), std::env::var("DEMO_SECONDS").ok()) {
        Ok(seconds) => seconds,
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(seconds))
}

/// How long to stay up after the scenario: from `--seconds N` (or
/// `--seconds=N`), else `DEMO_SECONDS`; `None` means until interrupted.
fn linger(
    mut args: impl Iterator<Item = String>,
    env: Option<String>,
) -> Result<Option<u64>, String> {
    let parse = |value: &str, from: &str| {
        value
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("{from} must be a whole number of seconds, not `{value}`"))
    };
    let mut seconds = None;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err("Weir's demo".to_owned());
        } else if arg == "--seconds" {
            let value = args.next().ok_or("--seconds needs a value")?;
            seconds = Some(parse(&value, "--seconds")?);
        } else if let Some(value) = arg.strip_prefix("--seconds=") {
            seconds = Some(parse(value, "--seconds")?);
        } else {
            return Err(format!("unknown argument `{arg}`"));
        }
    }
    match (seconds, env) {
        (Some(seconds), _) => Ok(Some(seconds)),
        (None, Some(value)) if !value.trim().is_empty() => parse(&value, "DEMO_SECONDS").map(Some),
        (None, _) => Ok(None),
    }
}

/// Runs the demo until it ends or a signal arrives; either way everything it
/// started is stopped and its temporary files removed before this returns.
async fn run(seconds: Option<u64>) -> ExitCode {
    let scenario_over = Arc::new(AtomicBool::new(false));
    let ended = tokio::select! {
        biased;
        signal = interrupted() => Err(signal),
        result = demo(seconds, Arc::clone(&scenario_over)) => Ok(result),
    };
    // The demo's future has been dropped by now, and with it Envoy, weir,
    // the backends and the temporary folders.
    match ended {
        Ok(Ok(())) => {
            println!("Stopped: Envoy, weir and the backends; temporary files removed.");
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("\nThe demo failed: {err:#}");
            println!("Stopped: Envoy, weir and the backends; temporary files removed.");
            ExitCode::FAILURE
        }
        Err(signal) => {
            println!("\n{signal}: stopped Envoy, weir and the backends; temporary files removed.");
            if scenario_over.load(Ordering::Relaxed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(INTERRUPTED)
            }
        }
    }
}

/// Ctrl-C, SIGTERM or SIGHUP, whichever comes first.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

async fn demo(seconds: Option<u64>, scenario_over: Arc<AtomicBool>) -> anyhow::Result<()> {
    let clock = Clock::start();
    println!("Weir demo — {}", scenario::POLICY);
    println!("  starting weir, Envoy and 6 backends on loopback…");
    let world = World::start().await?;
    let admin = world.weir.admin_addr();
    println!("  dashboard   http://{admin}/");
    println!(
        "  weir        admin API http://{admin}/v1/status · ADS and OTLP on {}",
        world.weir.xds_addr()
    );
    println!(
        "  Envoy       device traffic {} · admin http://{} · configured by weir over ADS (envoy/bootstrap.yaml)",
        world.envoy.url(""),
        world.envoy.admin_addr()
    );
    println!(
        "  backends    {}",
        world
            .fleet
            .backends()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  processes   weir pid {}, envoy pid {} · temporary files under {} and {}",
        world.weir.pid(),
        world.envoy.pid(),
        world.dir.path().display(),
        world.weir.dir().display()
    );
    println!(
        "  traffic     {} requests/s from 1,500 meters, cameras and gateways in eu-west, us-east and ap-south",
        scenario::STEADY_RATE
    );

    let steady = Steady::start(
        &world.envoy.url(""),
        scenario::STEADY_RATE,
        scenario::STEADY_LANES,
    );
    let narrator = Narrator::start(clock, admin, world.envoy.admin_addr(), &steady);
    let checks = scenario::run(&world, &clock, &steady).await?;
    narrator.quiet();

    println!("\nOutcome");
    for check in &checks {
        println!(
            "  {}  {}",
            if check.ok { "ok" } else { "FAILED" },
            check.text
        );
    }
    scenario_over.store(true, Ordering::Relaxed);
    if checks.iter().any(|c| !c.ok) {
        anyhow::bail!("the demo saw something Weir promises never happens: see above");
    }

    let envoy = world.envoy.url("");
    println!(
        "\nThe scenario is over. Everything keeps running, with steady traffic, for exploring:"
    );
    println!("  dashboard     http://{admin}/");
    println!("  rollouts      curl -s http://{admin}/v1/rollouts");
    let weir_cli = weir_testbed::paths::weir_binary();
    let weir_cli = weir_cli
        .strip_prefix(weir_testbed::paths::repo_root())
        .unwrap_or(&weir_cli)
        .display();
    println!("  weir CLI      {weir_cli} status --server http://{admin}");
    println!("                {weir_cli} rollout history ingest-us-canary --server http://{admin}");
    println!(
        "  the policy    {} (weir applies valid edits at once; new decisions are told here)",
        world.weir_policy().display()
    );
    println!(
        "  a request     curl -si -X POST {envoy}/v1/alarms -H 'x-device-id: camera-ap-0042' -H 'x-region: ap-south' -H 'x-device-type: camera'"
    );
    println!(
        "  filter stats  curl -s 'http://{}/stats?filter=wasmcustom'",
        world.envoy.admin_addr()
    );
    match seconds {
        Some(seconds) => {
            println!("Stopping in {seconds} s (DEMO_SECONDS / --seconds).");
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        None => {
            println!("Press Ctrl-C to stop.");
            std::future::pending::<()>().await;
        }
    }
    drop(narrator);
    drop(steady);
    drop(world);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn how_long_to_stay_up() {
        assert_eq!(linger(args(&[]), None), Ok(None));
        assert_eq!(linger(args(&["--seconds", "5"]), None), Ok(Some(5)));
        assert_eq!(linger(args(&["--seconds=0"]), None), Ok(Some(0)));
        assert_eq!(linger(args(&[]), Some("30".into())), Ok(Some(30)));
        assert_eq!(linger(args(&[]), Some("".into())), Ok(None));
        assert_eq!(
            linger(args(&["--seconds", "1"]), Some("30".into())),
            Ok(Some(1))
        );
        assert!(linger(args(&["--seconds"]), None).is_err());
        assert!(linger(args(&["--seconds", "soon"]), None).is_err());
        assert!(linger(args(&[]), Some("-1".into())).is_err());
        assert!(linger(args(&["--verbose"]), None).is_err());
    }
}
