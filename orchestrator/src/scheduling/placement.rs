//! A create without a `workerId`: admit, then place; the ordinary create
//! on the chosen worker follows, whose insert re-checks admission
//! (`scheduling::admission`). A create with a `workerId` is admitted at
//! the insert only, so plan limits hold however a container is asked for.
//!
//! The inputs come from the store (the tenant's plan, its usage counters,
//! every worker with its last heartbeat) and the hub (who is online now).
//! Both decisions run on the blocking pool (they are CPU work in
//! wasmtime). Every decision is stored with its explanation, whatever the
//! outcome, and its id is named in every refusal:
//!
//! * denied by admission: [`SchedulingError::Denied`] with the policy's reason;
//! * the policy failed (trap, fuel, memory, nonsense, fail-closed):
//!   [`SchedulingError::PolicyFailed`];
//! * no candidate online at all: [`SchedulingError::NoWorkerOnline`];
//! * candidates online but none fits: [`SchedulingError::NoWorkerFits`],
//!   with every worker's reason (the first 20 in the message; all in the
//!   decision).
//!
//! A local image (`localhost/...`) exists only where it was built: for
//! one, every online candidate that could serve the tenant is asked for
//! its images (`images.list`, concurrently, [`IMAGE_QUERY`] each; a worker
//! that does not answer in time counts as not having it). A worker's
//! labels and security floor are what its agent registered (`--label`,
//! `--security-floor`); the agent still enforces its floor itself.

use std::sync::Arc;

use protocol::container::Empty;
use protocol::container::{ContainerCreate, Profile as WireProfile};
use protocol::Body;
use serde::Deserialize;

use super::{loaded, SchedulingError};
use crate::policy::{
    Answer, Decided, Explanation, PlanInput, Profile, Request, Usage, WorkerInput, WorkerMode,
};
use crate::presence::{presence, Presence};
use crate::store::{
    DecisionRecord, HeartbeatRecord, StoreError, Tenant, TenantUsage, Worker,
    WorkerMode as StoredMode,
};
use crate::{auth, now_ms, App};

/// Placement wishes a create may carry beside the container itself.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wishes {
    pub platform: Option<String>,
    pub arch: Option<String>,
    pub region: Option<String>,
}

impl Wishes {
    pub fn is_empty(&self) -> bool {
        self.platform.is_none() && self.arch.is_none() && self.region.is_none()
    }
}

/// What placement decided for a create without a `workerId`: the chosen
/// worker, the request admission allowed and the usage it allowed it on
/// (the insert checks it is still the tenant's: [`super::insert`]).
#[derive(Debug, Clone)]
pub struct Placed {
    pub worker_id: String,
    pub(super) decided: Option<(Request, TenantUsage)>,
}

/// How long a placement waits for a candidate's image list.
pub const IMAGE_QUERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Most per-worker reasons quoted in an error message.
const QUOTED_REASONS: usize = 20;

/// The memory cap and cores of a profile (SPEC's security profile table).
fn grants(profile: WireProfile) -> (Profile, u64, u32) {
    match profile {
        WireProfile::Open => (Profile::Open, 4 << 30, 0),
        WireProfile::Standard => (Profile::Standard, 4 << 30, 2),
        WireProfile::Strict => (Profile::Strict, 2 << 30, 1),
        WireProfile::Offline => (Profile::Offline, 2 << 30, 1),
    }
}

fn policy_failed<T>(
    role: &'static str,
    d: &Decided<T>,
    id: &str,
    error: String,
) -> SchedulingError {
    SchedulingError::PolicyFailed {
        role,
        module: d.module.clone(),
        decision_id: id.to_owned(),
        error,
    }
}

/// Run admission and placement for `command` of `tenant` (whom the caller
/// may use: the API checked), a new container id (a retry of a create
/// that was placed goes where it went: the API finds its record first).
pub async fn choose(
    app: &Arc<App>,
    tenant: &Tenant,
    command: &ContainerCreate,
    wishes: Wishes,
) -> Result<Placed, SchedulingError> {
    loaded(app).await?;
    let key = tenant.id.clone();
    let (counted, workers) = app
        .store
        .call(move |s| Ok::<_, StoreError>((s.tenant_usage(&key)?, s.list_workers()?)))
        .await?;
    let now = now_ms();
    let usage = usage_of(&counted);
    let plan = plan_of(tenant);
    let request = request_of(tenant, command, wishes, None);
    let mut candidates: Vec<WorkerInput> = workers
        .iter()
        .filter(|(w, _)| !w.revoked && !w.is_deleted())
        .map(|(w, beat)| candidate(w, beat.as_ref(), presence(app, w, beat.as_ref(), now)))
        .collect();

    let policies = Arc::clone(&app.policies);
    let (req, plan_in, usage_in) = (request.clone(), plan.clone(), usage);
    let admitted = smol::unblock(move || policies.admit(&req, &plan_in, &usage_in)).await;
    let mut explanation = Explanation {
        request: Some(request.clone()),
        plan: Some(plan),
        usage: Some(usage),
        admission: Some(Answer::from(&admitted)),
        ..Explanation::default()
    };
    let id = auth::uuid_v4()?;
    let record = |outcome: &str, explanation: Explanation| DecisionRecord {
        id: id.clone(),
        tenant_id: tenant.id.clone(),
        at: now,
        outcome: outcome.to_owned(),
        container_id: Some(command.container_id.clone()),
        explanation: explanation.into(),
    };
    let (outcome, refused) = super::admission::admission_outcome(&admitted, &id);
    if let Some(error) = refused {
        store(app, record(outcome, explanation)).await?;
        return Err(error);
    }

    if request.image.starts_with("localhost/") {
        local_images(app, &tenant.id, &mut candidates).await;
    }
    let policies = Arc::clone(&app.policies);
    let (req, ws) = (request.clone(), candidates.clone());
    let placed = smol::unblock(move || policies.place(&req, &ws)).await;
    explanation.workers = Some(candidates.clone());
    explanation.placement = Some(Answer::from(&placed));
    let placement = match placed.value {
        Ok(ref p) => p.clone(),
        Err(ref e) => {
            let error = policy_failed("placement", &placed, &id, e.to_string());
            store(app, record("failed", explanation)).await?;
            return Err(error);
        }
    };
    let chosen = placement
        .chosen
        .and_then(|i| candidates.get(i as usize))
        .map(|w| w.id.clone());
    let Some(worker_id) = chosen else {
        let reasons: Vec<String> = candidates
            .iter()
            .zip(&placement.verdicts)
            .take(QUOTED_REASONS)
            .map(|(w, v)| format!("{}: {}", w.id, v.reason))
            .collect();
        // Not online when nothing that could ever serve the tenant is online now.
        let online = candidates
            .iter()
            .any(|w| w.online && (w.mode == WorkerMode::Fleet || w.tenant_id == request.tenant_id));
        store(app, record("no_fit", explanation)).await?;
        let message = format!(
            "{} (decision {id}){}{}",
            placement.reason,
            if reasons.is_empty() { "" } else { ": " },
            reasons.join("; ")
        );
        return Err(if online {
            SchedulingError::NoWorkerFits(message)
        } else {
            SchedulingError::NoWorkerOnline(message)
        });
    };
    explanation.chosen_worker_id = Some(worker_id.clone());
    store(app, record("placed", explanation)).await?;
    tracing::info!(decision_id = %id, tenant_id = %tenant.id, %worker_id, module = %placed.module, "container placed");
    Ok(Placed {
        worker_id,
        decided: Some((request, counted)),
    })
}

/// The policies' view of a create.
pub(super) fn request_of(
    tenant: &Tenant,
    command: &ContainerCreate,
    wishes: Wishes,
    pinned_worker: Option<String>,
) -> Request {
    let (profile, memory_bytes, cpus) = grants(command.profile);
    Request {
        tenant_id: tenant.id.clone(),
        name: command.name.clone(),
        image: command.image.clone(),
        profile,
        pinned_worker,
        platform: wishes.platform,
        arch: wishes.arch,
        region: wishes.region,
        memory_bytes,
        cpus,
        labels: command.labels.clone().into_iter().collect(),
    }
}

/// Fill in the local images of every online candidate that could serve
/// `tenant_id`, asking them all at once.
async fn local_images(app: &App, tenant_id: &str, candidates: &mut [WorkerInput]) {
    let asks: Vec<_> = candidates
        .iter()
        .enumerate()
        .filter(|(_, w)| w.online && (w.mode == WorkerMode::Fleet || w.tenant_id == tenant_id))
        .map(|(i, w)| {
            let hub = Arc::clone(&app.hub);
            let id = w.id.clone();
            smol::spawn(async move {
                let reply = hub
                    .request(&id, Body::ImagesList(Empty {}), IMAGE_QUERY)
                    .await;
                (i, id, reply)
            })
        })
        .collect();
    for ask in asks {
        let (i, id, reply) = ask.await;
        match reply {
            Ok(Body::ImagesListed(listing)) => {
                candidates[i].images = listing
                    .images
                    .into_iter()
                    .flat_map(|image| image.names)
                    .filter(|name| name.starts_with("localhost/"))
                    .collect();
            }
            Ok(other) => {
                tracing::warn!(worker_id = %id, reply = other.type_name(), "images.list answered with another type")
            }
            Err(error) => tracing::info!(worker_id = %id, %error, "no image list for placement"),
        }
    }
}

async fn store(app: &App, record: DecisionRecord) -> Result<(), SchedulingError> {
    app.metrics.policy_decision(&record.outcome);
    app.store.call(move |s| s.put_decision(&record)).await?;
    Ok(())
}

pub(super) fn plan_of(tenant: &Tenant) -> PlanInput {
    let limits = tenant.plan.limits();
    PlanInput {
        name: tenant.plan.name().to_owned(),
        self_hosted_workers: limits.workers,
        concurrent_containers: limits.concurrent_containers,
    }
}

/// The policies' view of a tenant's usage counters.
pub(super) fn usage_of(u: &TenantUsage) -> Usage {
    Usage {
        creating: u.creating,
        created: u.created,
        running: u.running,
        exited: u.exited,
        lost: u.lost,
        failed: u.failed,
        self_hosted_workers: u.workers,
    }
}

/// A worker's stored floor (`RegisterInfo::security_floor`); a name this
/// build does not know counts as the strongest, so a worker is never offered
/// work weaker than it may accept.
fn stored_profile(name: &str) -> Profile {
    match name {
        "open" => Profile::Open,
        "standard" => Profile::Standard,
        "strict" => Profile::Strict,
        _ => Profile::Offline,
    }
}

/// A stored worker as a policy candidate.
pub fn candidate(w: &Worker, beat: Option<&HeartbeatRecord>, now: Presence) -> WorkerInput {
    let reg = w.register.as_ref();
    let memory_total = reg.map_or(0, |r| r.memory_total);
    WorkerInput {
        id: w.id.clone(),
        mode: match w.mode {
            StoredMode::Byom => WorkerMode::Byom,
            StoredMode::Fleet => WorkerMode::Fleet,
        },
        tenant_id: w.tenant_scope().unwrap_or_default().to_owned(),
        platform: reg
            .map(|r| r.platform.clone())
            .or_else(|| w.enrolled_platform.clone())
            .unwrap_or_default(),
        arch: reg.and_then(|r| r.arch.clone()).unwrap_or_default(),
        region: w.region.clone().unwrap_or_default(),
        labels: reg
            .map(|r| r.labels.clone().into_iter().collect())
            .unwrap_or_default(),
        cpu_count: reg.map_or(0, |r| r.cpu_count),
        memory_total,
        memory_free: beat.map_or(memory_total, |b| b.memory_free),
        disk_free: beat.and_then(|b| b.disk_free),
        // cpuUsage is 0-100 %; the contract wants per mille, clamped.
        cpu_load_permille: beat.map_or(0, |b| (b.cpu_usage * 10.0).clamp(0.0, 1000.0) as u32),
        containers_running: beat.map_or(0, |b| b.containers_running),
        images: Vec::new(),
        security_floor: reg
            .and_then(|r| r.security_floor.as_deref())
            .map_or(Profile::Open, stored_profile),
        drained: w.draining,
        cordoned: w.cordoned,
        online: now == Presence::Online,
    }
}
