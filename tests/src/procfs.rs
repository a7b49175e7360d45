//! What the benchmarks read from `/proc`: a process's CPU time and memory,
//! and a description of the machine.

use std::path::Path;
use std::process::Command;

/// A process's CPU time so far, two ways.
#[derive(Clone, Copy, Debug)]
pub struct CpuTime {
    /// `utime + stime` from `/proc/<pid>/stat`, in clock ticks.
    pub ticks: u64,
    /// The sum over the process's threads of the run time in
    /// `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds (`None` where the
    /// kernel does not keep it). A cross-check with finer resolution.
    pub sched_ns: Option<u64>,
}

impl CpuTime {
    /// Reads the CPU time `pid` has used so far.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(Self {
            ticks: stat_ticks(&stat)?,
            sched_ns: cpu_ns(pid),
        })
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow::anyhow!("malformed /proc stat line: {stat}"))?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("short /proc stat line: {stat}"))?
            .parse()?)
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100, the value on every Linux
/// system Weir runs on, if `getconf` cannot be run.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// The CPU time `pid` has used so far, in nanoseconds: the sum over its
/// threads of `/proc/<pid>/task/<tid>/schedstat`'s first field (`None` where
/// the kernel does not keep it). Threads that ended are not counted, which
/// for the servers measured here (a fixed tokio pool) loses nothing.
pub fn cpu_ns(pid: u32) -> Option<u64> {
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
pub fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A value in kB from `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
pub fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
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

/// The machine the numbers come from, for a report's header.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPUs available to this process (what `nproc` prints).
    pub cpus: usize,
    /// The CPU's `model name` in `/proc/cpuinfo`, or `unknown`.
    pub cpu_model: String,
    /// The kernel release (`/proc/sys/kernel/osrelease`), or `unknown`.
    pub kernel: String,
    /// What `envoy --version` prints after `version:`, or `unknown`.
    pub envoy: String,
    /// This process's limit on open files, `soft / hard`, from
    /// `/proc/self/limits`, or `unknown`.
    pub open_files: String,
}

impl Machine {
    /// Describes this machine, with the version of the Envoy binary at `envoy`.
    pub fn describe(envoy: &Path) -> Self {
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
        let open_files = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                limits
                    .lines()
                    .find(|line| line.starts_with("Max open files"))
                    .map(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields[3..fields.len().min(5)].join(" / ")
                    })
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
            envoy,
            open_files,
        }
    }
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` shows them.
pub fn load_average() -> String {
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
pub fn utc_now() -> String {
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
    fn stat_ticks_count_fields_after_the_command_name() {
        let line = "4242 (envoy (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 9 0 100 1000 200 18446744073709551615";
        assert_eq!(stat_ticks(line).unwrap(), 1234 + 567);
        assert!(stat_ticks("garbage").is_err());
    }

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
        assert!(CpuTime::of(pid).is_ok());
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
