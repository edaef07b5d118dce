//! What this machine's memory allows: read from /proc, never assumed.

/// MemAvailable from /proc/meminfo, bytes (`None` where it cannot be read).
/// What a RAM bdev, or `lull perf --verify`'s per-block state, may take.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
