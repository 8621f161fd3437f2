//! Writing the audit log: every mutating API call, every command sent to an
//! agent, and every terminal session opened (who, what, when, outcome).
//!
//! * API calls: the audit middleware (`crate::router`) appends one entry
//!   per mutating request (any method but `GET`) that got past
//!   authentication, after the handler
//!   answered and before the client sees the answer, with full durability.
//!   If the append fails the client gets 500 instead of the handler's
//!   answer, so an acknowledged write always has its entry.
//! * Calls on a worker's container (create, setup, start, stop, exec,
//!   background, kill, remove; [`crate::router::Endpoint::on_worker`])
//!   go faster without promising less about the call: once authorised,
//!   the call's entry is queued as an **intent** (outcome `pending`),
//!   committed durably while the handler runs, i.e. while the worker runs
//!   Podman, which takes tens to hundreds of milliseconds against the
//!   fsync's fraction of one. The answer waits until the intent is durable
//!   (so an acknowledged call is on disk, as above); the real entry is then
//!   queued, durable within the writer's next commit, and clears the
//!   intent. If the client hangs up before the answer, the entry still
//!   follows, with outcome `client_closed` (status 499). A crash between
//!   the two leaves the intent, which the next start turns into the entry
//!   with outcome `interrupted`: the orchestrator stopped before the call's
//!   outcome was written, so the call may or may not have taken effect (a
//!   call answered in the last ~2 ms before the crash reads so too). A create
//!   queues its intent itself ([`Deferred`]) once admission and its record
//!   are written: a durable commit holds the store's write lock through
//!   its fsync, and those writes would wait for it. A call that answers
//!   before queuing one (refused, invalid) is audited the ordinary way.
//!   Create, start, stop and remove write the state they answer to the
//!   container's record ([`crate::router::Endpoint::settles_record`]).
//!   That record update commits durably on the request's own store call
//!   (`Store::update_container`), carrying the call's earlier writes with
//!   it (a create's record and decision commit without fsync), so the
//!   state an answer reports survives kill -9: one fsync after the
//!   worker's answer and no hop to the writer thread. The entry then
//!   follows without a wait, as for the other calls. Only when an API write
//!   is still not durable at answer time (`Store::api_writes_durable`: a
//!   call that settled nothing, such as a retried create answering the
//!   record another request wrote, or a concurrent call's write) does the
//!   answer wait for the entry's durable commit, which carries it. The
//!   others (setup, exec, background, kill) write no state and answer
//!   without it.
//! * Commands: the hub calls the [`CommandHook`] once each command's
//!   outcome is known (result, agent error, timeout, disconnection or
//!   offline), before the API call that sent it answers; the hook queues
//!   the entry on the [`AuditWriter`] without waiting. These entries are
//!   committed without fsync of their own: they record no write of their
//!   own, and the next durable commit carries them (the API call's own
//!   entry, queued after them, when it is appended durably; for a call on
//!   a worker's container, whichever durable commit comes next, so a crash
//!   in the few ms after its answer may lose the command's entry).
//! * Terminal sessions: [`terminal_opened`] (who opened which session on
//!   which container, or was refused), [`terminal_attached`] (another
//!   viewer joined) and [`terminal_ended`] (how and after how long it
//!   ended), all appended by the terminal relay.
//!
//! Every entry (API call, command, terminal) goes through one writer
//! thread that commits whatever is queued in one transaction (group commit,
//! [`writer`]); the audit query flushes it first, so a read sees every
//! entry queued before.
//!
//! A refused request's entry names the caller's own organisation, never
//! the object's: probing another tenant leaves no trace in that tenant's log.

use crate::authz::Caller;
use crate::hub::{CommandDone, CommandHook};
use crate::store::{AuditEntry, ContainerRecord, Store, StoreError, TerminalRecord};
use crate::{now_ms, App};

mod writer;

pub use writer::{AuditError, AuditWriter, Intent};

/// The route of an API call, as its entry names it (`POST /v1/containers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

/// The outcome an intent carries until its call has answered.
pub const PENDING: &str = "pending";

/// The hook that queues an entry for every command the hub sends, on the
/// audit writer (see [`writer`]: the request does not wait for its commit).
pub fn command_hook(writer: AuditWriter) -> CommandHook {
    Box::new(move |done: CommandDone| {
        let writer = writer.clone();
        Box::pin(async move { writer.command(done).await })
    })
}

/// A command's entry. The tenant is the command's own, else its container
/// record's, else its worker's enrolment tenant (none for a fleet worker).
fn command_entry(s: &Store, done: CommandDone) -> Result<AuditEntry, StoreError> {
    let sent = done.sent;
    let mut tenant_id = sent.tenant_id;
    if tenant_id.is_none() {
        if let Some(id) = &sent.container_id {
            tenant_id = s.get_container(id)?.map(|r| r.tenant_id);
        }
    }
    if tenant_id.is_none() {
        tenant_id = s
            .get_worker(&sent.worker_id)?
            .and_then(|w| w.tenant_scope().map(str::to_owned));
    }
    let target = match &sent.container_id {
        Some(c) => format!("worker:{}/container:{c}", sent.worker_id),
        None => format!("worker:{}", sent.worker_id),
    };
    Ok(AuditEntry {
        seq: 0,
        at: done.at,
        principal: "orchestrator".into(),
        kind: "command".into(),
        action: sent.ty.to_owned(),
        target,
        tenant_id: tenant_id.filter(|t| !t.is_empty()),
        org_id: None,
        outcome: done.outcome,
        status: None,
    })
}

/// The entry of a mutating API call, as far as it is known.
fn call_entry(
    def: Route,
    caller: &Caller,
    path: &str,
    status: Option<u16>,
    outcome: &str,
) -> AuditEntry {
    let note = caller.note();
    let own_org = caller.member().map(|m| m.org_id.clone());
    AuditEntry {
        seq: 0,
        at: now_ms(),
        principal: caller.principal.label(),
        kind: "api".into(),
        action: format!("{} {}", def.method, def.path),
        target: note.target.unwrap_or_else(|| path.to_owned()),
        org_id: note.org_id.or(if note.tenant_id.is_none() {
            own_org
        } else {
            None
        }),
        tenant_id: note.tenant_id,
        outcome: outcome.to_owned(),
        status,
    }
}

/// Append the entry of a mutating API call (durably). `outcome` is `ok` or
/// the error code answered.
pub(crate) async fn api_call(
    app: &App,
    def: Route,
    caller: &Caller,
    path: &str,
    status: u16,
    outcome: &str,
) -> Result<(), AuditError> {
    let entry = call_entry(def, caller, path, Some(status), outcome);
    let entry = app.audit.append(entry, true).await?;
    tracing::debug!(seq = entry.seq, action = %entry.action, outcome, "audited");
    Ok(())
}

/// Queue the intent of an authorised call on a worker's container (its
/// entry with outcome `pending`), to be made durable while the call runs.
pub(crate) async fn api_intent(
    app: &App,
    def: Route,
    caller: &Caller,
    path: &str,
) -> Result<Intent, AuditError> {
    app.audit
        .intend(call_entry(def, caller, path, None, PENDING))
        .await
}

/// A call's intent that its handler queues itself, once its own store
/// writes are done and just before it contacts the worker (a create:
/// admission and the new record first, so those commits never wait behind
/// the intent's fsync, which holds the store's write lock). Shared by the
/// audit middleware (`crate::router`, which answers the call) and the
/// handler, which gets it as an argument (`crate::router::Call::intent`).
#[derive(Clone)]
pub(crate) struct Deferred {
    state: std::sync::Arc<std::sync::Mutex<DeferredState>>,
}

enum DeferredState {
    Armed {
        def: Route,
        caller: Caller,
        path: String,
    },
    Queued(Intent),
    Taken,
}

impl Deferred {
    pub(crate) fn new(def: Route, caller: &Caller, path: &str) -> Self {
        let state = DeferredState::Armed {
            def,
            caller: caller.clone(),
            path: path.to_owned(),
        };
        Self {
            state: std::sync::Arc::new(std::sync::Mutex::new(state)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeferredState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue the intent now (once; later calls do nothing).
    pub(crate) async fn queue(&self, app: &App) -> Result<(), AuditError> {
        let armed = std::mem::replace(&mut *self.lock(), DeferredState::Taken);
        let DeferredState::Armed { def, caller, path } = armed else {
            *self.lock() = armed;
            return Ok(());
        };
        let intent = api_intent(app, def, &caller, &path).await?;
        *self.lock() = DeferredState::Queued(intent);
        Ok(())
    }

    /// The queued intent, if the handler queued one.
    pub(crate) fn take(&self) -> Option<Intent> {
        match std::mem::replace(&mut *self.lock(), DeferredState::Taken) {
            DeferredState::Queued(intent) => Some(intent),
            _ => None,
        }
    }
}

/// Queue the entry completing intent `id`: durable soon, not waited for,
/// unless the call's answer reports a state written to a container record
/// that is not durable yet ([`crate::router::Endpoint::settles_record`];
/// `settled`): then it returns once the entry's durable commit, which
/// carries that record write, is done.
pub(crate) async fn api_outcome(
    app: &App,
    id: u64,
    (def, caller, path): (Route, &Caller, &str),
    (status, outcome): (u16, &str),
    settled: bool,
) -> Result<(), AuditError> {
    let entry = call_entry(def, caller, path, Some(status), outcome);
    if settled {
        app.audit.complete_durably(id, entry).await?;
    } else {
        app.audit.complete(id, entry).await;
    }
    tracing::debug!(intent = id, action = %def.path, outcome, settled, "audited after its intent");
    Ok(())
}

/// Append the entry of a terminal session opened (or refused) on
/// `container` by `principal`, durably. The terminal relay calls this
/// before it relays the first byte; `outcome` is `ok` or the error code.
pub async fn terminal_opened(
    writer: &AuditWriter,
    principal: &str,
    container: &ContainerRecord,
    session_id: &str,
    outcome: &str,
) -> Result<(), AuditError> {
    let target = format!(
        "worker:{}/container:{}/session:{session_id}",
        container.worker_id, container.id
    );
    let entry = terminal_entry(
        now_ms(),
        principal.to_owned(),
        "terminal.open",
        target,
        &container.tenant_id,
        outcome.to_owned(),
    );
    writer.append(entry, true).await.map(drop)
}

/// Append the entry of a viewer attaching to a live session (durably).
pub async fn terminal_attached(
    writer: &AuditWriter,
    principal: &str,
    session: &TerminalRecord,
) -> Result<(), AuditError> {
    let entry = terminal_entry(
        now_ms(),
        principal.to_owned(),
        "terminal.attach",
        terminal_target(session),
        &session.tenant_id,
        "ok".into(),
    );
    writer.append(entry, true).await.map(drop)
}

/// Append the entry of a session's end (durably), in the name of whoever
/// opened it: `outcome` is how it ended, its exit code and how long it
/// lived, e.g. `exited, exit code 0, after 5234 ms`.
pub async fn terminal_ended(
    writer: &AuditWriter,
    session: &TerminalRecord,
) -> Result<(), AuditError> {
    let code = session
        .exit_code
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    let outcome = format!(
        "{}, exit code {code}, after {} ms",
        session.reason.as_deref().unwrap_or("ended"),
        session.duration_ms().unwrap_or(0)
    );
    let entry = terminal_entry(
        session.ended_at.unwrap_or_else(now_ms),
        session.opened_by.clone(),
        "terminal.end",
        terminal_target(session),
        &session.tenant_id,
        outcome,
    );
    writer.append(entry, true).await.map(drop)
}

/// A terminal session's audit entry (in its tenant's log).
fn terminal_entry(
    at: u64,
    principal: String,
    action: &str,
    target: String,
    tenant_id: &str,
    outcome: String,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at,
        principal,
        kind: "terminal".into(),
        action: action.to_owned(),
        target,
        tenant_id: Some(tenant_id.to_owned()),
        org_id: None,
        outcome,
        status: None,
    }
}

fn terminal_target(session: &TerminalRecord) -> String {
    format!(
        "worker:{}/container:{}/session:{}",
        session.worker_id, session.container_id, session.session_id
    )
}
