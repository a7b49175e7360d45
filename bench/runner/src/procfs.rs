//! What the benchmark reads from `/proc`: a process's CPU time and memory,
//! and a description of the machine.

use std::path::Path;
use std::process::Command;

/// A process's CPU time so far, two ways.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuTime {
    /// `utime + stime` from `/proc/<pid>/stat`, in clock ticks.
    pub(crate) ticks: u64,
    /// The sum over the process's threads of the run time in
    /// `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds (`None` where the
    /// kernel does not keep it). A cross-check with finer resolution.
    pub(crate) sched_ns: Option<u64>,
}

impl CpuTime {
    /// Reads the CPU time `pid` has used so far.
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(Self {
            ticks: stat_ticks(&stat)?,
            sched_ns: sched_ns(pid),
        })
    }
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
pub(crate) fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
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

fn sched_ns(pid: u32) -> Option<u64> {
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

/// Clock ticks per second (`getconf CLK_TCK`); 100, the value on every Linux
/// system Weir runs on, if `getconf` cannot be run.
pub(crate) fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// A value in kB from `/proc/<pid>/status`, such as `VmRSS`.
pub(crate) fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_field_kb(&status, key).ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))
}

fn status_field_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The wasm linear memories V8 holds in a process, as `/proc/<pid>/smaps` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WasmMemory {
    /// Wasm memories found (one per VM instance).
    pub(crate) memories: usize,
    /// Their committed size together, in kB: what the modules have grown into.
    pub(crate) size_kb: u64,
    /// How much of it is resident, in kB.
    pub(crate) rss_kb: u64,
}

/// Finds the wasm linear memories in a process.
///
/// V8 reserves the whole 32-bit space of a wasm memory plus guard pages
/// (about 8 GiB of address space, mapped without access) and makes
/// accessible only the part the module has grown into, at the start of the
/// reservation. The kernel then shows that part as a read-write mapping that
/// ends exactly where a large inaccessible one begins.
pub(crate) fn wasm_memory(pid: u32) -> anyhow::Result<WasmMemory> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    Ok(wasm_memory_in(&smaps))
}

/// Inaccessible mappings at least this large are wasm reservations: V8's
/// other reservations (its pointer cage, code ranges) are at most 4 GiB.
const WASM_RESERVATION_KB: u64 = 6 * 1024 * 1024;

fn wasm_memory_in(smaps: &str) -> WasmMemory {
    struct Mapping {
        start: u64,
        end: u64,
        perms: String,
        rss_kb: u64,
    }
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            mappings.push(Mapping {
                start,
                end,
                perms: words.next().unwrap_or("").to_owned(),
                rss_kb: 0,
            });
        } else if first == "Rss:"
            && let Some(last) = mappings.last_mut()
        {
            last.rss_kb = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let mut found = WasmMemory::default();
    for pair in mappings.windows(2) {
        let [memory, reservation] = pair else {
            continue;
        };
        let reserved_kb = (reservation.end - reservation.start) / 1024;
        if reservation.perms.starts_with("---")
            && reserved_kb >= WASM_RESERVATION_KB
            && memory.end == reservation.start
            && memory.perms.starts_with("rw")
        {
            found.memories += 1;
            found.size_kb += (memory.end - memory.start) / 1024;
            found.rss_kb += memory.rss_kb;
        }
    }
    found
}

/// The machine, for the report's header.
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
    fn stat_ticks_count_fields_after_the_command_name() {
        let line = "4242 (envoy (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 567 0 0 20 0 9 0 100 1000 200 18446744073709551615";
        assert_eq!(stat_ticks(line).unwrap(), 1234 + 567);
        assert!(stat_ticks("garbage").is_err());
    }

    #[test]
    fn status_fields_are_read_in_kb() {
        let status = "Name:\tenvoy\nVmRSSX:\t1 kB\nVmRSS:\t  51234 kB\nVmHWM:\t60000 kB\n";
        assert_eq!(status_field_kb(status, "VmRSS"), Some(51_234));
        assert_eq!(status_field_kb(status, "VmHWM"), Some(60_000));
        assert_eq!(status_field_kb(status, "VmSwap"), None);
    }

    #[test]
    fn wasm_memories_are_the_mappings_just_before_a_large_reservation() {
        let smaps = "\
7fb9f3080000-7fb9f3880000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                  20 kB
7fb9f3880000-7fb9f39a0000 rw-p 00000000 00:00 0
Size:               1152 kB
Rss:                  64 kB
7fb9f39a0000-7fbbf3880000 ---p 00000000 00:00 0
Size:            8387456 kB
Rss:                   0 kB
11dc00000000-11dc3da00000 ---p 00000000 00:00 0
Size:            1009664 kB
Rss:                   0 kB
11dc3da00000-11dc40000000 rw-p 00000000 00:00 0
Size:              38912 kB
Rss:               33252 kB
7fbc23880000-7fbc23990000 rw-p 00000000 00:00 0
Size:               1088 kB
Rss:                  56 kB
7fbc23990000-7fbe23880000 ---p 00000000 00:00 0
Size:            8387520 kB
Rss:                   0 kB
";
        assert_eq!(
            wasm_memory_in(smaps),
            WasmMemory {
                memories: 2,
                size_kb: 1152 + 1088,
                rss_kb: 64 + 56
            }
        );
        assert_eq!(wasm_memory_in(""), WasmMemory::default());
    }

    #[test]
    fn our_own_process_can_be_read() {
        let me = std::process::id();
        assert!(CpuTime::of(me).is_ok());
        assert!(status_kb(me, "VmRSS").unwrap() > 0);
    }
}
