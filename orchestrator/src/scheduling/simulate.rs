//! Recorded decisions replayed through a candidate module: the last N
//! decisions of a policy's scope (inputs as stored in each decision's
//! typed explanation, `policy::Explanation`), in every role the module
//! implements (a `policy`-world module replays admissions, enrolments and
//! placements), without activating it or marking its health. The answer
//! lists where it would decide differently (`call`: `admit`,
//! `admit-worker` or `place`).
//!
//! `evaluated` counts the decisions with at least one call replayed,
//! `skipped` the readable ones with no call the module makes (a placement
//! module and an enrolment's admission). A decision whose explanation does
//! not read (stored by hand or by a build with another shape) is neither:
//! it is listed in `unreadable` with the reason, never passed over in
//! silence.

use std::sync::Arc;

use serde::Serialize;

use super::SchedulingError;
use crate::policy::{Admission, Compiled, Explanation, Policies, PolicyError, WorkerInput};
use crate::store::{DecisionRecord, StoreError};
use crate::App;

/// What one call answered, recorded or replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Said {
    Admission(Admission),
    #[serde(rename_all = "camelCase")]
    Placement {
        chosen_worker_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Error {
        error: Option<String>,
    },
    /// Recorded as failed, without a result (JSON null).
    Nothing,
}

/// A call the candidate answers otherwise than the recorded decision.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub decision_id: String,
    pub tenant_id: String,
    pub at: u64,
    /// `admit`, `admit-worker` or `place`.
    pub call: &'static str,
    pub recorded: Said,
    pub candidate: Said,
}

/// A recorded decision whose explanation does not read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    pub decision_id: String,
    pub tenant_id: String,
    pub at: u64,
    pub error: String,
}

/// A simulation's findings.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub evaluated: usize,
    pub skipped: usize,
    pub differing: usize,
    pub differences: Vec<Difference>,
    pub unreadable: Vec<Unreadable>,
}

/// One replayed call: its name, what was recorded, what the candidate says.
type Call = (&'static str, Said, Said);

fn said_admission(a: Result<Admission, PolicyError>) -> Said {
    match a {
        Ok(a) => Said::Admission(a),
        Err(e) => Said::Error {
            error: Some(e.to_string()),
        },
    }
}

/// `e` replayed through `module` in each role it implements that `e`
/// recorded: `admit` (a create's admission), `admit-worker` (an
/// enrolment's) and `place`.
fn replay(policies: &Policies, module: &Compiled, e: &Explanation) -> Vec<Call> {
    let mut calls = Vec::new();
    if let (true, Some(recorded), Some(plan), Some(usage)) =
        (module.kind().admits(), &e.admission, &e.plan, &e.usage)
    {
        let was = recorded
            .result
            .clone()
            .map_or(Said::Nothing, Said::Admission);
        let host = policies.host();
        match (&e.request, &e.enrolment) {
            (Some(req), _) => {
                let now = said_admission(host.admit(module, req, plan, usage));
                calls.push(("admit", was, now));
            }
            (None, Some(enrolment)) => {
                let t = &enrolment.tenant_id;
                let now = said_admission(host.admit_worker(module, t, plan, usage));
                calls.push(("admit-worker", was, now));
            }
            (None, None) => {}
        }
    }
    let (true, Some(recorded), Some(req), Some(workers)) =
        (module.kind().places(), &e.placement, &e.request, &e.workers)
    else {
        return calls;
    };
    let chosen = |index: Option<u32>| -> Option<String> {
        index
            .and_then(|i| workers.get(i as usize))
            .map(|w: &WorkerInput| w.id.clone())
    };
    let was = match &recorded.result {
        None => Said::Error {
            error: recorded.error.clone(),
        },
        Some(p) => Said::Placement {
            chosen_worker_id: chosen(p.chosen),
            reason: None,
        },
    };
    let now = match policies.host().place(module, req, workers) {
        Ok(p) => Said::Placement {
            chosen_worker_id: chosen(p.chosen),
            reason: Some(p.reason),
        },
        Err(err) => Said::Error {
            error: Some(err.to_string()),
        },
    };
    calls.push(("place", was, now));
    calls
}

/// Whether the candidate decides as recorded: the same worker for a
/// placement (neither failing), the same answer for an admission.
fn same(call: &str, recorded: &Said, candidate: &Said) -> bool {
    match (recorded, candidate) {
        (
            Said::Placement {
                chosen_worker_id: r,
                ..
            },
            Said::Placement {
                chosen_worker_id: c,
                ..
            },
        ) if call == "place" => r == c,
        _ if call == "place" => false,
        (r, c) => r == c,
    }
}

/// Replay `decisions` through `module` (CPU work: call it on the blocking pool).
pub fn replay_all(policies: &Policies, module: &Compiled, decisions: &[DecisionRecord]) -> Replay {
    let mut out = Replay::default();
    for d in decisions {
        let e = match d.explanation.explanation() {
            Ok(e) => e,
            Err(error) => {
                out.unreadable.push(Unreadable {
                    decision_id: d.id.clone(),
                    tenant_id: d.tenant_id.clone(),
                    at: d.at,
                    error: error.to_owned(),
                });
                continue;
            }
        };
        let calls = replay(policies, module, e);
        if calls.is_empty() {
            out.skipped += 1;
        } else {
            out.evaluated += 1;
        }
        for (call, recorded, candidate) in calls {
            if !same(call, &recorded, &candidate) {
                out.differences.push(Difference {
                    decision_id: d.id.clone(),
                    tenant_id: d.tenant_id.clone(),
                    at: d.at,
                    call,
                    recorded,
                    candidate,
                });
            }
        }
    }
    out.differing = out.differences.len();
    out
}

/// Which recorded decisions a simulation replays.
#[derive(Debug, Clone)]
pub enum Pick {
    /// The newest N of the scope.
    Last(usize),
    /// This one, if it is in the scope (else `StoreError::NotFound`).
    One(String),
}

/// The decisions `pick` names among those of `tenant` (of every tenant:
/// `None`), newest first, replayed through `module`.
pub async fn simulate(
    app: &App,
    module: Arc<Compiled>,
    tenant: Option<String>,
    pick: Pick,
) -> Result<Replay, SchedulingError> {
    let decisions = app
        .store
        .call(move |s| {
            let last = match pick {
                Pick::Last(n) => n,
                Pick::One(id) => {
                    let found = s.get_decision(&id)?;
                    let in_scope =
                        |d: &DecisionRecord| tenant.as_ref().is_none_or(|t| *t == d.tenant_id);
                    return match found.filter(in_scope) {
                        Some(d) => Ok(vec![d]),
                        None => Err(StoreError::NotFound {
                            what: "decision in this policy's scope",
                            id,
                        }),
                    };
                }
            };
            let tenants = match tenant {
                Some(t) => vec![t],
                None => s.list_tenants()?.into_iter().map(|t| t.id).collect(),
            };
            let mut all = Vec::new();
            for t in tenants {
                all.extend(s.list_decisions(&t, last)?);
            }
            all.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.id.cmp(&a.id)));
            all.truncate(last);
            Ok::<_, StoreError>(all)
        })
        .await?;
    let policies = Arc::clone(&app.policies);
    Ok(smol::unblock(move || replay_all(&policies, &module, &decisions)).await)
}
