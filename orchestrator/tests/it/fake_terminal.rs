//! A terminal-capable fake agent and a browser, for the terminal tests.
//!
//! `TermAgent` is an agent connection that also speaks binary frames: the
//! test reads each command and frame the orchestrator sends and answers by
//! hand, and sends output frames and `terminal.exited` as an agent would.
//! The browser's end is `fake_browser::Browser`.
//! `TermFixture` bundles a server, one registered worker played by a
//! `TermAgent`, and a running container on it.

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderName;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::StreamExt;
use serde_json::{json, Value};
use smol::net::TcpStream;

use crate::fake::{info, Cmd};
pub use crate::fake_browser::*;
use crate::harness::*;

/// What the orchestrator sent the agent.
#[derive(Debug)]
pub enum ToAgent {
    Cmd(Cmd),
    /// Any other text message (e.g. an `error`).
    Text(Value),
    Frame {
        kind: u8,
        session_id: u64,
        offset: u64,
        payload: Vec<u8>,
    },
}

/// An agent connection that also speaks binary frames.
pub struct TermAgent {
    ws: WebSocketStream<TcpStream>,
}

async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, (u16, Value)> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let handshake = async_tungstenite::client_async_with_config(req, tcp, Some(config));
    match within(Duration::from_secs(10), "a WebSocket handshake", handshake).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Err(WsError::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body).unwrap_or(Value::Null);
            Err((resp.status().as_u16(), json))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// A binary frame as the protocol lays it out.
pub fn frame(kind: u8, session_id: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&session_id.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl TermAgent {
    /// Connect with `credential` and register.
    pub async fn connect(addr: SocketAddr, credential: &str) -> Self {
        let bearer = format!("Bearer {credential}");
        let ws = ws_connect(addr, "/v1/agent", &[("Authorization", &bearer)])
            .await
            .expect("agent upgrade");
        let mut agent = Self { ws };
        agent.send_json(&register_msg("r-1", 1)).await;
        match agent.recv().await {
            ToAgent::Text(v) if v["type"] == "worker.accepted" => {}
            other => panic!("expected worker.accepted, got {other:?}"),
        }
        agent
    }

    pub async fn send_json(&mut self, value: &Value) {
        let text = value.to_string();
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Send output bytes of `session_id` at `offset`.
    pub async fn output(&mut self, session_id: u64, offset: u64, bytes: &[u8]) {
        let f = frame(1, session_id, offset, bytes);
        self.ws
            .send(Message::binary(f))
            .await
            .expect("send a frame");
    }

    /// Send a raw binary message.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// `worker.inventory` with these containers and live terminals.
    pub async fn inventory(&mut self, containers: Vec<Value>, terminals: Vec<Value>) {
        let msg = json!({
            "type": "worker.inventory",
            "data": { "containers": containers, "terminals": terminals }
        });
        self.send_json(&msg).await;
    }

    /// `terminal.exited`.
    pub async fn exited(&mut self, session_id: u64, code: Option<i32>, reason: &str) {
        let msg = json!({
            "type": "terminal.exited",
            "data": { "sessionId": session_id, "exitCode": code, "reason": reason }
        });
        self.send_json(&msg).await;
    }

    /// The next message from the orchestrator (pings skipped), within 5 s.
    pub async fn recv(&mut self) -> ToAgent {
        within(Duration::from_secs(5), "a message to the agent", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        return match v["requestId"].as_str() {
                            Some(id) if v["type"] != "worker.accepted" && v["type"] != "error" => {
                                ToAgent::Cmd(Cmd {
                                    ty: v["type"].as_str().unwrap().to_owned(),
                                    id: id.to_owned(),
                                    data: v["data"].clone(),
                                })
                            }
                            _ => ToAgent::Text(v),
                        };
                    }
                    Some(Ok(Message::Binary(b))) => {
                        assert!(b.len() >= 17, "a frame of {} bytes", b.len());
                        return ToAgent::Frame {
                            kind: b[0],
                            session_id: u64::from_be_bytes(b[1..9].try_into().unwrap()),
                            offset: u64::from_be_bytes(b[9..17].try_into().unwrap()),
                            payload: b[17..].to_vec(),
                        };
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a message, got {other:?}"),
                }
            }
        })
        .await
    }

    /// The next command, which must be `ty` (frames before it are
    /// skipped when `skip_frames`).
    pub async fn expect_cmd(&mut self, ty: &str, skip_frames: bool) -> Cmd {
        loop {
            match self.recv().await {
                ToAgent::Cmd(cmd) => {
                    assert_eq!(cmd.ty, ty, "{cmd:?}");
                    return cmd;
                }
                ToAgent::Frame { .. } if skip_frames => {}
                other => panic!("expected {ty}, got {other:?}"),
            }
        }
    }

    /// The next frame, which must be of `kind` (1 output, 2 input, 3 ack).
    pub async fn expect_frame(&mut self, kind: u8) -> (u64, u64, Vec<u8>) {
        match self.recv().await {
            ToAgent::Frame {
                kind: k,
                session_id,
                offset,
                payload,
            } if k == kind => (session_id, offset, payload),
            other => panic!("expected a frame of kind {kind}, got {other:?}"),
        }
    }

    /// Answer `cmd` with `<type>.result`.
    pub async fn answer(&mut self, cmd: &Cmd, data: Value) {
        let reply =
            json!({ "type": format!("{}.result", cmd.ty), "requestId": cmd.id, "data": data });
        self.send_json(&reply).await;
    }

    /// Answer `cmd` with an `error`.
    pub async fn answer_error(&mut self, cmd: &Cmd, code: &str, message: &str) {
        let reply = json!({
            "type": "error", "requestId": cmd.id,
            "data": { "code": code, "message": message }
        });
        self.send_json(&reply).await;
    }

    /// The next frame of `kind`, skipping frames of other kinds (acks).
    pub async fn next_frame(&mut self, kind: u8) -> (u64, u64, Vec<u8>) {
        loop {
            match self.recv().await {
                ToAgent::Frame {
                    kind: k,
                    session_id,
                    offset,
                    payload,
                } if k == kind => return (session_id, offset, payload),
                ToAgent::Frame { .. } => {}
                other => panic!("expected a frame of kind {kind}, got {other:?}"),
            }
        }
    }

    /// Close this connection and wait until the server has let go.
    pub async fn hang_up(&mut self) {
        let _ = self.ws.close(None).await;
        within(Duration::from_secs(5), "the agent socket to end", async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Connect and register again, as the same worker.
    pub async fn reconnect(&mut self, addr: SocketAddr, credential: &str) {
        *self = Self::connect(addr, credential).await;
    }
}

/// A server, a registered worker played by a `TermAgent`, and a running
/// container `c-term` on it.
pub struct TermFixture {
    pub server: Server,
    pub agent: TermAgent,
    pub worker_id: String,
    pub tenant_id: String,
    pub credential: String,
}

pub const CONTAINER: &str = "c-term";

impl TermFixture {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Options::default()).await
    }

    pub async fn start_with(name: &str, opts: Options) -> Self {
        let server = Server::start_in(temp_dir(name), opts).await;
        let (worker_id, credential) = server.enrolled(name).await;
        let agent = TermAgent::connect(server.addr, &credential).await;
        let worker = server.worker(&worker_id).await;
        let tenant_id = worker["tenantId"].as_str().unwrap().to_owned();
        let mut fx = Self {
            server,
            agent,
            worker_id,
            tenant_id,
            credential,
        };
        fx.create(CONTAINER, "running").await;
        fx
    }

    /// Create container `id`, the agent reporting it in `state`.
    pub async fn create(&mut self, id: &str, state: &str) {
        let body = json!({
            "id": id, "tenantId": self.tenant_id, "workerId": self.worker_id,
            "name": id, "image": crate::fake::IMAGE,
        });
        let task = crate::fake::spawn_admin(
            self.server.addr,
            "POST",
            "/v1/containers".into(),
            Some(body),
        );
        let cmd = self.agent.expect_cmd("container.create", false).await;
        let created = json!({ "container": info(id, &self.tenant_id, id, state), "created": true });
        self.agent.answer(&cmd, created).await;
        let (status, body) = task.await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["state"], state, "{body}");
    }

    /// The path of the terminal socket of `container` with `query`.
    pub fn path(container: &str, query: &str) -> String {
        format!("/v1/containers/{container}/terminal?{query}")
    }

    /// Open a new session as the admin: the agent answers `session_id`;
    /// the browser has read its session message.
    pub async fn open(&mut self, session_id: u64) -> Browser {
        let addr = self.server.addr;
        let path = Self::path(CONTAINER, "cols=100&rows=30");
        let browser = smol::spawn(async move { Browser::admin(addr, &path).await });
        let cmd = self.agent.expect_cmd("terminal.open", false).await;
        assert_eq!(cmd.data["containerId"], CONTAINER, "{cmd:?}");
        assert_eq!(
            (cmd.data["cols"].as_u64(), cmd.data["rows"].as_u64()),
            (Some(100), Some(30))
        );
        self.agent
            .answer(&cmd, json!({ "sessionId": session_id }))
            .await;
        let mut browser = browser.await;
        let first = browser.expect_json("session").await;
        assert_eq!(
            first,
            json!({"type":"session","sessionId":session_id,"offset":0,"end":0})
        );
        browser
    }

    /// Attach a browser to `session_id` from `offset` as the admin; its
    /// session message.
    pub async fn attach(&self, session_id: u64, offset: u64) -> (Browser, Value) {
        let path = Self::path(CONTAINER, &format!("session={session_id}&offset={offset}"));
        let mut browser = Browser::admin(self.server.addr, &path).await;
        let first = browser.expect_json("session").await;
        assert_eq!(first["sessionId"], session_id, "{first}");
        (browser, first)
    }

    /// Stop the server (the agent hangs up first); the data directory.
    pub async fn stop(mut self) -> std::path::PathBuf {
        self.agent.hang_up().await;
        self.server.stop().await
    }

    /// Wait (bounded) until the tenant's terminal audit has an entry whose
    /// action is `action`; all terminal entries then.
    pub async fn wait_audit(&self, action: &str) -> Vec<Value> {
        self.wait_audit_count(action, 1).await
    }

    /// Wait (bounded) until the terminal audit has `n` entries of `action`.
    pub async fn wait_audit_count(&self, action: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let entries = self.terminal_audit().await;
            if entries.iter().filter(|e| e["action"] == action).count() >= n {
                return entries;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {action} in {entries:?}"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }

    /// The audit entries of the tenant of kind `terminal`, oldest first.
    pub async fn terminal_audit(&self) -> Vec<Value> {
        let path = format!("/v1/audit?tenantId={}", self.tenant_id);
        let (status, body) = self.server.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        let mut entries: Vec<Value> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "terminal")
            .cloned()
            .collect();
        entries.reverse();
        entries
    }
}
