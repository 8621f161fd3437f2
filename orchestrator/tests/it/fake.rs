//! A scripted fake agent for the container tests: a registered worker
//! whose test reads each command the orchestrator sends and answers it by
//! hand (result, error, silence or a dropped connection), plus a fixture
//! bundling server, agent, worker and tenant.
//!
//! HTTP calls that wait for the agent run as spawned tasks, so the test can
//! play the agent while the request is in flight.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

pub const IMAGE: &str = "localhost/busybox:latest";

/// One command as the agent received it.
#[derive(Debug)]
pub struct Cmd {
    pub ty: String,
    pub id: String,
    pub data: Value,
}

/// The next command the orchestrator sent (within 5 s).
pub async fn next_command(agent: &mut Agent) -> Cmd {
    let msg = agent.recv_json().await;
    let id = msg["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("a command without requestId: {msg}"))
        .to_owned();
    Cmd {
        ty: msg["type"].as_str().unwrap().to_owned(),
        id,
        data: msg["data"].clone(),
    }
}

/// Answer `cmd` with `<type>.result`.
pub async fn answer(agent: &mut Agent, cmd: &Cmd, data: Value) {
    let reply = json!({ "type": format!("{}.result", cmd.ty), "requestId": cmd.id, "data": data });
    agent.send_json(&reply).await;
}

/// Answer `cmd` with an `error`.
pub async fn answer_error(agent: &mut Agent, cmd: &Cmd, code: &str, message: &str) {
    let reply = json!({
        "type": "error",
        "requestId": cmd.id,
        "data": { "code": code, "message": message }
    });
    agent.send_json(&reply).await;
}

/// A `ContainerInfo` as an agent reports it.
pub fn info(id: &str, tenant: &str, name: &str, state: &str) -> Value {
    json!({
        "containerId": id,
        "tenantId": tenant,
        "engineId": format!("eng-{id}"),
        "name": name,
        "image": IMAGE,
        "state": state,
        "profile": "standard",
        "createdAt": 1_700_000_000_000u64
    })
}

/// An admin request running on its own task.
pub fn spawn_admin(
    addr: SocketAddr,
    method: &'static str,
    path: String,
    body: Option<Value>,
) -> smol::Task<(u16, Value)> {
    smol::spawn(async move {
        let bearer = format!("Bearer {ADMIN}");
        http(
            addr,
            method,
            &path,
            &[("Authorization", &bearer)],
            body.map(|b| b.to_string()),
        )
        .await
    })
}

/// A server with one registered byom worker played by the test.
pub struct Fixture {
    pub server: Server,
    pub agent: Agent,
    pub worker_id: String,
    pub tenant_id: String,
    pub credential: String,
}

impl Fixture {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Options::default()).await
    }

    pub async fn start_with(name: &str, opts: Options) -> Self {
        let server = Server::start_in(temp_dir(name), opts).await;
        Self::on(server, name).await
    }

    /// Enrol and register a new worker (and tenant) on `server`.
    pub async fn on(server: Server, name: &str) -> Self {
        let (agent, worker_id, credential) = server.registered(name).await;
        let worker = server.worker(&worker_id).await;
        let tenant_id = worker["tenantId"].as_str().unwrap().to_owned();
        Self {
            server,
            agent,
            worker_id,
            tenant_id,
            credential,
        }
    }

    pub fn spawn(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> smol::Task<(u16, Value)> {
        spawn_admin(self.server.addr, method, path.to_owned(), body)
    }

    /// The body of a create of `name` with id `id` on this worker.
    pub fn create_body(&self, id: &str, name: &str) -> Value {
        json!({
            "id": id,
            "tenantId": self.tenant_id,
            "workerId": self.worker_id,
            "name": name,
            "image": IMAGE,
        })
    }

    /// Create a container, the agent answering `created`; the 201 body.
    pub async fn create(&mut self, id: &str, name: &str) -> Value {
        let task = self.spawn("POST", "/v1/containers", Some(self.create_body(id, name)));
        let cmd = next_command(&mut self.agent).await;
        assert_eq!(cmd.ty, "container.create", "{cmd:?}");
        assert_eq!(cmd.data["containerId"], id);
        let created =
            json!({ "container": info(id, &self.tenant_id, name, "created"), "created": true });
        answer(&mut self.agent, &cmd, created).await;
        let (status, body) = task.await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Run one command on container `id` whose agent answer is `result`
    /// of type `ty`; the HTTP status and body.
    pub async fn relay(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        ty: &str,
        result: Value,
    ) -> (u16, Value, Cmd) {
        let task = self.spawn(method, path, body);
        let cmd = next_command(&mut self.agent).await;
        assert_eq!(cmd.ty, ty, "{cmd:?}");
        answer(&mut self.agent, &cmd, result).await;
        let (status, body) = task.await;
        (status, body, cmd)
    }

    /// Stop the server, the agent answering its 1001 close so shutdown
    /// need not wait out the close handshake; the data directory.
    pub async fn stop(self) -> PathBuf {
        let Fixture {
            server, mut agent, ..
        } = self;
        let stopping = smol::spawn(server.stop());
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1001);
        stopping.await
    }

    /// Drop the agent's connection without a close frame, then connect and
    /// register again (no inventory sent).
    pub async fn reconnect(&mut self) {
        let fresh = Agent::connect(self.server.addr, &self.credential).await;
        let old = std::mem::replace(&mut self.agent, fresh);
        drop(old);
        let accepted = self.agent.register("again").await;
        assert_eq!(accepted["type"], "worker.accepted", "{accepted}");
    }

    pub async fn containers(&self) -> Vec<Value> {
        let path = format!("/v1/containers?tenantId={}", self.tenant_id);
        let (status, body) = self.server.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        body["containers"].as_array().unwrap().clone()
    }

    pub async fn container(&self, id: &str) -> Value {
        let (status, body) = self
            .server
            .admin("GET", &format!("/v1/containers/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Poll the tenant's listing until `pred` holds (bounded).
    pub async fn wait_containers(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let list = self.containers().await;
            if pred(&list) {
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {list:?}"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }

    /// Prove the orchestrator sent this agent nothing so far: the commands
    /// share one ordered queue, so the first command after a probe request
    /// must be the probe's own `images.list`.
    pub async fn assert_nothing_sent(&mut self) {
        let path = format!("/v1/workers/{}/images", self.worker_id);
        let listing = json!({ "images": [] });
        let (status, body, _) = self.relay("GET", &path, None, "images.list", listing).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// The record with `id` in a listing.
pub fn find<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["id"] == id)
}

/// Assert an error answer: status, code, a non-empty message.
pub fn assert_error(status: u16, body: &Value, want: u16, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
}
