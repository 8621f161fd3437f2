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

use std::sync::Arc;

use orchestrator::store::{Plan, Store, Tenant};

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
