//! `POST /v1/policies/{id}/simulate?last=N`: the last N recorded decisions
//! of a policy's scope replayed through it (inputs as stored in each
//! decision's explanation), without activating it or marking its health;
//! the answer lists where it would decide differently.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::{compiled, label, policy_for};
use crate::authz::Caller;
use crate::http::{json, query, ApiError, Resp};
use crate::policy::{Compiled, PlanInput, Policies, Request as PolicyRequest, Usage, WorkerInput};
use crate::store::MAX_DECISION_PAGE;
use crate::App;

/// Decisions replayed by a simulation when `last` is not given.
const DEFAULT_LAST: usize = 20;

/// One recorded decision replayed through the candidate.
fn replay(
    policies: &Policies,
    module: &Compiled,
    kind: &str,
    e: &Value,
) -> Option<(&'static str, Value, Value)> {
    let req: PolicyRequest = serde_json::from_value(e["request"].clone()).ok()?;
    if kind == "admission" {
        let plan: PlanInput = serde_json::from_value(e["plan"].clone()).ok()?;
        let usage: Usage = serde_json::from_value(e["usage"].clone()).ok()?;
        let recorded = e["admission"]["result"].clone();
        let candidate = match policies.host().admit(module, &req, &plan, &usage) {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(err) => json!({ "error": err.to_string() }),
        };
        return Some(("admit", recorded, candidate));
    }
    let workers: Vec<WorkerInput> = serde_json::from_value(e["workers"].clone()).ok()?;
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
    Some(("place", recorded, candidate))
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
    let kind = record.kind.clone();
    let (evaluated, skipped, differences) = smol::unblock(move || {
        let (mut evaluated, mut skipped, mut differences) = (0usize, 0usize, Vec::new());
        for d in &decisions {
            match replay(&policies, &module, &kind, &d.explanation) {
                None => skipped += 1,
                Some((call, recorded, candidate)) => {
                    evaluated += 1;
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
        }
        (evaluated, skipped, differences)
    })
    .await;
    Ok(json(
        StatusCode::OK,
        &json!({
            "policyId": record.id,
            "module": label(&record),
            "evaluated": evaluated,
            "skipped": skipped,
            "differing": differences.len(),
            "differences": differences,
        }),
    ))
}
