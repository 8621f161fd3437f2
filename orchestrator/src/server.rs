//! The listener side: accepting TCP (and TLS) connections, serving HTTP/1.1
//! on each with hyper, and the lifecycle of every task serve spawns.
//!
//! Shutdown happens in two steps, both carried by channels whose *closing*
//! is the broadcast: `graceful` asks every task to wind down (HTTP
//! connections finish their request, agent sockets close with 1001), `kill`
//! drops whatever is still running after the grace period. Each task holds
//! a clone of the `alive` sender, so the one receiver learns when the last
//! task has ended.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use hyper::service::service_fn;
use smol::channel::{Receiver, Sender};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::connections::Ticket;
use crate::store::Store;
use crate::App;

/// How long a client may take to send a request's headers, idle time of a
/// keep-alive connection included (a new connection's first request has
/// `ConnectionLimits::first_request`, TLS included).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The tasks serve spawns, and how shutdown reaches them.
pub(crate) struct Lifecycle {
    /// Closed by `finish` to ask tasks to wind down; tasks wait on clones.
    graceful: (Sender<()>, Receiver<()>),
    /// Closed by `finish` after the grace period; every task races it.
    kill: (Sender<()>, Receiver<()>),
    /// One clone per running task; taken (dropped) by `finish`, after which
    /// nothing new is spawned.
    alive_tx: Mutex<Option<Sender<()>>>,
    /// Completes with an error once every `alive` sender is gone.
    alive_rx: Receiver<()>,
}

impl Lifecycle {
    pub fn new() -> Self {
        let (alive_tx, alive_rx) = smol::channel::bounded(1);
        Self {
            graceful: smol::channel::bounded(1),
            kill: smol::channel::bounded(1),
            alive_tx: Mutex::new(Some(alive_tx)),
            alive_rx,
        }
    }

    /// Run `fut` as a tracked task; dropped at once if shutdown has finished.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let alive = self
            .alive_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(alive) = alive else { return };
        let kill = self.kill.1.clone();
        // Combinators, not an `async move` block around `fut`: such a block
        // stores `fut` twice (the captured value and the awaited one), which
        // doubled the memory of every agent connection's task.
        let killed = async move {
            let _alive = alive;
            let _ = kill.recv().await;
        };
        smol::spawn(fut.or(killed)).detach();
    }

    /// Completes when shutdown has begun.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let rx = self.graceful.1.clone();
        async move {
            let _ = rx.recv().await;
        }
    }

    /// Ask every task to stop, wait up to `grace` for them, then drop the rest.
    pub async fn finish(&self, grace: Duration) {
        self.graceful.0.close();
        drop(
            self.alive_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if !wait(&self.alive_rx, grace).await {
            tracing::warn!(
                ?grace,
                "tasks still running after the grace period; dropping them"
            );
            self.kill.0.close();
            wait(&self.alive_rx, Duration::from_secs(2)).await;
        }
    }
}

/// Wait until every `alive` sender is dropped; false on timeout.
async fn wait(alive: &Receiver<()>, limit: Duration) -> bool {
    async {
        let _ = alive.recv().await;
        true
    }
    .or(async {
        smol::Timer::after(limit).await;
        false
    })
    .await
}

/// Accept connections until `shutdown` completes. Each one takes its place
/// among the unauthenticated connections first (`crate::connections`),
/// which may close the oldest of them.
pub(crate) async fn accept_loop(
    app: &Arc<App>,
    listener: &smol::net::TcpListener,
    acceptor: Option<futures_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    if let Err(error) = crate::connections::raise_backlog(listener) {
        tracing::warn!(%error, "cannot raise the listener's accept queue");
    }
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = async {
            // While every place is held by a connection being verified,
            // newcomers wait in the kernel's queue (`crate::connections`).
            app.gate.room().await;
            Some(listener.accept().await)
        }
        .or(async {
            shutdown.as_mut().await;
            None
        })
        .await;
        let (stream, peer) = match accepted {
            None => return,
            Some(Ok(pair)) => pair,
            Some(Err(error)) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ticket = app.gate.admit(peer);
        let conn_app = Arc::clone(app);
        match acceptor.clone() {
            None => app.life.spawn(serve_http(conn_app, stream, peer, ticket)),
            Some(acceptor) => app.life.spawn(async move {
                let stopping = conn_app.life.stopping();
                // The first-request deadline covers the handshake too.
                let handshake = async { Some(acceptor.accept(stream).await) }
                    .or(async {
                        let why = ticket.closed().await;
                        tracing::debug!(%peer, ?why, "connection closed during TLS");
                        None
                    })
                    .or(async {
                        stopping.await;
                        None
                    });
                match handshake.await {
                    Some(Ok(tls)) => serve_http(conn_app, tls, peer, ticket).await,
                    Some(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    None => {}
                }
            }),
        }
    }
}

/// Serve HTTP/1.1 (with upgrades) on one connection until it ends, shutdown
/// asks it to finish its current request, or `ticket` says to close it.
async fn serve_http<IO>(app: Arc<App>, io: IO, peer: std::net::SocketAddr, ticket: Arc<Ticket>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stopping = app.life.stopping();
    let service_app = Arc::clone(&app);
    let service_ticket = Arc::clone(&ticket);
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let app = Arc::clone(&service_app);
        service_ticket.request_seen();
        // So that whatever authenticates the request can say so.
        req.extensions_mut().insert(Arc::clone(&service_ticket));
        async move { Ok::<_, Infallible>(crate::router::handle(app, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(SmolTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let conn = builder
        .serve_connection(FuturesIo::new(io), service)
        .with_upgrades();
    let mut conn = pin!(conn);
    let first = async { Some(Some(conn.as_mut().await)) }
        .or(async {
            let why = ticket.closed().await;
            tracing::debug!(%peer, ?why, "unauthenticated connection closed");
            None
        })
        .or(async {
            stopping.await;
            Some(None)
        })
        .await;
    let result = match first {
        Some(Some(result)) => result,
        // Closed at once: dropping the connection closes the socket.
        None => return,
        Some(None) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// Wait (bounded) for the last user of the store to let go, so the database
/// closes before serve returns and the data directory can be opened again.
pub(crate) async fn release_store(store: Arc<Store>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut store = store;
    loop {
        match Arc::try_unwrap(store) {
            Ok(store) => {
                smol::unblock(move || drop(store)).await;
                return;
            }
            Err(shared) if std::time::Instant::now() < deadline => {
                store = shared;
                smol::Timer::after(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("store still in use at shutdown; it closes when its last user ends");
                return;
            }
        }
    }
}
