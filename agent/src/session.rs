//! One connection's life: dial, upgrade with the Bearer credential, register,
//! then serve — inventory and heartbeats out, commands in, terminal frames
//! both ways, pings both ways — until the socket fails, the orchestrator
//! closes it, it goes quiet past the liveness deadline, it sends a message
//! over the size limit (answered with a close 1009, as the orchestrator
//! answers one), or shutdown is requested. What each message leads to is
//! [`serving`]'s.
//!
//! Liveness follows the heartbeat interval the orchestrator dictates in
//! `worker.accepted` ([`clocks`]): the agent pings every half interval and
//! presumes the connection half-open once nothing at all (a message, a
//! ping, a pong) has arrived for two intervals. The orchestrator pings
//! every interval and pongs every ping, so a live one is never that quiet.
//! Before `worker.accepted`, [`Timing`]'s clocks apply.
//!
//! One loop owns the socket and writes one message at a time. JSON (replies,
//! heartbeats, events) waits in its own bounded outbox and always goes
//! first; terminal output is asked of the [`Link`] only when that outbox is
//! empty, one frame (at most 64 KiB) at a time, the sessions taking turns.
//! Every write is bounded by the liveness deadline, so a stuck peer is
//! dropped rather than waited on forever.

mod serving;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, StreamExt};
use protocol::worker::Mode;
use protocol::{Body, Envelope, ErrorCode};
use smol::channel::Receiver;
use smol::Timer;

use crate::connection::{Connection, ConnectionError, Incoming};
use crate::net::Endpoint;
use crate::podman::Podman;
use crate::shutdown::Shutdown;
use crate::status::{self, StatusError};
use crate::sysinfo::CpuSampler;
use crate::terminal::{Link, Outbound};
use crate::Timing;
use serving::{Handled, Serving};

/// Why a connection ended (other than by shutdown).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("orchestrator rejected the registration: {code}: {message}")]
    Rejected { code: ErrorCode, message: String },
    #[error("orchestrator closed the connection ({code}: {reason})")]
    Closed { code: u16, reason: String },
    #[error("orchestrator closed the connection without a close code")]
    ClosedWithoutCode,
    #[error("the connection to the orchestrator dropped")]
    Dropped,
    #[error(
        "the orchestrator sent a message over the {} byte limit ({detail}); closed with 1009",
        protocol::MAX_TEXT_FRAME
    )]
    TooBig { detail: String },
    #[error("nothing heard from the orchestrator for {}s; presuming the connection half-open", .after.as_secs_f64())]
    HalfOpen { after: Duration },
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// Shutdown was requested; an open socket was closed with 1000.
    Shutdown,
    /// The connection failed or ended. `accepted_for` is how long it served
    /// after `worker.accepted` (`None` if it never got that far).
    Failed {
        error: SessionError,
        accepted_for: Option<Duration>,
    },
}

/// Everything a session needs, shared by every attempt of one `run`.
#[derive(Debug)]
pub struct Context {
    pub url: String,
    pub endpoint: Endpoint,
    pub tls: Arc<rustls::ClientConfig>,
    /// Never logged; rotated over the connection (see `rotate`).
    pub credential: crate::rotate::Credential,
    pub name: String,
    pub mode: Mode,
    /// Sent in `worker.register` for placement policies.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Sent in `worker.register`; the executor enforces it as well.
    pub security_floor: protocol::container::Profile,
    /// Rootless, and what that costs here: sent in `worker.register`;
    /// without stats, the heartbeat samples no container use.
    pub host: crate::rootless::Report,
    pub podman: Podman,
    /// Runs commands; shared by every connection of this agent.
    pub executor: Arc<crate::commands::Executor>,
    pub timing: Timing,
    pub shutdown: Shutdown,
}

/// Heartbeat intervals of silence after which a registered connection is
/// presumed half-open.
pub const LIVENESS_HEARTBEATS: u32 = 2;

/// The ping interval and liveness deadline of a connection registered with
/// heartbeat interval `heartbeat`: a ping every half interval, dropped after
/// [`LIVENESS_HEARTBEATS`] intervals of silence.
pub fn clocks(heartbeat: Duration) -> Clocks {
    Clocks {
        ping_interval: heartbeat / 2,
        liveness: heartbeat * LIVENESS_HEARTBEATS,
    }
}

/// A connection's ping interval and liveness deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    pub ping_interval: Duration,
    pub liveness: Duration,
}

/// Close code and reason the agent sends when it stops.
const SHUTDOWN_CLOSE: (u16, &str) = (1000, "agent shutting down");
/// Replies and events waiting to be written; senders wait when it is full.
const OUTBOX: usize = 64;

/// Run one connection from dial to end.
pub async fn run(ctx: &Context) -> End {
    let mut accepted_at = None;
    let result = serve(ctx, &mut accepted_at).await;
    match result {
        Ok(()) => End::Shutdown,
        Err(error) => End::Failed {
            error,
            accepted_for: accepted_at.map(|at: Instant| at.elapsed()),
        },
    }
}

/// `Ok(())` means shutdown was requested (and the socket closed).
async fn serve(ctx: &Context, accepted_at: &mut Option<Instant>) -> Result<(), SessionError> {
    let cpu = CpuSampler::start();
    // Gather the facts first, so the socket is never open while Podman thinks.
    let Some(register) = until_shutdown(
        &ctx.shutdown,
        status::register(&ctx.name, ctx.mode, &ctx.podman),
    )
    .await
    else {
        return Ok(());
    };
    let mut register = register?;
    register.labels = ctx.labels.clone();
    register.security_floor = Some(ctx.security_floor);
    register.rootless = ctx.host.rootless;
    register.limitations = ctx.host.sentences();
    let Some(conn) = until_shutdown(
        &ctx.shutdown,
        Connection::open(
            &ctx.endpoint,
            &ctx.url,
            &ctx.tls,
            &ctx.credential.current(),
            ctx.timing.connect_timeout,
        ),
    )
    .await
    else {
        return Ok(());
    };
    let mut conn = conn?;
    tracing::debug!(url = %ctx.url, "WebSocket open; registering");
    let memory_total = register.memory_total;
    let register_id = format!("register-{:016x}", fastrand::u64(..));
    let mut last_seen = Instant::now();
    let register = Envelope::request(register_id.clone(), Body::Register(register));
    let registering = ctx.timing.liveness;
    if !write(
        ctx,
        &mut conn,
        Outgoing::Text(register),
        last_seen,
        registering,
    )
    .await?
    {
        return Ok(());
    }

    let (out_tx, out_rx) = smol::channel::bounded::<Envelope>(OUTBOX);
    let mut serving = Serving {
        ctx,
        out_tx,
        register_id,
        memory_total,
        certificate_sha256: conn.certificate_sha256.clone(),
        cpu: Some(cpu),
        heartbeats: None,
        link: None,
    };
    let mut clocks = Clocks {
        ping_interval: ctx.timing.ping_interval,
        liveness: ctx.timing.liveness,
    };
    let mut ping = Timer::interval(clocks.ping_interval);
    loop {
        let event = next_event(
            ctx,
            &mut conn,
            &out_rx,
            serving.link.as_ref(),
            &mut ping,
            last_seen + clocks.liveness,
        )
        .await;
        let outgoing = match event {
            Event::Shutdown => {
                close(ctx, &mut conn).await;
                return Ok(());
            }
            Event::Deadline => {
                return Err(SessionError::HalfOpen {
                    after: clocks.liveness,
                })
            }
            Event::Ping => Outgoing::Ping,
            Event::Send(envelope) => Outgoing::Text(envelope),
            Event::Terminal(Outbound::Frame(bytes)) => Outgoing::Binary(bytes),
            Event::Terminal(Outbound::Event(envelope)) => Outgoing::Text(envelope),
            Event::Read(incoming) => {
                last_seen = Instant::now();
                match incoming? {
                    Incoming::Control => continue,
                    Incoming::Ended => return Err(SessionError::Dropped),
                    Incoming::TooBig(detail) => {
                        conn.refuse_too_big(ctx.timing.close_grace).await;
                        return Err(SessionError::TooBig { detail });
                    }
                    Incoming::Close(frame) => {
                        conn.finish_close(ctx.timing.close_grace).await;
                        return Err(closed(frame));
                    }
                    Incoming::Binary(bytes) => match serving.on_frame(&bytes) {
                        Some(error) => Outgoing::Text(error),
                        None => continue,
                    },
                    Incoming::Envelope(Err(e)) => {
                        tracing::warn!(error = %e, request_id = ?e.request_id(), "unreadable message from orchestrator");
                        Outgoing::Text(Envelope::error(
                            e.request_id().map(str::to_owned),
                            e.to_reply(),
                        ))
                    }
                    Incoming::Envelope(Ok(envelope)) => match serving.on_message(envelope)? {
                        Handled::Accepted(heartbeat) => {
                            *accepted_at = Some(Instant::now());
                            clocks = self::clocks(heartbeat);
                            tracing::debug!(?clocks, "liveness follows the heartbeat interval");
                            ping = Timer::interval(clocks.ping_interval);
                            continue;
                        }
                        Handled::Reply(reply) => Outgoing::Text(*reply),
                        Handled::Nothing => continue,
                    },
                }
            }
        };
        if !write(ctx, &mut conn, outgoing, last_seen, clocks.liveness).await? {
            return Ok(());
        }
    }
}

/// Something to put on the socket.
enum Outgoing {
    Text(Envelope),
    /// A terminal output frame, encoded.
    Binary(Vec<u8>),
    Ping,
}

/// Write `outgoing`, bounded like a read: a peer that stops reading until
/// `liveness` after `last_seen` is as dead as one that stops writing, and
/// shutdown does not wait for a stuck write. `Ok(false)` means shutdown came
/// first (and the socket was closed).
async fn write(
    ctx: &Context,
    conn: &mut Connection,
    outgoing: Outgoing,
    last_seen: Instant,
    liveness: Duration,
) -> Result<bool, SessionError> {
    enum Step {
        Written(Result<(), ConnectionError>),
        Shutdown,
        Deadline,
    }
    let deadline = last_seen + liveness;
    let step = {
        let write = async {
            Step::Written(match outgoing {
                Outgoing::Text(envelope) => conn.write_msg(&envelope).await,
                Outgoing::Binary(bytes) => conn.write_binary(bytes).await,
                Outgoing::Ping => conn.ping().await,
            })
        };
        let shutdown = async {
            ctx.shutdown.wait().await;
            Step::Shutdown
        };
        let deadline = async {
            Timer::at(deadline).await;
            Step::Deadline
        };
        shutdown.or(write).or(deadline).await
    };
    match step {
        Step::Written(result) => result.map(|()| true).map_err(SessionError::from),
        Step::Shutdown => {
            close(ctx, conn).await;
            Ok(false)
        }
        Step::Deadline => Err(SessionError::HalfOpen { after: liveness }),
    }
}

/// Close with 1000 "agent shutting down", waiting at most the close grace.
async fn close(ctx: &Context, conn: &mut Connection) {
    tracing::info!("closing the connection");
    conn.close(SHUTDOWN_CLOSE.0, SHUTDOWN_CLOSE.1, ctx.timing.close_grace)
        .await;
}

/// Log a close frame from the orchestrator and turn it into the session's end.
fn closed(frame: Option<(u16, String)>) -> SessionError {
    use protocol::close;
    let Some((code, reason)) = frame else {
        tracing::warn!("orchestrator closed the connection without a code");
        return SessionError::ClosedWithoutCode;
    };
    let meaning = match code {
        1000 => "normal closure",
        1001 => "orchestrator going away",
        1009 => "a message of ours was over the size limit",
        1013 => "orchestrator cut off from its database; another replica takes over",
        close::PROTOCOL_ERROR => "protocol error",
        close::REVOKED => "credential revoked",
        close::UNSUPPORTED_VERSION => "unsupported protocol version",
        close::REGISTER_TIMEOUT => "registration timed out",
        close::RATE_LIMITED => "rate limited",
        close::REPLACED => "replaced by a newer connection of this worker",
        close::TIMEOUT => "liveness timeout",
        _ => "unknown code",
    };
    tracing::warn!(code, %reason, meaning, "orchestrator closed the connection");
    SessionError::Closed { code, reason }
}

/// What woke the session loop.
enum Event {
    Shutdown,
    Read(Result<Incoming, ConnectionError>),
    Send(Envelope),
    Terminal(Outbound),
    Ping,
    Deadline,
}

/// Wait for the next thing to do. Shutdown wins over everything; reads and
/// writes are raced fairly so neither starves the other; among writes, the
/// JSON outbox goes before terminal output.
async fn next_event(
    ctx: &Context,
    conn: &mut Connection,
    out_rx: &Receiver<Envelope>,
    link: Option<&Link>,
    ping: &mut Timer,
    deadline: Instant,
) -> Event {
    let shutdown = async {
        ctx.shutdown.wait().await;
        Event::Shutdown
    };
    let read = async { Event::Read(conn.read_msg().await) };
    let send = next_to_send(out_rx, link);
    let ping = async {
        ping.next().await;
        Event::Ping
    };
    let deadline = async {
        Timer::at(deadline).await;
        Event::Deadline
    };
    shutdown
        .or(futures_lite::future::race(read, send))
        .or(ping)
        .or(deadline)
        .await
}

/// The next message to write: the JSON outbox first, then a terminal frame.
/// Cancel-safe: nothing is taken from either source unless it is returned.
async fn next_to_send(out_rx: &Receiver<Envelope>, link: Option<&Link>) -> Event {
    loop {
        if let Ok(envelope) = out_rx.try_recv() {
            return Event::Send(envelope);
        }
        if let Some(item) = link.and_then(Link::pop) {
            return Event::Terminal(item);
        }
        let outbox = async {
            match out_rx.recv().await {
                Ok(envelope) => Some(envelope),
                // Unreachable while the session holds a sender; wait for something else.
                Err(_) => futures_lite::future::pending().await,
            }
        };
        let terminals = async {
            match link {
                Some(link) => link.ready().await,
                None => futures_lite::future::pending().await,
            }
            None
        };
        if let Some(envelope) = outbox.or(terminals).await {
            return Event::Send(envelope);
        }
    }
}

/// Resolve `fut`, or `None` if shutdown comes first.
async fn until_shutdown<T>(
    shutdown: &Shutdown,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    async { Some(fut.await) }
        .or(async {
            shutdown.wait().await;
            None
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_is_two_dictated_heartbeats_with_a_ping_every_half() {
        for secs in [1, 10, 60] {
            let heartbeat = Duration::from_secs(secs);
            let c = clocks(heartbeat);
            assert_eq!(c.liveness, heartbeat * 2);
            assert_eq!(c.ping_interval, heartbeat / 2);
        }
    }

    #[test]
    fn close_codes_are_kept() {
        let e = closed(Some((protocol::close::REVOKED, "revoked".into())));
        assert!(matches!(e, SessionError::Closed { code: 4001, .. }));
        assert!(matches!(closed(None), SessionError::ClosedWithoutCode));
    }
}
