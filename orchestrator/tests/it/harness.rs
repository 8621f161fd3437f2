//! Test harness: an in-process orchestrator on 127.0.0.1:0 with a fresh data
//! directory, a raw HTTP/1.1 client, and an agent speaking WebSocket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use serde_json::{json, Value};
use smol::net::TcpStream;

pub const ADMIN: &str = "crops_adm_test-admin-token";

/// A directory under the system temp dir, unique to this call.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "crops-orch-it-{name}-{}-{nanos}-{n}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A running orchestrator.
/// Run the `crops-orchestrator` binary with `args` (a CLI command): its
/// stdout when it succeeds, else its stderr (the error it printed).
pub fn cli(args: &[&str]) -> impl std::future::Future<Output = Result<String, String>> {
    let command = smol::process::Command::new(env!("CARGO_BIN_EXE_crops-orchestrator"))
        .args(args)
        .output();
    async move {
        let out = command.await.expect("run crops-orchestrator");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        if out.status.success() {
            Ok(text(out.stdout))
        } else {
            Err(text(out.stderr))
        }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub ready: orchestrator::Ready,
    stop: smol::channel::Sender<()>,
    task: smol::Task<Result<(), orchestrator::Error>>,
}

pub struct Options {
    pub heartbeat_secs: u32,
    pub admin_token: Option<String>,
    pub register_timeout: Duration,
    pub timeouts: orchestrator::Timeouts,
    /// How long the listener keeps accepting after the stop signal.
    pub drain: Duration,
    /// How long workers known before a start count as reconnecting.
    pub offline_grace: Duration,
    /// How long a terminal session may have no viewer.
    pub terminal_grace: Duration,
    /// Caps on unauthenticated connections (`None`: serve's defaults).
    pub connections: Option<orchestrator::ConnectionLimits>,
    /// A PostgreSQL URL: the store shared with other replicas.
    pub database: Option<String>,
    /// This replica's identity (`None`: a new one).
    pub replica_id: Option<String>,
    /// The address other replicas reach this one at (`None`: the listener's).
    pub advertise: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat_secs: 10,
            admin_token: Some(ADMIN.to_owned()),
            register_timeout: Duration::from_secs(10),
            timeouts: orchestrator::Timeouts::default(),
            drain: Duration::ZERO,
            offline_grace: orchestrator::presence::DEFAULT_OFFLINE_GRACE,
            terminal_grace: orchestrator::terminal::DEFAULT_GRACE,
            connections: None,
            database: None,
            replica_id: None,
            advertise: None,
        }
    }
}

impl Server {
    pub async fn start(name: &str) -> Self {
        Self::start_in(temp_dir(name), Options::default()).await
    }

    pub async fn start_in(data: PathBuf, opts: Options) -> Self {
        match Self::try_start_in(data, opts).await {
            Ok(server) => server,
            Err(error) => panic!("serve ended before it was ready: {error}"),
        }
    }

    /// [`Server::start_in`], or why serve refused to start.
    pub async fn try_start_in(data: PathBuf, opts: Options) -> Result<Self, orchestrator::Error> {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = orchestrator::ServeConfig::new(data.clone());
        config.heartbeat_secs = opts.heartbeat_secs;
        config.admin_token = opts.admin_token;
        config.register_timeout = opts.register_timeout;
        config.timeouts = opts.timeouts;
        config.drain = opts.drain;
        config.offline_grace = opts.offline_grace;
        config.terminal_grace = opts.terminal_grace;
        config.database = opts.database;
        config.replica_id = opts.replica_id;
        config.advertise = opts.advertise;
        if let Some(limits) = opts.connections {
            config.connections = limits;
        }
        let (ready_tx, ready_rx) = smol::channel::bounded(1);
        config.on_ready = Some(Box::new(move |ready| {
            let _ = ready_tx.try_send(ready.clone());
        }));
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let task = smol::spawn(orchestrator::serve(config, listener, async move {
            let _ = stopped.recv().await;
        }));
        let ready = match within(Duration::from_secs(10), "serve ready", ready_rx.recv()).await {
            Ok(ready) => ready,
            Err(_) => {
                task.await?;
                panic!("serve returned Ok before it was ready");
            }
        };
        assert_eq!(ready.addr, addr);
        Ok(Self {
            addr,
            data,
            ready,
            stop,
            task,
        })
    }

    /// Send the stop signal without waiting for serve to return.
    pub fn begin_stop(&self) {
        self.stop.close();
    }

    /// Stop serving and wait until serve has returned (the database is closed).
    pub async fn stop(self) -> PathBuf {
        self.stop.close();
        within(Duration::from_secs(15), "serve to stop", self.task)
            .await
            .expect("serve failed");
        self.data
    }

    /// Poll `/readyz` until it answers 200 (a server listens before its
    /// stored policies are loaded, and answers 503 meanwhile), within
    /// `limit`; its body.
    pub async fn until_ready(&self, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = http(self.addr, "GET", "/readyz", &[], None).await;
            if status == 200 {
                return body;
            }
            assert_eq!(status, 503, "{body}");
            assert!(start.elapsed() < limit, "never ready: {body}");
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(
            self.addr,
            method,
            path,
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            body.map(|b| b.to_string()),
        )
        .await
    }

    pub async fn tenant(&self, name: &str) -> String {
        let (status, body) = self
            .admin("POST", "/v1/tenants", Some(json!({ "name": name })))
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn join_token(&self, tenant: &str, ttl_secs: Option<u64>) -> Value {
        let body = ttl_secs.map_or(json!({}), |t| json!({ "ttlSecs": t }));
        let (status, body) = self
            .admin(
                "POST",
                &format!("/v1/tenants/{tenant}/join-tokens"),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn enroll(&self, token: &str, name: &str) -> (u16, Value) {
        let body = json!({ "joinToken": token, "name": name, "hostname": "box.local" });
        http(self.addr, "POST", "/v1/enroll", &[], Some(body.to_string())).await
    }

    /// A new tenant, join token and enrolled worker: (worker id, credential).
    pub async fn enrolled(&self, name: &str) -> (String, String) {
        let tenant = self.tenant(&format!("tenant-of-{name}")).await;
        let token = self.join_token(&tenant, None).await;
        let (status, body) = self.enroll(token["token"].as_str().unwrap(), name).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["tenantId"], tenant.as_str());
        let credential = body["credential"].as_str().unwrap().to_owned();
        assert!(credential.starts_with("crops_wkr_"));
        (body["workerId"].as_str().unwrap().to_owned(), credential)
    }

    /// A worker enrolled, connected and registered.
    pub async fn registered(&self, name: &str) -> (Agent, String, String) {
        let (id, credential) = self.enrolled(name).await;
        let mut agent = Agent::connect(self.addr, &credential).await;
        let accepted = agent.register("r-1").await;
        assert_eq!(accepted["type"], "worker.accepted", "{accepted}");
        (agent, id, credential)
    }

    pub async fn workers(&self) -> Vec<Value> {
        let (status, body) = self.admin("GET", "/v1/workers", None).await;
        assert_eq!(status, 200, "{body}");
        body["workers"].as_array().unwrap().clone()
    }

    pub async fn worker(&self, id: &str) -> Value {
        self.workers()
            .await
            .into_iter()
            .find(|w| w["id"] == id)
            .expect("worker listed")
    }

    /// Poll the worker list until `pred` holds for `id` (bounded).
    pub async fn wait_worker(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let w = self.worker(id).await;
            if pred(&w) {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {w}"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }

    /// Poll `/metrics` until no agent connection is registered (bounded):
    /// the server has decided to close every one it had.
    pub async fn wait_no_agent_connected(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, body) = http_raw(self.addr, "GET", "/metrics", &[], None).await;
            let text = String::from_utf8(body).expect("metrics are UTF-8");
            let connected = metric(&text, "crops_workers_connected");
            if connected == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {connected} agents still connected"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }

    /// Proof the server is healthy: a fresh agent enrols, registers and
    /// gets a heartbeat stored.
    pub async fn assert_still_serves(&self) {
        let (mut agent, id, _) = self.registered("witness").await;
        agent.send_json(&heartbeat(10.0)).await;
        self.wait_worker(&id, "witness heartbeat", |w| {
            w["heartbeat"]["cpuUsage"] == 10.0
        })
        .await;
        agent.close().await;
    }
}

/// The value of `series` (a name with its labels, if any) in a `/metrics`
/// text.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

/// Run `fut`, failing the test after `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let what = what.to_owned();
    fut.or(async move {
        smol::Timer::after(limit).await;
        panic!("timed out after {limit:?} waiting for {what}");
    })
    .await
}

/// One HTTP/1.1 request on a fresh connection; returns status and JSON body
/// (`Value::Null` if the body is empty).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, Value) {
    let (status, body) = http_raw(
        addr,
        method,
        path,
        headers,
        body.as_deref().map(str::as_bytes),
    )
    .await;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&body))
        })
    };
    (status, json)
}

pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (u16, Vec<u8>) {
    within(Duration::from_secs(10), "an HTTP exchange", async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or_default();
        let chunked = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !chunked && (!body.is_empty() || method == "POST") {
            if !typed {
                req.push_str("Content-Type: application/json\r\n");
            }
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        // A server may answer (e.g. 413) before reading a large body.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, raw[split + 4..].to_vec())
    })
    .await
}

pub fn register_msg(request_id: &str, version: u32) -> Value {
    json!({
        "type": "worker.register",
        "requestId": request_id,
        "data": {
            "protocolVersion": version,
            "name": "nas",
            "hostname": "nas.local",
            "platform": "linux",
            "arch": "x86_64",
            "cpuCount": 4,
            "memoryTotal": 8u64 << 30,
            "containerEngines": ["podman"],
            "agentVersion": "0.1.0",
            "mode": "byom"
        }
    })
}

pub fn heartbeat(cpu: f64) -> Value {
    json!({
        "type": "worker.heartbeat",
        "data": {
            "cpuUsage": cpu,
            "memoryFree": 1u64 << 30,
            "diskTotal": 100u64 << 30,
            "diskFree": 40u64 << 30,
            "containersRunning": 2,
            "gatewayStatus": "ok"
        }
    })
}

/// An agent's end of the WebSocket.
pub struct Agent {
    ws: WebSocketStream<TcpStream>,
}

impl Agent {
    pub async fn connect(addr: SocketAddr, credential: &str) -> Self {
        let mut req = format!("ws://{addr}/v1/agent")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        let tcp = TcpStream::connect(addr).await.unwrap();
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let (ws, resp) = within(
            Duration::from_secs(10),
            "the WebSocket handshake",
            async_tungstenite::client_async_with_config(req, tcp, Some(config)),
        )
        .await
        .expect("upgrade accepted");
        assert_eq!(resp.status(), 101);
        Self { ws }
    }

    pub async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned())).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Register and return the reply.
    pub async fn register(&mut self, request_id: &str) -> Value {
        self.send_json(&register_msg(request_id, 1)).await;
        self.recv_json().await
    }

    /// The next text message, as JSON (pings skipped). Panics on close.
    pub async fn recv_json(&mut self) -> Value {
        within(Duration::from_secs(5), "a text message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a text message, got {other:?}"),
                }
            }
        })
        .await
    }

    /// Read until the server's close frame; its code and reason.
    pub async fn expect_close(&mut self, limit: Duration) -> (u16, String) {
        within(limit, "a close frame", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        // Reading on sends our close reply and sees the end.
                        while let Some(Ok(_)) = self.ws.next().await {}
                        return (u16::from(frame.code), frame.reason.to_string());
                    }
                    Some(Ok(Message::Close(None))) => panic!("close without a code"),
                    Some(Ok(_)) => {}
                    other => panic!("connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

impl Agent {
    /// Send without failing the test if the server has already closed.
    pub async fn try_send_text(
        &mut self,
        text: &str,
    ) -> Result<(), async_tungstenite::tungstenite::Error> {
        self.ws.send(Message::text(text.to_owned())).await
    }
}
