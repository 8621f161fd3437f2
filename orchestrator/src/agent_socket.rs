//! The agent WebSocket endpoint, `GET /v1/agent`: the credential check
//! before the upgrade, and the handover of the upgraded connection to its
//! task (`session`).
//!
//! Life of a connection: HTTP 401 with a reason unless the Bearer credential
//! is a known, unrevoked worker credential; otherwise 101, and one task owns
//! the WebSocket from then on. The first message must be a good
//! `worker.register` within the register timeout (else 4003); anything else
//! first is answered with an `error` and closed with 4000. After the
//! `worker.accepted`, the connection is the worker's live one in the hub
//! (replacing an older one, closed with 4009). Malformed or unknown messages
//! are answered and the connection stays; floods close with 4008, silence
//! for three heartbeat intervals with 4010, oversized messages with 1009,
//! revocation with 4001, shutdown with 1001. The task never panics on what
//! the peer sends.

mod frames;
mod inventory;
mod register;
mod session;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;

use crate::http::{ApiError, Resp};
use crate::{auth, socket, App};

/// Check the credential and the upgrade headers, answer 101 and start the
/// connection task; or answer 401/400 with the reason.
pub(crate) async fn accept(app: Arc<App>, mut req: Request<Incoming>) -> Result<Resp, ApiError> {
    let token = auth::bearer(req.headers())
        .map_err(|e| ApiError::unauthorized(e.to_string()))?
        .ok_or_else(|| ApiError::unauthorized("missing credential"))?;
    let hash = auth::hash_hex(token);
    let verifying = crate::connections::verifying(&req);
    let worker = app
        .store
        .call(move |s| s.authenticate_worker(&hash))
        .await?;
    drop(verifying);
    let worker = worker.ok_or_else(|| ApiError::unauthorized("unknown credential"))?;
    if worker.revoked {
        return Err(ApiError::unauthorized("credential revoked"));
    }
    crate::connections::authenticated(&req);
    let accept_key =
        socket::accept_key(&req).map_err(|refused| ApiError::bad_request(refused.0))?;
    let (resp, upgraded) = socket::upgrade(&mut req, accept_key, None);
    let task_app = Arc::clone(&app);
    let worker_id = worker.id;
    app.life.spawn(async move {
        match upgraded.await {
            Ok(io) => session::run(task_app, worker_id, io).await,
            Err(error) => tracing::warn!(%worker_id, %error, "WebSocket upgrade failed"),
        }
    });
    Ok(resp)
}
