//! Several replicas on one PostgreSQL database (a real server, `postgres`):
//! a worker belongs to its newest connection, whichever replica took it,
//! and a replica's identity is held by one live process.

use std::time::Duration;

use crate::harness::*;
use crate::postgres;

fn on(url: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        ..Options::default()
    }
}

#[test]
fn an_agent_that_moves_to_another_replica_fences_its_old_connection() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("replica-a"), on(&url)).await;
        let b = Server::start_in(temp_dir("replica-b"), on(&url)).await;
        let (mut old, id, credential) = a.registered("nas").await;
        old.send_json(&heartbeat(1.0)).await;
        b.wait_worker(&id, "a's heartbeat, seen from b", |w| {
            w["heartbeat"]["cpuUsage"] == 1.0
        })
        .await;
        // The agent comes back through b while a still holds its old socket
        // (a half-open connection a has not noticed yet).
        let mut new = Agent::connect(b.addr, &credential).await;
        new.register("again").await;
        // Whatever the old connection still sends is refused in the store,
        // and a closes it as replaced.
        old.send_json(&heartbeat(2.0)).await;
        let (code, _) = old.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4009);
        new.send_json(&heartbeat(3.0)).await;
        let w = a
            .wait_worker(&id, "b's heartbeat, seen from a", |w| {
                w["heartbeat"]["cpuUsage"] == 3.0
            })
            .await;
        assert_ne!(w["heartbeat"]["cpuUsage"], 2.0);
        new.close().await;
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn a_second_process_with_a_live_replicas_identity_is_refused_at_start() {
    smol::block_on(async {
        let url = postgres::database();
        let named = || Options {
            replica_id: Some("eu-1".into()),
            ..on(&url)
        };
        let first = Server::start_in(temp_dir("replica-id-1"), named()).await;
        let refused = Server::try_start_in(temp_dir("replica-id-2"), named()).await;
        let Err(error) = refused else {
            panic!("a second eu-1 started");
        };
        let message = error.to_string();
        assert!(message.contains("eu-1") && message.contains("--replica-id"), "{message}");
        first.assert_still_serves().await;
        first.stop().await;
    });
}
