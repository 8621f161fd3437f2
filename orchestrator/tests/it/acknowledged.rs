//! An answered container call's state survives `kill -9` of the real
//! `crops-orchestrator` binary the instant its answer arrives, and reads so
//! at the next start before the worker is back: create, start, stop and
//! remove each answer only once the state they report is on disk. A worker
//! coming back afterwards with an inventory that still lists the removed
//! container does not bring it back.
//!
//! The worker is the scripted fake agent (`fake`), connected to the binary.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{json, Value};

use crate::durability::{read, try_http, Orchestrator};
use crate::fake::{answer, info, next_command, IMAGE};
use crate::harness::{temp_dir, Agent};

const ID: &str = "job-durable";
const NAME: &str = "durable";

/// A call that must succeed: its status and body.
async fn call(o: &Orchestrator, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    try_http(o.addr, method, path, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", read(&o.log)))
}

/// A tenant, a join token and an enrolled worker: (tenant id, worker id,
/// credential).
async fn enrolled(o: &Orchestrator) -> (String, String, String) {
    let (status, tenant) = call(o, "POST", "/v1/tenants", Some(json!({ "name": "t" }))).await;
    assert_eq!(status, 201, "{tenant}");
    let tenant = tenant["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tenants/{tenant}/join-tokens");
    let (status, token) = call(o, "POST", &path, Some(json!({}))).await;
    assert_eq!(status, 201, "{token}");
    let body = json!({ "joinToken": token["token"], "name": "box" });
    let (status, worker) = call(o, "POST", "/v1/enroll", Some(body)).await;
    assert_eq!(status, 201, "{worker}");
    let text = |k: &str| worker[k].as_str().unwrap().to_owned();
    (tenant, text("workerId"), text("credential"))
}

/// The fake agent, connected and registered (no inventory sent).
async fn agent(addr: SocketAddr, credential: &str) -> Agent {
    let mut agent = Agent::connect(addr, credential).await;
    let accepted = agent.register("r-1").await;
    assert_eq!(accepted["type"], "worker.accepted", "{accepted}");
    agent
}

/// One container call, the agent answering `result`: its answer.
async fn relay(
    o: &Orchestrator,
    agent: &mut Agent,
    (method, path, body): (&'static str, String, Option<Value>),
    (ty, result): (&str, Value),
) -> (u16, Value) {
    let addr = o.addr;
    let task = smol::spawn(async move { try_http(addr, method, &path, body).await });
    let cmd = next_command(agent).await;
    assert_eq!(cmd.ty, ty, "{cmd:?}");
    assert_eq!(cmd.data["containerId"], ID);
    answer(agent, &cmd, result).await;
    task.await
        .unwrap_or_else(|| panic!("{ty}: no answer\n{}", read(&o.log)))
}

/// The container's record as the orchestrator on `data` reads it.
async fn state(o: &Orchestrator) -> String {
    let (status, record) = call(o, "GET", &format!("/v1/containers/{ID}"), None).await;
    assert_eq!(status, 200, "{record}");
    record["state"].as_str().unwrap().to_owned()
}

fn restart(data: &Path, round: u32) -> Orchestrator {
    Orchestrator::start(data, round)
}

#[test]
fn each_answered_state_survives_kill_9_the_instant_its_answer_arrives() {
    let data = temp_dir("acknowledged").join("data");
    smol::block_on(async {
        let mut o = restart(&data, 0);
        let (tenant, worker, credential) = enrolled(&o).await;
        let status = |state: &str| json!({ "containerId": ID, "state": state });
        let created = json!({ "container": info(ID, &tenant, NAME, "created"), "created": true });
        let create = json!({
            "id": ID, "tenantId": tenant, "workerId": worker, "name": NAME, "image": IMAGE
        });
        let base = format!("/v1/containers/{ID}");
        let steps = [
            (
                "POST",
                "/v1/containers".to_owned(),
                Some(create),
                "container.create",
                created,
                201,
                "created",
            ),
            (
                "POST",
                format!("{base}/start"),
                None,
                "container.start",
                status("running"),
                200,
                "running",
            ),
            (
                "POST",
                format!("{base}/stop"),
                Some(json!({})),
                "container.stop",
                status("exited"),
                200,
                "exited",
            ),
            (
                "DELETE",
                base.clone(),
                None,
                "container.remove",
                status("removed"),
                200,
                "removed",
            ),
        ];
        for (round, (method, path, body, ty, result, code, want)) in steps.into_iter().enumerate() {
            let mut agent = agent(o.addr, &credential).await;
            let (got, answered) = relay(&o, &mut agent, (method, path, body), (ty, result)).await;
            assert_eq!(
                (got, answered["state"].as_str()),
                (code, Some(want)),
                "{answered}"
            );
            // The instant the answer is in: no flush, no goodbye.
            o.kill9();
            drop(agent);
            // Back without the worker: the record alone says what was answered.
            let round = u32::try_from(round).unwrap() + 1;
            o = restart(&data, round);
            let now = state(&o).await;
            assert_eq!(
                now, want,
                "{ty} answered {want}; after kill -9 the record reads {now}"
            );
        }

        // The worker comes back still listing the removed container (its
        // engine kept one under that id): the acknowledged remove stands.
        let mut agent = agent(o.addr, &credential).await;
        let listing = json!({ "type": "worker.inventory", "data": {
            "containers": [info(ID, &tenant, NAME, "running")] } });
        agent.send_json(&listing).await;
        // The inventory is handled before the agent's next reply: a round trip.
        let addr = o.addr;
        let path = format!("/v1/workers/{worker}/images");
        let probe = smol::spawn(async move { try_http(addr, "GET", &path, None).await });
        let cmd = next_command(&mut agent).await;
        assert_eq!(cmd.ty, "images.list");
        answer(&mut agent, &cmd, json!({ "images": [] })).await;
        assert_eq!(probe.await.map(|(s, _)| s), Some(200));
        assert_eq!(state(&o).await, "removed");
        o.kill9();
    });
    let _ = std::fs::remove_dir_all(data.parent().unwrap());
}
