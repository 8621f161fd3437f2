//! The Crops orchestrator: the HTTP API, the agent WebSocket hub and the
//! state in redb, all on one listener.
//!
//! [`serve`] is the entry point: it takes a bound listener and a shutdown
//! future, so the binary and the tests run exactly the same code.
//!
//! The public surface is what an embedder, the binary and the tests need:
//! [`serve`] and its configuration, the [`store`] (tests open a stopped
//! orchestrator's database), the [`policy`] engine (the CLI checks a
//! module offline; the benchmarks drive it), the [`router`]'s table and
//! [`http::Rule`] (tests walk every route), [`tls`], and the few constants
//! tests wait on ([`terminal`], [`presence`], [`history`]). Everything else
//! (handlers, hub, audit, scheduling, sockets) is private to the crate.
//!
//! ```no_run
//! # smol::block_on(async {
//! let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let mut config = orchestrator::ServeConfig::new("/var/lib/crops".into());
//! config.admin_token = Some("crops_adm_example".into());
//! config.on_ready = Some(Box::new(|ready| println!("listening on {}", ready.url())));
//! let (stop, stopped) = smol::channel::bounded::<()>(1);
//! # drop(stop);
//! orchestrator::serve(config, listener, async move { let _ = stopped.recv().await; })
//!     .await
//!     .unwrap();
//! # });
//! ```

mod api;
mod audit;
mod auth;
mod authz;
mod connections;
mod downloads;
pub mod history;
pub mod http;
mod hub;
mod metrics;
mod openapi;
mod peer;
pub mod policy;
pub mod presence;
mod replica;
pub mod router;
mod server;
pub mod store;
pub mod terminal;
pub mod tls;
mod web;
mod wire;

mod agent_socket;
mod health;
mod heartbeats;
mod scheduling;
mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::connections::ConnectionLimits;
use crate::hub::Hub;
use crate::server::Lifecycle;
use crate::store::Store;

/// Connections to PostgreSQL per replica: writers are serial (see
/// `store::engine`), so a few serve the writes and the rest the reads.
const DATABASE_CONNECTIONS: u32 = 16;

/// What the orchestrator needs to run.
pub struct ServeConfig {
    /// The data directory: the embedded database `data_dir/crops.redb`,
    /// unless [`ServeConfig::database`] is set; local caches either way.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL: the store shared by several replicas instead of
    /// the embedded redb file.
    pub database: Option<String>,
    /// This replica's identity in the shared store; by default a new one
    /// per start. Two live processes never hold one identity.
    pub replica_id: Option<String>,
    /// The address other replicas reach this one at.
    pub advertise: Option<String>,
    /// PEM certificate chain and private key; TLS on the listener when set.
    pub tls: Option<TlsFiles>,
    /// Heartbeat interval dictated to agents, in seconds (at least 1).
    pub heartbeat_secs: u32,
    /// The admin token. When `None`, the one stored in the data directory is
    /// kept, or a new one is generated (and reported in [`Ready`]).
    pub admin_token: Option<String>,
    /// How long a new agent connection may take to send `worker.register`.
    pub register_timeout: Duration,
    /// How long the API waits for an agent's reply, per kind of command.
    pub timeouts: Timeouts,
    /// Called once the orchestrator is ready to serve (the CLI prints from it).
    pub on_ready: Option<OnReady>,
    /// After a start, how long a worker that had registered before it is
    /// reported `reconnecting` rather than `offline` (see `presence`).
    pub offline_grace: Duration,
    /// How often removed containers past their plan's retention are pruned.
    pub history_interval: Duration,
    /// After the shutdown signal, how long the listener keeps accepting
    /// while `/readyz` answers 503, so a load balancer can stop routing
    /// here first. Zero (the default) stops accepting at once.
    pub drain: Duration,
    /// A terminal session with no viewer for this long is closed (5 min).
    pub terminal_grace: Duration,
    /// A terminal viewer that stops reading with a full queue for this long
    /// is disconnected; it may reattach by offset (60 s).
    pub terminal_stall: Duration,
    /// Caps on connections that have not authenticated, and the deadline
    /// of a new connection's first request (`connections`); by default
    /// derived from the process's open-files limit.
    pub connections: ConnectionLimits,
    /// Where `GET /download/agent/{arch}` finds the static agent binaries
    /// (`downloads`); none served without it.
    pub agent_dir: Option<PathBuf>,
}

/// How long an API request waits for the agent's reply before answering
/// 504, per kind of command. Tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `container.create` and `container.setup` (a clone): 120 s.
    pub create: Duration,
    /// Added to an exec's own `timeoutSecs` (default 60 s): 15 s.
    pub exec_grace: Duration,
    /// `images.build`: 15 min.
    pub build: Duration,
    /// Every other command: 60 s (a stop adds its own grace period).
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            create: Duration::from_secs(120),
            exec_grace: Duration::from_secs(15),
            build: Duration::from_secs(15 * 60),
            command: Duration::from_secs(60),
        }
    }
}

impl ServeConfig {
    /// Defaults: no TLS, 10 s heartbeats, stored or generated admin token,
    /// 10 s to register.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database: None,
            replica_id: None,
            advertise: None,
            tls: None,
            heartbeat_secs: protocol::DEFAULT_HEARTBEAT_SECS,
            admin_token: None,
            register_timeout: Duration::from_secs(10),
            timeouts: Timeouts::default(),
            on_ready: None,
            offline_grace: presence::DEFAULT_OFFLINE_GRACE,
            history_interval: history::DEFAULT_INTERVAL,
            drain: Duration::ZERO,
            terminal_grace: terminal::DEFAULT_GRACE,
            terminal_stall: terminal::DEFAULT_STALL,
            connections: ConnectionLimits::from_open_files_limit(),
            agent_dir: None,
        }
    }
}

/// A callback run once serve is ready, with what it learnt.
pub type OnReady = Box<dyn FnOnce(&Ready) + Send>;

/// PEM files for the listener's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What [`ServeConfig::on_ready`] learns once the listener is serving.
#[derive(Debug, Clone)]
pub struct Ready {
    pub addr: SocketAddr,
    pub tls: bool,
    /// A newly generated admin token: shown once, stored only as a hash.
    pub generated_admin_token: Option<String>,
}

impl Ready {
    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }
}

/// Why the orchestrator could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("heartbeat interval must be at least 1 second")]
    HeartbeatInterval,
    #[error("connection limits must be at least 1, the first-request deadline at least 1 second")]
    ConnectionLimits,
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot make an admin token: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("cannot start the policy engine: {0}")]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Peer(#[from] peer::PeerError),
}

/// The state every request handler and connection task shares.
///
/// Built once by [`serve`] and never mutated afterwards: the plain fields are
/// configuration; `store` and `hub` synchronise internally (see their docs);
/// `life` is how shutdown reaches every task. Serve drops its handle after
/// shutdown, and the last task to end drops the rest.
pub(crate) struct App {
    /// Durable state; every handler and connection task goes through it.
    pub store: Arc<Store>,
    /// Heartbeats waiting for the next batch (`heartbeats`).
    pub heartbeats: heartbeats::Heartbeats,
    /// This process's replica identity: the owner it writes into the
    /// workers whose agents register here (`store::replicas`).
    pub replica_id: String,
    /// The other replicas' last beats, refreshed every heartbeat interval.
    pub replicas: replica::Known,
    /// Live agent connections; written by connection tasks, read by the API.
    pub hub: Arc<Hub>,
    /// The links to the other replicas (`peer`), on a shared store only:
    /// the hub's remote, the way a terminal reaches its owner, and the key
    /// the peer routes accept (none without a shared store: they refuse
    /// everyone).
    pub peers: Option<Arc<peer::Peers>>,
    /// SHA-256 of the admin token.
    pub admin_hash: [u8; 32],
    pub heartbeat_secs: u32,
    pub register_timeout: Duration,
    /// Per-command reply deadlines of the API.
    pub timeouts: Timeouts,
    /// Task tracking and the shutdown signals (see `server::Lifecycle`).
    pub life: Lifecycle,
    /// When this serve started (Unix ms): workers registered before it get
    /// `offline_grace` to reconnect before they count as offline.
    pub started_ms: u64,
    pub offline_grace: Duration,
    /// Counters for `/metrics`; written by the hub, the connection tasks
    /// and the HTTP layer.
    pub metrics: Arc<metrics::Metrics>,
    /// Whether the listener accepts; set and cleared by `serve` only.
    pub readiness: health::Readiness,
    /// Plan and placement policies (wasmtime); activations are written by
    /// the policy API, decisions read them (see `policy::registry`).
    pub policies: Arc<policy::Policies>,
    /// Live terminal sessions and the agent links they use; written by the
    /// agent connections, the terminal sockets and the reaper.
    pub terminals: Arc<terminal::Terminals>,
    /// The audit log's writer thread (API calls and commands; group commit).
    pub audit: audit::AuditWriter,
    /// The unauthenticated connections: written by the accept loop, the
    /// connection tasks and whatever authenticates a request.
    pub gate: Arc<connections::Gate>,
    /// `ServeConfig::agent_dir` (`downloads`).
    pub agent_dir: Option<PathBuf>,
    /// SHA-256 of the certificate served, told to agents at registration.
    pub certificate_sha256: Option<String>,
}

impl App {
    /// A worker is offline after this long without a sign of life.
    pub fn offline_after(&self) -> Duration {
        Duration::from_secs(
            u64::from(self.heartbeat_secs) * u64::from(protocol::MISSED_HEARTBEATS_OFFLINE),
        )
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serve the API and the agent socket on `listener` until `shutdown`
/// completes, then close every agent socket with 1001, let in-flight
/// requests finish (bounded), close the database and return.
pub async fn serve(
    config: ServeConfig,
    listener: smol::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if config.heartbeat_secs == 0 {
        return Err(Error::HeartbeatInterval);
    }
    if !config.connections.is_valid() {
        return Err(Error::ConnectionLimits);
    }
    let acceptor = match &config.tls {
        Some(files) => Some(tls::acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let certificate_sha256 = match &config.tls {
        Some(files) => Some(tls::leaf_sha256(&files.cert)?),
        None => None,
    };
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    let store = {
        let dir = config.data_dir.clone();
        let url = config.database.clone();
        Arc::new(
            smol::unblock(move || match url {
                Some(url) => Store::connect(&url, DATABASE_CONNECTIONS),
                None => Store::open(&dir),
            })
            .await?,
        )
    };
    // By default the listener's address, unless it is unspecified
    // (0.0.0.0): other replicas would dial themselves.
    let advertise = config.advertise.clone().or_else(|| {
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        if addr.ip().is_unspecified() {
            if store.is_shared() {
                tracing::warn!(%addr, "other replicas cannot reach this one at an unspecified address: give --advertise");
            }
            return None;
        }
        Some(format!("{scheme}://{addr}"))
    });
    let replica = replica::register(
        &store,
        config.replica_id.clone(),
        advertise,
        config.heartbeat_secs,
    )
    .await?;
    let (admin_hash, generated) = admin_token(&store, config.admin_token).await?;
    let default_org = auth::uuid_v4()?;
    store
        .call(move |s| s.ensure_default_org(&default_org, now_ms()))
        .await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let policies = Arc::new(scheduling::registry(&store, &config.data_dir).await?);
    // Calls cut short by the last stop: their intents become entries.
    let interrupted = store.call(|s| s.recover_audit_intents()).await?;
    if interrupted > 0 {
        tracing::warn!(
            calls = interrupted,
            "audit: calls interrupted by the last stop are logged as `interrupted`"
        );
    }
    let audit = audit::AuditWriter::start(Arc::clone(&store))?;
    let gate = connections::Gate::new(config.connections, Arc::clone(&metrics));
    let hub = Arc::new(Hub::with_metrics(Arc::clone(&metrics)));
    // Several replicas: calls for workers connected elsewhere go there.
    let peers = if store.is_shared() {
        let peers = Arc::new(peer::Peers::new(
            Arc::clone(&store),
            replica.id.clone(),
            &admin_hash,
            config.tls.as_ref().map(|t| t.cert.as_path()),
            replica::fresh_ms(config.heartbeat_secs),
        )?);
        hub.set_remote(Arc::clone(&peers) as Arc<dyn hub::Remote>);
        Some(peers)
    } else {
        None
    };
    let app = Arc::new(App {
        replica_id: replica.id.clone(),
        replicas: replica::Known::new(config.heartbeat_secs),
        heartbeats: heartbeats::Heartbeats::default(),
        policies,
        store: Arc::clone(&store),
        hub: Arc::clone(&hub),
        peers,
        admin_hash,
        heartbeat_secs: config.heartbeat_secs,
        register_timeout: config.register_timeout,
        timeouts: config.timeouts,
        life: Lifecycle::new(),
        started_ms: now_ms(),
        offline_grace: config.offline_grace,
        metrics,
        readiness: health::Readiness::default(),
        // The relay uses the hub's connections; the hub is the App's.
        terminals: terminal::Terminals::new(hub, config.terminal_grace, config.terminal_stall),
        audit: audit.clone(),
        gate: Arc::new(gate),
        agent_dir: config.agent_dir.clone(),
        certificate_sha256,
    });
    let database = config.database.as_deref().map(store::redacted_url);
    tracing::info!(%addr, tls = acceptor.is_some(), data = %config.data_dir.display(), database, "serving");
    app.hub.set_audit(audit::command_hook(audit));
    // Loaded while the listener accepts; no decision before (policy::load).
    scheduling::spawn_restore(&app);
    scheduling::follow::spawn(&app);
    history::spawn(&app, config.history_interval);
    replica::spawn_beat(&app, replica.started_ms);
    heartbeats::spawn_flusher(&app);
    // Sessions stored as live come back, offline until their agents return.
    app.terminals.restore(&store).await?;
    terminal::spawn_reaper(&app);
    if let Some(on_ready) = config.on_ready {
        on_ready(&Ready {
            addr,
            tls: acceptor.is_some(),
            generated_admin_token: generated,
        });
    }

    // Not ready from the shutdown signal on; still accepting while draining.
    let drain = config.drain;
    let shutdown = async {
        shutdown.await;
        app.readiness.set_accepting(false);
        if !drain.is_zero() {
            tracing::info!(?drain, "draining: /readyz answers 503");
            smol::Timer::after(drain).await;
        }
    };
    app.readiness.set_accepting(true);
    server::accept_loop(&app, &listener, acceptor, shutdown).await;
    app.readiness.set_accepting(false);

    tracing::info!("shutting down");
    app.life.finish(Duration::from_secs(3)).await;
    drop(app);
    server::release_store(store).await;
    tracing::info!("stopped");
    Ok(())
}

/// The admin token hash to check against: the given token (stored from now
/// on), else the stored one, else a freshly generated one.
async fn admin_token(
    store: &Arc<Store>,
    given: Option<String>,
) -> Result<([u8; 32], Option<String>), Error> {
    if let Some(token) = given {
        let hash = auth::hash(&token);
        let hex = auth::hex(&hash);
        store.call(move |s| s.set_admin_token_hash(&hex)).await?;
        return Ok((hash, None));
    }
    if let Some(hex) = store.call(|s| s.admin_token_hash()).await? {
        if let Some(hash) = unhex32(&hex) {
            return Ok((hash, None));
        }
        tracing::warn!("stored admin token hash is unreadable; generating a new token");
    }
    let token = auth::mint(auth::TokenKind::Admin)?;
    let hash = auth::hash(&token);
    let hex = auth::hex(&hash);
    store.call(move |s| s.set_admin_token_hash(&hex)).await?;
    Ok((hash, Some(token)))
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
