//! A process's memory, read from `/proc` (Linux).

/// Resident and peak resident memory of this process, in bytes (Linux).
pub fn memory() -> (u64, u64) {
    process_memory("self")
}

/// Resident and peak resident memory (VmRSS, VmHWM) of a process (`self` or a pid),
/// in bytes (Linux).
pub fn process_memory(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
