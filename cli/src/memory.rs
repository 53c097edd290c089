//! What a long `latchfree bench` run reports about this process's memory:
//! the resident set (what the OS charges) and the heap in use (what the
//! program still holds). Resident memory also counts pages the allocator
//! keeps after a free (per-thread arenas, fragments), so the two together
//! tell a leak (both grow) from allocator retention (only resident grows).

/// One reading of the process's memory, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Resident set size (`VmRSS` in `/proc/self/status`).
    pub resident: Option<u64>,
    /// Bytes in live allocations, as the allocator counts them.
    pub heap: Option<u64>,
}

impl Sample {
    /// Reads both now.
    pub fn now() -> Self {
        Self {
            resident: resident_bytes(),
            heap: heap_in_use(),
        }
    }
}

/// Formats one field of each sample in MiB, space-separated.
pub fn mib(samples: &[Sample], field: impl Fn(&Sample) -> Option<u64>) -> Option<String> {
    let values: Option<Vec<String>> = samples
        .iter()
        .map(|s| field(s).map(|b| format!("{:.0}", b as f64 / (1024.0 * 1024.0))))
        .collect();
    values.filter(|v| !v.is_empty()).map(|v| v.join(" "))
}

/// This process's resident set size (`None` where there is no procfs).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes in live allocations across all of glibc's arenas, mmapped chunks
/// included.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    // SAFETY: `mallinfo2` (glibc ≥ 2.33) takes no arguments, returns a
    // struct by value and reads the allocator's state under the allocator's
    // own arena locks; it has no precondition for the caller to uphold.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks as u64 + info.hblkhd as u64)
}

/// Not measured where the allocator has no such query.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

/// Hands the allocator's free pages back to the OS (glibc `malloc_trim`, all
/// arenas), so that resident memory afterwards is what is still in use plus
/// fragments. A no-op elsewhere.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes a byte count to keep at the top of the main
    // heap (any value is valid) and works under the allocator's own locks; it
    // frees nothing that is allocated, so no pointer the program holds is
    // invalidated.
    unsafe {
        libc::malloc_trim(0);
    }
}
