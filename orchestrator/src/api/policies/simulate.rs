//! `POST /v1/policies/{id}/simulate?last=N`: the last N recorded decisions
//! of a policy's scope replayed through it (inputs as stored in each
//! decision's explanation) in every role its module implements (a
//! `policy`-world module replays admissions, enrolments and placements),
//! without activating it or marking its health; the answer lists where it
//! would decide differently (`call`: `admit`, `admit-worker` or `place`).
//! `evaluated` counts the decisions with at least one call replayed,
//! `skipped` the others; `roles` the roles replayed.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::{compiled, label, policy_for};
use crate::authz::Caller;
use crate::http::{json, query, ApiError, Resp};
use crate::policy::{
    Compiled, PlanInput, Policies, Request as PolicyRequest, Role, Usage, WorkerInput,
};
use crate::store::MAX_DECISION_PAGE;
use crate::App;

/// Decisions replayed by a simulation when `last` is not given.
const DEFAULT_LAST: usize = 20;

/// One replayed call: its name (`admit`, `admit-worker`, `place`), what
/// was recorded and what the candidate answers.
type Replayed = (&'static str, Value, Value);

/// One recorded decision replayed through the candidate, in each role it
/// implements that the decision recorded: `admit` (a create's
/// admission), `admit-worker` (an enrolment's) and `place`. Empty when the
/// decision has no call the candidate makes, or its inputs do not parse.
fn replay(policies: &Policies, module: &Compiled, e: &Value) -> Vec<Replayed> {
    let mut calls = Vec::new();
    let admission = || {
        let plan: PlanInput = serde_json::from_value(e["plan"].clone()).ok()?;
        let usage: Usage = serde_json::from_value(e["usage"].clone()).ok()?;
        Some((plan, usage, e["admission"]["result"].clone()))
    };
    let answer = |a: Result<crate::policy::Admission, crate::policy::PolicyError>| match a {
        Ok(a) => serde_json::to_value(a).unwrap_or_default(),
        Err(err) => json!({ "error": err.to_string() }),
    };
    let request: Option<PolicyRequest> = serde_json::from_value(e["request"].clone()).ok();
    if module.kind().admits() && !e["admission"].is_null() {
        let tenant = e["enrolment"]["tenantId"].as_str();
        match (&request, tenant, admission()) {
            (Some(req), _, Some((plan, usage, recorded))) => {
                let candidate = answer(policies.host().admit(module, req, &plan, &usage));
                calls.push(("admit", recorded, candidate));
            }
            (None, Some(t), Some((plan, usage, recorded))) => {
                let candidate = answer(policies.host().admit_worker(module, t, &plan, &usage));
                calls.push(("admit-worker", recorded, candidate));
            }
            _ => {}
        }
    }
    if !module.kind().places() || e["placement"].is_null() {
        return calls;
    }
    let (Some(req), Ok(workers)) = (
        request,
        serde_json::from_value::<Vec<WorkerInput>>(e["workers"].clone()),
    ) else {
        return calls;
    };
    let chosen = |index: Option<u64>| {
        index
            .and_then(|i| workers.get(i as usize))
            .map_or(Value::Null, |w| Value::String(w.id.clone()))
    };
    let recorded = if e["placement"]["result"].is_null() {
        json!({ "error": e["placement"]["error"] })
    } else {
        json!({ "chosenWorkerId": chosen(e["placement"]["result"]["chosen"].as_u64()) })
    };
    let candidate = match policies.host().place(module, &req, &workers) {
        Ok(p) => json!({ "chosenWorkerId": chosen(p.chosen.map(u64::from)), "reason": p.reason }),
        Err(err) => json!({ "error": err.to_string() }),
    };
    calls.push(("place", recorded, candidate));
    calls
}

pub(crate) async fn simulate(
    app: &App,
    req: Request<Incoming>,
    id: &str,
) -> Result<Resp, ApiError> {
    let caller = Caller::of(&req)?;
    let record = policy_for(app, &caller, id).await?;
    let last = match query(&req, "last") {
        None => DEFAULT_LAST,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_DECISION_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("last must be 1..={MAX_DECISION_PAGE}"))
            })?,
    };
    let module = compiled(app, id).await?;
    let tenant = record.tenant_id.clone();
    let decisions = app
        .store
        .call(move |s| {
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
            Ok::<_, crate::store::StoreError>(all)
        })
        .await?;
    let policies = Arc::clone(&app.policies);
    let roles: Vec<Role> = Role::of(module.kind());
    let (evaluated, skipped, differences) = smol::unblock(move || {
        let (mut evaluated, mut skipped, mut differences) = (0usize, 0usize, Vec::new());
        for d in &decisions {
            let calls = replay(&policies, &module, &d.explanation);
            if calls.is_empty() {
                skipped += 1;
            } else {
                evaluated += 1;
            }
            for (call, recorded, candidate) in calls {
                let same = match (&recorded, &candidate) {
                    (r, c) if call == "place" => {
                        r["chosenWorkerId"] == c["chosenWorkerId"]
                            && r.get("error").is_none()
                            && c.get("error").is_none()
                    }
                    (r, c) => r == c,
                };
                if !same {
                    differences.push(json!({
                        "decisionId": d.id,
                        "tenantId": d.tenant_id,
                        "at": d.at,
                        "call": call,
                        "recorded": recorded,
                        "candidate": candidate,
                    }));
                }
            }
        }
        (evaluated, skipped, differences)
    })
    .await;
    Ok(json(
        StatusCode::OK,
        &json!({
            "policyId": record.id,
            "module": label(&record),
            "roles": roles,
            "evaluated": evaluated,
            "skipped": skipped,
            "differing": differences.len(),
            "differences": differences,
        }),
    ))
}
