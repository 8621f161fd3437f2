//! Routes remembered across calls (`peer::routes`): a second call for a
//! worker on another replica goes straight to the owner read the first
//! time, with no read of the database; when the agent has moved on
//! since, to a third replica, or the remembered owner is gone, the call
//! still reaches the worker where it is now. Orchestrators on one
//! PostgreSQL database (a real server), every call made on A.

use serde_json::{json, Value};

use crate::fake::*;
use crate::harness::*;
use crate::postgres;

fn on(url: &str, replica: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        replica_id: Some(replica.to_owned()),
        // No beat rewrites a replica's record during a test.
        heartbeat_secs: 60,
        ..Options::default()
    }
}

/// `GET /v1/workers/{id}/images` on `server`, answered by `agent`.
async fn images(server: &Server, worker: &str, agent: &mut Agent) -> (u16, Value) {
    let path = format!("/v1/workers/{worker}/images");
    let task = spawn_admin(server.addr, "GET", path, None);
    let cmd = next_command(agent).await;
    assert_eq!(cmd.ty, "images.list", "{cmd:?}");
    answer(agent, &cmd, json!({ "images": [] })).await;
    task.await
}

/// The worker's agent, connected afresh to `server` and registered there.
async fn moved_to(server: &Server, credential: &str, name: &str) -> Agent {
    let mut agent = Agent::connect(server.addr, credential).await;
    agent.register(name).await;
    agent
}

#[test]
fn a_second_call_to_the_same_owner_reads_no_route() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("remembered-a"), on(&url, "a")).await;
        let b = Server::start_in(temp_dir("remembered-b"), on(&url, "b")).await;
        let mut fx = Fixture::on(b, "remembered").await;
        let worker = fx.worker_id.clone();
        a.wait_worker(&worker, "the worker online, seen from a", |w| {
            w["status"] == "online"
        })
        .await;
        let (status, body) = images(&a, &worker, &mut fx.agent).await;
        assert_eq!(status, 200, "{body}");
        // B's replica record no longer reads: a call that read the route
        // again would fail on it (500), one that remembers it does not.
        postgres::server().psql(
            postgres::name_of(&url),
            "UPDATE crops_kv SET value = 'not json' WHERE tbl = 'replicas' AND key = 'b'",
        );
        let (status, body) = images(&a, &worker, &mut fx.agent).await;
        assert_eq!(status, 200, "the route was read again: {body}");
        a.stop().await;
        fx.server.stop().await;
    });
}

#[test]
fn a_worker_that_moved_on_is_reached_where_it_is_now() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("moves-a"), on(&url, "a")).await;
        let b = Server::start_in(temp_dir("moves-b"), on(&url, "b")).await;
        let c = Server::start_in(temp_dir("moves-c"), on(&url, "c")).await;
        let fx = Fixture::on(b, "moves").await;
        let (worker, credential) = (fx.worker_id.clone(), fx.credential.clone());
        let mut agent = fx.agent;
        a.wait_worker(&worker, "the worker online, seen from a", |w| {
            w["status"] == "online"
        })
        .await;
        let (status, body) = images(&a, &worker, &mut agent).await;
        assert_eq!(status, 200, "{body}");

        // The agent moves from b to c: a remembers b, which answers that
        // it moved; a reads the owner again and reaches c.
        agent.close().await;
        let mut agent = moved_to(&c, &credential, "moves").await;
        let (status, body) = images(&a, &worker, &mut agent).await;
        assert_eq!(status, 200, "after the move to c: {body}");

        // c stops and the agent comes back to b: a remembers c, which no
        // longer answers at all; the command was not sent, so a reads the
        // owner again and reaches b.
        agent.close().await;
        c.stop().await;
        let mut agent = moved_to(&fx.server, &credential, "moves").await;
        let (status, body) = images(&a, &worker, &mut agent).await;
        assert_eq!(status, 200, "after c stopped: {body}");

        // Once the agent has left every replica, the call is refused as
        // before, and the worker offline.
        agent.close().await;
        fx.server.wait_no_agent_connected().await;
        let (status, body) = a
            .admin("GET", &format!("/v1/workers/{worker}/images"), None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("worker_offline")),
            "{body}"
        );
        a.stop().await;
        fx.server.stop().await;
    });
}
