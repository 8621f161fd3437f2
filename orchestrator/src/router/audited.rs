//! The audit middleware around the route table: every mutating call
//! (any method but `GET`) past authentication gets its audit entry before
//! its answer goes out, whatever its handler; a call on a worker's
//! container announces itself first as an intent (see `crate::audit` for
//! the durability each kind of call gets, and why).
//!
//! The middleware decides from the route alone
//! ([`super::Endpoint::on_worker`], [`super::Endpoint::defers_intent`],
//! [`super::Endpoint::settles_record`]); a handler
//! that queues its intent itself gets it as an argument
//! ([`super::Call::intent`]) and says nothing else to the middleware.

use std::sync::Arc;

use super::RouteDef;
use crate::audit::{AuditError, Deferred, Intent};
use crate::authz::Caller;
use crate::http::{ApiError, Resp};
use crate::App;

/// A request's audit state, which outlives the request: when hyper drops an
/// abandoned request (its client hung up) after the call's intent was
/// queued, the intent still gets its entry, outcome `client_closed` (499),
/// instead of lying in the journal until a restart calls it `interrupted`.
/// The handler's own work on the worker goes on ([`crate::api::relay`]).
pub(super) struct Slot {
    app: Arc<App>,
    path: String,
    /// A mutating request past authentication: appended to the audit log
    /// once answered; with its intent, queued once authorised, when it acts
    /// on a worker's container.
    audited: Option<(&'static RouteDef, Caller, Intended)>,
}

/// How a call on a worker's container announced itself to the audit log.
enum Intended {
    /// Not such a call: audited once answered.
    No,
    /// Its intent, queued once authorised.
    Queued(Intent),
    /// Its intent, for the handler to queue (a create; see `crate::audit`).
    Deferred(Deferred),
}

/// An audit entry that could not be appended: the store's failure as 500
/// (503 when the database cannot be reached), a stopped writer (shutdown)
/// as 503. Either way the call is not
/// acknowledged. (Here, not in `crate::http`, which knows nothing of the
/// audit log; handlers that queue an intent use it too.)
impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Store(error) => Self::from(error),
            other => Self::Worker {
                status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: format!("the audit log cannot be written: {other}"),
            },
        }
    }
}

impl Intended {
    /// The queued intent, if there is one.
    fn into_intent(self) -> Option<Intent> {
        match self {
            Self::No => None,
            Self::Queued(intent) => Some(intent),
            Self::Deferred(deferred) => deferred.take(),
        }
    }
}

impl Slot {
    /// The state of a request on `path`, not audited (yet).
    pub(super) fn new(app: &Arc<App>, path: &str) -> Self {
        Self {
            app: Arc::clone(app),
            path: path.to_owned(),
            audited: None,
        }
    }

    /// The request mutates and `caller` is authenticated: it gets an
    /// entry, refused or not.
    pub(super) fn mutating(&mut self, def: &'static RouteDef, caller: &Caller) {
        self.audited = Some((def, caller.clone(), Intended::No));
    }

    /// The caller is authorised: queue the intent of a call on a worker's
    /// container, or hand it to a handler that queues it itself (returned).
    pub(super) async fn authorised(&mut self) -> Result<Option<Deferred>, ApiError> {
        let Self { app, path, audited } = self;
        let Some((def, caller, intended)) = audited else {
            return Ok(None);
        };
        if def.endpoint.defers_intent() {
            let deferred = Deferred::new(def.audit_route(), caller, path);
            *intended = Intended::Deferred(deferred.clone());
            return Ok(Some(deferred));
        }
        if def.endpoint.on_worker() {
            let intent = crate::audit::api_intent(app, def.audit_route(), caller, path).await?;
            *intended = Intended::Queued(intent);
        }
        Ok(None)
    }

    /// The response to `result`, once the call's entry is appended (or its
    /// intent completed); 500 or 503 instead if the entry cannot be.
    pub(super) async fn answer(&mut self, result: Result<Resp, ApiError>) -> Resp {
        let audited = self.audited.take();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.status_and_code().1,
        };
        let mut resp = result.unwrap_or_else(ApiError::into_response);
        let Some((def, caller, intent)) = audited else {
            return resp;
        };
        let (app, path) = (&self.app, self.path.as_str());
        let status = resp.status().as_u16();
        let appended = match intent.into_intent() {
            // Durable by now, most likely: it was committed while the
            // worker ran Podman. The entry follows without a wait, unless
            // the answer reports a container state the call wrote and that
            // write is not durable yet (the durable record update that
            // settles a call carries it; a call that settled nothing, such
            // as a retried create answering the record another request
            // wrote, may not): then the answer waits for the entry's
            // durable commit, which carries it to disk (an answer's state
            // survives kill -9).
            Some(intent) => match intent.recorded().await {
                Ok(id) => {
                    let call = (def.audit_route(), &caller, path);
                    let settled = def.endpoint.settles_record() && !app.store.api_writes_durable();
                    crate::audit::api_outcome(app, id, call, (status, outcome), settled).await
                }
                Err(error) => Err(error),
            },
            None => {
                let route = def.audit_route();
                crate::audit::api_call(app, route, &caller, path, status, outcome).await
            }
        };
        if let Err(error) = appended {
            // Never acknowledge a call whose entry could not be written.
            tracing::error!(%error, "cannot audit a call");
            resp = ApiError::from(error).into_response();
        }
        resp
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((def, caller, intended)) = self.audited.take() else {
            return;
        };
        let Some(intent) = intended.into_intent() else {
            return;
        };
        let (app, path) = (Arc::clone(&self.app), std::mem::take(&mut self.path));
        self.app.life.spawn(async move {
            if let Ok(id) = intent.recorded().await {
                let call = (def.audit_route(), &caller, path.as_str());
                let closed = (499, "client_closed");
                let _ = crate::audit::api_outcome(&app, id, call, closed, false).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::{find, Endpoint, ROUTES};

    /// Exactly one route queues its intent from its handler, and it is a
    /// call on a worker's container (so its entry goes ahead as an intent).
    #[test]
    fn only_the_create_defers_its_intent() {
        let deferring: Vec<Endpoint> = ROUTES
            .iter()
            .map(|d| d.endpoint)
            .filter(|e| e.defers_intent())
            .collect();
        assert_eq!(deferring, [Endpoint::CreateContainer]);
        assert!(deferring.iter().all(|e| e.on_worker()));
        let (def, _) = find(&hyper::Method::POST, "/v1/containers").unwrap();
        assert!(def.endpoint.settles_record());
    }
}
