//! Bounds on connections that have not authenticated yet, so that idle
//! sockets from anyone cannot use up the file descriptors the agents and
//! the API's callers need.
//!
//! * **Unauthenticated** means: accepted, and no request on it has
//!   presented a valid credential yet. A connection stops counting once one
//!   request on it authenticates (a member's or the admin token that the
//!   dispatcher accepts, or the worker credential of an agent's upgrade),
//!   and does not count again for the rest of its life, whatever its later
//!   keep-alive requests carry: its peer holds a credential (accountable,
//!   revocable). Requests to public routes, refused ones (401) and
//!   enrolments (`POST /v1/enroll`: a join token is spent, not presented)
//!   leave it counted.
//! * Two caps ([`ConnectionLimits`]): one over every unauthenticated
//!   connection, one per **source** (an IPv4 address, or an IPv6 /64:
//!   one host usually owns a whole /64).
//! * A connection that would exceed a cap is admitted and the **oldest**
//!   unauthenticated connection of the full cap (that source's for the
//!   per-source cap, anyone's for the total) is closed at once, without
//!   an answer. Shedding the newest instead would let whoever holds the
//!   slots keep everyone out for as long as they like; evicting the oldest
//!   means a holder must open connections faster than a real client
//!   authenticates (a round trip or two) to keep one out, and the
//!   per-source cap keeps one source from evicting anyone else's.
//! * Except while its credential is being **verified** (a request that
//!   presented one waits for the store to check it: [`verifying`]): such
//!   a connection is never the one evicted, and when every place is held
//!   by one, the listener stops accepting until one is free (the newcomer
//!   waits in the kernel's accept queue, raised to [`BACKLOG`]). A wave of
//!   agents reconnecting at once (a replica died, its agents came here)
//!   then queues behind the store, instead of each one past the cap
//!   closing another mid-verification, which would retry later with a
//!   doubled backoff. Nobody can hold a place this way: the verification
//!   is the orchestrator's own work, and a refused credential ends it.
//! * A new connection has [`ConnectionLimits::first_request`] (10 s) to
//!   finish TLS and send its first request's headers; later requests on a
//!   keep-alive connection have hyper's 30 s header timeout.
//! * At most [`HANDSHAKES`] connections are accepted that have not sent a
//!   request yet (their TLS handshakes run side by side on the executor):
//!   past that the listener waits, until one sends its request or the
//!   oldest of them has had [`HANDSHAKE_GRACE`], which is then closed
//!   (counted as a missed first request). Thousands of handshakes at once
//!   would share the executor so thinly that all of them finish late and
//!   miss the first-request deadline; taken in turn, each is done in
//!   milliseconds, and the rest wait in the kernel's queue.
//!
//! Authenticated connections are not capped here: the defaults leave them
//! three quarters of the process's open-files limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use smol::channel::{Receiver, Sender};

use crate::metrics::{Metrics, Shed};

mod limits;
pub use limits::ConnectionLimits;

/// The listener's accept queue: connections the kernel completes while
/// the gate is full of connections being verified wait here, not refused
/// (Linux caps it at `net.core.somaxconn`, 4,096 by default).
pub(crate) const BACKLOG: i32 = 4096;

/// Connections accepted that have not sent their first request, at most:
/// past it the listener waits (see the module's docs).
pub(crate) const HANDSHAKES: usize = 1024;

/// How long the oldest of [`HANDSHAKES`] connections may take to send its
/// first request before it is closed to let the next one in.
pub(crate) const HANDSHAKE_GRACE: Duration = Duration::from_secs(5);

/// Where a connection comes from, as the per-source cap counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Self::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why a connection was closed by this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Evicted: its source reached its cap and it was that source's oldest.
    PerSource,
    /// Evicted: the total cap was reached and it was the oldest.
    Total,
    /// No first request within [`ConnectionLimits::first_request`].
    FirstRequest,
}

impl Closed {
    fn shed(self) -> Shed {
        match self {
            Self::PerSource => Shed::PerSource,
            Self::Total => Shed::Total,
            Self::FirstRequest => Shed::FirstRequest,
        }
    }
}

/// What the accept loop waits for while there is no room ([`Gate::room`]).
enum Wait {
    /// A place coming free: a connection released or done verifying.
    Freed,
    /// That, or this instant, when the oldest handshake's grace is over.
    FreedOr(Instant),
}

/// The unauthenticated connections of one listener.
pub(crate) struct Gate {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// A token sent whenever a place may have come free (a connection
    /// released, or done verifying), for the accept loop waiting on
    /// [`Gate::room`]; one kept at most, so none is lost.
    freed: (Sender<()>, Receiver<()>),
    /// [`HANDSHAKES`] and [`HANDSHAKE_GRACE`] (smaller in tests).
    handshakes: usize,
    handshake_grace: Duration,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Every unauthenticated connection, oldest first.
    order: BTreeMap<u64, Entry>,
    /// The same connections by source, oldest first.
    by_source: HashMap<Source, BTreeSet<u64>>,
    /// How many of them are being verified.
    verifying: usize,
    /// How many of them have not sent a request yet.
    unseen: usize,
}

struct Entry {
    source: Source,
    /// Told why when the connection is evicted; dropped (closing the
    /// channel) when it authenticates or ends.
    evict: Sender<Closed>,
    /// Its credential is being verified: not to be evicted.
    verifying: bool,
    /// Whether a request's headers have arrived on it.
    seen: bool,
    admitted: Instant,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.order.remove(&id)?;
        if entry.verifying {
            self.verifying -= 1;
        }
        if !entry.seen {
            self.unseen -= 1;
        }
        if let Some(ids) = self.by_source.get_mut(&entry.source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    /// Close connection `id` for `why`, if it is still counted.
    fn evict(&mut self, id: u64, why: Closed) {
        if let Some(entry) = self.remove(id) {
            let _ = entry.evict.try_send(why);
        }
    }

    /// The oldest of `ids` not being verified; else the oldest of all.
    fn victim<'a>(&self, mut ids: impl Iterator<Item = &'a u64> + Clone) -> Option<u64> {
        let idle = ids
            .clone()
            .find(|id| self.order.get(id).is_some_and(|e| !e.verifying));
        idle.or_else(|| ids.next()).copied()
    }
}

impl Gate {
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            metrics,
            state: Mutex::default(),
            freed: smol::channel::bounded(1),
            handshakes: HANDSHAKES,
            handshake_grace: HANDSHAKE_GRACE,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a few map operations; a poisoned lock's state is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count a new connection from `peer`, evicting the oldest of a full cap.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Arc<Ticket> {
        let source = Source::of(peer.ip());
        let (evict, closed) = smol::channel::bounded(1);
        let mut state = self.lock();
        let of_source = state.by_source.get(&source);
        let full = of_source.map_or(0, BTreeSet::len) >= self.limits.unauthenticated_per_source;
        let victim = if full {
            of_source
                .and_then(|ids| state.victim(ids.iter()))
                .map(|id| (id, Closed::PerSource))
        } else if state.order.len() >= self.limits.unauthenticated {
            state
                .victim(state.order.keys())
                .map(|id| (id, Closed::Total))
        } else {
            None
        };
        if let Some((id, why)) = victim {
            state.evict(id, why);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.order.insert(
            id,
            Entry {
                source,
                evict,
                verifying: false,
                seen: false,
                admitted: Instant::now(),
            },
        );
        state.unseen += 1;
        state.by_source.entry(source).or_default().insert(id);
        self.metrics.set_unauthenticated(state.order.len());
        drop(state);
        if let Some((_, why)) = victim {
            self.metrics.connection_shed(why.shed());
            tracing::debug!(%peer, ?why, "unauthenticated connection cap reached: the oldest is closed");
        }
        Arc::new(Ticket {
            gate: Arc::clone(self),
            id,
            closed,
            first_request_by: Instant::now() + self.limits.first_request,
            seen: AtomicBool::new(false),
        })
    }

    fn release(&self, id: u64) {
        let mut state = self.lock();
        if state.remove(id).is_some() {
            self.metrics.set_unauthenticated(state.order.len());
            let _ = self.freed.0.try_send(());
        }
    }

    /// Mark connection `id` as being verified, or done with it.
    fn set_verifying(&self, id: u64, verifying: bool) {
        let mut state = self.lock();
        let Some(entry) = state.order.get_mut(&id) else {
            return;
        };
        if entry.verifying == verifying {
            return;
        }
        entry.verifying = verifying;
        if verifying {
            state.verifying += 1;
        } else {
            state.verifying -= 1;
            let _ = self.freed.0.try_send(());
        }
    }

    /// Connection `id` sent its first request.
    fn set_seen(&self, id: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.order.get_mut(&id) {
            if !entry.seen {
                entry.seen = true;
                state.unseen -= 1;
                let _ = self.freed.0.try_send(());
            }
        }
    }

    /// Whether a connection may be accepted now: `None` if so, else what
    /// to wait for. Closes the oldest of too many handshakes once past its
    /// grace.
    fn check_room(&self) -> Option<Wait> {
        let mut state = self.lock();
        let total = self.limits.unauthenticated;
        if state.order.len() >= total && state.verifying >= state.order.len() {
            return Some(Wait::Freed);
        }
        if state.unseen < self.handshakes {
            return None;
        }
        let oldest = state.order.iter().find(|(_, e)| !e.seen);
        let (id, due) = oldest.map(|(&id, e)| (id, e.admitted + self.handshake_grace))?;
        if due > Instant::now() {
            return Some(Wait::FreedOr(due));
        }
        state.evict(id, Closed::FirstRequest);
        self.metrics.set_unauthenticated(state.order.len());
        drop(state);
        self.metrics.connection_shed(Closed::FirstRequest.shed());
        tracing::debug!("too many handshakes at once: the oldest is closed");
        None
    }

    /// Completes once a connection may be accepted: the accept loop waits
    /// here while every place is held by a connection being verified, or
    /// [`HANDSHAKES`] connections have yet to send a request.
    pub(crate) async fn room(&self) {
        while let Some(wait) = self.check_room() {
            let freed = async {
                let _ = self.freed.1.recv().await;
            };
            match wait {
                Wait::Freed => freed.await,
                Wait::FreedOr(at) => {
                    let due = async {
                        smol::Timer::at(at).await;
                    };
                    freed.or(due).await
                }
            }
        }
    }

    /// Unauthenticated connections now (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn unauthenticated(&self) -> usize {
        self.lock().order.len()
    }
}

/// One accepted connection's place among the unauthenticated ones, shared
/// by its task and (through their extensions) its requests. Dropping the
/// last handle, or [`Ticket::authenticated`], gives the place up.
pub(crate) struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    closed: Receiver<Closed>,
    /// Admission plus the first-request deadline: TLS and the first
    /// request's headers must be done by then.
    first_request_by: Instant,
    /// Whether a request's headers have arrived.
    seen: AtomicBool,
}

impl Ticket {
    /// A request on this connection presented a valid credential: it no
    /// longer counts, and is never evicted.
    pub(crate) fn authenticated(&self) {
        self.gate.release(self.id);
    }

    /// A credential this connection presented is being verified until the
    /// returned guard drops: the connection is not evicted meanwhile.
    pub(crate) fn verifying(self: &Arc<Self>) -> Verifying {
        self.gate.set_verifying(self.id, true);
        Verifying {
            ticket: Arc::clone(self),
        }
    }

    /// A request's headers arrived: the first-request deadline is met.
    pub(crate) fn request_seen(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            self.gate.set_seen(self.id);
        }
    }

    /// Completes when the connection must be closed: evicted, or no request
    /// within the first-request deadline. Never, once authenticated.
    pub(crate) async fn closed(&self) -> Closed {
        let evicted = async {
            match self.closed.recv().await {
                Ok(why) => why,
                // Authenticated (or released): never evicted now.
                Err(_) => std::future::pending().await,
            }
        };
        let deadline = async {
            smol::Timer::at(self.first_request_by).await;
            if self.seen.load(Ordering::Relaxed) || self.closed.is_closed() {
                std::future::pending::<()>().await;
            }
            self.gate.metrics.connection_shed(Shed::FirstRequest);
            Closed::FirstRequest
        };
        evicted.or(deadline).await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.release(self.id);
    }
}

/// Raise `listener`'s accept queue to [`BACKLOG`] (the standard library
/// listens with 128, past which a wave's connections are refused by the
/// kernel instead of waiting for [`Gate::room`]).
pub(crate) fn raise_backlog(listener: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    // SAFETY: listen(2) again on a socket this process owns and already
    // listens on only resizes its accept queue.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A connection's credential being verified ([`Ticket::verifying`]).
pub(crate) struct Verifying {
    ticket: Arc<Ticket>,
}

impl Drop for Verifying {
    fn drop(&mut self) {
        self.ticket.gate.set_verifying(self.ticket.id, false);
    }
}

/// The connection that carried `req`, marked as being verified until the
/// guard drops (see the module's docs); `None` for a request that came
/// some other way.
pub(crate) fn verifying<B>(req: &hyper::Request<B>) -> Option<Verifying> {
    req.extensions()
        .get::<Arc<Ticket>>()
        .map(|ticket| ticket.verifying())
}

/// Mark the connection that carried `req` as authenticated (see the
/// module's docs); a no-op for a request that came some other way.
pub(crate) fn authenticated<B>(req: &hyper::Request<B>) {
    if let Some(ticket) = req.extensions().get::<Arc<Ticket>>() {
        ticket.authenticated();
    }
}

#[cfg(test)]
mod tests;
