//! What the benchmark reads from `/proc`: a process's memory and CPU time, and
//! a description of the machine.

use std::path::Path;
use std::process::Command;

/// A value in kB from `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
pub(crate) fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field_kb(&status, key).ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))
}

fn status_field_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != key {
            return None;
        }
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The CPU time `pid` has used so far, in nanoseconds: the sum over its
/// threads of `/proc/<pid>/task/<tid>/schedstat`'s first field (`None` where
/// the kernel does not keep it). Threads that ended are not counted, which
/// for the servers measured here (a fixed tokio pool) loses nothing.
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between listing and reading: it then counts nothing.
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// The CPU time the calling thread has used so far, in nanoseconds
/// (`/proc/thread-self/schedstat`), `None` where the kernel does not keep it.
pub(crate) fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine the numbers come from.
#[derive(Clone, Debug)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) envoy: String,
}

impl Machine {
    pub(crate) fn describe(envoy: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let envoy = Command::new(envoy)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| {
                text.split_once("version:")
                    .map(|(_, version)| version.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
            envoy,
        }
    }
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` shows them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The current time in UTC, as `date -u` prints it.
pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kb() {
        let status = "Name:\tweir\nVmRSSX:\t1 kB\nVmRSS:\t  51234 kB\nVmHWM:\t60000 kB\n";
        assert_eq!(status_field_kb(status, "VmRSS"), Some(51_234));
        assert_eq!(status_field_kb(status, "VmHWM"), Some(60_000));
        assert_eq!(status_field_kb(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let pid = std::process::id();
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
        assert!(cpu_ns(pid).is_some());
        let before = thread_cpu_ns().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::black_box(0);
        }
        assert!(thread_cpu_ns().unwrap() > before);
    }
}
