//! Scheduling, the domain: which creates and enrolments a tenant's plan
//! admits, which worker a create goes to, and which policy modules make
//! those decisions. It knows no HTTP: the API authorises the caller, hands
//! over the tenant and the request, and maps a [`SchedulingError`] to its
//! status and code at its edge (`api::decisions`).
//!
//! * `admission`: plan admission and the write it allows, one serialisable
//!   step per tenant (`Store::create_admitted`, `Store::enroll`), and the
//!   per-tenant turn.
//! * `placement`: admission then placement for a create without a worker,
//!   the policies' view of a tenant, a request and a worker.
//! * `simulate`: recorded decisions replayed through a candidate module.
//! * [`admits`]: whether a worker takes new work now (draining: none;
//!   cordoned: no new containers), checked before anything is recorded.
//! * `activation`: policy modules made current, rolled back, and restored
//!   at start; no decision is made before they are ([`loaded`]).
//!
//! Every decision is stored with its typed explanation
//! (`policy::Explanation`) whatever the outcome, and its id is named in
//! every refusal.

use crate::auth::AuthError;
use crate::store::{StoreError, Worker};
use crate::App;

pub mod activation;
pub mod admission;
pub mod follow;
pub mod placement;
pub mod simulate;

pub use activation::{registry, spawn_restore};
pub use admission::{enrol, insert, ROUNDS};
pub use placement::{choose, Wishes};

/// Why scheduling refused or failed; the API maps each to one status and
/// code (the message is shown as it is).
#[derive(Debug, thiserror::Error)]
pub enum SchedulingError {
    /// The admission policy denied: the plan's limit (403 `plan_limit`).
    #[error("{reason} (decision {decision_id})")]
    Denied { reason: String, decision_id: String },
    /// A policy trapped, ran out, answered nonsense or failed closed (503
    /// `policy_failed`).
    #[error("{role} policy {module} failed (decision {decision_id}): {error}")]
    PolicyFailed {
        role: &'static str,
        module: String,
        decision_id: String,
        error: String,
    },
    /// Candidates online, none fits (409 `no_worker_fits`): the
    /// placement's reason with the first workers' reasons.
    #[error("{0}")]
    NoWorkerFits(String),
    /// No candidate that could serve the tenant is online (503
    /// `no_worker_online`).
    #[error("{0}")]
    NoWorkerOnline(String),
    /// The tenant's usage changed under every admission decision (503
    /// `admission_contended`); nothing was recorded.
    #[error("tenant {tenant_id}'s usage changed under each of {ROUNDS} admission decisions; nothing was recorded: retry")]
    Contended { tenant_id: String },
    /// The stored activations are not loaded (yet, or at all): 503 `not_ready`.
    #[error("{0}")]
    NotReady(String),
    /// A policy (or its module) that is not there (404).
    #[error("{0}")]
    NotFound(String),
    /// A module that does not compile or install, an unknown scope (400).
    #[error("{0}")]
    Refused(String),
    /// The worker is draining: it takes no new work (409 `worker_draining`).
    #[error("worker {0} is draining: it takes no new work")]
    Draining(String),
    /// The worker is cordoned: no new containers (409 `worker_cordoned`).
    #[error("worker {0} is cordoned: no new containers are placed on it")]
    Cordoned(String),
    /// A rollback of a policy current in no role (409).
    #[error("{0}")]
    NotActive(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Wait (up to `policy::load::WAIT`) until the stored activations are
/// loaded; [`SchedulingError::NotReady`] past that, or when they could
/// not be.
pub async fn loaded(app: &App) -> Result<(), SchedulingError> {
    app.policies
        .until_loaded(crate::policy::load::WAIT)
        .await
        .map_err(|e| SchedulingError::NotReady(e.to_string()))
}

/// What a request asks a worker to take on, for [`admits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A new container placed on the worker.
    Create,
    /// Any other new work: setup, exec, background, build.
    Other,
}

/// Refuse new work a draining (or, for a create, cordoned) worker must
/// not take. Placement offers such a worker as a candidate flagged
/// `drained`/`cordoned` (the policy refuses it); this is the check for
/// work that names its worker.
pub fn admits(worker: &Worker, work: Work) -> Result<(), SchedulingError> {
    if worker.draining {
        return Err(SchedulingError::Draining(worker.id.clone()));
    }
    if work == Work::Create && worker.cordoned {
        return Err(SchedulingError::Cordoned(worker.id.clone()));
    }
    Ok(())
}
