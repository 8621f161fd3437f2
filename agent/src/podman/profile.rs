//! Security profiles (SPEC "Security profiles") as `podman create` flags, and
//! the worker's floor. This table is the one place a profile gains meaning:
//!
//! | profile  | network         | capabilities      | root fs                      | memory | CPUs | PIDs      |
//! |----------|-----------------|-------------------|------------------------------|--------|------|-----------|
//! | open     | `host`          | Podman's defaults | writable                     | 4g     | -    | unlimited |
//! | standard | `none` + gate    | `--cap-drop ALL`  | writable                     | 4g     | 2    | 256       |
//! | strict   | `none` + gate    | `--cap-drop ALL`  | `--read-only`, tmpfs `/tmp`  | 2g     | 1    | 128       |
//! | offline  | `none`          | `--cap-drop ALL`  | `--read-only`, tmpfs `/tmp`  | 2g     | 1    | 128       |
//!
//! Every profile but Open also sets `--security-opt no-new-privileges`.
//!
//! * The `/workspace` bind mount stays **writable** under every profile: it is
//!   where the task's repository and output live. Read-only applies to the
//!   image's root filesystem; `/tmp` is a tmpfs for scratch.
//! * Standard and Strict reach only the domains on their allow-list: no
//!   network but `lo`, and the agent's egress gate as the one way out
//!   (`crate::egress`, which adds its mounts, environment and entrypoint
//!   to the create).
//! * Offline containers get no network interface but `lo`, and
//!   `container.setup` refuses a repository token for them (secrets are not
//!   injected).
//! * `--cpus` is a CFS quota (cgroup v1 `cpu.cfs_quota_us`, v2 `cpu.max`).
//!   Measured on the development host (cgroup v1, runc, Podman 4.3.1) it is
//!   applied (quota 100000/period 100000 for one CPU). Where a kernel lacks
//!   CFS bandwidth control Podman refuses the create; the agent then answers
//!   `engine_failed` with Podman's message rather than dropping the limit.
//! * Open asks for `--pids-limit -1` (no limit) so it is not capped by
//!   Podman's default of 2048.

use protocol::container::Profile;

/// The `podman create` flags of `profile`, in a fixed order.
pub fn flags(profile: Profile) -> Vec<String> {
    let words: &[&str] = match profile {
        Profile::Open => &["--network", "host", "--memory", "4g", "--pids-limit", "-1"],
        Profile::Standard => &[
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            "4g",
            "--cpus",
            "2",
            "--pids-limit",
            "256",
        ],
        Profile::Strict => &[
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--memory",
            "2g",
            "--cpus",
            "1",
            "--pids-limit",
            "128",
        ],
        Profile::Offline => &[
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--memory",
            "2g",
            "--cpus",
            "1",
            "--pids-limit",
            "128",
        ],
    };
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The label value of `profile` (`open`, `standard` …).
pub fn name(profile: Profile) -> &'static str {
    match profile {
        Profile::Open => "open",
        Profile::Standard => "standard",
        Profile::Strict => "strict",
        Profile::Offline => "offline",
    }
}

/// Parse a profile name as the CLI takes it (`--security-floor strict`).
pub fn parse(s: &str) -> Result<Profile, String> {
    super::parse::parse_profile(s)
        .ok_or_else(|| format!("profile must be open, standard, strict or offline, not {s:?}"))
}

/// Whether a worker whose floor is `floor` may run `profile`: profiles are
/// ordered weakest (Open) to strongest (Offline).
pub fn allowed(profile: Profile, floor: Profile) -> bool {
    profile >= floor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_is_read_only_with_scratch_and_small_limits() {
        let f = flags(Profile::Strict).join(" ");
        assert_eq!(
            f,
            "--network none --cap-drop ALL --security-opt no-new-privileges --read-only \
             --tmpfs /tmp --memory 2g --cpus 1 --pids-limit 128"
        );
    }

    #[test]
    fn each_profile_has_its_network_and_limits() {
        let has = |p, w: &str| flags(p).join(" ").contains(w);
        assert!(has(Profile::Open, "--network host") && !has(Profile::Open, "--cap-drop"));
        assert!(!has(Profile::Open, "--cpus"));
        assert!(has(Profile::Standard, "--network none") && has(Profile::Standard, "--cpus 2"));
        assert!(
            has(Profile::Standard, "--pids-limit 256") && !has(Profile::Standard, "--read-only")
        );
        assert!(has(Profile::Offline, "--network none") && has(Profile::Offline, "--read-only"));
        for p in [Profile::Standard, Profile::Strict, Profile::Offline] {
            assert!(
                has(p, "--cap-drop ALL --security-opt no-new-privileges"),
                "{p:?}"
            );
        }
    }

    #[test]
    fn the_floor_refuses_weaker_profiles() {
        assert!(allowed(Profile::Strict, Profile::Standard));
        assert!(allowed(Profile::Standard, Profile::Standard));
        assert!(!allowed(Profile::Open, Profile::Standard));
        assert!(!allowed(Profile::Strict, Profile::Offline));
        assert_eq!(parse("strict"), Ok(Profile::Strict));
        assert!(parse("paranoid").is_err());
        for p in [
            Profile::Open,
            Profile::Standard,
            Profile::Strict,
            Profile::Offline,
        ] {
            assert_eq!(parse(name(p)), Ok(p));
        }
    }
}
