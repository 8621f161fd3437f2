//! Enrolment over HTTP: a tenant's join tokens (`POST
//! /v1/tenants/{id}/join-tokens`), the one lifetime rule every join token
//! follows (fleet tokens too, `super::workers`), and `POST /v1/enroll`, where
//! a join token becomes a worker's credential, once, if the tenant's plan
//! admits one more worker (`crate::scheduling`).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::check_name;
use crate::auth::{self, TokenKind};
use crate::authz::Caller;
use crate::http::{json, read_json, ApiError, Resp};
use crate::store::{JoinRefusal, JoinToken, NewWorker};
use crate::{now_ms, App};

/// Join tokens live one hour unless asked otherwise, and at most 30 days.
const DEFAULT_JOIN_TTL_SECS: u64 = 3600;

const MAX_JOIN_TTL_SECS: u64 = 30 * 24 * 3600;

/// The lifetime in seconds of a join token asked for with `ttlSecs`: the one
/// rule for tenant and fleet join tokens alike.
pub(super) fn join_ttl(ttl_secs: Option<u64>) -> Result<u64, ApiError> {
    let ttl = ttl_secs.unwrap_or(DEFAULT_JOIN_TTL_SECS);
    if !(1..=MAX_JOIN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(format!(
            "ttlSecs must be between 1 and {MAX_JOIN_TTL_SECS}"
        )));
    }
    Ok(ttl)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateJoinToken {
    #[serde(default)]
    ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenView {
    pub token: String,
    pub tenant_id: String,
    pub expires_at: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnrollRequest {
    join_token: String,
    name: String,
    #[serde(default)]
    hostname: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrolled {
    pub worker_id: String,
    /// The worker's tenant; `null` for a fleet worker (it serves every tenant).
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub credential: String,
    /// `byom` or `fleet`: what the agent must register as.
    pub mode: String,
    /// A fleet worker's region.
    pub region: Option<String>,
}

pub(crate) async fn create_join_token(
    app: &App,
    req: Request<Incoming>,
    tenant_id: &str,
) -> Result<Resp, ApiError> {
    let body: CreateJoinToken = read_json(req).await?;
    let ttl = join_ttl(body.ttl_secs)?;
    let token = auth::mint(TokenKind::Join)?;
    let now = now_ms();
    let record = JoinToken {
        tenant_id: tenant_id.to_owned(),
        created_at: now,
        expires_at: now + ttl * 1000,
        used: false,
        fleet: None,
    };
    let hash = auth::hash_hex(&token);
    let stored = record.clone();
    app.store
        .call(move |s| s.create_join_token(&hash, &stored))
        .await?;
    tracing::info!(tenant_id, ttl_secs = ttl, "join token created");
    Ok(json(
        StatusCode::CREATED,
        &JoinTokenView {
            token,
            tenant_id: record.tenant_id,
            expires_at: record.expires_at,
        },
    ))
}

/// `POST /v1/enroll`: a join token becomes a worker credential, once. A
/// byom token's tenant must have room in its plan for one more self-hosted
/// worker (`scheduling::enrol`); a refusal leaves the token unused.
pub(crate) async fn enroll(
    app: &std::sync::Arc<App>,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body: EnrollRequest = read_json(req).await?;
    check_name("name", &body.name, 64)?;
    if let Some(hostname) = &body.hostname {
        check_name("hostname", hostname, 253)?;
    }
    if !body.join_token.starts_with(TokenKind::Join.prefix()) {
        return Err(ApiError::unauthorized(JoinRefusal::Unknown.to_string()));
    }
    let credential = auth::mint(TokenKind::Worker)?;
    let new = NewWorker {
        id: auth::uuid_v4()?,
        name: body.name,
        hostname: body.hostname,
        credential_hash: auth::hash_hex(&credential),
    };
    let join_hash = auth::hash_hex(&body.join_token);
    let outcome = crate::scheduling::enrol(app, join_hash, new).await?;
    let (worker, tenant) = match outcome {
        Ok(pair) => pair,
        Err(refusal) => {
            tracing::info!(%refusal, "enrolment refused");
            return Err(ApiError::unauthorized(refusal.to_string()));
        }
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.clone());
    let target = format!("worker:{}", worker.id);
    caller.noted(tenant_id.as_deref(), None, Some(&target));
    tracing::info!(worker_id = %worker.id, ?tenant_id, mode = worker.mode.as_str(), region = ?worker.region, name = %worker.name, "worker enrolled");
    Ok(json(
        StatusCode::CREATED,
        &Enrolled {
            worker_id: worker.id,
            tenant_id,
            tenant_name: tenant.map(|t| t.name),
            credential,
            mode: worker.mode.as_str().to_owned(),
            region: worker.region,
        },
    ))
}
