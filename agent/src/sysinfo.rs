//! What the machine is and how busy it is: `/proc/meminfo`, `/proc/stat`,
//! `statvfs`, the hostname and the CPU count. Pure parsers plus thin readers.

use std::path::{Path, PathBuf};

/// Why a system fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SysinfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no usable {field} line")]
    MissingField { path: PathBuf, field: &'static str },
    #[error("statvfs of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("gethostname: {0}")]
    Hostname(#[source] nix::Error),
}

const MEMINFO: &str = "/proc/meminfo";
const STAT: &str = "/proc/stat";

/// Memory totals from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable` (what new work can use without swapping), at most `total`.
    pub available: u64,
}

/// Parse `/proc/meminfo` text. `None` when `MemTotal` is missing; a kernel
/// too old for `MemAvailable` (before 3.14) falls back to `MemFree`.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let unit = parts.next().unwrap_or("");
            let scale = if unit.eq_ignore_ascii_case("kb") {
                1024
            } else {
                1
            };
            value.checked_mul(scale)
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")
        .or_else(|| field("MemFree"))
        .unwrap_or(0);
    Some(Memory {
        total,
        available: available.min(total),
    })
}

/// Read and parse `/proc/meminfo`.
pub fn memory() -> Result<Memory, SysinfoError> {
    let text = read(MEMINFO)?;
    parse_meminfo(&text).ok_or(SysinfoError::MissingField {
        path: MEMINFO.into(),
        field: "MemTotal",
    })
}

/// Cumulative CPU time counters of the aggregate `cpu` line of `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// `idle + iowait`.
    pub idle: u64,
    /// Sum of every counter except guest time (already inside `user`/`nice`).
    pub total: u64,
}

impl CpuTimes {
    /// Whole-machine CPU use between `earlier` and `self`, 0-100.
    /// Zero when no time passed (or the counters went backwards).
    pub fn usage_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        let idle = self.idle.saturating_sub(earlier.idle).min(total);
        if total == 0 {
            return 0.0;
        }
        let busy = (total - idle) as f64 / total as f64 * 100.0;
        busy.clamp(0.0, 100.0)
    }
}

/// Parse the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal guest guest_nice
    if values.len() < 4 {
        return None;
    }
    let idle = values[3].saturating_add(values.get(4).copied().unwrap_or(0));
    let total = values
        .iter()
        .take(8)
        .fold(0u64, |a, v| a.saturating_add(*v));
    Some(CpuTimes { idle, total })
}

/// Read and parse `/proc/stat`.
pub fn cpu_times() -> Result<CpuTimes, SysinfoError> {
    let text = read(STAT)?;
    parse_stat(&text).ok_or(SysinfoError::MissingField {
        path: STAT.into(),
        field: "cpu",
    })
}

/// Tracks CPU use between successive samples.
#[derive(Debug, Clone)]
pub struct CpuSampler {
    last: Option<CpuTimes>,
}

impl CpuSampler {
    /// A sampler whose first [`sample`](Self::sample) measures from now.
    pub fn start() -> Self {
        let last = cpu_times()
            .inspect_err(|e| tracing::debug!(error = %e, "cannot read CPU times"))
            .ok();
        Self { last }
    }

    /// CPU use since the previous sample, 0-100; 0 when `/proc/stat` is unreadable.
    pub fn sample(&mut self) -> f64 {
        match cpu_times() {
            Ok(now) => {
                let usage = self.last.map_or(0.0, |last| now.usage_since(&last));
                self.last = Some(now);
                usage
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read CPU times");
                0.0
            }
        }
    }
}

/// Size and free space of the filesystem holding `path`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub total: u64,
    /// Space available to unprivileged users (`f_bavail`), at most `total`.
    pub free: u64,
}

/// `statvfs(path)`.
// The statvfs field types are 32-bit on some targets (armv7), 64-bit on others.
#[allow(clippy::useless_conversion)]
pub fn disk(path: &Path) -> Result<Disk, SysinfoError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| SysinfoError::Statvfs {
        path: path.to_owned(),
        source,
    })?;
    let unit = u64::from(st.fragment_size());
    let total = u64::from(st.blocks()).saturating_mul(unit);
    let free = u64::from(st.blocks_available()).saturating_mul(unit);
    Ok(Disk {
        total,
        free: free.min(total),
    })
}

/// The system hostname, lossily decoded.
pub fn hostname() -> Result<String, SysinfoError> {
    let name = nix::unistd::gethostname().map_err(SysinfoError::Hostname)?;
    Ok(name.to_string_lossy().into_owned())
}

/// CPU cores available to this process (at least 1).
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

fn read(path: &str) -> Result<String, SysinfoError> {
    std::fs::read_to_string(path).map_err(|source| SysinfoError::Read {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_SAMPLE: &str = "MemTotal:        8049100 kB\n\
        MemFree:          412340 kB\n\
        MemAvailable:    5123456 kB\n\
        Buffers:          123456 kB\n\
        HugePages_Total:       0\n";

    #[test]
    fn meminfo_reads_total_and_available_in_bytes() {
        let m = parse_meminfo(MEMINFO_SAMPLE).unwrap();
        assert_eq!(m.total, 8_049_100 * 1024);
        assert_eq!(m.available, 5_123_456 * 1024);
    }

    #[test]
    fn meminfo_without_available_falls_back_to_free() {
        let m = parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n").unwrap();
        assert_eq!(m.available, 10 * 1024);
    }

    #[test]
    fn meminfo_without_total_or_with_garbage_is_none() {
        assert_eq!(parse_meminfo("MemFree: 10 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo(""), None);
        // A prefix of another field's name must not match.
        assert_eq!(parse_meminfo("MemTotalX: 5 kB\n"), None);
    }

    const STAT_A: &str = "cpu  100 0 50 800 50 0 0 0 0 0\n\
        cpu0 50 0 25 400 25 0 0 0 0 0\n\
        intr 12345\n";
    const STAT_B: &str = "cpu  200 0 100 1500 100 0 0 0 0 0\n";

    #[test]
    fn stat_reads_the_aggregate_line() {
        let t = parse_stat(STAT_A).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                idle: 850,
                total: 1000
            }
        );
    }

    #[test]
    fn usage_is_the_busy_share_of_the_delta() {
        let a = parse_stat(STAT_A).unwrap();
        let b = parse_stat(STAT_B).unwrap();
        // delta total 900, delta idle 750 -> 150/900 busy.
        let usage = b.usage_since(&a);
        assert!((usage - 100.0 * 150.0 / 900.0).abs() < 1e-9, "{usage}");
        assert_eq!(a.usage_since(&a), 0.0);
        assert_eq!(
            a.usage_since(&b),
            0.0,
            "counters going backwards read as idle"
        );
    }

    #[test]
    fn stat_rejects_short_or_garbled_lines() {
        assert_eq!(parse_stat("cpu  1 2\n"), None);
        assert_eq!(parse_stat("cpu  1 2 x 4\n"), None);
        assert_eq!(parse_stat("intr 1\n"), None);
    }

    #[test]
    fn this_machine_reports_plausible_values() {
        let m = memory().unwrap();
        assert!(m.total > 0 && m.available <= m.total);
        assert!(cpu_count() >= 1);
        assert!(!hostname().unwrap().is_empty());
        let d = disk(Path::new("/")).unwrap();
        assert!(d.total > 0 && d.free <= d.total);
        let mut s = CpuSampler::start();
        let u = s.sample();
        assert!((0.0..=100.0).contains(&u));
    }
}
