//! Hostile modules, written as component WAT text: each is contained, gets
//! a clear error, marks only itself unhealthy, and the next decision of a
//! good module is unaffected.

use std::sync::Arc;

use super::cases::tests_support::{request, workers};
use super::{FailMode, Limits, Policies, PolicyError, Scope};

/// The contract's types as a component exports them (`$request`,
/// `$candidates`, `$placement`, ...), for a component lifting `place`.
pub(super) const CONTRACT_TYPES: &str = r#"
  (type $profile' (enum "open" "standard" "strict" "offline"))
  (export $profile "profile" (type $profile'))
  (type $mode' (enum "byom" "fleet"))
  (export $mode "worker-mode" (type $mode'))
  (type $request' (record
    (field "tenant-id" string) (field "name" string) (field "image" string)
    (field "profile" $profile) (field "pinned-worker" (option string))
    (field "platform" (option string)) (field "arch" (option string))
    (field "region" (option string)) (field "memory-bytes" u64) (field "cpus" u32)
    (field "labels" (list (tuple string string)))))
  (export $request "request" (type $request'))
  (type $candidates' (record
    (field "count" u32) (field "text" string) (field "table" (list u8))))
  (export $candidates "candidates" (type $candidates'))
  (type $verdict' (record (field "feasible" bool) (field "reason" string) (field "score" s64)))
  (export $verdict "verdict" (type $verdict'))
  (type $placement' (record
    (field "verdicts" (list $verdict)) (field "chosen" (option u32)) (field "reason" string)))
  (export $placement "placement" (type $placement'))
"#;

/// The contract's types and `place` lifted from the core module's
/// `place(ptr) -> ptr` (params and result are passed through memory: both
/// flatten to more than the ABI's limits).
pub(super) fn place_component(core_body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 16)
    (global $heap (mut i32) (i32.const 0xF0000))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    {core_body})
  (core instance $i (instantiate $m))
  {CONTRACT_TYPES}
  (func $place (param "req" $request) (param "candidates" $candidates) (result $placement)
    (canon lift (core func $i "place") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "place" (func $place))
)"#
    );
    wat::parse_str(text).expect("hostile WAT parses")
}

/// A `place` that answers a placement written at offset 0 by `init`.
fn answering(init: &str) -> Vec<u8> {
    place_component(&format!(
        r#"(func (export "place") (param i32) (result i32) {init} (i32.const 0))"#
    ))
}

fn policies() -> Policies {
    super::testing::policies()
}

fn compile(p: &Policies, bytes: &[u8]) -> Result<Arc<super::Compiled>, PolicyError> {
    let limits = Limits {
        fuel: 5_000_000,
        memory_bytes: 4 << 20,
    };
    p.host().compile(bytes, limits).map(Arc::new)
}

/// Activate `bytes` globally (fail-closed), run one placement, then prove
/// the module is unhealthy and a good decision still works.
fn contained(bytes: &[u8]) -> PolicyError {
    let p = policies();
    let module = compile(&p, bytes).expect("hostile module compiles");
    p.activate(
        Scope::Global,
        "global:hostile@1".into(),
        module,
        FailMode::Closed,
    );
    let ws = workers();
    let decided = p.place(&request(), &ws);
    let error = decided.value.expect_err("hostile module decided");
    let (_, _, health) = p.status(&Scope::Global).expect("active");
    assert!(!health.healthy && health.failures == 1, "{health:?}");
    assert_eq!(
        health.last_error.as_deref(),
        Some(error.to_string().as_str())
    );
    // Other decisions are unaffected: a stock module on the same engine.
    let stock = p.stock("least-loaded").expect("stock");
    let good = p
        .host()
        .place(&stock, &request(), &ws)
        .expect("stock decides");
    assert!(good.chosen.is_some(), "{good:?}");
    // And the hostile one fails the same way again, not worse.
    assert_eq!(p.place(&request(), &ws).value.expect_err("again"), error);
    error
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let bytes = place_component(
        r#"(func (export "place") (param i32) (result i32) (loop $l (br $l)) (unreachable))"#,
    );
    let error = contained(&bytes);
    assert!(
        matches!(
            error,
            PolicyError::OutOfFuel {
                call: "place",
                fuel: 5_000_000
            }
        ),
        "{error}"
    );
}

#[test]
fn memory_bomb_hits_the_cap() {
    let bytes = place_component(
        r#"(func (export "place") (param i32) (result i32)
             (loop $l (drop (memory.grow (i32.const 16))) (br $l)) (unreachable))"#,
    );
    let error = contained(&bytes);
    assert!(
        matches!(error, PolicyError::MemoryCap { call: "place", cap } if cap == 4 << 20),
        "{error}"
    );
}

#[test]
fn a_trap_is_a_clear_error() {
    let bytes =
        place_component(r#"(func (export "place") (param i32) (result i32) (unreachable))"#);
    let error = contained(&bytes);
    assert!(
        matches!(&error, PolicyError::Trap { call: "place", trap, .. } if trap.contains("unreachable")),
        "{error}"
    );
}

#[test]
fn an_enormous_list_of_verdicts_is_refused() {
    // 40,000 verdicts (960,000 bytes of zeros) for 3 candidates.
    let bytes = answering(
        "(i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 40000))",
    );
    let error = contained(&bytes);
    assert_eq!(
        error,
        PolicyError::Nonsense("40000 verdicts for 3 candidates".into())
    );
}

#[test]
fn an_enormous_reason_is_refused() {
    // No verdicts for zero candidates would pass; a 500,000-byte reason not.
    let bytes = answering(
        "(memory.fill (i32.const 1024) (i32.const 97) (i32.const 500000))
         (i32.store (i32.const 16) (i32.const 1024)) (i32.store (i32.const 20) (i32.const 500000))",
    );
    let p = policies();
    let module = compile(&p, &bytes).expect("compiles");
    let error = p
        .host()
        .place(&module, &request(), &[])
        .expect_err("accepted");
    assert!(
        error.to_string().contains("500000 bytes; at most 4096"),
        "{error}"
    );
}

#[test]
fn choosing_an_infeasible_or_missing_worker_is_nonsense() {
    // chosen = some(7) of 0 candidates.
    let bytes = answering(
        "(i32.store8 (i32.const 8) (i32.const 1)) (i32.store (i32.const 12) (i32.const 7))",
    );
    let p = policies();
    let module = compile(&p, &bytes).expect("compiles");
    let error = p
        .host()
        .place(&module, &request(), &[])
        .expect_err("accepted");
    assert_eq!(
        error,
        PolicyError::Nonsense("chose candidate 7 of 0".into())
    );
}

#[test]
fn the_wrong_world_is_refused_on_compile() {
    let wrong_signature = wat::parse_str(
        r#"(component
             (core module $m (func (export "place") (param i32) (result i32) (local.get 0)))
             (core instance $i (instantiate $m))
             (func $place (param "x" u32) (result u32) (canon lift (core func $i "place")))
             (export "place" (func $place)))"#,
    )
    .expect("parses");
    let p = policies();
    let error = compile(&p, &wrong_signature).expect_err("compiled");
    assert!(
        error
            .to_string()
            .contains("`place` does not match crops:policy@0.2.0"),
        "{error}"
    );

    let nothing = wat::parse_str("(component)").expect("parses");
    let error = compile(&p, &nothing).expect_err("compiled");
    assert!(
        error
            .to_string()
            .contains("implements no crops:policy@0.2.0 world"),
        "{error}"
    );

    let error = compile(&p, b"\0asm not really").expect_err("compiled");
    assert!(
        error.to_string().contains("not a valid component"),
        "{error}"
    );
}

/// A module built for `crops:policy@0.1.0` (that contract's stock
/// least-loaded, kept as a fixture) is refused, naming the version it
/// targets and the one the host speaks; today's stock module compiles.
#[test]
fn a_module_for_another_contract_version_is_refused_naming_both() {
    let old = include_bytes!("../../tests/fixtures/least-loaded-0.1.0.wasm");
    let error = compile(&policies(), old).expect_err("compiled");
    let text = error.to_string();
    assert!(
        text.contains("built for crops:policy@0.1.0") && text.contains("speaks crops:policy@0.2.0"),
        "{text}"
    );
    let new = super::stock::bytes("least-loaded").expect("stock");
    compile(&policies(), new).expect("the 0.2.0 module compiles");
}

#[test]
fn imports_that_are_not_granted_are_refused_on_compile() {
    for import in [
        // WASI is granted (null), but not wasi:http, nor a function WASI lacks.
        r#"(import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func (result u32)))))"#,
        r#"(import "wasi:cli/environment@0.2.0" (instance (export "get-secrets" (func (result (list string))))))"#,
        r#"(import "crops:policy/types@0.2.0" (instance (export "secret" (func (result u32)))))"#,
        r#"(import "clock" (func (result u64)))"#,
    ] {
        let bytes = wat::parse_str(format!("(component {import})")).expect("parses");
        let error = compile(&policies(), &bytes).expect_err("compiled");
        assert!(
            error.to_string().contains("imports something not granted"),
            "{import}: {error}"
        );
    }
}

#[test]
fn last_good_stands_in_for_a_failing_module() {
    let p = policies();
    let binpack = p.stock("binpack").expect("stock");
    p.activate(
        Scope::Global,
        "stock:binpack".into(),
        binpack,
        FailMode::Closed,
    );
    let trap = place_component(r#"(func (export "place") (param i32) (result i32) (unreachable))"#);
    let module = compile(&p, &trap).expect("compiles");
    p.activate(
        Scope::Global,
        "global:trap@2".into(),
        module,
        FailMode::LastGood,
    );
    let decided = p.place(&request(), &workers());
    let placement = decided.value.expect("last-good decided");
    assert_eq!(decided.module, "stock:binpack");
    assert!(decided
        .fallback
        .as_deref()
        .is_some_and(|f| f.contains("global:trap@2 failed")));
    assert!(placement.chosen.is_some());
    let (_, _, health) = p.status(&Scope::Global).expect("active");
    assert!(!health.healthy);
    // Every tenant under the global module gets the same stand-in.
    let other = p.place(
        &super::cases::tests_support::request_for("another"),
        &workers(),
    );
    assert_eq!(other.module, "stock:binpack");
}
