//! The stock policies as WebAssembly components: exactly one feature per
//! build picks the policy (`plan-limits` exports the `admission` world;
//! `least-loaded`, `binpack` and `spread` export the `placement` world).
//!
//! This file only moves values between wit-bindgen's generated types and
//! `crops-policy-core`'s (strings are moved, never copied); the logic and
//! its tests live in the core crate. Built for wasm32-unknown-unknown the
//! component imports nothing.

/// Conversions shared by both worlds. Each world's bindings have their own
/// copy of the `types` interface, so these are macros over field names.
#[cfg(target_arch = "wasm32")]
mod bump;

#[macro_use]
#[allow(unused_macros)]
mod convert {
    macro_rules! profile {
        ($p:expr) => {
            match $p {
                wit::Profile::Open => core::Profile::Open,
                wit::Profile::Standard => core::Profile::Standard,
                wit::Profile::Strict => core::Profile::Strict,
                wit::Profile::Offline => core::Profile::Offline,
            }
        };
    }

    macro_rules! request {
        ($r:expr) => {{
            let r = $r;
            core::Request {
                tenant_id: r.tenant_id,
                name: r.name,
                image: r.image,
                profile: profile!(r.profile),
                pinned_worker: r.pinned_worker,
                platform: r.platform,
                arch: r.arch,
                region: r.region,
                memory_bytes: r.memory_bytes,
                cpus: r.cpus,
                labels: r.labels,
            }
        }};
    }

    macro_rules! usage {
        ($u:expr) => {{
            let u = $u;
            core::Usage {
                creating: u.creating,
                created: u.created,
                running: u.running,
                exited: u.exited,
                lost: u.lost,
                failed: u.failed,
                self_hosted_workers: u.self_hosted_workers,
            }
        }};
    }
}

#[cfg(feature = "plan-limits")]
#[allow(clippy::too_many_arguments)] // generated: admit-worker's flattened ABI
mod admission {
    wit_bindgen::generate!({ world: "admission", path: "../wit" });

    use crops::policy::types as wit;
    use crops_policy_core as core;

    fn plan(p: wit::Plan) -> core::Plan {
        core::Plan {
            name: p.name,
            self_hosted_workers: p.self_hosted_workers,
            concurrent_containers: p.concurrent_containers,
        }
    }

    fn answer(a: core::Admission) -> wit::Admission {
        match a {
            core::Admission::Allow => wit::Admission::Allow,
            core::Admission::Deny(reason) => wit::Admission::Deny(reason),
        }
    }

    struct PlanLimits;

    impl Guest for PlanLimits {
        fn admit(req: wit::Request, p: wit::Plan, u: wit::Usage) -> wit::Admission {
            answer(core::plan::admit(&request!(req), &plan(p), &usage!(u)))
        }

        fn admit_worker(tenant_id: String, p: wit::Plan, u: wit::Usage) -> wit::Admission {
            answer(core::plan::admit_worker(&tenant_id, &plan(p), &usage!(u)))
        }
    }

    export!(PlanLimits);
}

#[cfg(any(feature = "least-loaded", feature = "binpack", feature = "spread"))]
mod placement {
    wit_bindgen::generate!({ world: "placement", path: "../wit" });

    use crops::policy::types as wit;
    use crops_policy_core as core;

    #[cfg(feature = "least-loaded")]
    const STRATEGY: core::place::Strategy = core::place::Strategy::LeastLoaded;
    #[cfg(feature = "binpack")]
    const STRATEGY: core::place::Strategy = core::place::Strategy::Binpack;
    #[cfg(feature = "spread")]
    const STRATEGY: core::place::Strategy = core::place::Strategy::Spread;

    /// The string `r` names in the call's text ("" if it names nothing).
    /// Inlined: out of line, its result went through the shadow stack, and
    /// it is called for every string of every worker.
    #[inline(always)]
    fn text(text: &str, r: wit::TextRef) -> &str {
        let start = r.start as usize;
        text.get(start..start.saturating_add(r.len as usize))
            .unwrap_or("")
    }

    #[inline(always)]
    fn worker<'a>(
        t: &'a str,
        labels: &'a [Vec<(&'a str, &'a str)>],
        images: &'a [Vec<&'a str>],
        w: &wit::Worker,
    ) -> core::Worker<'a> {
        core::Worker {
            id: text(t, w.id),
            mode: match w.mode {
                wit::WorkerMode::Byom => core::Mode::Byom,
                wit::WorkerMode::Fleet => core::Mode::Fleet,
            },
            tenant_id: text(t, w.tenant_id),
            platform: text(t, w.platform),
            arch: text(t, w.arch),
            region: text(t, w.region),
            labels: labels.get(w.labels as usize).map_or(&[], Vec::as_slice),
            cpu_count: w.cpu_count,
            memory_total: w.memory_total,
            memory_free: w.memory_free,
            disk_free: w.disk_free,
            cpu_load_permille: w.cpu_load_permille,
            containers_running: w.containers_running,
            images: images.get(w.images as usize).map_or(&[], Vec::as_slice),
            security_floor: profile!(w.security_floor),
            drained: w.drained,
            cordoned: w.cordoned,
            online: w.online,
        }
    }

    struct Stock;

    impl Guest for Stock {
        fn place(req: wit::Request, c: wit::Candidates) -> wit::Placement {
            let t = c.text.as_str();
            let labels: Vec<Vec<(&str, &str)>> = c
                .label_sets
                .iter()
                .map(|set| set.iter().map(|&(k, v)| (text(t, k), text(t, v))).collect())
                .collect();
            let images: Vec<Vec<&str>> = c
                .image_sets
                .iter()
                .map(|set| set.iter().map(|&r| text(t, r)).collect())
                .collect();
            // Each worker is resolved as the policy reaches it: no second list.
            let workers = c.workers.iter().map(|w| worker(t, &labels, &images, w));
            let p = core::place::place_each(&request!(req), workers, STRATEGY);
            wit::Placement {
                verdicts: p
                    .verdicts
                    .into_iter()
                    .map(|v| wit::Verdict {
                        feasible: v.feasible,
                        reason: v.reason,
                        score: v.score,
                    })
                    .collect(),
                chosen: p.chosen,
                reason: p.reason,
            }
        }
    }

    export!(Stock);
}
