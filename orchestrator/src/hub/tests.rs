//! Unit tests of the hub: live connections, request correlation, events,
//! terminal lanes, what a dropped caller or connection leaves behind, and
//! what every command tells its observer.

use std::time::Duration;

use super::*;
use protocol::container::{ContainerListing, ContainerRef, Empty};
use protocol::{Body, Envelope, ErrorCode, ErrorReply};

fn list_all() -> Body {
    Body::ContainerListAll(protocol::container::Empty {})
}

#[test]
fn request_to_offline_worker_fails_fast() {
    let hub = Hub::default();
    let err = smol::block_on(hub.request("w", list_all(), Duration::from_secs(1))).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
}

#[test]
fn request_is_answered_timed_out_or_failed() {
    smol::block_on(async {
        let hub = std::sync::Arc::new(Hub::default());
        let (tx, rx) = smol::channel::unbounded();
        hub.register("w", 1, 0, tx, 0);

        // A reply routed by requestId.
        let agent = {
            let hub = hub.clone();
            let rx = rx.clone();
            smol::spawn(async move {
                let Ok(Outbound::Text(text)) = rx.recv().await else {
                    panic!("no request")
                };
                let env = Envelope::decode(&text).unwrap();
                let id = env.request_id.unwrap();
                assert!(
                    !hub.resolve("other", &id, list_all()),
                    "foreign reply accepted"
                );
                let reply = Body::ContainerListedAll(ContainerListing { containers: vec![] });
                assert!(hub.resolve("w", &id, reply));
            })
        };
        let got = hub
            .request("w", list_all(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.type_name(), "container.list-all.result");
        agent.await;

        // An error reply.
        let agent = {
            let hub = hub.clone();
            let rx = rx.clone();
            smol::spawn(async move {
                let Ok(Outbound::Text(text)) = rx.recv().await else {
                    panic!("no request")
                };
                let id = Envelope::decode(&text).unwrap().request_id.unwrap();
                hub.resolve(
                    "w",
                    &id,
                    Body::Error(ErrorReply::new(ErrorCode::EngineFailed, "boom")),
                );
            })
        };
        let err = hub
            .request("w", list_all(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::Agent { .. }), "{err}");
        agent.await;

        // No reply.
        let err = hub
            .request("w", list_all(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::Timeout { .. }), "{err}");
        assert!(hub.lock().pending.is_empty());

        // Disconnect while waiting.
        let waiter = {
            let hub = hub.clone();
            smol::spawn(async move { hub.request("w", list_all(), Duration::from_secs(5)).await })
        };
        let _ = rx.recv().await; // the timed-out request
        let _ = rx.recv().await; // the one now waiting
        hub.unregister("w", 1);
        assert!(matches!(waiter.await, Err(HubError::Disconnected { .. })));
        assert!(hub.live("w").is_none());
    });
}

#[test]
fn a_newer_connection_replaces_the_older() {
    let hub = Hub::default();
    let (tx1, rx1) = smol::channel::unbounded();
    let (tx2, _rx2) = smol::channel::unbounded();
    hub.register("w", 1, 0, tx1, 0);
    hub.register("w", 2, 0, tx2, 0);
    assert!(matches!(
        rx1.try_recv(),
        Ok(Outbound::Close {
            code: protocol::close::REPLACED,
            ..
        })
    ));
    hub.unregister("w", 1); // the old task ending does not remove the new
    assert!(hub.live("w").is_some());
}

#[test]
fn many_requests_in_flight_each_get_their_own_reply_and_events() {
    smol::block_on(async {
        let hub = std::sync::Arc::new(Hub::default());
        let (tx, rx) = smol::channel::unbounded();
        hub.register("w", 1, 0, tx, 0);
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let hub = hub.clone();
                smol::spawn(async move {
                    let mut events = 0;
                    let reply = hub
                        .request_with_events("w", list_all(), Duration::from_secs(5), |_| {
                            events += 1
                        })
                        .await;
                    (reply, events)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for _ in 0..50 {
            let Ok(Outbound::Text(text)) = rx.recv().await else {
                panic!("no request")
            };
            ids.push(Envelope::decode(&text).unwrap().request_id.unwrap());
        }
        // Answer in reverse order, each with as many events as its index.
        for (n, id) in ids.iter().enumerate().rev() {
            for _ in 0..n {
                let line = protocol::image::BuildProgress { line: "x".into() };
                assert!(hub.event("w", id, Body::BuildProgress(line)));
            }
            let listing = ContainerListing { containers: vec![] };
            assert!(hub.resolve("w", id, Body::ContainerListedAll(listing)));
        }
        let mut counts = Vec::new();
        for waiter in waiters {
            let (reply, events) = waiter.await;
            assert!(reply.is_ok());
            counts.push(events);
        }
        counts.sort_unstable();
        assert_eq!(counts, (0..50).collect::<Vec<_>>());
        assert_eq!(hub.pending_count(), 0);
    });
}

#[test]
fn a_dropped_caller_leaves_no_pending_entry() {
    smol::block_on(async {
        let hub = Hub::default();
        let (tx, _rx) = smol::channel::unbounded();
        hub.register("w", 1, 0, tx, 0);
        let fut = hub.request("w", list_all(), Duration::from_secs(5));
        let polled = futures_lite::future::poll_once(Box::pin(fut)).await;
        assert!(polled.is_none());
        assert_eq!(hub.pending_count(), 0);
    });
}

#[test]
fn an_idle_connection_has_no_terminal_lane_until_a_session_needs_one() {
    let hub = Hub::default();
    let (tx, rx) = smol::channel::unbounded();
    hub.register("w", 1, 0, tx, 0);
    assert!(
        rx.try_recv().is_err(),
        "nothing is queued for an idle agent"
    );
    assert!(
        hub.lane("w", 2).is_none(),
        "no lane on a connection not live"
    );

    let lane = hub.lane("w", 1).expect("a lane on the live connection");
    let slots = lane.capacity();
    assert!(
        slots.is_some_and(|n| (1..=4).contains(&n)),
        "a lane allocates its input slots up front: {slots:?}"
    );
    let Ok(Outbound::Lane(LaneRx(lane_rx))) = rx.try_recv() else {
        panic!("the connection task is handed its lane")
    };
    let again = hub.lane("w", 1).unwrap();
    assert!(rx.try_recv().is_err(), "one lane per connection");
    smol::block_on(again.send(LaneMsg::Ack { session_id: 7 })).unwrap();
    assert!(matches!(
        lane_rx.try_recv(),
        Ok(LaneMsg::Ack { session_id: 7 })
    ));
}

/// Records every connection end it is told of.
#[derive(Default)]
struct Ends(Mutex<Vec<(String, u64, usize)>>);

impl ConnectionEnds for Ends {
    fn ended(&self, worker_id: &str, conn_id: u64, unsent: Vec<LaneMsg>) {
        let mut seen = self.0.lock().unwrap();
        seen.push((worker_id.to_owned(), conn_id, unsent.len()));
    }
}

#[test]
fn the_end_of_a_connection_is_told_once_with_its_unsent_input() {
    let hub = Hub::default();
    let ends = Arc::new(Ends::default());
    let weak: Arc<dyn ConnectionEnds> = ends.clone();
    hub.set_ends(Arc::downgrade(&weak));
    let (tx, _rx) = smol::channel::unbounded();
    hub.register("w", 1, 0, tx.clone(), 0);
    let lane = hub.lane("w", 1).unwrap();
    let input = LaneMsg::Input {
        session_id: 3,
        bytes: b"ls\n".to_vec(),
    };
    lane.try_send(input).unwrap();

    // Replaced: the old connection has ended, its queued input handed on.
    hub.register("w", 2, 0, tx, 0);
    assert_eq!(*ends.0.lock().unwrap(), [("w".to_owned(), 1, 1)]);
    // Its task ending later says nothing more; the live one's end is told.
    hub.unregister("w", 1);
    assert_eq!(hub.conn_id("w"), Some(2));
    hub.unregister("w", 2);
    assert_eq!(hub.conn_id("w"), None);
    let seen = ends.0.lock().unwrap().clone();
    assert_eq!(seen, [("w".to_owned(), 1, 1), ("w".to_owned(), 2, 0)]);
}

#[test]
fn commands_name_their_container_and_outcome() {
    let start = Body::ContainerStart(ContainerRef {
        container_id: "c1".into(),
    });
    let sent = CommandSent::of("w1", &start);
    assert_eq!(sent.ty, "container.start");
    assert_eq!(sent.container_id.as_deref(), Some("c1"));
    let agent = Err(HubError::Agent {
        worker_id: "w1".into(),
        ty: "container.start",
        error: ErrorReply::new(ErrorCode::NotFound, "gone"),
    });
    assert_eq!(sent.clone().done(&agent).outcome, "not_found");
    let ok = Ok(Body::ContainerListAll(Empty {}));
    assert_eq!(sent.clone().done(&ok).outcome, "ok");
    let timeout = Err(HubError::Timeout {
        worker_id: "w1".into(),
        ty: "container.start",
        after: std::time::Duration::from_secs(1),
    });
    assert_eq!(sent.done(&timeout).outcome, "timeout");
    let list = CommandSent::of("w1", &Body::ImagesList(Empty {}));
    assert_eq!((list.container_id, list.tenant_id), (None, None));
}
