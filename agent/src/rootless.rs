//! What rootless Podman cannot do on this host, found once at start-up and
//! reported in `worker.register` (`rootless`, `limitations`), so the
//! orchestrator shows it per worker instead of a limit silently not
//! holding. The doctor prints the same findings with their fixes: this is
//! the one place that reads cgroups for both.
//!
//! * Rootless: the agent's effective user is not root, so the Podman it
//!   drives is that user's rootless Podman (its own storage, containers
//!   in a user namespace where container root is the user).
//! * cgroup v1 (no `cgroup.controllers` at the cgroup root): rootless
//!   Podman ignores every resource limit ("Resource limits are not
//!   supported and ignored on cgroups V1 rootless systems": the profiles'
//!   memory, CPU and PIDs limits do not hold) and cannot measure a
//!   container (`podman stats`: "not supported in rootless mode without
//!   cgroups v2"), so a container's CPU and memory use is unavailable.
//! * cgroup v2: a limit holds only when its controller (memory, cpu,
//!   pids) is delegated to the user's systemd service
//!   (`user@UID.service`'s `cgroup.controllers`); each missing one is a
//!   limit ignored.
//!
//! As root none of this applies: every limit holds, stats work.

use std::path::Path;

/// Where the cgroup hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The controllers the profiles' limits need: memory (`--memory`), cpu
/// (`--cpus`) and pids (`--pids-limit`).
pub const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The cgroup hierarchy as a user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    V1,
    /// v2; `missing`: the [`CONTROLLERS`] not delegated to the user (none
    /// for root, who needs no delegation).
    V2 {
        missing: Vec<&'static str>,
    },
}

/// One thing this host's Podman cannot do for a rootless agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limitation {
    /// Rootless on cgroup v1: no resource limit holds.
    LimitsIgnored,
    /// Rootless on cgroup v2 without these controllers delegated.
    NotDelegated(Vec<&'static str>),
    /// Rootless on cgroup v1: `podman stats` does not work.
    NoStats,
}

impl std::fmt::Display for Limitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LimitsIgnored => {
                f.write_str("memory, CPU and PIDs limits are ignored: rootless Podman on cgroup v1")
            }
            Self::NotDelegated(missing) => write!(
                f,
                "{} limits are ignored: cgroup v2 controllers not delegated to this user",
                missing.join(", ")
            ),
            Self::NoStats => f.write_str(
                "container CPU and memory use is unavailable: rootless Podman on cgroup v1",
            ),
        }
    }
}

/// Whether the agent is rootless, and what that costs on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub rootless: bool,
    pub limitations: Vec<Limitation>,
}

impl Report {
    /// This process on this host.
    pub fn detect() -> Self {
        Self::at(uid(), Path::new(CGROUP_ROOT))
    }

    /// User `uid` with the cgroup hierarchy at `root`.
    pub fn at(uid: u32, root: &Path) -> Self {
        if uid == 0 {
            return Self::default();
        }
        let limitations = match cgroups(uid, root) {
            Cgroups::V1 => vec![Limitation::LimitsIgnored, Limitation::NoStats],
            Cgroups::V2 { missing } if missing.is_empty() => Vec::new(),
            Cgroups::V2 { missing } => vec![Limitation::NotDelegated(missing)],
        };
        Self {
            rootless: true,
            limitations,
        }
    }

    /// Whether `podman stats` can measure containers here.
    pub fn has_stats(&self) -> bool {
        !self.limitations.contains(&Limitation::NoStats)
    }

    /// The limitations as `worker.register` carries them.
    pub fn sentences(&self) -> Vec<String> {
        self.limitations.iter().map(ToString::to_string).collect()
    }
}

/// This process's effective user id (the owner of `/proc/self`); 0 when
/// unknown.
pub fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// The hierarchy under `root` (normally [`CGROUP_ROOT`]) as user `uid`
/// sees it: on v2, which [`CONTROLLERS`] its `user@UID.service` lacks.
pub fn cgroups(uid: u32, root: &Path) -> Cgroups {
    if !root.join("cgroup.controllers").exists() {
        return Cgroups::V1;
    }
    if uid == 0 {
        return Cgroups::V2 {
            missing: Vec::new(),
        };
    }
    let service = root.join(format!(
        "user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    ));
    let delegated = std::fs::read_to_string(service).unwrap_or_default();
    let missing = CONTROLLERS
        .into_iter()
        .filter(|c| !delegated.split_whitespace().any(|d| d == *c))
        .collect();
    Cgroups::V2 { missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cgroup root in a scratch directory: v1, or v2 with `delegated`
    /// given to user 1000.
    fn root(name: &str, v2: Option<&str>) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("crops-cg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let service = dir.join("user.slice/user-1000.slice/user@1000.service");
        std::fs::create_dir_all(&service).unwrap();
        if let Some(delegated) = v2 {
            std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids io").unwrap();
            std::fs::write(service.join("cgroup.controllers"), delegated).unwrap();
        }
        dir
    }

    #[test]
    fn root_has_no_limitations_anywhere() {
        for (name, v2) in [("r1", None), ("r2", Some(""))] {
            let dir = root(name, v2);
            assert_eq!(Report::at(0, &dir), Report::default());
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn rootless_on_v1_ignores_limits_and_has_no_stats() {
        let dir = root("v1", None);
        let r = Report::at(1000, &dir);
        assert!(r.rootless && !r.has_stats());
        assert_eq!(
            r.sentences(),
            [
                "memory, CPU and PIDs limits are ignored: rootless Podman on cgroup v1",
                "container CPU and memory use is unavailable: rootless Podman on cgroup v1",
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rootless_on_v2_names_what_is_not_delegated() {
        let dir = root("v2", Some("cpuset cpu io memory pids\n"));
        let r = Report::at(1000, &dir);
        assert!(r.rootless && r.has_stats() && r.limitations.is_empty());
        std::fs::remove_dir_all(dir).unwrap();

        let dir = root("v2-part", Some("cpu io\n"));
        let r = Report::at(1000, &dir);
        assert_eq!(
            r.limitations,
            [Limitation::NotDelegated(vec!["memory", "pids"])]
        );
        assert_eq!(
            r.sentences()[0],
            "memory, pids limits are ignored: cgroup v2 controllers not delegated to this user"
        );
        assert!(r.has_stats());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
