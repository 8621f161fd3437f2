//! The gate's caps, evictions and verifying connections, on the `Gate` alone.

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

#[test]
fn a_connection_being_verified_is_never_the_one_evicted() {
    let gate = gate(2, 2);
    let oldest = gate.admit(peer("10.0.0.1"));
    let idle = gate.admit(peer("10.0.0.2"));
    let verifying = oldest.verifying();
    let newest = gate.admit(peer("10.0.0.3"));
    assert_eq!(evicted(&idle), Some(Closed::Total));
    assert_eq!((evicted(&oldest), evicted(&newest)), (None, None));
    // Of one full source too: its oldest idle connection goes.
    let gate = self::gate(100, 2);
    let first = gate.admit(peer("10.0.0.1"));
    let second = gate.admit(peer("10.0.0.1"));
    let _verifying = first.verifying();
    let _third = gate.admit(peer("10.0.0.1"));
    assert_eq!(evicted(&second), Some(Closed::PerSource));
    assert_eq!(evicted(&first), None);
    drop(verifying);
}

#[test]
fn a_gate_full_of_verifications_waits_for_one_to_end_and_evicts_none() {
    use futures_lite::future::poll_once;
    let gate = gate(2, 2);
    let a = gate.admit(peer("10.0.0.1"));
    let b = gate.admit(peer("10.0.0.2"));
    let a_verifying = a.verifying();
    let b_verifying = b.verifying();
    smol::block_on(async {
        let mut room = std::pin::pin!(gate.room());
        assert!(
            poll_once(room.as_mut()).await.is_none(),
            "room while all verify"
        );
        drop(b_verifying);
        assert!(
            poll_once(room.as_mut()).await.is_some(),
            "no room once one is done"
        );
    });
    // The one done verifying (and refused, say) is the one to go.
    let _c = gate.admit(peer("10.0.0.3"));
    assert_eq!((evicted(&a), evicted(&b)), (None, Some(Closed::Total)));
    drop(a_verifying);
    // Authenticated or gone: room again at once.
    a.authenticated();
    smol::block_on(gate.room());
}

#[test]
fn too_many_handshakes_wait_for_a_request_or_for_the_oldest_to_go() {
    use futures_lite::future::poll_once;
    let limits = ConnectionLimits {
        unauthenticated: 100,
        unauthenticated_per_source: 100,
        first_request: Duration::from_secs(60),
    };
    let gate = Arc::new(Gate {
        handshakes: 2,
        handshake_grace: Duration::from_millis(200),
        ..Gate::new(limits, Arc::default())
    });
    let a = gate.admit(peer("10.0.0.1"));
    let b = gate.admit(peer("10.0.0.2"));
    smol::block_on(async {
        let mut room = std::pin::pin!(gate.room());
        assert!(
            poll_once(room.as_mut()).await.is_none(),
            "room past 2 handshakes"
        );
        b.request_seen();
        assert!(
            poll_once(room.as_mut()).await.is_some(),
            "no room after a request"
        );
    });
    let c = gate.admit(peer("10.0.0.3"));
    // a and c have sent nothing: the next one waits out a's grace, and a goes.
    let waited = Instant::now();
    smol::block_on(gate.room());
    assert!(
        waited.elapsed() >= Duration::from_millis(150),
        "{:?}",
        waited.elapsed()
    );
    assert_eq!(evicted(&a), Some(Closed::FirstRequest));
    assert_eq!((evicted(&b), evicted(&c)), (None, None));
}
