//! `GET /v1/containers/{id}/terminal` before the upgrade: the dispatcher
//! has authenticated the caller (a bearer header, or the subprotocol
//! `bearer.<token>` a browser offers beside `crops.terminal.v1`) and
//! checked the route's rule (a member of the container's tenant, or an
//! admin); here come the checks that need the container and the worker, the
//! open of a new session or the choice of a live one, the viewer's place in
//! it, and the 101. Every refusal is an HTTP answer with a reason.
//!
//! * No `session`: the container must be `running` (409) and its worker
//!   connected (503 `worker_offline`); `terminal.open` goes to the worker,
//!   and the session record is stored and audited before the 101, so the
//!   first byte relayed belongs to an audited session.
//! * `session`: it must be this container's (else 404, as if unknown). A
//!   live one is joined from `offset` (audited as an attach), even while
//!   its worker is offline (the viewer is told, and stays). One that has
//!   ended is upgraded too and told `exited` at once, so a page that
//!   retries a reconnect learns the session is over.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, StatusCode};
use protocol::terminal::TerminalOpen;
use protocol::Body;

use super::control::Query;
use super::session::{Exit, Meta, Session};
use super::viewer::{self, Start};
use crate::api::{detached, worker_error};
use crate::authz::{Caller, Need};
use crate::http::{ApiError, Resp};
use crate::hub::HubError;
use crate::peer::PRINCIPAL_HEADER;
use crate::socket;
use crate::store::{ContainerRecord, ContainerState, TerminalRecord};
use crate::{now_ms, App};

/// The subprotocol of the browser's terminal socket.
pub const SUBPROTOCOL: &str = "crops.terminal.v1";
/// How a browser offers its token as a subprotocol.
const BEARER_PREFIX: &str = "bearer.";

/// The subprotocols offered on an upgrade request, in order.
fn offered(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The token a browser offered as the subprotocol `bearer.<token>`, if any.
pub(crate) fn subprotocol_bearer(headers: &HeaderMap) -> Option<String> {
    offered(headers).find_map(|p| p.strip_prefix(BEARER_PREFIX).map(str::to_owned))
}

/// Whether to answer with our subprotocol: yes if offered; a client that
/// offers others but not ours is refused (it would fail the handshake).
fn choose_subprotocol(headers: &HeaderMap) -> Result<bool, ApiError> {
    let mut any = false;
    for p in offered(headers) {
        if p == SUBPROTOCOL {
            return Ok(true);
        }
        any = true;
    }
    if any {
        return Err(ApiError::bad_request(format!(
            "offer the WebSocket subprotocol {SUBPROTOCOL}"
        )));
    }
    Ok(false)
}

/// What an upgrade request asks, read once, whichever replica serves it.
pub(super) struct Asked {
    pub query: Query,
    /// Ours, if the client offered it.
    pub subprotocol: Option<&'static str>,
    pub accept_key: HeaderValue,
}

impl Asked {
    /// The query, the subprotocol and the WebSocket key, or a 400.
    pub(super) fn read(req: &Request<Incoming>) -> Result<Self, ApiError> {
        let query = Query::parse(req.uri().query()).map_err(ApiError::bad_request)?;
        let subprotocol = choose_subprotocol(req.headers())?.then_some(SUBPROTOCOL);
        let accept_key =
            socket::accept_key(req).map_err(|refused| ApiError::bad_request(refused.0))?;
        Ok(Self {
            query,
            subprotocol,
            accept_key,
        })
    }
}

/// Check, open or choose the session, join it, answer 101 and start the
/// viewer's task; or, when the worker's agent is connected to another
/// replica, carry the socket there (`super::carried`).
pub(crate) async fn accept(
    app: Arc<App>,
    caller: &Caller,
    mut req: Request<Incoming>,
    container_id: &str,
) -> Result<Resp, ApiError> {
    let record = caller.container(&app, container_id, Need::Use).await?;
    let by = caller.principal.label();
    let asked = Asked::read(&req)?;
    if let Some(resp) = super::carried::elsewhere(&app, &by, &mut req, &record, &asked).await? {
        return Ok(resp);
    }
    serve(app, &by, req, record, asked).await
}

/// `GET /internal/v1/terminal/{containerId}`: a terminal another replica
/// carries here (`Rule::Peer`). That replica authenticated and authorised
/// the browser and names it in [`PRINCIPAL_HEADER`]; the session is opened
/// or joined, and audited in that name, as for a browser of this replica's
/// own. Never carried on to a third replica.
pub(crate) async fn accept_carried(
    app: Arc<App>,
    req: Request<Incoming>,
    container_id: &str,
) -> Result<Resp, ApiError> {
    let by = req
        .headers()
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("a carried terminal names its {PRINCIPAL_HEADER}"))
        })?
        .to_owned();
    let id = container_id.to_owned();
    let record = app
        .store
        .read_now(move |s| s.get_container(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("container {container_id} not found")))?;
    let asked = Asked::read(&req)?;
    serve(app, &by, req, record, asked).await
}

/// The upgrade on this replica, for the principal labelled `by`.
async fn serve(
    app: Arc<App>,
    by: &str,
    mut req: Request<Incoming>,
    record: ContainerRecord,
    asked: Asked,
) -> Result<Resp, ApiError> {
    let Asked {
        query,
        subprotocol,
        accept_key,
    } = asked;
    let start = match query.session {
        None => {
            if record.state != ContainerState::Running {
                return Err(ApiError::conflict(format!(
                    "container {} is {}, not running",
                    record.id,
                    record.state.as_str()
                )));
            }
            if app.hub.live(&record.worker_id).is_none() {
                return Err(worker_error(HubError::Offline {
                    worker_id: record.worker_id.clone(),
                }));
            }
            let session =
                detached(&app, open(Arc::clone(&app), by.to_owned(), record, query)).await?;
            join(&app, session, 0)
        }
        Some(session_id) => match find(&app, &record, session_id).await? {
            Found::Live(session, meta) => {
                let entry = record_of(&session, &meta);
                crate::audit::terminal_attached(&app.audit, by, &entry).await?;
                join(&app, session, query.offset)
            }
            Found::Ended(exit) => Start::Ended { session_id, exit },
        },
    };
    let (resp, upgraded) = socket::upgrade(&mut req, accept_key, subprotocol);
    let task_app = Arc::clone(&app);
    app.life.spawn(async move {
        match upgraded.await {
            Ok(io) => viewer::run(task_app, start, io).await,
            Err(error) => {
                tracing::info!(%error, "terminal upgrade failed");
                start.abandon(&task_app);
            }
        }
    });
    Ok(resp)
}

/// Make a viewer of `session` from `offset`; attach the session first if
/// its worker is connected but it is not attached there.
fn join(app: &Arc<App>, session: Arc<Session>, offset: u64) -> Start {
    let (wake, woken) = smol::channel::bounded(1);
    let link = app.terminals.link_conn(&session.worker_id);
    let joined = session.join(offset, wake, link);
    if let Some((conn, from)) = joined.attach {
        super::link::attach_now(app, &session, conn, from);
    }
    Start::Live {
        session,
        joined,
        woken,
    }
}

enum Found {
    Live(Arc<Session>, Meta),
    Ended(Exit),
}

/// The session `session_id` of this container: live, or ended; anything
/// else (unknown, another container's) is 404.
async fn find(
    app: &Arc<App>,
    record: &ContainerRecord,
    session_id: u64,
) -> Result<Found, ApiError> {
    if let Some(session) = app.terminals.find(&record.worker_id, session_id) {
        if let Some(meta) = session.meta().filter(|m| m.container_id == record.id) {
            return Ok(match session.exit() {
                Some(exit) => Found::Ended(exit),
                None => Found::Live(session, meta),
            });
        }
    }
    let worker_id = record.worker_id.clone();
    let stored = app
        .store
        .call(move |s| s.get_terminal(&worker_id, session_id))
        .await?;
    match stored.filter(|r| r.container_id == record.id) {
        Some(r) => Ok(Found::Ended(Exit {
            exit_code: r.exit_code,
            reason: r.reason.unwrap_or_else(|| "ended".into()),
        })),
        None => Err(ApiError::not_found(format!(
            "session {session_id} not found on container {}",
            record.id
        ))),
    }
}

/// Open a new session on the container's worker; stored and audited.
async fn open(
    app: Arc<App>,
    by: String,
    record: ContainerRecord,
    query: Query,
) -> Result<Arc<Session>, ApiError> {
    let worker_id = record.worker_id.clone();
    let _opening = app.terminals.opening(&worker_id);
    let request = TerminalOpen {
        container_id: record.id.clone(),
        cols: query.cols,
        rows: query.rows,
        command: None,
    };
    request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let reply = app
        .hub
        .request(
            &worker_id,
            Body::TerminalOpen(request),
            app.timeouts.command,
        )
        .await;
    let session_id = match reply {
        Ok(Body::TerminalOpened(opened)) => opened.session_id,
        Ok(other) => return Err(bad_reply(&worker_id, &other)),
        Err(error) => {
            let error = worker_error(error);
            let code = error.status_and_code().1;
            crate::audit::terminal_opened(&app.audit, &by, &record, "-", code).await?;
            return Err(error);
        }
    };
    let session = app
        .terminals
        .find(&worker_id, session_id)
        .unwrap_or_else(|| {
            let link = app.terminals.link_conn(&worker_id);
            app.terminals.insert(Arc::new(
                Session::opened(&worker_id, session_id, link).with_rejoin(app.terminals.rejoin),
            ))
        });
    let meta = Meta {
        container_id: record.id.clone(),
        tenant_id: record.tenant_id.clone(),
        opened_by: by.clone(),
        opened_at: now_ms(),
    };
    if !session.claim(meta.clone()) {
        return Err(ApiError::Worker {
            status: StatusCode::BAD_GATEWAY,
            code: "bad_reply",
            message: format!("worker {worker_id} opened session {session_id} twice"),
        });
    }
    let entry = record_of(&session, &meta);
    let stored = app.store.call(move |s| s.put_terminal(&entry)).await;
    let audited = match stored {
        Ok(()) => {
            session.mark_persisted();
            let id = session_id.to_string();
            crate::audit::terminal_opened(&app.audit, &by, &record, &id, "ok").await
        }
        Err(error) => Err(error.into()),
    };
    if let Err(error) = audited {
        super::link::close(&app, &session, "its record could not be stored");
        return Err(error.into());
    }
    tracing::info!(%worker_id, session_id, container_id = %record.id, by = %meta.opened_by, "terminal opened");
    if session.exit().is_some() {
        // It ended before it was claimed: its end is recorded now.
        super::link::record_end(&app, &session);
    }
    Ok(session)
}

/// The stored record of a live session.
fn record_of(session: &Session, meta: &Meta) -> TerminalRecord {
    TerminalRecord {
        worker_id: session.worker_id.clone(),
        session_id: session.session_id,
        container_id: meta.container_id.clone(),
        tenant_id: meta.tenant_id.clone(),
        opened_by: meta.opened_by.clone(),
        opened_at: meta.opened_at,
        ended_at: None,
        exit_code: None,
        reason: None,
    }
}

fn bad_reply(worker_id: &str, got: &Body) -> ApiError {
    ApiError::Worker {
        status: StatusCode::BAD_GATEWAY,
        code: "bad_reply",
        message: format!(
            "worker {worker_id} answered terminal.open with {}",
            got.type_name()
        ),
    }
}
