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
//! * A new connection has [`ConnectionLimits::first_request`] (10 s) to
//!   finish TLS and send its first request's headers; later requests on a
//!   keep-alive connection have hyper's 30 s header timeout.
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

/// How many unauthenticated connections the listener keeps, and how long a
/// new one may take to send its first request (`ServeConfig::connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Unauthenticated connections in all (at least 1).
    pub unauthenticated: usize,
    /// Unauthenticated connections from one source (at least 1).
    pub unauthenticated_per_source: usize,
    /// From accept to the first request's headers, TLS included.
    pub first_request: Duration,
}

impl ConnectionLimits {
    /// How long a new connection may take to send its first request.
    pub const DEFAULT_FIRST_REQUEST: Duration = Duration::from_secs(10);

    /// The defaults for a process allowed `open_files` descriptors: a
    /// quarter of them (at least 16, at most 4,096) unauthenticated, a
    /// quarter of that per source (at least 4).
    pub fn for_open_files(open_files: u64) -> Self {
        let total = usize::try_from(open_files / 4)
            .unwrap_or(usize::MAX)
            .clamp(16, 4096);
        Self {
            unauthenticated: total,
            unauthenticated_per_source: (total / 4).max(4),
            first_request: Self::DEFAULT_FIRST_REQUEST,
        }
    }

    /// Whether serve can use these: both caps at least 1, the deadline at
    /// least a second.
    pub fn is_valid(&self) -> bool {
        self.unauthenticated >= 1
            && self.unauthenticated_per_source >= 1
            && self.first_request >= Duration::from_secs(1)
    }

    /// The defaults for this process's soft open-files limit
    /// (`RLIMIT_NOFILE`; 1,024 when it cannot be read).
    pub fn from_open_files_limit() -> Self {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a live local that getrlimit only writes.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        Self::for_open_files(if read { limit.rlim_cur } else { 1024 })
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::from_open_files_limit()
    }
}

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

/// The unauthenticated connections of one listener.
pub(crate) struct Gate {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Every unauthenticated connection, oldest first.
    order: BTreeMap<u64, Entry>,
    /// The same connections by source, oldest first.
    by_source: HashMap<Source, BTreeSet<u64>>,
}

struct Entry {
    source: Source,
    /// Told why when the connection is evicted; dropped (closing the
    /// channel) when it authenticates or ends.
    evict: Sender<Closed>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.order.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&entry.source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

impl Gate {
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            metrics,
            state: Mutex::default(),
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
                .and_then(|ids| ids.first().copied())
                .map(|id| (id, Closed::PerSource))
        } else if state.order.len() >= self.limits.unauthenticated {
            state.order.keys().next().map(|&id| (id, Closed::Total))
        } else {
            None
        };
        if let Some((id, why)) = victim {
            if let Some(entry) = state.remove(id) {
                let _ = entry.evict.try_send(why);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.order.insert(id, Entry { source, evict });
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

    /// A request's headers arrived: the first-request deadline is met.
    pub(crate) fn request_seen(&self) {
        self.seen.store(true, Ordering::Relaxed);
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

/// Mark the connection that carried `req` as authenticated (see the
/// module's docs); a no-op for a request that came some other way.
pub(crate) fn authenticated<B>(req: &hyper::Request<B>) {
    if let Some(ticket) = req.extensions().get::<Arc<Ticket>>() {
        ticket.authenticated();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_source: usize) -> Arc<Gate> {
        let limits = ConnectionLimits {
            unauthenticated: total,
            unauthenticated_per_source: per_source,
            first_request: Duration::from_secs(60),
        };
        Arc::new(Gate::new(limits, Arc::default()))
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn evicted(ticket: &Ticket) -> Option<Closed> {
        ticket.closed.try_recv().ok()
    }

    #[test]
    fn the_defaults_follow_this_processs_soft_open_files_limit() {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft: u64 = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|soft| soft.parse().ok())
            .unwrap_or(u64::MAX); // "unlimited"
        assert_eq!(
            ConnectionLimits::from_open_files_limit(),
            ConnectionLimits::for_open_files(soft)
        );
    }

    #[test]
    fn a_full_source_loses_its_own_oldest_and_no_one_elses() {
        let gate = gate(100, 2);
        let other = gate.admit(peer("10.0.0.2"));
        let a = gate.admit(peer("10.0.0.1"));
        let b = gate.admit(peer("10.0.0.1"));
        let c = gate.admit(peer("10.0.0.1"));
        assert_eq!(evicted(&a), Some(Closed::PerSource));
        assert_eq!(
            (evicted(&b), evicted(&c), evicted(&other)),
            (None, None, None)
        );
        assert_eq!(gate.unauthenticated(), 3);
    }

    #[test]
    fn a_full_total_loses_the_oldest_of_all() {
        let gate = gate(2, 2);
        let first = gate.admit(peer("10.0.0.1"));
        let second = gate.admit(peer("10.0.0.2"));
        let third = gate.admit(peer("10.0.0.3"));
        assert_eq!(evicted(&first), Some(Closed::Total));
        assert_eq!((evicted(&second), evicted(&third)), (None, None));
    }

    #[test]
    fn authenticated_and_ended_connections_free_their_place() {
        let gate = gate(2, 2);
        let a = gate.admit(peer("10.0.0.1"));
        let b = gate.admit(peer("10.0.0.1"));
        a.authenticated();
        drop(b);
        assert_eq!(gate.unauthenticated(), 0);
        let _c = gate.admit(peer("10.0.0.1"));
        let _d = gate.admit(peer("10.0.0.1"));
        // `a` authenticated: never evicted, however many come after.
        assert_eq!(evicted(&a), None);
        assert!(a.closed.is_closed());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let gate = gate(100, 1);
        let a = gate.admit(peer("2001:db8:1:2::1"));
        let _b = gate.admit(peer("2001:db8:1:2::ffff"));
        assert_eq!(evicted(&a), Some(Closed::PerSource));
        let c = gate.admit(peer("2001:db8:1:3::1"));
        let v4 = gate.admit(peer("192.0.2.7"));
        let _mapped = gate.admit(peer("::ffff:192.0.2.7"));
        assert_eq!(evicted(&c), None);
        assert_eq!(evicted(&v4), Some(Closed::PerSource));
    }

    #[test]
    fn defaults_follow_the_open_files_limit() {
        let small = ConnectionLimits::for_open_files(1024);
        assert_eq!(
            (small.unauthenticated, small.unauthenticated_per_source),
            (256, 64)
        );
        let big = ConnectionLimits::for_open_files(1 << 20);
        assert_eq!(
            (big.unauthenticated, big.unauthenticated_per_source),
            (4096, 1024)
        );
        let tiny = ConnectionLimits::for_open_files(10);
        assert_eq!(
            (tiny.unauthenticated, tiny.unauthenticated_per_source),
            (16, 4)
        );
    }
}
