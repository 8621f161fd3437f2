//! The simulated fleet: many agent connections from this one process, each
//! a real TLS WebSocket to `/v1/agent` that authenticates with its own
//! worker credential, sends `worker.register`, waits for `worker.accepted`,
//! sends an empty `worker.inventory`, then a heartbeat at once and every
//! interval the orchestrator dictated, answering pings as it reads.
//!
//! It is not the real agent (no Podman, no /proc sampling, no reconnects):
//! it speaks the same protocol over the same transport so the orchestrator
//! does the same work per connection. A connection that fails or is closed
//! is counted, not retried, so the bench sees every loss.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{FutureExt, StreamExt};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use smol::net::TcpStream;

/// Why one simulated agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("TCP connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] WsError),
    #[error("bad request: {0}")]
    Request(String),
    #[error("the orchestrator answered the register with {0}")]
    NotAccepted(String),
    #[error("the orchestrator closed the connection")]
    Closed,
}

/// What the fleet has done so far; every counter only grows.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections that got `worker.accepted`.
    pub registered: AtomicUsize,
    /// Connections that ended, for any reason, after or before registering.
    pub lost: AtomicUsize,
    pub heartbeats: AtomicU64,
    pub pings: AtomicU64,
    /// The first few reasons connections ended, for the report.
    pub reasons: std::sync::Mutex<Vec<String>>,
}

impl Stats {
    fn lose(&self, why: &AgentError) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        if reasons.len() < 5 {
            reasons.push(why.to_string());
        }
    }
}

/// Where and how the fleet connects.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Start one task per credential, at most `parallel` handshakes at a time.
/// Returns when every agent has registered or failed; the tasks keep
/// running (heartbeating) until dropped.
pub async fn start(
    target: Target,
    credentials: Vec<String>,
    parallel: usize,
    stats: Arc<Stats>,
) -> Vec<smol::Task<()>> {
    let gate = Arc::new(smol::lock::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(credentials.len());
    let mut ready = Vec::with_capacity(credentials.len());
    for (i, credential) in credentials.into_iter().enumerate() {
        let (target, stats, gate) = (target.clone(), Arc::clone(&stats), Arc::clone(&gate));
        let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
        ready.push(done_rx);
        tasks.push(smol::spawn(async move {
            let permit = gate.acquire_arc().await;
            let ws = match connect(&target, &credential, i).await {
                Ok(ws) => ws,
                Err(error) => {
                    stats.lose(&error);
                    return;
                }
            };
            stats.registered.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            drop(done_tx);
            if let Err(error) = idle(ws, &stats, i).await {
                stats.lose(&error);
            }
        }));
    }
    for done in ready {
        let _ = done.recv().await;
    }
    tasks
}

/// Small buffers: the fleet's own memory is not what is measured, but
/// 10,000 default 128 KiB read buffers would be 1.3 GB on this side.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Connect, authenticate, register and send the inventory.
async fn connect(target: &Target, credential: &str, i: usize) -> Result<Ws, AgentError> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(AgentError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(target.addr.ip().into());
    let tls = target
        .connector
        .connect(name, tcp)
        .await
        .map_err(AgentError::Tls)?;
    let mut req = format!("wss://{}/v1/agent", target.addr)
        .into_client_request()
        .map_err(|e| AgentError::Request(e.to_string()))?;
    let bearer = format!("Bearer {credential}")
        .parse()
        .map_err(|_| AgentError::Request("credential is not a header value".into()))?;
    req.headers_mut().insert("Authorization", bearer);
    let (mut ws, _) = async_tungstenite::client_async_with_config(req, tls, Some(config())).await?;
    let register = json!({
        "type": "worker.register",
        "requestId": format!("reg-{i}"),
        "data": {
            "protocolVersion": 1,
            "name": format!("sim-{i}"),
            "hostname": format!("sim-{i}.fleet.local"),
            "platform": "linux",
            "arch": "x86_64",
            "cpuCount": 4,
            "memoryTotal": 8u64 << 30,
            "containerEngines": ["podman"],
            "agentVersion": "0.1.0-simulated",
            "mode": "byom"
        }
    });
    ws.send(Message::text(register.to_string())).await?;
    let accepted = next_text(&mut ws).await?;
    if accepted["type"] != "worker.accepted" {
        return Err(AgentError::NotAccepted(accepted.to_string()));
    }
    let inventory = json!({ "type": "worker.inventory", "data": { "containers": [] } });
    ws.send(Message::text(inventory.to_string())).await?;
    Ok(ws)
}

/// The next text message as JSON; pings are answered by tungstenite.
async fn next_text(ws: &mut Ws) -> Result<Value, AgentError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| AgentError::NotAccepted(e.to_string()))
            }
            Some(Ok(Message::Close(_))) | None => return Err(AgentError::Closed),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
        }
    }
}

fn heartbeat() -> String {
    json!({
        "type": "worker.heartbeat",
        "data": {
            "cpuUsage": 3.5,
            "memoryFree": 6u64 << 30,
            "diskTotal": 100u64 << 30,
            "diskFree": 60u64 << 30,
            "containersRunning": 0,
            "gatewayStatus": "ok"
        }
    })
    .to_string()
}

/// Heartbeat at once, then at a random phase, then every interval; read
/// (and so answer pings) in between. Ends only when the connection does.
async fn idle(mut ws: Ws, stats: &Stats, i: usize) -> Result<(), AgentError> {
    let interval = Duration::from_secs(10);
    let beat = heartbeat();
    ws.send(Message::text(beat.clone())).await?;
    stats.heartbeats.fetch_add(1, Ordering::Relaxed);
    // Spread the fleet over the interval, as agents that connected at
    // different times are; a fixed seed per agent keeps runs comparable.
    let phase = interval.mul_f64((i as f64 * 0.618_034).fract());
    let mut next = Instant::now() + phase;
    loop {
        let event = async { Some(ws.next().await) }
            .or(async {
                smol::Timer::at(next).await;
                None
            })
            .await;
        match event {
            None => {
                next += interval;
                ws.send(Message::text(beat.clone())).await?;
                stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Some(Some(Ok(Message::Ping(_)))) => {
                stats.pings.fetch_add(1, Ordering::Relaxed);
            }
            Some(Some(Ok(Message::Close(_))) | None) => return Err(AgentError::Closed),
            Some(Some(Ok(_))) => {}
            Some(Some(Err(error))) => return Err(error.into()),
        }
    }
}
