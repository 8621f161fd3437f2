//! The agent side of the relay: what the agent connection task hands over
//! (output frames, `terminal.open.result` before it is delivered,
//! `terminal.exited`, the inventory's live sessions), the frames it sends
//! for the viewers (input with its offset, acks), the commands the relay
//! sends on its own (`terminal.attach` after a reconnect, `terminal.close`
//! after the grace period), and the end of a session: its record and audit
//! entry. The reaper closes sessions nobody has watched for the grace period.
//!
//! The connection task calls the synchronous methods here and never waits
//! on a viewer; commands go out on tasks of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use protocol::terminal::{TerminalAttach, TerminalClose, TerminalExited, TerminalInfo};
use protocol::{Body, ErrorCode, Frame, FrameKind};

use super::session::{Exit, Input, Session};
use super::Terminals;
use crate::hub::{HubError, LaneMsg};
use crate::store::TerminalRecord;
use crate::{now_ms, App};

/// An announced session whose opener never claimed it (the open's caller
/// went away) is closed after this long.
const UNCLAIMED_LIMIT: Duration = Duration::from_secs(120);
/// Most sessions one inventory may list; the rest are ignored (and logged).
const MAX_LISTED: usize = 10_000;
/// Why a session the agent no longer lists ended.
pub(crate) const LOST: &str = "lost: agent restarted";

/// One binary frame, ready to send; `None` (logged) if it cannot be one.
fn frame(kind: FrameKind, session_id: u64, offset: u64, payload: &[u8]) -> Option<Vec<u8>> {
    let encoded = Frame {
        kind,
        session_id,
        offset,
        payload,
    }
    .encode();
    match encoded {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(session_id, %error, "cannot encode a terminal frame");
            None
        }
    }
}

impl Terminals {
    /// An output frame arrived on connection `conn` of `worker_id`: the ack
    /// frame to answer with, if one is due (always, with no viewer).
    pub(crate) fn on_output(&self, worker_id: &str, conn: u64, f: &Frame<'_>) -> Option<Vec<u8>> {
        let Some(session) = self.find(worker_id, f.session_id) else {
            tracing::debug!(
                worker_id,
                session_id = f.session_id,
                "output for no live session"
            );
            return None;
        };
        let ack = session.output(conn, f.offset, f.payload)?;
        frame(FrameKind::TerminalAck, f.session_id, ack, &[])
    }

    /// The frames a queued [`LaneMsg`] becomes on connection `conn`.
    pub(crate) fn on_link_msg(&self, worker_id: &str, conn: u64, msg: LaneMsg) -> Vec<Vec<u8>> {
        match msg {
            LaneMsg::Input { session_id, bytes } => {
                let Some(session) = self.find(worker_id, session_id) else {
                    return Vec::new();
                };
                match session.input(conn, bytes) {
                    Input::Send(chunks) => chunks
                        .iter()
                        .filter_map(|(offset, b)| {
                            frame(FrameKind::TerminalInput, session_id, *offset, b)
                        })
                        .collect(),
                    Input::Held => Vec::new(),
                    Input::Dropped(why) => {
                        tracing::info!(worker_id, session_id, why, "input not delivered");
                        Vec::new()
                    }
                }
            }
            LaneMsg::Ack { session_id } => self
                .find(worker_id, session_id)
                .and_then(|s| s.ack_due(conn))
                .and_then(|ack| frame(FrameKind::TerminalAck, session_id, ack, &[]))
                .into_iter()
                .collect(),
        }
    }

    /// `terminal.open.result` arrived on `conn`: register the session before
    /// the result reaches its caller, so the output right behind it is kept.
    pub(crate) fn on_opened(&self, worker_id: &str, conn: u64, session_id: u64) {
        if self.find(worker_id, session_id).is_none() {
            let session = Session::opened(worker_id, session_id, Some(conn));
            self.insert(Arc::new(session.with_rejoin(self.rejoin)));
        }
    }
}

/// `terminal.exited` from `worker_id`.
pub(crate) fn on_exited(app: &Arc<App>, worker_id: &str, exited: TerminalExited) {
    let Some(session) = app.terminals.find(worker_id, exited.session_id) else {
        tracing::info!(
            worker_id,
            session_id = exited.session_id,
            "terminal.exited for no live session"
        );
        return;
    };
    let reason = clean_reason(&exited.reason);
    finish(
        app,
        &session,
        Exit {
            exit_code: exited.exit_code,
            reason,
        },
    );
}

/// An agent's reason as we keep and show it: one line of at most 200
/// characters, without control characters.
fn clean_reason(reason: &str) -> String {
    let clean: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if clean.is_empty() {
        "ended".into()
    } else {
        clean
    }
}

/// The inventory of connection `conn` lists `listed` as live: attach those
/// we serve, end those it lacks, close those nobody serves.
pub(crate) fn on_inventory(app: &Arc<App>, worker_id: &str, conn: u64, listed: Vec<TerminalInfo>) {
    if listed.len() > MAX_LISTED {
        tracing::warn!(
            worker_id,
            listed = listed.len(),
            max = MAX_LISTED,
            "inventory terminals truncated"
        );
    }
    let mut listed: HashMap<u64, TerminalInfo> = listed
        .into_iter()
        .take(MAX_LISTED)
        .map(|t| (t.session_id, t))
        .collect();
    for session in app.terminals.of_worker(worker_id) {
        if session.exit().is_some() {
            // Over here, yet the agent still runs it: hang it up there too.
            if listed.remove(&session.session_id).is_some() {
                spawn_close(app, &session);
            }
            continue;
        }
        match listed.remove(&session.session_id) {
            Some(_) if session.closing() => spawn_close(app, &session),
            Some(info) => {
                let offset = session.attaching(conn, info.input_end);
                tracing::info!(
                    worker_id,
                    session_id = session.session_id,
                    offset,
                    output_end = info.output_end,
                    "terminal attaching again"
                );
                attach_now(app, &session, conn, offset);
            }
            // Opened on this very connection, after the inventory was made.
            None if session.opened_on == Some(conn) => {}
            // Announced, not claimed yet: its open is still in flight.
            None if session.meta().is_none() => {}
            None => finish(
                app,
                &session,
                Exit {
                    exit_code: None,
                    reason: LOST.into(),
                },
            ),
        }
    }
    if listed.is_empty() || app.terminals.is_opening(worker_id) {
        return;
    }
    for session_id in listed.into_keys() {
        tracing::warn!(
            worker_id,
            session_id,
            "agent has a terminal no one opened here; closing it"
        );
        let (task_app, worker_id) = (Arc::clone(app), worker_id.to_owned());
        app.life.spawn(async move {
            let app = task_app;
            let body = Body::TerminalClose(TerminalClose { session_id });
            if let Err(error) = app.hub.request(&worker_id, body, app.timeouts.command).await {
                tracing::info!(%worker_id, session_id, %error, "closing an unknown terminal failed");
            }
        });
    }
}

/// Send `terminal.attach` from `offset` on `conn` and go online on success.
pub(crate) fn attach_now(app: &Arc<App>, session: &Arc<Session>, conn: u64, offset: u64) {
    let (task_app, session) = (Arc::clone(app), Arc::clone(session));
    app.life.spawn(async move {
        let app = task_app;
        let body = Body::TerminalAttach(TerminalAttach {
            session_id: session.session_id,
            offset,
        });
        let worker_id = session.worker_id.clone();
        let session_id = session.session_id;
        match app.hub.request(&worker_id, body, app.timeouts.command).await {
            Ok(Body::TerminalAttached(a)) => {
                tracing::info!(%worker_id, session_id, asked = offset, from = a.offset, end = a.end, input_end = ?a.input_end, "terminal attached");
                let (notice, held) = session.attached(conn, a.input_end);
                if notice {
                    app.terminals.notify_ack(&session);
                }
                if held {
                    // Typed while attaching: send it now, at the agent's position.
                    app.terminals.flush_input(&session).await;
                }
            }
            Ok(other) => {
                tracing::warn!(%worker_id, session_id, reply = other.type_name(), "terminal.attach answered with another reply");
                session.attach_failed(conn);
            }
            Err(HubError::Agent { error, .. }) if error.code == ErrorCode::NotFound => {
                finish(&app, &session, Exit { exit_code: None, reason: LOST.into() });
            }
            Err(error) => {
                tracing::warn!(%worker_id, session_id, %error, "terminal.attach failed");
                session.attach_failed(conn);
            }
        }
    });
}

/// Ask the agent to hang `session` up, if it was not asked already. While
/// the worker is offline the close waits for its inventory.
pub(crate) fn close(app: &Arc<App>, session: &Arc<Session>, why: &str) {
    if !session.begin_close() {
        return;
    }
    tracing::info!(worker_id = %session.worker_id, session_id = session.session_id, why, "closing terminal");
    if app.terminals.link_conn(&session.worker_id).is_some() {
        spawn_close(app, session);
    }
}

fn spawn_close(app: &Arc<App>, session: &Arc<Session>) {
    let (task_app, session) = (Arc::clone(app), Arc::clone(session));
    app.life.spawn(async move {
        let app = task_app;
        let body = Body::TerminalClose(TerminalClose {
            session_id: session.session_id,
        });
        match app.hub.request(&session.worker_id, body, app.timeouts.command).await {
            // The agent's terminal.exited ends it.
            Ok(_) => {}
            Err(HubError::Agent { error, .. }) if error.code == ErrorCode::NotFound => {
                finish(&app, &session, Exit { exit_code: None, reason: "closed".into() });
            }
            // Offline or disconnected: the next inventory sends it again.
            Err(error) => tracing::info!(worker_id = %session.worker_id, session_id = session.session_id, %error, "terminal.close not delivered"),
        }
    });
}

/// The session is over: tell its viewers and record its end. It stays
/// registered until its end is stored, so a viewer arriving meanwhile is
/// told how it ended (an unclaimed one, until its opener or the reaper
/// comes for it).
pub(crate) fn finish(app: &Arc<App>, session: &Arc<Session>, exit: Exit) {
    let reason = exit.reason.clone();
    if !session.end_with(exit) {
        return;
    }
    tracing::info!(worker_id = %session.worker_id, session_id = session.session_id, %reason, "terminal ended");
    if session.is_persisted() {
        record_end(app, session);
    }
}

/// Store the end of a persisted, ended session, audit it (once), and
/// forget the session.
pub(crate) fn record_end(app: &Arc<App>, session: &Arc<Session>) {
    let Some(exit) = session.exit() else { return };
    if !session.take_end_record() {
        return;
    }
    let (store, audit, worker_id, session_id) = (
        Arc::clone(&app.store),
        app.audit.clone(),
        session.worker_id.clone(),
        session.session_id,
    );
    let (terminals, session) = (Arc::clone(&app.terminals), Arc::clone(session));
    app.life.spawn(async move {
        // Whatever happens below, a viewer arriving from now on reads the store.
        let _forget = Forget { terminals, session };
        let ended = {
            let (w, reason) = (worker_id.clone(), exit.reason.clone());
            store
                .call(move |s| s.end_terminal(&w, session_id, now_ms(), exit.exit_code, &reason))
                .await
        };
        let record: TerminalRecord = match ended {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(%worker_id, session_id, %error, "cannot record a terminal's end");
                return;
            }
        };
        if let Err(error) = crate::audit::terminal_ended(&audit, &record).await {
            tracing::error!(%worker_id, session_id, %error, "cannot audit a terminal's end");
        }
    });
}

/// Removes an ended session from the registry once its end is stored.
struct Forget {
    terminals: Arc<Terminals>,
    session: Arc<Session>,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.terminals.remove(&self.session);
    }
}

/// Close sessions nobody has watched for the grace period, and announced
/// ones nobody claimed, until shutdown.
pub(crate) fn spawn_reaper(app: &Arc<App>) {
    let shortest = app.terminals.grace.min(app.terminals.rejoin);
    let tick = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let stopping = app.life.stopping();
    let task_app = Arc::clone(app);
    app.life.spawn(async move {
        let app = task_app;
        let run = async {
            loop {
                smol::Timer::after(tick).await;
                reap(&app, Instant::now());
            }
        };
        run.or(stopping).await;
    });
}

fn reap(app: &Arc<App>, now: Instant) {
    for session in app.terminals.all() {
        if session.expire_holds(now) {
            // Viewers expected back did not come: the ack may move on.
            app.terminals.notify_ack(&session);
        }
        if session.meta().is_none() {
            if now.saturating_duration_since(session.created) < UNCLAIMED_LIMIT {
                continue;
            }
            if session.exit().is_some() {
                app.terminals.remove(&session);
            } else {
                close(app, &session, "opened but never claimed");
            }
            continue;
        }
        let Some(idle) = session.idle_for(now) else {
            continue;
        };
        if idle < app.terminals.grace {
            continue;
        }
        if app.terminals.link_conn(&session.worker_id).is_some() {
            close(app, &session, "no viewer for the grace period");
        } else if session.begin_close() {
            // No one can tell the agent now: it hangs the session up itself
            // once its link has been away for its grace period, and an
            // inventory still listing it later gets it closed as unknown.
            let exit = Exit {
                exit_code: None,
                reason: "closed: no viewer while the worker was offline".into(),
            };
            finish(app, &session, exit);
        }
    }
}
