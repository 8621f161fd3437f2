//! Conformance cases: JSON files of inputs and expected decisions
//! (`policies/conformance/*.json`), shared by every language's policy and
//! run offline by `crops-orchestrator policy test MODULE --cases FILE`.
//!
//! ```json
//! {"cases": [
//!   {"name": "free plan full", "call": "admit", "request": {...}, "plan": {...},
//!    "usage": {...}, "expect": {"allow": false, "reasonContains": "allows 3"}},
//!   {"name": "offline excluded", "call": "place", "request": {...}, "workers": [...],
//!    "expect": {"chosen": "w2", "infeasible": {"w1": "offline"}}}
//! ]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::engine::{Compiled, Host};
use super::types::{Admission, PlanInput, Request, Usage, WorkerInput};
use super::PolicyError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    #[serde(flatten)]
    pub call: Call,
}

/// One call and what it must answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "call")]
pub enum Call {
    #[serde(rename_all = "camelCase")]
    Admit {
        request: Request,
        plan: PlanInput,
        usage: Usage,
        expect: ExpectAdmission,
    },
    #[serde(rename_all = "camelCase")]
    AdmitWorker {
        tenant_id: String,
        plan: PlanInput,
        usage: Usage,
        expect: ExpectAdmission,
    },
    #[serde(rename_all = "camelCase")]
    Place {
        request: Request,
        workers: Vec<WorkerInput>,
        expect: ExpectPlacement,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectAdmission {
    pub allow: bool,
    #[serde(default)]
    pub reason_contains: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectPlacement {
    /// The chosen worker's id, or null for "nothing fits".
    pub chosen: Option<String>,
    /// Worker id -> a substring its (infeasible) verdict's reason contains.
    #[serde(default)]
    pub infeasible: BTreeMap<String, String>,
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub name: String,
    pub passed: bool,
    /// What differed, or the decision when it passed.
    pub detail: String,
}

/// Run every case of `file` that `module` can answer (an admission-only
/// module skips placement cases and vice versa); a policy error fails the
/// case with the error.
pub fn run(host: &Host, module: &Compiled, file: &CaseFile) -> Vec<Outcome> {
    file.cases
        .iter()
        .filter(|case| match case.call {
            Call::Admit { .. } | Call::AdmitWorker { .. } => module.kind().admits(),
            Call::Place { .. } => module.kind().places(),
        })
        .map(|case| {
            let (passed, detail) = match one(host, module, &case.call) {
                Ok(result) => result,
                Err(e) => (false, format!("policy error: {e}")),
            };
            Outcome {
                name: case.name.clone(),
                passed,
                detail,
            }
        })
        .collect()
}

fn one(host: &Host, module: &Compiled, call: &Call) -> Result<(bool, String), PolicyError> {
    match call {
        Call::Admit {
            request,
            plan,
            usage,
            expect,
        } => Ok(admission(host.admit(module, request, plan, usage)?, expect)),
        Call::AdmitWorker {
            tenant_id,
            plan,
            usage,
            expect,
        } => Ok(admission(
            host.admit_worker(module, tenant_id, plan, usage)?,
            expect,
        )),
        Call::Place {
            request,
            workers,
            expect,
        } => {
            let p = host.place(module, request, workers)?;
            let chosen = p
                .chosen
                .and_then(|i| workers.get(i as usize))
                .map(|w| w.id.clone());
            let mut problems = Vec::new();
            if chosen != expect.chosen {
                problems.push(format!("chose {chosen:?}, expected {:?}", expect.chosen));
            }
            for (id, needle) in &expect.infeasible {
                match workers.iter().position(|w| &w.id == id) {
                    None => problems.push(format!("case names unknown worker {id}")),
                    Some(i) => {
                        let v = &p.verdicts[i];
                        if v.feasible || !v.reason.contains(needle.as_str()) {
                            problems.push(format!(
                                "worker {id}: feasible={} reason {:?}, expected infeasible with {needle:?}",
                                v.feasible, v.reason
                            ));
                        }
                    }
                }
            }
            if problems.is_empty() {
                Ok((true, p.reason))
            } else {
                Ok((false, problems.join("; ")))
            }
        }
    }
}

fn admission(got: Admission, expect: &ExpectAdmission) -> (bool, String) {
    let detail = match &got {
        Admission::Allow => "allow".to_owned(),
        Admission::Deny(reason) => format!("deny: {reason}"),
    };
    let passed = match (&got, expect.allow) {
        (Admission::Allow, true) => true,
        (Admission::Deny(reason), false) => expect
            .reason_contains
            .as_ref()
            .is_none_or(|needle| reason.contains(needle.as_str())),
        _ => false,
    };
    (passed, detail)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::super::types::{Profile, Request, WorkerInput, WorkerMode};

    pub fn request_for(tenant: &str) -> Request {
        Request {
            tenant_id: tenant.into(),
            name: "dev".into(),
            image: "docker.io/library/alpine:3".into(),
            profile: Profile::Standard,
            pinned_worker: None,
            platform: None,
            arch: None,
            region: None,
            memory_bytes: 1 << 30,
            cpus: 2,
            labels: Vec::new(),
        }
    }

    pub fn request() -> Request {
        request_for("t1")
    }

    pub fn worker(i: usize) -> WorkerInput {
        WorkerInput {
            id: format!("w{i:04}"),
            mode: WorkerMode::Fleet,
            tenant_id: String::new(),
            platform: "linux".into(),
            arch: "x86_64".into(),
            region: ["eu", "us", "ap"][i % 3].into(),
            labels: vec![("tier".into(), "standard".into())],
            cpu_count: 8,
            memory_total: 16 << 30,
            memory_free: ((i % 13) as u64 + 2) << 30,
            disk_free: Some(100 << 30),
            cpu_load_permille: (i * 37 % 1000) as u32,
            containers_running: (i % 11) as u32,
            images: vec![format!("localhost/img{}:1", i % 5)],
            security_floor: Profile::Open,
            drained: i % 17 == 3,
            cordoned: i % 19 == 4,
            online: i % 23 != 5,
        }
    }

    pub fn workers() -> Vec<WorkerInput> {
        (0..3).map(worker).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK_CASES: &str = include_str!("../../../policies/conformance/stock.json");

    fn check(module: &str) {
        let p = crate::policy::testing::policies();
        let file: CaseFile = serde_json::from_str(STOCK_CASES).expect("cases parse");
        let m = p.stock(module).expect("stock module");
        let outcomes = run(p.host(), &m, &file);
        assert!(!outcomes.is_empty(), "{module} ran no case");
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed).collect();
        assert!(failed.is_empty(), "{module} failed: {failed:#?}");
    }

    #[test]
    fn plan_limits_passes_the_conformance_cases() {
        check("plan-limits");
    }

    #[test]
    fn least_loaded_passes_the_conformance_cases() {
        check("least-loaded");
    }

    #[test]
    fn a_wrong_answer_fails_its_case_with_the_difference() {
        let p = crate::policy::testing::policies();
        let mut file: CaseFile = serde_json::from_str(STOCK_CASES).expect("cases parse");
        file.cases.retain(|c| c.name == "least loaded wins");
        let Call::Place { expect, .. } = &mut file.cases[0].call else {
            panic!("not a place case");
        };
        expect.chosen = Some("c".into());
        let m = p.stock("spread").expect("stock");
        let outcomes = run(p.host(), &m, &file);
        assert_eq!(outcomes.len(), 1);
        assert!(!outcomes[0].passed);
        assert!(
            outcomes[0].detail.contains("expected Some(\"c\")"),
            "{:?}",
            outcomes[0]
        );
    }
}
