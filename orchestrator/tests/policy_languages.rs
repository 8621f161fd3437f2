//! Policies in any language: the Python and JavaScript example policies
//! (policies/examples, built by `make policy-examples` into
//! policies/dist/examples/) pass the same conformance cases as the Rust
//! stock policies, run by the offline runner an operator uses:
//! `crops-orchestrator policy test MODULE --cases policies/conformance/stock.json`.
//! They also decide exactly as the stock policies do, case by case.
//!
//! A missing example fails these tests with what to run; they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the orchestrator crate sits in the repository")
        .to_path_buf()
}

fn example(name: &str) -> PathBuf {
    let path = repo().join("policies/dist/examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the example policies first with `make policy-examples` \
         (policies/examples/build.sh)",
        path.display()
    );
    path
}

/// `policy test MODULE --cases stock.json`: whether it passed, and its
/// per-case lines (`ok   name: decision`), sorted.
fn policy_test(module: &str) -> (bool, Vec<String>, String) {
    let cases = repo().join("policies/conformance/stock.json");
    let out = Command::new(env!("CARGO_BIN_EXE_crops-orchestrator"))
        .args(["policy", "test", module, "--cases"])
        .arg(&cases)
        .output()
        .expect("run crops-orchestrator policy test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL "))
        .map(str::to_owned)
        .collect();
    lines.sort();
    (out.status.success(), lines, all)
}

/// What the Rust stock policies answer to every case: plan-limits the
/// admission cases, least-loaded the placement ones.
fn stock_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for stock in ["stock:plan-limits", "stock:least-loaded"] {
        let (passed, mut l, all) = policy_test(stock);
        assert!(passed, "{stock} failed its own conformance cases:\n{all}");
        lines.append(&mut l);
    }
    lines.sort();
    lines
}

fn check(name: &str) {
    let module = example(name);
    let (passed, lines, all) = policy_test(module.to_str().expect("a UTF-8 path"));
    assert!(passed, "{name} failed the conformance cases:\n{all}");
    let file = std::fs::read(repo().join("policies/conformance/stock.json")).expect("cases");
    let cases: serde_json::Value = serde_json::from_slice(&file).expect("cases parse");
    let total = cases["cases"].as_array().expect("a list of cases").len();
    assert_eq!(
        lines.len(),
        total,
        "{name} did not answer every admission and placement case:\n{all}"
    );
    assert_eq!(
        lines,
        stock_lines(),
        "{name} decided otherwise than the Rust stock policies"
    );
}

#[test]
fn the_python_policy_passes_the_stock_conformance_cases() {
    check("python.wasm");
}

#[test]
fn the_javascript_policy_passes_the_stock_conformance_cases() {
    check("js.wasm");
}
