//! plan-limits: the SPEC plan table (or a tenant's custom numbers), as the
//! orchestrator passes them in the `plan` argument.
//!
//! "Concurrent" counts the containers that hold, or may soon hold, a slot
//! on a worker: `creating`, `created` and `running`. `exited`, `lost` and
//! `failed` containers do not count (an exited container is kept for its
//! workspace but uses nothing; a start of one is not a new admission).

use crate::{Admission, Plan, Request, Usage};

/// Containers that count against `concurrent-containers`.
pub fn concurrent(usage: &Usage) -> u64 {
    u64::from(usage.creating) + u64::from(usage.created) + u64::from(usage.running)
}

/// May the tenant start one more container?
pub fn admit(_req: &Request, plan: &Plan, usage: &Usage) -> Admission {
    let Some(limit) = plan.concurrent_containers else {
        return Admission::Allow;
    };
    let held = concurrent(usage);
    if held >= u64::from(limit) {
        return Admission::Deny(format!(
            "plan {} allows {limit} concurrent containers and the tenant has {held} (creating, created or running)",
            plan.name
        ));
    }
    Admission::Allow
}

/// May the tenant enrol one more self-hosted worker?
pub fn admit_worker(_tenant_id: &str, plan: &Plan, usage: &Usage) -> Admission {
    let Some(limit) = plan.self_hosted_workers else {
        return Admission::Allow;
    };
    if usage.self_hosted_workers >= limit {
        return Admission::Deny(format!(
            "plan {} allows {limit} self-hosted workers and the tenant has {}",
            plan.name, usage.self_hosted_workers
        ));
    }
    Admission::Allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::request;

    fn plan(name: &str, workers: Option<u32>, containers: Option<u32>) -> Plan {
        Plan {
            name: name.into(),
            self_hosted_workers: workers,
            concurrent_containers: containers,
        }
    }

    #[test]
    fn free_plan_allows_three_concurrent() {
        let free = plan("free", Some(1), Some(3));
        let mut usage = Usage {
            running: 2,
            exited: 7,
            ..Usage::default()
        };
        assert_eq!(admit(&request("t"), &free, &usage), Admission::Allow);
        usage.creating = 1;
        let Admission::Deny(reason) = admit(&request("t"), &free, &usage) else {
            panic!("fourth container admitted");
        };
        assert!(reason.contains("plan free allows 3"), "{reason}");
    }

    #[test]
    fn unlimited_plan_always_admits() {
        let ent = plan("enterprise", None, None);
        let usage = Usage {
            running: u32::MAX,
            creating: u32::MAX,
            self_hosted_workers: u32::MAX,
            ..Usage::default()
        };
        assert_eq!(admit(&request("t"), &ent, &usage), Admission::Allow);
        assert_eq!(admit_worker("t", &ent, &usage), Admission::Allow);
    }

    #[test]
    fn worker_limit_counts_self_hosted_workers() {
        let starter = plan("starter", Some(2), Some(5));
        let mut usage = Usage {
            self_hosted_workers: 1,
            ..Usage::default()
        };
        assert_eq!(admit_worker("t", &starter, &usage), Admission::Allow);
        usage.self_hosted_workers = 2;
        assert!(matches!(
            admit_worker("t", &starter, &usage),
            Admission::Deny(r) if r.contains("2 self-hosted workers")
        ));
    }
}
