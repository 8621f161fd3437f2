//! The operations endpoints, open to anyone (they carry no ids or names):
//!
//! * `GET /healthz`: 200 `{"status":"ok"}` whenever the process answers.
//! * `GET /readyz`: 200 `{"status":"ready"}` while the listener accepts,
//!   the stored policy activations are loaded (the listener accepts while
//!   they load: `policy::load`) and the store answers a read within
//!   [`STORE_CHECK_TIMEOUT`]; otherwise 503 with the error shape and code
//!   `not_ready`. It turns 503 the moment
//!   shutdown begins, and stays so through the drain period
//!   ([`crate::ServeConfig::drain`]) in which the listener still accepts,
//!   so a load balancer stops sending traffic before connections are refused.
//! * `GET /metrics`: the registry of [`crate::metrics`] as Prometheus text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::http::{json, Resp};
use crate::metrics::Sampled;
use crate::store::StoreError;
use crate::{now_ms, App};

/// How long the store may take to answer the readiness read.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of the text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `/readyz` answers 503.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the orchestrator is not accepting connections (starting or shutting down)")]
    NotAccepting,
    #[error("the store did not answer within {0:?}")]
    StoreSlow(Duration),
    #[error("the store cannot be read: {0}")]
    Store(#[source] StoreError),
    #[error("{0}")]
    Policies(#[source] crate::policy::PolicyError),
}

/// Whether the listener is accepting and shutdown has not begun.
///
/// Set by `serve` just before its accept loop starts; cleared the moment
/// the shutdown future completes (before the drain period) and never set
/// again. Read by `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    accepting: AtomicBool,
}

impl Readiness {
    pub fn set_accepting(&self, accepting: bool) {
        if self.accepting.swap(accepting, Ordering::SeqCst) != accepting {
            tracing::info!(ready = accepting, "readiness changed");
        }
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }
}

/// `GET /healthz`.
pub(crate) fn healthz() -> Resp {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`.
pub(crate) async fn readyz(app: &Arc<App>) -> Resp {
    match check(app).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Err(why) => {
            tracing::debug!(%why, "not ready");
            let body = serde_json::json!({
                "error": { "code": "not_ready", "message": why.to_string() }
            });
            json(StatusCode::SERVICE_UNAVAILABLE, &body)
        }
    }
}

async fn check(app: &Arc<App>) -> Result<(), NotReady> {
    if !app.readiness.accepting() {
        return Err(NotReady::NotAccepting);
    }
    app.policies.load_state().map_err(NotReady::Policies)?;
    let read = async { Some(app.store.call(|s| s.check()).await) }
        .or(async {
            smol::Timer::after(STORE_CHECK_TIMEOUT).await;
            None
        })
        .await;
    match read {
        Some(Ok(())) if app.readiness.accepting() => Ok(()),
        Some(Ok(())) => Err(NotReady::NotAccepting),
        Some(Err(error)) => Err(NotReady::Store(error)),
        None => Err(NotReady::StoreSlow(STORE_CHECK_TIMEOUT)),
    }
}

/// `GET /metrics`.
pub(crate) fn metrics(app: &App) -> Resp {
    let window_ms = u64::try_from(app.offline_after().as_millis()).unwrap_or(u64::MAX);
    let (workers_online, workers_connected) = app.hub.online_counts(now_ms(), window_ms);
    let sampled = Sampled {
        workers_online,
        workers_connected,
        commands_in_flight: app.hub.pending_count(),
        ready: app.readiness.accepting() && app.policies.load_state().is_ok(),
        store_conflicts: app.store.conflicts(),
    };
    let mut resp = Response::new(Full::new(Bytes::from(app.metrics.render(sampled))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
    resp
}
