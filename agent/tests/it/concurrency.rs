//! The two lanes on a real worker: with the work lane full (a long exec in
//! flight and another queued behind it), a stop of another container on the
//! same worker still answers, and answers first.

use std::io::Read;

use agent::Limits;
use protocol::container::{ContainerStop, Profile};
use protocol::{Body, Envelope};

use crate::support::*;
use crate::within;

#[test]
fn a_stop_answers_while_slow_execs_fill_the_work_lane() {
    smol::block_on(within(180, "stop under load", async {
        let rig = Rig::with(
            "lanes",
            Profile::Open,
            Limits {
                work: 1,
                lifecycle: 1,
            },
            None,
        );
        let id = unique("lanes");
        rig.running(&id, Profile::Standard).await;
        let other = unique("lanes-other");
        rig.running(&other, Profile::Standard).await;
        // A FIFO in the workspace: the exec writes to it once it runs, so the
        // test knows (without sleeping) that the lane is taken.
        let fifo = rig.workspace(&id).join("started");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();

        let (tx, rx) = smol::channel::unbounded::<Envelope>();
        let mut long = exec_body(
            &id,
            &["sh", "-c", "echo go > /workspace/started; sleep 600"],
        );
        if let Body::Exec(e) = &mut long {
            e.timeout_secs = Some(900);
        }
        rig.ex.spawn("long".into(), long, tx.clone());
        let fifo2 = fifo.clone();
        let started = smol::unblock(move || {
            let mut s = String::new();
            std::fs::File::open(fifo2)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            s
        })
        .await;
        assert_eq!(started, "go\n");
        // The lane is full: this one queues.
        rig.ex.spawn(
            "queued".into(),
            exec_body(&id, &["echo", "late"]),
            tx.clone(),
        );
        let stop = |container_id: &str| {
            Body::ContainerStop(ContainerStop {
                container_id: container_id.to_owned(),
                timeout_secs: Some(1),
            })
        };
        rig.ex.spawn("stop-other".into(), stop(&other), tx.clone());
        let first = rx.recv().await.unwrap();
        assert_eq!(
            first.request_id.as_deref(),
            Some("stop-other"),
            "the stop answered while the work lane was full: {first:?}"
        );
        assert!(matches!(first.body, Body::ContainerStopped(_)), "{first:?}");

        // Stopping the busy container ends the long exec; the queued one then
        // runs against a stopped container. One reply each, queue order kept.
        rig.ex.spawn("stop".into(), stop(&id), tx.clone());
        let mut replies = std::collections::HashMap::new();
        let mut exec_order = Vec::new();
        while replies.len() < 3 {
            let reply = rx.recv().await.unwrap();
            let rid = reply.request_id.clone().unwrap();
            if rid != "stop" {
                exec_order.push(rid.clone());
            }
            assert!(
                replies.insert(rid, reply.body).is_none(),
                "two replies to one command"
            );
        }
        assert_eq!(exec_order, ["long", "queued"], "queue order kept");
        assert!(
            matches!(replies["stop"], Body::ContainerStopped(_)),
            "{replies:?}"
        );
        assert!(
            matches!(&replies["queued"], Body::Error(e) if e.code == protocol::ErrorCode::Conflict),
            "{replies:?}"
        );
        assert!(rx.try_recv().is_err(), "exactly one reply per command");
    }));
}
