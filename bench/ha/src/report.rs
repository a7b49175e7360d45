//! The benchmark's section of `bench/RESULTS.md`.

use std::fmt::Write as _;
use std::time::Duration;

use weir_testbed::procfs::Machine;

use crate::etcd_load::Load;
use crate::failover::Run;

/// The target: a new leader deciding and serving within 3 s at p99.
const FAILOVER_TARGET: Duration = Duration::from_secs(3);

pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) machine: Machine,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    pub(crate) failover: Option<Vec<Run>>,
    pub(crate) etcd_load: Option<Load>,
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

/// The value at quantile `q` by nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or_default()
}

impl Report {
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## Replicas on etcd: failover and etcd's load\n");
        let _ = writeln!(
            out,
            "Produced by `make bench-ha` (package `weir-ha-bench`, `bench/ha/`), which ran:\n\n```\n{}\n```\n",
            self.command
        );
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- machine: {} CPUs (`nproc`), {}, Linux {}",
            m.cpus, m.cpu_model, m.kernel
        );
        let _ = writeln!(out, "- Envoy: {}", m.envoy);
        let _ = writeln!(
            out,
            "- load average before / after: {} / {}",
            self.load_start, self.load_end
        );
        let _ = writeln!(
            out,
            "- one etcd member (Debian's `etcd-server`), the replicas, Envoy and the backends, all on 127.0.0.1 sharing the CPUs; the default lease TTL (2 s) and control interval (250 ms)\n"
        );
        if let Some(runs) = &self.failover {
            self.failover_section(&mut out, runs);
        }
        if let Some(load) = &self.etcd_load {
            Self::load_section(&mut out, load);
        }
        out
    }

    fn failover_section(&self, out: &mut String, runs: &[Run]) {
        let mut deciding: Vec<Duration> = runs.iter().map(|r| r.deciding).collect();
        let mut served: Vec<Duration> = runs.iter().map(|r| r.served).collect();
        deciding.sort();
        served.sort();
        let verdict = |d: Duration| {
            if d <= FAILOVER_TARGET {
                "**met**"
            } else {
                "**missed**"
            }
        };
        let _ = writeln!(out, "### Failover: the leader killed\n");
        let _ = writeln!(
            out,
            "A leader and a follower of one policy (a canary at its first step), and an Envoy whose ADS stream is on the leader (the bootstrap lists both; the follower starts after the Envoy connected). The leader gets SIGKILL; the clock runs until the follower's `GET /v1/status`, polled every 5 ms, says it decides (`replication.deciding`), and until it shows the Envoy's ACK of the configuration it serves (the Envoy reconnected to it and was pushed its feed), both read from the same polls. {} runs, each with fresh replicas, Envoy and key prefix.\n",
            runs.len()
        );
        let _ = writeln!(
            out,
            "| from the kill | min | p50 | p99 | max | target p99 ≤ 3 s |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
        for (what, times) in [
            ("→ the new leader decides (ms)", &deciding),
            ("→ the Envoy is served by the follower (ms)", &served),
        ] {
            let p99 = quantile(times, 0.99);
            let _ = writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {} |",
                ms(quantile(times, 0.0)),
                ms(quantile(times, 0.5)),
                ms(p99),
                ms(times.last().copied().unwrap_or_default()),
                verdict(p99)
            );
        }
        let _ = writeln!(
            out,
            "\nThe lease expires at most one TTL (2 s) after the leader's last renewal; etcd then deletes its election key and the follower's campaign returns. p99 is by nearest rank: with {} samples it is the largest. Every run: {}.\n",
            runs.len(),
            runs.iter()
                .map(|r| format!("{}/{}", ms(r.deciding), ms(r.served)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    fn load_section(out: &mut String, load: &Load) {
        let _ = writeln!(out, "### etcd's load\n");
        let _ = writeln!(
            out,
            "One leader with {} rollouts progressing (each holding its first step: no traffic), etcd's own counters (`/metrics`) over {:.1} s of steady state, then over {} operator decisions (`pause` on each rollout; the steady rate over the burst subtracted). Bytes received count every gRPC message etcd got: the saves, the lease's renewals and the registry's reads.\n",
            load.rollouts,
            load.steady.as_secs_f64(),
            load.decisions
        );
        let _ = writeln!(out, "| counter | per second, steady | per decision |");
        let _ = writeln!(out, "|---|---:|---:|");
        for (name, rate) in &load.steady_rates {
            let per = load.per_decision.get(name).copied().unwrap_or(0.0);
            let _ = writeln!(out, "| `{name}` | {rate:.2} | {per:.1} |");
        }
        let _ = writeln!(
            out,
            "\nSizes of the keys a save writes (bytes, after the decisions; `decisions/…` is the newest batch, one decision with its evidence):\n"
        );
        let _ = writeln!(out, "| key | bytes |");
        let _ = writeln!(out, "|---|---:|");
        for (key, bytes) in &load.key_bytes {
            let _ = writeln!(out, "| `{key}` | {bytes} |");
        }
        out.push('\n');
    }
}
