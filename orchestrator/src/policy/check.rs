//! What a policy answers is checked before anyone believes it: sizes are
//! capped, a placement has exactly one verdict per candidate, an
//! infeasible verdict says why, and the choice names a feasible candidate
//! that the host's own hard rules also allow (online, not drained or
//! cordoned, the pinned worker if any, a self-hosted worker only for its
//! own tenant). Anything else is nonsense and fails the decision closed.

use super::bindings::types as wit;
use super::types::{Admission, Placement, Request, Verdict, WorkerInput, WorkerMode};
use super::PolicyError;

/// Longest reason a verdict or an admission may give, bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest overall reason of a placement, bytes.
pub const MAX_SUMMARY_BYTES: usize = 4096;

fn nonsense(detail: impl Into<String>) -> PolicyError {
    PolicyError::Nonsense(detail.into())
}

fn capped(s: String, cap: usize, what: &str) -> Result<String, PolicyError> {
    if s.len() > cap {
        return Err(nonsense(format!(
            "{what} is {} bytes; at most {cap} are allowed",
            s.len()
        )));
    }
    Ok(s)
}

pub(super) fn admission(answer: wit::Admission) -> Result<Admission, PolicyError> {
    match answer {
        wit::Admission::Allow => Ok(Admission::Allow),
        wit::Admission::Deny(reason) => {
            let reason = capped(reason, MAX_REASON_BYTES, "the denial's reason")?;
            if reason.trim().is_empty() {
                return Err(nonsense("a denial without a reason"));
            }
            Ok(Admission::Deny(reason))
        }
    }
}

pub(super) fn placement(
    answer: wit::Placement,
    req: &Request,
    workers: &[WorkerInput],
) -> Result<Placement, PolicyError> {
    if answer.verdicts.len() != workers.len() {
        return Err(nonsense(format!(
            "{} verdicts for {} candidates",
            answer.verdicts.len(),
            workers.len()
        )));
    }
    let mut verdicts = Vec::with_capacity(workers.len());
    for (v, w) in answer.verdicts.into_iter().zip(workers) {
        let reason = capped(v.reason, MAX_REASON_BYTES, "a verdict's reason")?;
        if !v.feasible && reason.trim().is_empty() {
            return Err(nonsense(format!(
                "worker {} is infeasible without a reason",
                w.id
            )));
        }
        verdicts.push(Verdict {
            feasible: v.feasible,
            reason,
            score: v.score,
        });
    }
    let reason = capped(answer.reason, MAX_SUMMARY_BYTES, "the placement's reason")?;
    if let Some(chosen) = answer.chosen {
        let i = usize::try_from(chosen).unwrap_or(usize::MAX);
        let (Some(v), Some(w)) = (verdicts.get(i), workers.get(i)) else {
            return Err(nonsense(format!(
                "chose candidate {chosen} of {}",
                workers.len()
            )));
        };
        if !v.feasible {
            return Err(nonsense(format!(
                "chose worker {} which it judged infeasible",
                w.id
            )));
        }
        if let Some(rule) = hard_rule(req, w) {
            return Err(nonsense(format!("chose worker {} which is {rule}", w.id)));
        }
    }
    Ok(Placement {
        verdicts,
        chosen: answer.chosen,
        reason,
    })
}

/// The host's own rules, which no policy may overrule.
pub fn hard_rule(req: &Request, w: &WorkerInput) -> Option<&'static str> {
    if !w.online {
        return Some("offline");
    }
    if w.drained || w.cordoned {
        return Some("drained or cordoned");
    }
    if w.mode == WorkerMode::Byom && w.tenant_id != req.tenant_id {
        return Some("a self-hosted worker of another tenant");
    }
    if req.pinned_worker.as_ref().is_some_and(|p| *p != w.id) {
        return Some("not the pinned worker");
    }
    None
}
