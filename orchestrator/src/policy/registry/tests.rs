//! The registry's slots: one per scope and role, each with its own
//! last-good and health, looked up tenant, then global, then stock.

use std::sync::Arc;

use super::super::cases::tests_support::{request, request_for, workers};
use super::super::hostile::place_component;
use super::super::{testing, Kind, Limits, PlanInput, Usage};
use super::*;

fn plan() -> PlanInput {
    PlanInput {
        name: "enterprise".into(),
        self_hosted_workers: None,
        concurrent_containers: None,
    }
}

fn stock(p: &Policies, name: &str) -> Arc<Compiled> {
    p.stock(name).expect("stock module")
}

/// A placement module whose `place` traps.
fn trapping(p: &Policies) -> Arc<Compiled> {
    let bytes =
        place_component(r#"(func (export "place") (param i32) (result i32) (unreachable))"#);
    Arc::new(
        p.host()
            .compile(&bytes, Limits::default())
            .expect("compiles"),
    )
}

fn modules(p: &Policies, tenant: &str) -> (String, String) {
    let req = request_for(tenant);
    let admitted = p.admit(&req, &plan(), &Usage::default());
    let placed = p.place(&req, &workers());
    assert!(admitted.value.is_ok() && placed.value.is_ok());
    (admitted.module, placed.module)
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

#[test]
fn a_tenant_runs_its_own_admission_and_placement_side_by_side() {
    let p = testing::policies();
    let t1 = Scope::Tenant("t1".into());
    let (limits, binpack) = (stock(&p, "plan-limits"), stock(&p, "binpack"));
    p.activate(
        t1.clone(),
        "tenant:t1:bp@1".into(),
        Arc::clone(&binpack),
        FailMode::Closed,
    );
    p.activate(
        Scope::Global,
        "global:limits@1".into(),
        Arc::clone(&limits),
        FailMode::Closed,
    );
    assert_eq!(modules(&p, "t1"), pair("global:limits@1", "tenant:t1:bp@1"));
    assert_eq!(
        modules(&p, "t2"),
        pair("global:limits@1", "stock:least-loaded")
    );

    // The tenant's own admission module leaves its placement module alone.
    p.activate(
        t1.clone(),
        "tenant:t1:limits@1".into(),
        Arc::clone(&limits),
        FailMode::Closed,
    );
    assert_eq!(
        modules(&p, "t1"),
        pair("tenant:t1:limits@1", "tenant:t1:bp@1")
    );
    assert_eq!(p.effective("t1", Role::Placement), "tenant:t1:bp@1");
    let admission = p.slot(&t1, Role::Admission).expect("admission slot");
    assert_eq!(admission.last_good, None);

    // Clearing one role of the scope leaves the other.
    p.install(t1.clone(), Role::Placement, None)
        .expect("cleared");
    assert_eq!(
        modules(&p, "t1"),
        pair("tenant:t1:limits@1", "stock:least-loaded")
    );
    assert_eq!(
        p.status(&t1).map(|s| s.0).as_deref(),
        Some("tenant:t1:limits@1")
    );
    assert!(p.holding("tenant:t1:bp@1").is_none());
    assert!(p.holding("global:limits@1").is_some());

    // A module is refused for a role it does not implement.
    let wrong = Installed {
        label: "tenant:t1:bp@1".into(),
        module: binpack,
        fail_mode: FailMode::Closed,
        previous: None,
    };
    let refused = p.install(t1.clone(), Role::Admission, Some(wrong));
    assert!(
        matches!(refused, Err(PolicyError::WrongKind { .. })),
        "{refused:?}"
    );
    assert_eq!(modules(&p, "t1").0, "tenant:t1:limits@1");
    p.deactivate(&t1);
    assert_eq!(
        modules(&p, "t1"),
        pair("global:limits@1", "stock:least-loaded")
    );
}

#[test]
fn last_good_is_the_previous_module_of_the_failing_role_only() {
    let p = testing::policies();
    let binpack = stock(&p, "binpack");
    p.activate(
        Scope::Global,
        "stock:binpack".into(),
        binpack,
        FailMode::Closed,
    );
    let limits = stock(&p, "plan-limits");
    p.activate(
        Scope::Global,
        "global:limits@1".into(),
        Arc::clone(&limits),
        FailMode::Closed,
    );
    let trap = trapping(&p);
    p.activate(
        Scope::Global,
        "global:trap@1".into(),
        Arc::clone(&trap),
        FailMode::LastGood,
    );

    let placed = p.place(&request(), &workers());
    assert!(placed.value.is_ok(), "{placed:?}");
    assert_eq!(placed.module, "stock:binpack");
    let placement = p.slot(&Scope::Global, Role::Placement).expect("slot");
    assert_eq!(
        (placement.health.healthy, placement.health.failures),
        (false, 1)
    );
    assert_eq!(placement.last_good.as_deref(), Some("stock:binpack"));
    // The admission slot neither failed nor changed.
    let admitted = p.admit(&request(), &plan(), &Usage::default());
    assert_eq!(admitted.module, "global:limits@1");
    let admission = p.slot(&Scope::Global, Role::Admission).expect("slot");
    assert!(admission.health.healthy && admission.health.failures == 0);

    // A last-good of the other role is dropped: the stock default stands in.
    let installed = Installed {
        label: "global:trap@1".into(),
        module: trap,
        fail_mode: FailMode::LastGood,
        previous: Some(("global:limits@1".into(), limits)),
    };
    p.install(Scope::Global, Role::Placement, Some(installed))
        .expect("installed");
    let placed = p.place(&request(), &workers());
    assert_eq!(placed.module, "stock:least-loaded");
    assert!(placed
        .fallback
        .is_some_and(|f| f.contains("global:trap@1 failed")));
}

#[test]
fn one_activation_lock_per_scope() {
    let p = testing::policies();
    let t1 = Scope::Tenant("t1".into());
    assert!(Arc::ptr_eq(
        &p.activation_lock(&t1),
        &p.activation_lock(&t1)
    ));
    assert!(!Arc::ptr_eq(
        &p.activation_lock(&t1),
        &p.activation_lock(&Scope::Global)
    ));
    assert_eq!(Scope::from_key(&t1.key()), Some(t1));
    assert_eq!(Scope::from_key("tenant:"), None);
    assert_eq!(Role::of(Kind::Both), Role::ALL);
    assert_eq!(Role::parse("placement"), Some(Role::Placement));
}

#[test]
fn no_decision_is_made_while_the_stored_activations_load() {
    let p = testing::policies().loading();
    // Not the stock default: the operator's module may still be loading.
    let placed = p.place(&request(), &workers());
    let error = placed.value.expect_err("decided while loading");
    assert_eq!(error.code(), "not_loaded", "{error}");
    let admitted = p.admit(&request(), &plan(), &Usage::default());
    assert!(admitted.value.is_err(), "{admitted:?}");
    assert!(p.load_state().is_err());

    p.activate(
        Scope::Global,
        "stock:binpack".into(),
        stock(&p, "binpack"),
        FailMode::Closed,
    );
    p.loaded(Ok(()));
    assert!(p.load_state().is_ok());
    assert_eq!(p.place(&request(), &workers()).module, "stock:binpack");

    let failed = testing::policies().loading();
    failed.loaded(Err("the store cannot be read".into()));
    let placed = failed.place(&request(), &workers());
    let error = placed.value.expect_err("decided after a failed load");
    assert!(error.to_string().contains("cannot be read"), "{error}");
}

#[test]
fn a_module_uploaded_twice_is_in_memory_once_while_held() {
    let p = testing::policies();
    let bytes = crate::policy::stock::bytes("spread").expect("stock bytes");
    let one = p.compile(bytes).expect("compiles");
    let two = p.compile(bytes).expect("compiles");
    assert!(Arc::ptr_eq(&one, &two));
    let weak = Arc::downgrade(&one);
    drop((one, two));
    assert_eq!(weak.strong_count(), 0, "kept alive by the registry");
    assert_eq!(p.compile(bytes).expect("compiles").kind(), Kind::Placement);
}
