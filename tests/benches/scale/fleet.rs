//! The simulated agents: many agent connections from one process, each a
//! real TLS WebSocket to `/v1/agent` that authenticates with its own
//! worker credential, sends `worker.register`, waits for `worker.accepted`,
//! sends its `worker.inventory` (empty, or one running container: see
//! [`Target::containers_of`]), then a heartbeat at once and every
//! interval the orchestrator dictated, answering pings as it reads.
//!
//! It is not the real agent (no Podman, no /proc sampling): it speaks the
//! same protocol over the same transport so the orchestrator does the same
//! work per connection. Agent `i` connects to the `i % n`th of the
//! target's addresses (the replicas, directly). A first connection that
//! fails is counted, never retried, so the bench sees every loss. A
//! registered connection that ends is counted too; without
//! [`Target::reconnect`] that agent stops. With it, the agent reconnects as
//! the real one does after a connection that stayed up (`agent/src/
//! backoff.rs`: 1 s, then 2, 4 … capped at 30 s, each ±20 % jitter), each
//! attempt to another address picked at random (the real agent goes
//! through the balancer, whose health check picks a live replica; these
//! know every replica and try another than the one that failed), and
//! registers again with its credential.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
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

/// What the fleet has done so far; every counter but `connected` only grows.
#[derive(Debug, Default)]
pub struct Stats {
    /// Agents whose first connection got `worker.accepted`.
    pub registered: AtomicUsize,
    /// Agents whose first connection failed (they never retry).
    pub failed: AtomicUsize,
    /// Registered connections that ended, for any reason.
    pub dropped: AtomicUsize,
    /// Registrations after a dropped connection (with `reconnect`).
    pub reconnected: AtomicUsize,
    /// Reconnect attempts that failed before one registered.
    pub retries: AtomicUsize,
    /// Registered connections open now, per address of the target.
    pub connected: Vec<AtomicI64>,
    /// When the latest registration was accepted, Unix milliseconds.
    pub last_register_ms: AtomicU64,
    pub heartbeats: AtomicU64,
    pub pings: AtomicU64,
    /// The first few distinct reasons connections ended, for the report.
    pub reasons: std::sync::Mutex<Vec<String>>,
}

impl Stats {
    pub fn new(addresses: usize) -> Self {
        Self {
            connected: (0..addresses).map(|_| AtomicI64::new(0)).collect(),
            ..Self::default()
        }
    }

    fn note(&self, why: &AgentError) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let why = why.to_string();
        if reasons.len() < 5 && !reasons.contains(&why) {
            reasons.push(why);
        }
    }

    fn up(&self, at: usize) {
        self.connected[at].fetch_add(1, Ordering::Relaxed);
        self.last_register_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

/// Milliseconds since the Unix epoch: comparable across the bench's processes.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where and how the fleet connects.
#[derive(Clone)]
pub struct Target {
    /// The replicas; agent `i` starts on `addrs[i % addrs.len()]`.
    pub addrs: Vec<SocketAddr>,
    pub connector: TlsConnector,
    /// Whether an agent whose registered connection ends reconnects.
    pub reconnect: bool,
    /// Each agent's inventory holds one running container of this tenant
    /// (`simc-I`), which the orchestrator adopts; none without it.
    pub containers_of: Option<String>,
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Start one task per credential (agent `first + k` for the `k`th), at
/// most `parallel` handshakes at a time. Returns when every agent has
/// registered or failed; the tasks keep running (heartbeating, and
/// reconnecting if the target says so) until dropped.
pub async fn start(
    target: Target,
    credentials: Vec<String>,
    first: usize,
    parallel: usize,
    stats: Arc<Stats>,
) -> Vec<smol::Task<()>> {
    let gate = Arc::new(smol::lock::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(credentials.len());
    let mut ready = Vec::with_capacity(credentials.len());
    for (k, credential) in credentials.into_iter().enumerate() {
        let i = first + k;
        let (target, stats, gate) = (target.clone(), Arc::clone(&stats), Arc::clone(&gate));
        let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
        ready.push(done_rx);
        tasks.push(smol::spawn(async move {
            let permit = gate.acquire_arc().await;
            let mut at = i % target.addrs.len();
            let mut ws = match connect(&target, at, &credential, i).await {
                Ok(ws) => ws,
                Err(error) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.note(&error);
                    return;
                }
            };
            stats.registered.fetch_add(1, Ordering::Relaxed);
            stats.up(at);
            drop(permit);
            drop(done_tx);
            loop {
                let error = match idle(ws, &stats, i).await {
                    Ok(never) => match never {},
                    Err(error) => error,
                };
                stats.connected[at].fetch_sub(1, Ordering::Relaxed);
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                stats.note(&error);
                if !target.reconnect {
                    return;
                }
                (ws, at) = reconnect(&target, at, &credential, i, &stats).await;
                stats.reconnected.fetch_add(1, Ordering::Relaxed);
                stats.up(at);
            }
        }));
    }
    for done in ready {
        let _ = done.recv().await;
    }
    tasks
}

/// A random number in `[0, 1)`, from the standard library's per-process
/// random hash keys (no generator crate for a few draws per agent).
fn random() -> f64 {
    (RandomState::new().hash_one(unix_ms()) >> 11) as f64 / (1u64 << 53) as f64
}

/// Reconnect after the connection on `addrs[from]` ended: the real agent's
/// schedule (1 s, doubling to 30 s, ±20 % jitter), each attempt to another
/// address than the last one tried, at random. Tries until it registers.
async fn reconnect(
    target: &Target,
    from: usize,
    credential: &str,
    i: usize,
    stats: &Stats,
) -> (Ws, usize) {
    let n = target.addrs.len();
    let mut last = from;
    let mut base = Duration::from_secs(1);
    loop {
        smol::Timer::after(base.mul_f64(1.0 + 0.2 * (random() * 2.0 - 1.0))).await;
        base = (base * 2).min(Duration::from_secs(30));
        let at = if n > 1 {
            (last + 1 + (random() * (n - 1) as f64) as usize % (n - 1)) % n
        } else {
            last
        };
        match connect(target, at, credential, i).await {
            Ok(ws) => return (ws, at),
            Err(error) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                stats.note(&error);
                last = at;
            }
        }
    }
}

/// Small buffers: the fleet's own memory is not what is measured, but
/// 10,000 default 128 KiB read buffers would be 1.3 GB on this side.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Connect to `addrs[at]`, authenticate, register and send the inventory.
async fn connect(target: &Target, at: usize, credential: &str, i: usize) -> Result<Ws, AgentError> {
    let addr = target.addrs[at];
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(AgentError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = target
        .connector
        .connect(name, tcp)
        .await
        .map_err(AgentError::Tls)?;
    let mut req = format!("wss://{addr}/v1/agent")
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
    let containers = match &target.containers_of {
        Some(tenant) => json!([{
            "containerId": format!("simc-{i}"), "tenantId": tenant, "engineId": format!("{i:064x}"),
            "name": format!("sim-{i}"), "image": "localhost/sim:latest", "state": "running",
            "profile": "standard", "createdAt": unix_ms(),
        }]),
        None => json!([]),
    };
    let inventory = json!({ "type": "worker.inventory", "data": { "containers": containers } });
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
async fn idle(mut ws: Ws, stats: &Stats, i: usize) -> Result<std::convert::Infallible, AgentError> {
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
