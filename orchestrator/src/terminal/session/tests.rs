//! Unit tests of one session's state: acks, viewers, links, stalls, the end.

use std::time::{Duration, Instant};

use smol::channel::{bounded, Receiver};

use super::*;

const CONN: u64 = 7;

fn viewer(s: &Session, offset: u64) -> (u64, Receiver<()>) {
    let (tx, rx) = bounded(1);
    let joined = s.join(offset, tx, Some(CONN));
    (joined.viewer_id, rx)
}

/// Everything a viewer would be sent now, as (offset, bytes) of data.
fn drain(s: &Session, id: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match s.next(id) {
            Next::Data { offset, bytes } => out.push((offset, bytes)),
            Next::Status { .. } | Next::Viewers(_) | Next::Note(_) => {}
            Next::Idle | Next::Exited(_) | Next::Kicked(_) => return out,
        }
    }
}

fn meta() -> Meta {
    Meta {
        container_id: "c1".into(),
        tenant_id: "t1".into(),
        opened_by: "operator".into(),
        opened_at: 1,
    }
}

#[test]
fn with_no_viewer_what_arrives_is_acked() {
    let s = Session::opened("w", 1, Some(CONN));
    assert_eq!(s.output(CONN, 0, b"hello"), Some(5));
    assert_eq!(s.output(CONN, 5, b"!"), Some(6));
    // A replayed overlap brings nothing new, so no new ack.
    assert_eq!(s.output(CONN, 0, b"hel"), None);
    // Another connection's frames are kept but not acked on it.
    assert_eq!(s.output(CONN + 1, 6, b"x"), None);
    assert_eq!(s.end(), 7);
}

#[test]
fn the_ack_is_the_lowest_offset_any_viewer_consumed() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, wake_a) = viewer(&s, 0);
    let (b, _wake_b) = viewer(&s, 0);
    assert_eq!(
        s.output(CONN, 0, b"0123456789"),
        None,
        "viewers hold the ack"
    );
    assert!(wake_a.try_recv().is_ok(), "output wakes the viewers");
    assert_eq!(drain(&s, a), vec![(0, b"0123456789".to_vec())]);
    assert_eq!(drain(&s, b), vec![(0, b"0123456789".to_vec())]);
    assert!(!s.ack(a, 8), "b has consumed nothing yet");
    assert!(s.ack(b, 4), "min(8, 4) moves the ack");
    assert_eq!(s.ack_due(CONN), Some(4));
    assert!(!s.ack(b, 3), "acks never go back");
    assert!(s.ack(b, 100), "capped at what b was sent");
    assert_eq!(s.ack_due(CONN), Some(8));
    assert!(s.leave(a), "without a, b's 10 is the floor");
    assert_eq!(s.ack_due(CONN), Some(10));
    assert_eq!(s.ack_due(CONN), None);
}

#[test]
fn one_notice_at_a_time_is_queued_on_the_link() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    s.output(CONN, 0, b"abcdef");
    drain(&s, a);
    assert!(s.ack(a, 2));
    assert!(!s.ack(a, 4), "a notice is already queued");
    assert_eq!(s.ack_due(CONN), Some(4), "the link reads the latest value");
    assert!(s.ack(a, 6));
    s.notice_lost();
    assert!(
        s.ack(a, 6),
        "a lost notice is queued again while the ack is due"
    );
    assert_eq!(s.ack_due(CONN), Some(6));
    assert!(!s.ack(a, 6), "nothing new");
}

#[test]
fn each_viewer_reads_from_its_own_offset() {
    let s = Session::opened("w", 1, Some(CONN));
    s.output(CONN, 0, b"abcdef");
    let (late, _w) = viewer(&s, 4);
    assert_eq!(drain(&s, late), vec![(4, b"ef".to_vec())]);
    s.output(CONN, 6, b"gh");
    assert_eq!(drain(&s, late), vec![(6, b"gh".to_vec())]);
    let (ahead, _w2) = viewer(&s, 10);
    assert!(drain(&s, ahead).is_empty(), "waits for byte 10");
    s.output(CONN, 8, b"ijkl");
    assert_eq!(drain(&s, ahead), vec![(10, b"kl".to_vec())]);
}

#[test]
fn a_restored_session_waits_for_its_first_output_then_starts_there() {
    let s = Session::restored("w", 1, meta());
    let (tx, _rx) = bounded(1);
    let joined = s.join(100, tx.clone(), None);
    assert_eq!((joined.offset, joined.end, joined.attach), (100, 0, None));
    let (early, _rx2) = viewer_offline(&s, 20);
    assert_eq!(s.next(joined.viewer_id), Next::Status { online: false });
    assert_eq!(s.next(joined.viewer_id), Next::Viewers(2));
    assert_eq!(s.next(joined.viewer_id), Next::Idle);
    // The inventory: attach from 0, everything the agent still holds.
    assert_eq!(s.attaching(CONN, 55), 0);
    assert_eq!(
        s.input(CONN, b"ab".to_vec()),
        Input::Held,
        "typed while attaching: held"
    );
    assert!(!s.accepts_input(CONN + 1));
    assert_eq!(s.attached(CONN, Some(55)), (true, true));
    assert_eq!(
        s.input(CONN, b"c".to_vec()),
        Input::Send(vec![(55, b"abc".to_vec())]),
        "held input first, at the agent's inputEnd"
    );
    // The agent's scrollback starts at 50: byte 20 is gone.
    s.output(CONN, 50, &[b'x'; 100]);
    assert_eq!(drain(&s, early), vec![(50, vec![b'x'; 100])]);
    assert_eq!(drain(&s, joined.viewer_id), vec![(100, vec![b'x'; 50])]);
}

fn viewer_offline(s: &Session, offset: u64) -> (u64, Receiver<()>) {
    let (tx, rx) = bounded(1);
    (s.join(offset, tx, None).viewer_id, rx)
}

#[test]
fn a_reconnect_attaches_from_what_viewers_consumed_and_tells_them() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    s.output(CONN, 0, b"abc");
    drain(&s, a);
    s.link_down(CONN);
    assert_eq!(s.next(a), Next::Status { online: false });
    assert_eq!(
        s.input(CONN, b"ls".to_vec()),
        Input::Held,
        "typed while offline: held for the agent's return"
    );
    assert_eq!(
        s.attaching(CONN + 1, 9),
        0,
        "from what the viewer consumed, not the mirror's end: the agent must not run ahead"
    );
    assert_eq!(s.next(a), Next::Idle, "offline until the attach answers");
    assert_eq!(s.attached(CONN + 1, None), (true, true), "input is held");
    assert_eq!(
        s.input(CONN + 1, b"\r".to_vec()),
        Input::Send(vec![(9, b"ls\r".to_vec())]),
        "held input goes first, at the agent's inputEnd"
    );
    assert_eq!(
        s.ack_due(CONN + 1),
        Some(0),
        "the ack is sent again on the new link"
    );
    assert_eq!(s.next(a), Next::Status { online: true });
    s.output(CONN + 1, 0, b"abcdef");
    assert_eq!(drain(&s, a), vec![(3, b"def".to_vec())], "nothing twice");
}

#[test]
fn a_viewer_joining_while_the_link_is_up_but_detached_attaches_it() {
    let s = Session::restored("w", 1, meta());
    let (tx, _rx) = bounded(1);
    let joined = s.join(0, tx, Some(CONN));
    assert_eq!(joined.attach, Some((CONN, 0)));
    s.attach_failed(CONN);
    let (tx, _rx) = bounded(1);
    assert_eq!(s.join(0, tx, Some(CONN)).attach, Some((CONN, 0)));
}

#[test]
fn a_viewer_below_the_mirror_starts_at_its_oldest_byte() {
    let s = Session::opened("w", 1, Some(CONN));
    s.output(
        CONN,
        0,
        &vec![b'a'; crate::terminal::mirror::MIRROR_CAPACITY],
    );
    s.output(CONN, crate::terminal::mirror::MIRROR_CAPACITY as u64, b"zz");
    let (tx, _rx) = bounded(1);
    let joined = s.join(0, tx, Some(CONN));
    assert_eq!(joined.offset, 2);
    assert_eq!(
        joined.end,
        crate::terminal::mirror::MIRROR_CAPACITY as u64 + 2
    );
}

#[test]
fn a_viewer_holding_a_full_queue_without_progress_stalls() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    let t0 = Instant::now();
    let limit = Duration::from_secs(60);
    s.output(CONN, 0, &vec![0; 1000]);
    assert!(!s.stalled(a, t0, limit), "a little behind is fine");
    s.output(CONN, 1000, &vec![0; STALL_BYTES as usize]);
    let t1 = Instant::now();
    assert!(!s.stalled(a, t1, limit));
    assert!(!s.stalled(a, t1 + limit / 2, limit));
    assert!(s.stalled(a, t1 + limit * 2, limit));
    s.kick(a, "too slow");
    assert_eq!(s.next(a), Next::Kicked("too slow"));
    assert!(s.leave(a));
    assert_eq!(
        s.idle_for(t1 + limit * 3).map(|d| d > Duration::ZERO),
        Some(true)
    );
}

#[test]
fn exited_comes_after_the_last_byte_and_only_once() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    s.output(CONN, 0, b"bye");
    let exit = Exit {
        exit_code: Some(3),
        reason: "exited".into(),
    };
    assert!(s.end_with(exit.clone()));
    assert!(!s.end_with(exit.clone()));
    assert_eq!(s.output(CONN, 3, b"late"), None);
    assert_eq!(
        s.next(a),
        Next::Data {
            offset: 0,
            bytes: b"bye".to_vec()
        }
    );
    assert_eq!(s.next(a), Next::Exited(exit));
    assert!(!s.begin_close(), "nothing to close");
    assert_eq!(s.idle_for(Instant::now()), None);
}

#[test]
fn an_announced_session_is_claimed_once() {
    let s = Session::opened("w", 1, None);
    assert_eq!(s.meta(), None);
    assert!(s.claim(meta()));
    assert!(!s.claim(meta()));
    assert_eq!(s.meta(), Some(meta()));
    assert!(s.begin_close());
    assert!(!s.begin_close());
    assert!(s.closing());
}

#[test]
fn input_held_while_attaching_is_bounded_and_sent_in_frames_in_order() {
    let s = Session::restored("w", 1, meta());
    s.attaching(CONN, 7);
    let big = vec![b'a'; protocol::MAX_BINARY_PAYLOAD];
    assert_eq!(s.input(CONN, big.clone()), Input::Held);
    assert!(
        matches!(s.input(CONN, b"more".to_vec()), Input::Dropped(_)),
        "beyond a frame's worth is refused, not queued without bound"
    );
    s.attached(CONN, Some(10));
    let Input::Send(frames) = s.input(CONN, b"bc".to_vec()) else {
        panic!("online input is sent");
    };
    let offsets: Vec<(u64, usize)> = frames.iter().map(|(o, b)| (*o, b.len())).collect();
    let max = protocol::MAX_BINARY_PAYLOAD;
    assert_eq!(offsets, vec![(10, max), (10 + max as u64, 2)]);
    assert_eq!(frames[1].1, b"bc");
}

#[test]
fn a_viewer_whose_socket_dropped_holds_the_ack_until_it_rejoins() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    s.output(CONN, 0, b"abcd");
    drain(&s, a);
    assert!(s.ack(a, 2));
    assert_eq!(s.ack_due(CONN), Some(2));
    // Its socket drops (no close frame): it is expected back.
    s.leave_expecting(a, true);
    assert_eq!(s.output(CONN, 4, b"efgh"), None, "no ack past what it had");
    // A viewer closing its tab is not waited for.
    let (b, _wb) = viewer(&s, 8);
    assert!(!s.leave_expecting(b, false), "a still holds the ack at 2");
    assert_eq!(s.ack_due(CONN), None);
    // It comes back from the byte after the last it had: the hold is its.
    let (a2, _w2) = viewer(&s, 4);
    assert_eq!(drain(&s, a2), vec![(4, b"efgh".to_vec())]);
    assert!(s.ack(a2, 8));
    assert_eq!(s.ack_due(CONN), Some(8));
}

#[test]
fn a_viewer_expected_back_that_never_comes_lets_go_after_the_grace() {
    let s = Session::opened("w", 1, Some(CONN)).with_rejoin(Duration::from_secs(20));
    let (a, _w) = viewer(&s, 0);
    s.output(CONN, 0, b"abcd");
    drain(&s, a);
    s.leave_expecting(a, true);
    assert_eq!(s.output(CONN, 4, b"ef"), None);
    assert!(!s.expire_holds(Instant::now()), "not yet");
    assert!(s.expire_holds(Instant::now() + Duration::from_secs(21)));
    assert_eq!(
        s.ack_due(CONN),
        Some(6),
        "with nobody expected, what arrived"
    );
}

#[test]
fn after_a_restart_nothing_is_acked_until_the_viewers_had_time_to_return() {
    let s = Session::restored("w", 1, meta()).with_rejoin(Duration::from_secs(20));
    assert_eq!(s.attaching(CONN, 0), 0);
    assert_eq!(s.output(CONN, 0, b"replay"), None, "not while attaching");
    s.attached(CONN, Some(0));
    assert_eq!(s.ack_due(CONN), Some(0), "the forced ack moves nothing");
    assert_eq!(
        s.output(CONN, 6, b"more"),
        None,
        "no viewer yet: the ones that were here may be on their way"
    );
    // One is back and reads everything: the others may not be.
    let (a, _w) = viewer(&s, 3);
    assert_eq!(drain(&s, a), vec![(3, b"laymore".to_vec())]);
    assert!(!s.ack(a, 10), "held for those expected back");
    assert!(s.expire_holds(Instant::now() + Duration::from_secs(21)));
    assert_eq!(s.ack_due(CONN), Some(10));
}

#[test]
fn input_a_dropped_link_lost_in_flight_is_sent_again_once() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    assert_eq!(
        s.input(CONN, b"echo 1\r".to_vec()),
        Input::Send(vec![(0, b"echo 1\r".to_vec())])
    );
    assert_eq!(
        s.input(CONN, b"echo 2\r".to_vec()),
        Input::Send(vec![(7, b"echo 2\r".to_vec())])
    );
    s.link_down(CONN);
    assert_eq!(s.input(CONN, b"x".to_vec()), Input::Held);
    // The agent wrote only the first line: the second goes again, then x.
    s.attaching(CONN + 1, 7);
    assert_eq!(s.attached(CONN + 1, Some(7)), (true, true));
    assert_eq!(
        s.input(CONN + 1, Vec::new()),
        Input::Send(vec![(7, b"echo 2\rx".to_vec())])
    );
    assert!(drain(&s, a).is_empty());
}

#[test]
fn an_inventory_older_than_the_input_sent_never_makes_it_sent_twice() {
    let s = Session::opened("w", 1, Some(CONN));
    let (a, _w) = viewer(&s, 0);
    assert_eq!(
        s.input(CONN, b"rm -i x\r".to_vec()),
        Input::Send(vec![(0, b"rm -i x\r".to_vec())])
    );
    // An inventory the agent took before that line arrived says its input
    // ends at 0; the attach it starts hears from the agent that all 8 bytes
    // arrived: nothing goes again, the next key follows them.
    s.attaching(CONN, 0);
    assert!(!s.attached(CONN, Some(8)).1, "nothing to send again");
    assert_eq!(
        s.input(CONN, b"y".to_vec()),
        Input::Send(vec![(8, b"y".to_vec())])
    );
    // A line a dropped link did lose still goes again, once.
    s.link_down(CONN);
    s.attaching(CONN + 1, 0);
    assert!(s.attached(CONN + 1, Some(8)).1, "the lost key goes again");
    assert_eq!(
        s.input(CONN + 1, b"\r".to_vec()),
        Input::Send(vec![(8, b"y\r".to_vec())])
    );
    assert!(drain(&s, a).is_empty());
}

#[test]
fn typing_held_when_the_session_ends_is_reported_not_lost_silently() {
    let s = Session::restored("w", 1, meta());
    let (tx, _rx) = bounded(1);
    let a = s.join(0, tx, None).viewer_id;
    assert_eq!(s.hold_input(b"make\r".to_vec()), Ok(()));
    let big = vec![b'y'; protocol::MAX_BINARY_PAYLOAD];
    assert_eq!(
        s.hold_input(big.clone()),
        Err(big),
        "beyond the bound: given back"
    );
    s.end_with(Exit {
        exit_code: None,
        reason: "lost".into(),
    });
    let notes: Vec<String> = std::iter::from_fn(|| match s.next(a) {
        Next::Note(text) => Some(Some(text)),
        Next::Exited(_) | Next::Idle | Next::Kicked(_) => None,
        _ => Some(None),
    })
    .flatten()
    .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("5 bytes dropped: \"make\\r\""),
        "{notes:?}"
    );
}
