//! The two lanes on a real worker: with the work lane full (a long exec in
//! flight and another queued behind it), a stop on the same container still
//! answers, and answers first.

use std::io::Read;

use agent::podman::Limits;
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
        let stop = ContainerStop {
            container_id: id.clone(),
            timeout_secs: Some(1),
        };
        rig.ex
            .spawn("stop".into(), Body::ContainerStop(stop), tx.clone());

        let mut order = Vec::new();
        while order.len() < 3 {
            let reply = rx.recv().await.unwrap();
            order.push((reply.request_id.clone().unwrap(), reply.body));
        }
        assert_eq!(order[0].0, "stop", "the stop answered first: {order:?}");
        assert!(matches!(order[0].1, Body::ContainerStopped(_)), "{order:?}");
        let ids: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["stop", "long", "queued"],
            "one reply each, queue order kept"
        );
        // The queued exec ran after the stop: the container was no longer running.
        assert!(
            matches!(&order[2].1, Body::Error(e) if e.code == protocol::ErrorCode::Conflict),
            "{order:?}"
        );
        assert!(rx.try_recv().is_err(), "exactly one reply per command");
    }));
}
