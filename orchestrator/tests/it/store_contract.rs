//! One conformance suite for the store's two engines: every test body runs
//! against redb (a fresh directory) and against PostgreSQL (a fresh
//! database on the rig's real server, `super::postgres`), through the
//! public `orchestrator::store` API only, asserting what a user would
//! notice. Also the PostgreSQL engine's refusals at connect.

mod admin;
mod audit;
mod bad_input;
mod containers;
mod enrolment;
mod ownership;

use std::sync::Arc;

use orchestrator::store::{
    Admitted, Enrolment, JoinToken, NewWorker, Plan, RegisterInfo, Store, Tenant,
};

use crate::harness::{now_ms, temp_dir};

/// Which engine a body runs on, for assertion messages.
#[derive(Debug, Clone, Copy)]
pub enum Engine {
    Redb,
    Postgres,
}

/// Run `body` on a fresh redb store, then on a fresh PostgreSQL store.
pub fn each_engine(body: impl Fn(Engine, Arc<Store>)) {
    let dir = temp_dir("store-contract");
    body(Engine::Redb, Arc::new(Store::open(&dir).unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = super::postgres::database();
    let store = Store::connect(&url, 32).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    body(Engine::Postgres, Arc::new(store));
}

/// A new tenant `name` on `plan`.
pub fn tenant(store: &Store, name: &str, plan: Plan) -> Tenant {
    let tenant = Tenant {
        id: format!("tenant-{name}"),
        name: name.to_owned(),
        created_at: now_ms(),
        org_id: String::new(),
        plan,
        allowed_domains: Vec::new(),
    };
    store.create_tenant(&tenant).unwrap();
    store.get_tenant(&tenant.id).unwrap().unwrap()
}

/// Run `n` copies of `f` (given their index) on threads released together.
pub fn race<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let gate = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (gate, f) = (&gate, &f);
                s.spawn(move || {
                    gate.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A join token for `tenant_id` under `hash`, valid for an hour.
pub fn join_token(store: &Store, hash: &str, tenant_id: &str) {
    let now = now_ms();
    let token = JoinToken {
        tenant_id: tenant_id.to_owned(),
        created_at: now,
        expires_at: now + 3_600_000,
        used: false,
        fleet: None,
    };
    store.create_join_token(hash, &token).unwrap();
}

/// Worker `id` of `tenant_id`, enrolled and registered through `replica`:
/// its connection's ownership epoch.
pub fn registered(store: &Store, tenant_id: &str, id: &str, replica: &str) -> u64 {
    let now = now_ms();
    let hash = format!("join-{id}");
    join_token(store, &hash, tenant_id);
    let new = NewWorker {
        id: id.to_owned(),
        name: id.to_owned(),
        hostname: None,
        credential_hash: format!("cred-{id}"),
    };
    let usage = store.tenant_usage(tenant_id).unwrap();
    let admitted = Admitted {
        usage: &usage,
        decision: None,
    };
    let enrolled = store.enroll(&hash, now, &new, Some(admitted)).unwrap();
    assert!(matches!(enrolled, Enrolment::Enrolled(..)), "{enrolled:?}");
    register(store, id, replica)
}

/// A register of worker `id` through `replica`: the new ownership epoch.
pub fn register(store: &Store, id: &str, replica: &str) -> u64 {
    let info = RegisterInfo {
        protocol_version: 1,
        platform: "linux".into(),
        arch: None,
        cpu_count: 2,
        memory_total: 1 << 30,
        container_engines: vec!["podman".into()],
        agent_version: "test".into(),
        mode: "byom".into(),
        labels: Default::default(),
        security_floor: None,
        rootless: false,
        limitations: Vec::new(),
    };
    let worker = store
        .record_register(id, replica, id, "host", info, now_ms())
        .unwrap();
    worker.owner.expect("owned after a register").epoch
}
