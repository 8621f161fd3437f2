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
        if pinned != worker.id {
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
    if worker.mode == Mode::Byom && worker.tenant_id != req.tenant_id {
        return Some("a self-hosted worker of another tenant".into());
    }
    let platform = req.platform.as_deref().unwrap_or("linux");
    if worker.platform != platform {
        return Some(format!(
            "platform {} (needs {platform})",
            shown(worker.platform)
        ));
    }
    if let Some(arch) = &req.arch {
        if worker.arch != arch {
            return Some(format!("arch {} (needs {arch})", shown(worker.arch)));
        }
    }
    if let Some(region) = &req.region {
        if worker.region != region {
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
    if req.image.starts_with(LOCAL_IMAGE_PREFIX) && !worker.images.contains(&req.image.as_str()) {
        return Some(format!("local image {} is not on this worker", req.image));
    }
    None
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
        w.images = &["localhost/mine:1"];
        check(&req, &w, None);

        let mut w = worker("w");
        w.memory_free = 1;
        check(&request("t"), &w, None);
    }
}
