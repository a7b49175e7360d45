//! The wasm linear memories V8 holds in a process, read from
//! `/proc/<pid>/smaps`. What the benchmark reads elsewhere from `/proc` is in
//! [`weir_testbed::procfs`].

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
