//! Resident memory of this process, for the memory-per-session estimate.

/// Page size assumed for `/proc/self/statm` (4 KiB on x86-64 and the usual aarch64 kernels).
pub const PAGE_SIZE: u64 = 4096;

/// Resident set size in bytes from `/proc/self/statm`; `None` where there is no procfs.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}
