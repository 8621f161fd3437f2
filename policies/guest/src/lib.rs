//! The stock policies as WebAssembly components: exactly one feature per
//! build picks the policy (`plan-limits` exports the `admission` world;
//! `least-loaded`, `binpack` and `spread` export the `placement` world).
//!
//! This file only moves values between wit-bindgen's generated types and
//! `crops-policy-core`'s (strings are moved, never copied; the candidates
//! are decoded by the core crate's SDK, `packed`); the logic and its tests
//! live in the core crate. Built for wasm32-unknown-unknown the
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

    struct Stock;

    impl Guest for Stock {
        fn place(req: wit::Request, c: wit::Candidates) -> wit::Placement {
            // The SDK decodes each worker as the policy reaches it: no list.
            let p = match core::packed::workers(c.count, &c.text, &c.table) {
                Ok(workers) => core::place::place_each(&request!(req), workers, STRATEGY),
                // The host never sends this; answering no verdicts fails
                // the decision with the host's own check.
                Err(e) => core::Placement {
                    verdicts: Vec::new(),
                    chosen: None,
                    reason: e.to_string(),
                },
            };
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
