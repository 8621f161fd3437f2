//! The caps on unauthenticated connections and the first-request deadline,
//! and their defaults from the open-files limit.

use std::time::Duration;

/// How many unauthenticated connections the listener keeps, and how long a
/// new one may take to send its first request (`ServeConfig::connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Unauthenticated connections in all (at least 1).
    pub unauthenticated: usize,
    /// Unauthenticated connections from one source (at least 1).
    pub unauthenticated_per_source: usize,
    /// From accept to the first request's headers, TLS included.
    pub first_request: Duration,
}

impl ConnectionLimits {
    /// How long a new connection may take to send its first request.
    pub const DEFAULT_FIRST_REQUEST: Duration = Duration::from_secs(10);

    /// The defaults for a process allowed `open_files` descriptors: a
    /// quarter of them (at least 16, at most 4,096) unauthenticated, a
    /// quarter of that per source (at least 4).
    pub fn for_open_files(open_files: u64) -> Self {
        let total = usize::try_from(open_files / 4)
            .unwrap_or(usize::MAX)
            .clamp(16, 4096);
        Self {
            unauthenticated: total,
            unauthenticated_per_source: (total / 4).max(4),
            first_request: Self::DEFAULT_FIRST_REQUEST,
        }
    }

    /// Whether serve can use these: both caps at least 1, the deadline at
    /// least a second.
    pub fn is_valid(&self) -> bool {
        self.unauthenticated >= 1
            && self.unauthenticated_per_source >= 1
            && self.first_request >= Duration::from_secs(1)
    }

    /// The defaults for this process's soft open-files limit
    /// (`RLIMIT_NOFILE`; 1,024 when it cannot be read).
    pub fn from_open_files_limit() -> Self {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a live local that getrlimit only writes.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        Self::for_open_files(if read { limit.rlim_cur } else { 1024 })
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::from_open_files_limit()
    }
}
