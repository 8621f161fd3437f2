//! The constraint filters every stock placement policy applies first: a
//! worker failing one is infeasible, with the first failing rule as reason.
//!
//! Rules, in order: pinned worker, online, not drained, not cordoned, byom
//! only for its own tenant, platform (none asked means `linux`), arch,
//! region, security floor, local image present. Memory is not a filter:
//! a profile's memory is a cap the container may grow to, not a
//! reservation (Podman reserves nothing), so it only weighs in scores.

use crate::{Mode, Request, Worker};

/// The prefix of image references that exist only where they were built.
pub const LOCAL_IMAGE_PREFIX: &str = "localhost/";

/// Why `worker` cannot take `req`, or `None` when it can.
pub fn reject(req: &Request, worker: &Worker) -> Option<String> {
    if let Some(pinned) = &req.pinned_worker {
        if !same(pinned, worker.id) {
            return Some(format!("not the pinned worker {pinned}"));
        }
    }
    if !worker.online {
        return Some("offline".into());
    }
    if worker.drained {
        return Some("drained".into());
    }
    if worker.cordoned {
        return Some("cordoned".into());
    }
    if worker.mode == Mode::Byom && !same(worker.tenant_id, &req.tenant_id) {
        return Some("a self-hosted worker of another tenant".into());
    }
    let platform = req.platform.as_deref().unwrap_or("linux");
    if !same(worker.platform, platform) {
        return Some(format!(
            "platform {} (needs {platform})",
            shown(worker.platform)
        ));
    }
    if let Some(arch) = &req.arch {
        if !same(worker.arch, arch) {
            return Some(format!("arch {} (needs {arch})", shown(worker.arch)));
        }
    }
    if let Some(region) = &req.region {
        if !same(worker.region, region) {
            return Some(format!("region {} (needs {region})", shown(worker.region)));
        }
    }
    if req.profile < worker.security_floor {
        return Some(format!(
            "security floor {} rejects profile {}",
            worker.security_floor.name(),
            req.profile.name()
        ));
    }
    if req.image.starts_with(LOCAL_IMAGE_PREFIX) && !worker.images.contains(&req.image) {
        return Some(format!("local image {} is not on this worker", req.image));
    }
    None
}

/// `a == b`, inline: in WebAssembly `memcmp` is a byte-at-a-time loop
/// behind a call, and every worker compares a few short strings.
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    }
    fn half(s: &[u8], at: usize) -> u32 {
        let mut w = [0; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            // Whole words, then the last (overlapping) one.
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

fn shown(value: &str) -> &str {
    if value.is_empty() {
        "unknown"
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{request, worker};
    use crate::Profile;

    fn check(req: &Request, w: &Worker, expect: Option<&str>) {
        let got = reject(req, w);
        match (got.as_deref(), expect) {
            (None, None) => {}
            (Some(got), Some(want)) if got.contains(want) => {}
            (got, want) => panic!("worker {}: got {got:?}, want {want:?}", w.id),
        }
    }

    #[test]
    fn same_is_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "linux",
            "x86_64",
            "aarch64",
            "eu-west-1",
        ];
        let long = "0b4f6a0e-3c1d-4e2a-9f00-000000000042";
        for a in words.iter().chain([&long]) {
            for b in words.iter().chain([&long]) {
                assert_eq!(same(a, b), a == b, "{a:?} {b:?}");
            }
            for i in 0..a.len() {
                let mut c = a.as_bytes().to_vec();
                c[i] ^= 1;
                let c = String::from_utf8(c).expect("ASCII stays UTF-8");
                assert!(!same(a, &c), "{a:?} at {i}");
            }
        }
    }

    #[test]
    fn a_plain_fleet_worker_fits() {
        check(&request("t"), &worker("w"), None);
    }

    #[test]
    fn state_flags_exclude() {
        let req = request("t");
        let mut w = worker("w");
        w.online = false;
        check(&req, &w, Some("offline"));
        w.online = true;
        w.drained = true;
        check(&req, &w, Some("drained"));
        w.drained = false;
        w.cordoned = true;
        check(&req, &w, Some("cordoned"));
    }

    #[test]
    fn byom_serves_only_its_tenant() {
        let mut w = worker("w");
        w.mode = Mode::Byom;
        w.tenant_id = "a";
        check(&request("a"), &w, None);
        check(&request("b"), &w, Some("another tenant"));
    }

    #[test]
    fn pinned_platform_arch_region() {
        let mut req = request("t");
        req.pinned_worker = Some("other".into());
        check(&req, &worker("w"), Some("pinned"));
        let mut req = request("t");
        req.platform = Some("windows".into());
        check(&req, &worker("w"), Some("needs windows"));
        let mut req = request("t");
        req.arch = Some("aarch64".into());
        check(&req, &worker("w"), Some("needs aarch64"));
        let mut req = request("t");
        req.region = Some("us".into());
        check(&req, &worker("w"), Some("needs us"));
        let mut w = worker("w");
        w.platform = "";
        check(&request("t"), &w, Some("platform unknown"));
    }

    #[test]
    fn floor_and_image_but_not_memory() {
        let mut w = worker("w");
        w.security_floor = Profile::Strict;
        check(
            &request("t"),
            &w,
            Some("floor strict rejects profile standard"),
        );
        let mut req = request("t");
        req.profile = Profile::Offline;
        check(&req, &w, None);

        let mut req = request("t");
        req.image = "localhost/mine:1".into();
        let mut w = worker("w");
        check(&req, &w, Some("not on this worker"));
        w.images = crate::packed::Strs::plain(&["localhost/mine:1"]);
        check(&req, &w, None);

        let mut w = worker("w");
        w.memory_free = 1;
        check(&request("t"), &w, None);
    }
}
