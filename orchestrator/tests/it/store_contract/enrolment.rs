//! Tenants, join tokens and enrolment on both engines: unique tenant
//! names, single-use tokens and plan limits held under concurrency.

use orchestrator::store::{Admitted, Enrolment, JoinRefusal, NewWorker, Plan, Store, StoreError};

use super::{each_engine, join_token, race, tenant};
use crate::harness::now_ms;

fn new_worker(i: usize) -> NewWorker {
    NewWorker {
        id: format!("worker-{i}"),
        name: format!("w{i}"),
        hostname: None,
        credential_hash: format!("cred-{i}"),
    }
}

/// Enrol as the API does: decide on the tenant's usage (the plan's worker
/// limit), then enrol with that usage; again if it changed meanwhile.
/// `Ok(None)` when the plan refuses.
fn enroll_like_the_api(
    store: &Store,
    join_hash: &str,
    new: &NewWorker,
) -> Result<Option<Enrolment>, StoreError> {
    let mut admitted = None;
    for _ in 0..1000 {
        let args = admitted.as_ref().map(|usage| Admitted {
            usage,
            decision: None,
        });
        match store.enroll(join_hash, now_ms(), new, args)? {
            Enrolment::Decide { tenant, usage } => {
                let limit = tenant.plan.limits().workers.unwrap_or(u32::MAX);
                if usage.workers >= limit {
                    return Ok(None);
                }
                admitted = Some(usage);
            }
            done => return Ok(Some(done)),
        }
    }
    panic!("enrolment never settled")
}

#[test]
fn tenant_names_are_unique_and_tenants_are_listed_in_creation_order() {
    each_engine(|engine, store| {
        let a = tenant(&store, "acme", Plan::Free);
        let b = tenant(&store, "globex", Plan::Pro);
        let again = orchestrator::store::Tenant {
            id: "tenant-other".into(),
            ..a.clone()
        };
        let err = store.create_tenant(&again).unwrap_err();
        assert!(
            matches!(err, StoreError::TenantNameTaken { ref name } if name == "acme"),
            "{engine:?}: {err}"
        );
        assert!(
            store.get_tenant("tenant-other").unwrap().is_none(),
            "{engine:?}"
        );
        let names: Vec<_> = store
            .list_tenants()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["acme", "globex"], "{engine:?}");
        assert_eq!(
            store.set_plan(&a.id, Plan::Starter).unwrap().plan,
            Plan::Starter
        );
        assert_eq!(
            store.get_tenant(&a.id).unwrap().unwrap().plan,
            Plan::Starter
        );
        assert_eq!(store.get_tenant(&b.id).unwrap().unwrap().plan, Plan::Pro);
    });
}

#[test]
fn a_join_token_enrols_once_and_is_refused_after() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Pro);
        join_token(&store, "join-1", &t.id);
        let first = enroll_like_the_api(&store, "join-1", &new_worker(1)).unwrap();
        assert!(
            matches!(first, Some(Enrolment::Enrolled(..))),
            "{engine:?}: {first:?}"
        );
        let second = enroll_like_the_api(&store, "join-1", &new_worker(2)).unwrap();
        assert_eq!(
            second,
            Some(Enrolment::Refused(JoinRefusal::Used)),
            "{engine:?}"
        );
        let unknown = enroll_like_the_api(&store, "join-x", &new_worker(3)).unwrap();
        assert_eq!(
            unknown,
            Some(Enrolment::Refused(JoinRefusal::Unknown)),
            "{engine:?}"
        );
        assert!(store.get_join_token("join-1").unwrap().unwrap().used);
        let workers = store.list_workers().unwrap();
        assert_eq!(workers.len(), 1, "{engine:?}");
        assert_eq!(workers[0].0.id, "worker-1");
        let by_cred = store.authenticate_worker("cred-1").unwrap().unwrap();
        assert_eq!(by_cred.tenant_id, t.id);
        assert!(
            store.authenticate_worker("cred-2").unwrap().is_none(),
            "{engine:?}"
        );
    });
}

#[test]
fn many_enrolments_racing_for_one_token_enrol_exactly_one_worker() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Enterprise);
        join_token(&store, "join-1", &t.id);
        let outcomes = race(8, |i| {
            enroll_like_the_api(&store, "join-1", &new_worker(i)).unwrap()
        });
        let enrolled = outcomes
            .iter()
            .filter(|o| matches!(o, Some(Enrolment::Enrolled(..))))
            .count();
        let refused = outcomes
            .iter()
            .filter(|o| **o == Some(Enrolment::Refused(JoinRefusal::Used)))
            .count();
        assert_eq!((enrolled, refused), (1, 7), "{engine:?}: {outcomes:?}");
        assert_eq!(store.list_workers().unwrap().len(), 1, "{engine:?}");
        assert_eq!(store.tenant_usage(&t.id).unwrap().workers, 1, "{engine:?}");
    });
}

/// Two orchestrators are two pools on one database: one token enrols one
/// worker, and the plan's workers hold, whichever replica each call
/// reaches (PostgreSQL only: redb has one process).
#[test]
fn enrolments_through_two_replicas_use_a_token_once_and_keep_the_plan() {
    let url = crate::postgres::database();
    let stores: Vec<Store> = (0..2).map(|_| Store::connect(&url, 8).unwrap()).collect();
    let t = tenant(&stores[0], "free", Plan::Free);
    join_token(&stores[0], "one", &t.id);
    let once = race(6, |i| {
        let new = NewWorker {
            id: format!("once-{i}"),
            credential_hash: format!("once-cred-{i}"),
            ..new_worker(i)
        };
        enroll_like_the_api(&stores[i % 2], "one", &new)
    });
    let won = |o: &Option<Enrolment>| matches!(o, Some(Enrolment::Enrolled(..)));
    let once: Vec<Option<Enrolment>> = once.into_iter().map(Result::unwrap).collect();
    assert_eq!(once.iter().filter(|o| won(o)).count(), 1, "{once:?}");
    for i in 0..6 {
        join_token(&stores[i % 2], &format!("join-{i}"), &t.id);
    }
    let outcomes = race(6, |i| {
        let new = NewWorker {
            id: format!("worker-{i}"),
            credential_hash: format!("cred-{i}"),
            ..new_worker(i)
        };
        enroll_like_the_api(&stores[i % 2], &format!("join-{i}"), &new).unwrap()
    });
    let limit = Plan::Free.limits().workers.unwrap() as usize;
    let enrolled = 1 + outcomes.iter().filter(|o| won(o)).count();
    assert_eq!(enrolled, limit, "{outcomes:?}");
    assert_eq!(
        stores[1].tenant_usage(&t.id).unwrap().workers as usize,
        limit
    );
}

#[test]
fn concurrent_enrolments_never_exceed_the_plans_workers() {
    each_engine(|engine, store| {
        for (plan, name) in [(Plan::Free, "free"), (Plan::Starter, "starter")] {
            let t = tenant(&store, name, plan);
            for i in 0..6 {
                join_token(&store, &format!("{name}-join-{i}"), &t.id);
            }
            let outcomes = race(6, |i| {
                let new = NewWorker {
                    id: format!("{name}-worker-{i}"),
                    credential_hash: format!("{name}-cred-{i}"),
                    ..new_worker(i)
                };
                enroll_like_the_api(&store, &format!("{name}-join-{i}"), &new).unwrap()
            });
            let limit = plan.limits().workers.unwrap() as usize;
            let enrolled = outcomes.iter().filter(|o| o.is_some()).count();
            assert_eq!(enrolled, limit, "{engine:?} {name}: {outcomes:?}");
            let usage = store.tenant_usage(&t.id).unwrap();
            assert_eq!(usage.workers as usize, limit, "{engine:?} {name}");
            let refused_tokens_unused = (0..6).filter(|i| outcomes[*i].is_none()).all(|i| {
                !store
                    .get_join_token(&format!("{name}-join-{i}"))
                    .unwrap()
                    .unwrap()
                    .used
            });
            assert!(
                refused_tokens_unused,
                "{engine:?}: a refused enrolment used its token"
            );
        }
    });
}

#[test]
fn a_revoked_worker_reads_as_revoked_and_frees_its_plan_slot() {
    each_engine(|engine, store| {
        let t = tenant(&store, "acme", Plan::Free);
        join_token(&store, "join-1", &t.id);
        join_token(&store, "join-2", &t.id);
        assert!(enroll_like_the_api(&store, "join-1", &new_worker(1))
            .unwrap()
            .is_some());
        assert!(enroll_like_the_api(&store, "join-2", &new_worker(2))
            .unwrap()
            .is_none());
        assert!(
            store.revoke_worker("worker-1").unwrap().revoked,
            "{engine:?}"
        );
        let revoked = store.authenticate_worker("cred-1").unwrap().unwrap();
        assert!(
            revoked.revoked,
            "{engine:?}: the credential still reads as good"
        );
        let second = enroll_like_the_api(&store, "join-2", &new_worker(2)).unwrap();
        assert!(
            matches!(second, Some(Enrolment::Enrolled(..))),
            "{engine:?}: {second:?}"
        );
    });
}

/// A tenant's turn to admit is one across replicas (PostgreSQL): while
/// one replica holds it, another's waits (seen in the server's own lock
/// table), and gets it once the first gives it back; another tenant's
/// turn is free meanwhile.
#[test]
fn a_tenants_turn_is_held_by_one_replica_at_a_time() {
    let url = crate::postgres::database();
    let db = crate::postgres::name_of(&url).to_owned();
    let a = Store::connect(&url, 4).unwrap();
    let b = Store::connect(&url, 4).unwrap();
    let held = a.tenant_turn("acme").unwrap();
    drop(b.tenant_turn("other").unwrap());
    let waiting = |db: &str| {
        crate::postgres::server().psql(
            db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
    };
    let given_back = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let got = s.spawn(|| {
            let turn = b.tenant_turn("acme").unwrap();
            let after = given_back.load(std::sync::atomic::Ordering::SeqCst);
            drop(turn);
            after
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while waiting(&db).trim() != "1" {
            assert!(
                std::time::Instant::now() < deadline,
                "b never waited for the turn"
            );
            std::thread::yield_now();
        }
        given_back.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(held);
        assert!(
            got.join().unwrap(),
            "b got the turn only after a gave it back"
        );
    });
}
