//! Plan admission and the write it allows, as one serialisable step per
//! tenant: a create's insert ([`insert`]) and an enrolment ([`enrol`]).
//!
//! The tenant's admission policy decides on a snapshot of the tenant's
//! usage (the store's counters, one key: `store::usage`), outside any write
//! transaction, so a slow policy never holds the store's writer. The write
//! then goes through a store method given the usage the policy saw
//! ([`crate::store::Admitted`]): in its own transaction it compares that
//! usage with the tenant's usage now and writes only if they are equal,
//! storing the decision beside the record. If the usage changed meanwhile
//! (another create or enrolment of the tenant, a container changing state)
//! nothing is written and the policy decides again on the new usage, up to
//! [`ROUNDS`] times; then the call is refused
//! ([`SchedulingError::Contended`]; nothing recorded, a retry is safe). A denial
//! needs no check: refusing on a usage the tenant held a moment ago is
//! what a call ordered just before the change would have got.
//!
//! The check lives in the transaction, so it holds however many processes
//! share the database. Within one process, calls for one tenant also take
//! turns ([`turn`]): without that, N simultaneous creates of a tenant would
//! decide N times on the same usage and all but one decide again, N² policy
//! calls for a burst. Replicas sharing PostgreSQL also take the tenant's
//! turn in the database (`Store::tenant_turn`): without it, enrolments of
//! one tenant spread over three replicas kept losing to each other until
//! some were refused after [`ROUNDS`] (issue 14's benchmark). The turns
//! are only about wasted work, never about correctness.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use protocol::container::ContainerCreate;

use super::placement::{plan_of, request_of, usage_of, Placed, Wishes};
use super::{loaded, SchedulingError};
use crate::policy::{Admission, Answer, EnrolmentAsked, Explanation, Request};
use crate::store::{
    Admitted, AdmittedCreate, ContainerRecord, CreateOutcome, DecisionRecord, Enrolment,
    JoinRefusal, NewWorker, Store, Tenant, TenantUsage, Worker,
};
use crate::{auth, now_ms, App};

/// Decisions per call before a tenant whose usage keeps changing is told
/// to retry.
pub const ROUNDS: usize = 16;

/// Stripes of per-tenant turns (tenants sharing a stripe take turns too).
const STRIPES: usize = 64;
static TURNS: [smol::lock::Mutex<()>; STRIPES] = [const { smol::lock::Mutex::new(()) }; STRIPES];

/// This process's turn to admit for `tenant_id`.
async fn turn(tenant_id: &str) -> smol::lock::MutexGuard<'static, ()> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant_id.hash(&mut h);
    TURNS[(h.finish() % STRIPES as u64) as usize].lock().await
}

fn contended(tenant_id: &str) -> SchedulingError {
    SchedulingError::Contended {
        tenant_id: tenant_id.to_owned(),
    }
}

/// `admitted`, or `denied`/`failed` with the error to answer, for the
/// decision `id`.
pub(super) fn admission_outcome(
    admitted: &crate::policy::Decided<Admission>,
    id: &str,
) -> (&'static str, Option<SchedulingError>) {
    match &admitted.value {
        Ok(Admission::Allow) => ("admitted", None),
        Ok(Admission::Deny(reason)) => (
            "denied",
            Some(SchedulingError::Denied {
                reason: reason.clone(),
                decision_id: id.to_owned(),
            }),
        ),
        Err(e) => (
            "failed",
            Some(SchedulingError::PolicyFailed {
                role: "admission",
                module: admitted.module.clone(),
                decision_id: id.to_owned(),
                error: e.to_string(),
            }),
        ),
    }
}

/// The admission policy's decision on `usage`: an allowing decision (to
/// store with the write), or the error of a denial or failure, whose
/// decision is stored here.
fn decide(
    app: &App,
    s: &Store,
    tenant: &Tenant,
    usage: &TenantUsage,
    ask: &Ask<'_>,
) -> Result<DecisionRecord, SchedulingError> {
    let (plan, used) = (plan_of(tenant), usage_of(usage));
    let mut explanation = Explanation::default();
    let admitted = match ask {
        Ask::Create { request, record } => {
            explanation.request = Some((*request).clone());
            explanation.chosen_worker_id = Some(record.worker_id.clone());
            app.policies.admit(request, &plan, &used)
        }
        Ask::Enrolment => {
            explanation.enrolment = Some(EnrolmentAsked {
                tenant_id: tenant.id.clone(),
            });
            app.policies.admit_worker(&tenant.id, &plan, &used)
        }
    };
    explanation.plan = Some(plan);
    explanation.usage = Some(used);
    explanation.admission = Some(Answer::from(&admitted));
    let id = auth::uuid_v4()?;
    let (outcome, error) = admission_outcome(&admitted, &id);
    let container_id = match ask {
        Ask::Create { record, .. } => Some(record.id.clone()),
        Ask::Enrolment => None,
    };
    let decision = DecisionRecord {
        id,
        tenant_id: tenant.id.clone(),
        at: now_ms(),
        outcome: outcome.to_owned(),
        container_id,
        explanation: explanation.into(),
    };
    app.metrics.policy_decision(&decision.outcome);
    tracing::debug!(decision_id = %decision.id, tenant_id = %tenant.id, outcome, "admission");
    match error {
        None => Ok(decision),
        Some(error) => {
            s.put_decision(&decision)?;
            Err(error)
        }
    }
}

/// What is being admitted.
enum Ask<'a> {
    Create {
        request: &'a Request,
        record: &'a ContainerRecord,
    },
    Enrolment,
}

/// Insert `record` (state `creating`) as admission allows: for a create
/// that named its worker, the tenant's admission policy decides here; for
/// one placement chose (`placed`), it decided already and decides again
/// only if the tenant's usage changed since. Refused with
/// [`SchedulingError::Denied`] (the policy's reason) or
/// [`SchedulingError::PolicyFailed`].
/// Every decision is stored (`admitted`, `denied` or `failed`; placement's
/// own is `placed`).
pub async fn insert(
    app: &Arc<App>,
    tenant: &Tenant,
    command: &ContainerCreate,
    record: ContainerRecord,
    placed: Option<Placed>,
) -> Result<CreateOutcome, SchedulingError> {
    loaded(app).await?;
    let _turn = turn(&tenant.id).await;
    let decided = placed.and_then(|p| p.decided);
    let pinned = || {
        request_of(
            tenant,
            command,
            Wishes::default(),
            Some(record.worker_id.clone()),
        )
    };
    let request = decided.as_ref().map_or_else(pinned, |(r, _)| r.clone());
    let (task_app, tenant) = (Arc::clone(app), tenant.clone());
    app.store
        .call(move |s| {
            let _db_turn = s.tenant_turn(&tenant.id)?;
            let ask = Ask::Create {
                request: &request,
                record: &record,
            };
            let (mut usage, mut decision) = match decided {
                Some((_, usage)) => (usage, None),
                None => {
                    let usage = s.tenant_usage(&tenant.id)?;
                    (usage, Some(decide(&task_app, s, &tenant, &usage, &ask)?))
                }
            };
            for _ in 0..ROUNDS {
                let admitted = Admitted {
                    usage: &usage,
                    decision: decision.as_ref(),
                };
                match s.create_admitted(&record, admitted)? {
                    AdmittedCreate::Done(outcome) => return Ok(outcome),
                    AdmittedCreate::Changed(now) => {
                        usage = now;
                        decision = Some(decide(&task_app, s, &tenant, &usage, &ask)?);
                    }
                }
            }
            Err(contended(&tenant.id))
        })
        .await
}

/// An enrolment's write: the join token (`join_hash`) exchanged for
/// `new`, held to the tenant's self-hosted worker limit for a tenant's
/// token (the `admit-worker` policy; [`SchedulingError::Denied`] with its
/// reason, the token left unused). A fleet token has no tenant and no plan.
pub async fn enrol(
    app: &Arc<App>,
    join_hash: String,
    new: NewWorker,
) -> Result<Result<(Worker, Option<Tenant>), JoinRefusal>, SchedulingError> {
    let key = join_hash.clone();
    let token = app.store.read_now(move |s| s.get_join_token(&key)).await?;
    let tenant_id = token
        .filter(|t| t.fleet.is_none() && !t.used)
        .map(|t| t.tenant_id);
    if tenant_id.is_some() {
        // A tenant's enrolment is decided by its admission policy.
        loaded(app).await?;
    }
    let _turn = match &tenant_id {
        Some(id) => Some(turn(id).await),
        None => None,
    };
    let task_app = Arc::clone(app);
    app.store
        .call(move |s| {
            let _db_turn = tenant_id.as_deref().map(|t| s.tenant_turn(t)).transpose()?;
            let now = now_ms();
            // Decide on a snapshot first, so the enrolment's transaction
            // normally finds the usage unchanged and writes at once.
            let mut decided = None;
            let mut last_tenant = tenant_id.clone().unwrap_or_default();
            if let Some(tenant) = tenant_id.map(|id| s.get_tenant(&id)).transpose()?.flatten() {
                let usage = s.tenant_usage(&tenant.id)?;
                let decision = decide(&task_app, s, &tenant, &usage, &Ask::Enrolment)?;
                decided = Some((usage, decision));
            }
            for _ in 0..ROUNDS {
                let admitted = decided.as_ref().map(|(usage, decision)| Admitted {
                    usage,
                    decision: Some(decision),
                });
                match s.enroll(&join_hash, now, &new, admitted)? {
                    Enrolment::Enrolled(worker, tenant) => return Ok(Ok((*worker, tenant))),
                    Enrolment::Refused(refusal) => return Ok(Err(refusal)),
                    Enrolment::Decide { tenant, usage } => {
                        last_tenant.clone_from(&tenant.id);
                        let decision = decide(&task_app, s, &tenant, &usage, &Ask::Enrolment)?;
                        decided = Some((usage, decision));
                    }
                }
            }
            Err(contended(&last_tenant))
        })
        .await
}
