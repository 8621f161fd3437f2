//! A browser's terminal socket on this replica (A) for a worker whose agent
//! is connected to another (B): the session, its mirror and the resume by
//! offset live on B, which opens or joins it as for a browser of its own
//! (`crate::peer::terminal`). Here, A answers the browser with B's answer
//! and copies every message both ways, as it came: text and binary,
//! pings and pongs, close frames with their codes and reasons. The bytes
//! go over the replicas' socket, never through the store.
//!
//! How the browser goes says whether B should expect it back, as a viewer
//! of B's own would: a close frame is passed on (B: the viewer left), a
//! socket that drops or falls silent for [`SILENCE`] is dropped towards B
//! without one (B: expected back; A answers pings, so B cannot see the
//! silence itself). B going away closes the browser's socket with 1001:
//! the page reconnects, with its session and offset, to whichever replica
//! holds the agent then.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use futures_lite::{FutureExt, StreamExt};
use hyper::body::Incoming;
use hyper::Request;

use super::browser::Asked;
use super::viewer::{self, LIMITS, SILENCE, STALLED};
use crate::api::worker_error;
use crate::http::{ApiError, Resp};
use crate::hub::HubError;
use crate::peer::{DialError, Dialed, PeerSocket};
use crate::socket::{self, Connection, ReadError, UpgradedIo};
use crate::store::ContainerRecord;
use crate::App;

/// The largest message B may send: an output chunk and its header, or a
/// control message, with room.
const MAX_FROM_OWNER: usize = 4 * super::session::CHUNK;
/// How long the close handshake may take on each socket.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The browser's socket carried to the replica that holds the worker's
/// agent, if another does and no session of this request lives here:
/// B's answer (its 101 once the copy is set up, or its refusal), a 502
/// `replica_error` naming B when B refuses this replica itself (another
/// admin token: the browser's own token is not what was refused), the
/// store's error when the owner cannot be read, or a 503
/// `worker_offline` when B cannot be reached. `None`: serve it here.
pub(crate) async fn elsewhere(
    app: &Arc<App>,
    by: &str,
    req: &mut Request<Incoming>,
    record: &ContainerRecord,
    asked: &Asked,
) -> Result<Option<Resp>, ApiError> {
    let Some(peers) = &app.peers else {
        return Ok(None);
    };
    if app.hub.live(&record.worker_id).is_some() {
        return Ok(None);
    }
    let held_here = asked
        .query
        .session
        .is_some_and(|id| app.terminals.find(&record.worker_id, id).is_some());
    if held_here {
        return Ok(None);
    }
    let dialed = peers
        .terminal(
            &record.worker_id,
            &record.id,
            req.uri().query(),
            by,
            asked.subprotocol,
            MAX_FROM_OWNER,
            app.timeouts.command,
        )
        .await;
    let worker_id = record.worker_id.clone();
    let owner = match dialed {
        Ok(None) => return Ok(None),
        Ok(Some(Dialed::Refused(resp))) => return Ok(Some(resp)),
        Ok(Some(Dialed::Open(owner))) => owner,
        Err(DialError::Store(error)) => return Err(error.into()),
        Err(error @ DialError::Unauthorized { .. }) => {
            tracing::warn!(%worker_id, %error, "a replica refused a carried terminal");
            let detail = error.to_string();
            return Err(worker_error(HubError::Replica { worker_id, detail }));
        }
        Err(error) => {
            tracing::warn!(%worker_id, %error, "cannot carry a terminal to the worker's replica");
            return Err(worker_error(HubError::Offline { worker_id }));
        }
    };
    let (resp, upgraded) = socket::upgrade(req, asked.accept_key.clone(), asked.subprotocol);
    let task_app = Arc::clone(app);
    app.life.spawn(async move {
        match upgraded.await {
            Ok(io) => copy(task_app, io, owner).await,
            Err(error) => {
                tracing::info!(%error, "terminal upgrade failed; leaving the carried session");
                let mut owner = owner;
                let _ = owner
                    .close(Some(frame(1001, "the browser never upgraded")))
                    .or(async {
                        smol::Timer::after(CLOSE_WAIT).await;
                        Ok(())
                    })
                    .await;
            }
        }
    });
    Ok(Some(resp))
}

/// How one carried socket ends.
enum End {
    /// The browser sent a close frame (passed on to B).
    BrowserClosed,
    /// B sent a close frame (passed on to the browser).
    OwnerClosed,
    /// Close the browser's socket with this code and reason; B gets the
    /// same close frame if `tell_owner`, else its socket is dropped (it
    /// expects the viewer back).
    Close {
        code: u16,
        reason: String,
        tell_owner: bool,
    },
}

fn frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }
}

/// Copy messages between the browser and B until either goes.
async fn copy(app: Arc<App>, io: UpgradedIo, owner: PeerSocket) {
    let browser = Connection::accept(io, LIMITS).await;
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_owner, mut from_owner) = owner.split();
    let stall = app.terminals.stall;
    let up = async {
        loop {
            let next = async { Some(from_browser.read().await) }
                .or(async {
                    smol::Timer::after(SILENCE).await;
                    None
                })
                .await;
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => return browser_failed(error),
                None => {
                    let (code, reason) = viewer::silent();
                    return End::Close {
                        code,
                        reason,
                        tell_owner: false,
                    };
                }
            };
            let closing = matches!(message, Message::Close(_));
            if let Message::Frame(_) = message {
                continue;
            }
            if to_owner.send(message).await.is_err() {
                return owner_gone();
            }
            if closing {
                return End::BrowserClosed;
            }
        }
    };
    let down = async {
        loop {
            let message = match from_owner.next().await {
                Some(Ok(message)) => message,
                _ => return owner_gone(),
            };
            let closing = matches!(message, Message::Close(_));
            if let Message::Frame(_) = message {
                continue;
            }
            match to_browser.write(message, stall).await {
                Ok(()) if closing => return End::OwnerClosed,
                Ok(()) => {}
                Err(socket::WriteError::TimedOut(_)) => {
                    return End::Close {
                        code: 4008,
                        reason: STALLED.into(),
                        tell_owner: true,
                    }
                }
                // The browser went: B expects it back.
                Err(socket::WriteError::Failed(_)) => return gone(),
            }
        }
    };
    let stopping = app.life.stopping();
    let end = up
        .or(down)
        .or(async {
            stopping.await;
            End::Close {
                code: 1001,
                reason: "orchestrator shutting down".into(),
                tell_owner: false,
            }
        })
        .await;
    match end {
        // The other side's close answer, then the end of both.
        End::BrowserClosed | End::OwnerClosed => {
            let drain_owner = async { while let Some(Ok(_)) = from_owner.next().await {} };
            let drain_browser = async { while from_browser.read().await.is_ok() {} };
            let both = async {
                futures_lite::future::zip(drain_owner, drain_browser).await;
            };
            both.or(async {
                smol::Timer::after(CLOSE_WAIT).await;
            })
            .await;
        }
        End::Close {
            code,
            reason,
            tell_owner,
        } => {
            if tell_owner {
                let _ = to_owner
                    .close(Some(frame(code, &reason)))
                    .or(async {
                        smol::Timer::after(CLOSE_WAIT).await;
                        Ok(())
                    })
                    .await;
            }
            viewer::close_socket(to_browser, from_browser, code, &reason).await;
        }
    }
}

fn gone() -> End {
    End::Close {
        code: 1001,
        reason: "the browser went".into(),
        tell_owner: false,
    }
}

fn owner_gone() -> End {
    End::Close {
        code: 1001,
        reason: "the replica holding the session went away; reconnect with its offset".into(),
        tell_owner: false,
    }
}

/// What a failed read of the browser's socket means: the close codes of
/// a viewer of this replica's own (`viewer::read_failure`), passed on to B.
fn browser_failed(error: ReadError) -> End {
    match viewer::read_failure(error) {
        Some((code, reason)) => End::Close {
            code,
            reason,
            tell_owner: true,
        },
        None => gone(),
    }
}
