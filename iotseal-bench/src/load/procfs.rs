//! CPU time, resident memory and open files of other processes, from Linux's `/proc` (the
//! gateway under load runs in its own process). Everything returns `None`/empty where `/proc`
//! is not there.

use std::path::Path;

/// One sample of a set of processes (summed: nginx runs a master and workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time, in clock ticks (see [`clock_ticks_per_sec`]).
    pub cpu_ticks: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
}

/// Reads `(type, value)` pairs of this process's auxiliary vector.
fn auxv(kind: u64) -> Option<u64> {
    let b = std::fs::read("/proc/self/auxv").ok()?;
    b.chunks_exact(16).find_map(|c| {
        let k = u64::from_ne_bytes(c[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(c[8..].try_into().ok()?);
        (k == kind).then_some(v)
    })
}

/// Clock ticks per second (`AT_CLKTCK`; 100 on every common Linux).
pub fn clock_ticks_per_sec() -> u64 {
    auxv(17).filter(|&v| v > 0).unwrap_or(100)
}

/// The page size (`AT_PAGESZ`).
pub fn page_size() -> u64 {
    auxv(6).filter(|&v| v > 0).unwrap_or(4096)
}

/// Samples one process; `None` if it is gone.
pub fn sample_pid(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_bytes: pages * page_size(),
        fds,
    })
}

/// Samples several processes and sums them (processes that are gone count zero).
pub fn sample(pids: &[u32]) -> Option<ProcSample> {
    let mut total = ProcSample::default();
    let mut any = false;
    for &p in pids {
        if let Some(s) = sample_pid(p) {
            any = true;
            total.cpu_ticks += s.cpu_ticks;
            total.rss_bytes += s.rss_bytes;
            total.fds += s.fds;
        }
    }
    any.then_some(total)
}

/// This process.
pub fn sample_self() -> Option<ProcSample> {
    sample_pid(std::process::id())
}

/// Socket inodes listening on `port` (TCP over IPv4 or IPv6, any address).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some(p) = local.rsplit(':').next() else {
                continue;
            };
            if *state == "0A"
                && u16::from_str_radix(p, 16) == Ok(port)
                && let Ok(i) = inode.parse::<u64>()
                && i != 0
            {
                out.push(i);
            }
        }
    }
    out
}

/// The processes holding a socket that listens on `port` (found through `/proc/net/tcp*`
/// and every process's `/proc/PID/fd`; processes of other users may not be visible).
pub fn pids_listening_on(port: u16) -> Vec<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(|s| wanted.iter().any(|w| w == s)))
                .unwrap_or(false)
        });
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = sample_self().unwrap();
        assert!(s.rss_bytes > 0);
        assert!(s.fds > 0);
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn finds_the_listener_of_a_port() {
        if !Path::new("/proc/net/tcp").exists() {
            return;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!listening_inodes(port).is_empty());
        // This process is skipped on purpose (the load generator never measures itself).
        assert!(pids_listening_on(port).is_empty());
    }
}
