//! Commands from the orchestrator: each one gets exactly one reply, its
//! `<command>.result` or an `error`, carrying the command's `requestId`.
//!
//! The [`Executor`] owns what commands share: the Podman handle (with its two
//! concurrency lanes), git, the workspaces, the worker's security floor, the
//! background jobs, per-container-id create locks and a cache of engine ids.
//! Every command's `validate()` (from `protocol::check`) runs before any
//! process starts. Handlers live in [`container`] (lifecycle, setup, list,
//! stats), [`exec`] (exec, background, images) and [`terminal`] (live
//! terminals, whose sessions the executor's [`Terminals`] holds).

mod container;
mod exec;
mod terminal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use protocol::container::Profile;
use protocol::error::Invalid;
use protocol::{Body, Envelope, ErrorCode, ErrorReply};
use smol::channel::Sender;
use tracing::Instrument;

use crate::background::{Background, BackgroundError};
use crate::egress::Egress;
use crate::git::{Git, GitError};
use crate::podman::env::EnvError;
use crate::podman::{Podman, PodmanError};
use crate::terminal::{TerminalError, Terminals};
use crate::usage::UsageHistory;
use crate::workspace::{WorkspaceError, Workspaces};

/// Why a command failed, before it becomes an `error` reply.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{ty}: this agent does not implement it yet")]
    Unsupported { ty: &'static str },
    #[error("{ty}: {source}")]
    Invalid {
        ty: &'static str,
        #[source]
        source: Invalid,
    },
    #[error("{ty}: {what} is not on this worker")]
    NotFound { ty: &'static str, what: String },
    #[error("{ty}: {reason}")]
    Forbidden { ty: &'static str, reason: String },
    #[error("{ty}: {reason}")]
    Conflict { ty: &'static str, reason: String },
    #[error("{ty}: {source}")]
    Engine {
        ty: &'static str,
        #[source]
        source: PodmanError,
    },
    #[error("{ty}: {source}")]
    Git {
        ty: &'static str,
        #[source]
        source: GitError,
    },
    #[error("{ty}: {source}")]
    Workspace {
        ty: &'static str,
        #[source]
        source: WorkspaceError,
    },
    #[error("{ty}: {source}")]
    Background {
        ty: &'static str,
        #[source]
        source: BackgroundError,
    },
    #[error("{ty}: {source}")]
    Env {
        ty: &'static str,
        #[source]
        source: EnvError,
    },
    #[error("{ty}: {source}")]
    Terminal {
        ty: &'static str,
        #[source]
        source: TerminalError,
    },
    #[error("{ty}: {source}")]
    Egress {
        ty: &'static str,
        #[source]
        source: crate::egress::EgressError,
    },
}

impl CommandError {
    /// The wire code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unsupported { .. } => ErrorCode::Unsupported,
            Self::Invalid { .. }
            | Self::Env {
                source: EnvError::Newline { .. },
                ..
            } => ErrorCode::InvalidArgument,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::Conflict { .. } => ErrorCode::Conflict,
            Self::Engine { source, .. }
            | Self::Background {
                source: BackgroundError::Spawn(source),
                ..
            } => match source {
                PodmanError::Timeout { .. } => ErrorCode::Timeout,
                e if e.is_no_such_container() || e.is_image_unknown() => ErrorCode::NotFound,
                e if e.is_state_conflict() => ErrorCode::Conflict,
                _ => ErrorCode::EngineFailed,
            },
            Self::Git {
                source: GitError::Timeout { .. },
                ..
            } => ErrorCode::Timeout,
            Self::Git { .. } => ErrorCode::EngineFailed,
            Self::Workspace { source, .. } => match source {
                WorkspaceError::Escape { .. } => ErrorCode::Forbidden,
                WorkspaceError::Missing { .. } => ErrorCode::Conflict,
                _ => ErrorCode::Internal,
            },
            Self::Background { source, .. } => match source {
                BackgroundError::NotFound { .. } => ErrorCode::NotFound,
                BackgroundError::TooMany => ErrorCode::Unavailable,
                BackgroundError::Env(EnvError::Newline { .. }) => ErrorCode::InvalidArgument,
                _ => ErrorCode::Internal,
            },
            Self::Egress {
                source: crate::egress::EgressError::NoRelay,
                ..
            } => ErrorCode::Unsupported,
            Self::Env { .. } | Self::Egress { .. } => ErrorCode::Internal,
            Self::Terminal { source, .. } => source.code(),
        }
    }

    /// The wire error this failure becomes.
    pub fn to_reply(&self) -> ErrorReply {
        ErrorReply::new(self.code(), self.to_string())
    }
}

/// What every command shares. One per agent process, across reconnects.
pub struct Executor {
    pub(crate) podman: Podman,
    pub(crate) git: Git,
    pub(crate) workspaces: Workspaces,
    /// The weakest profile this worker runs (`--security-floor`).
    pub(crate) floor: Profile,
    /// Background jobs; they outlive connections.
    pub(crate) background: Background,
    /// Terminal sessions; they outlive connections too.
    pub(crate) terminals: Terminals,
    /// Running containers' recent CPU and memory, sampled at heartbeats.
    pub(crate) usage: UsageHistory,
    /// The egress gates of Standard and Strict containers.
    pub(crate) egress: Egress,
    /// One lock per container id being created, so concurrent deliveries of
    /// the same create are serialised. Entries are dropped after use.
    creating: Mutex<HashMap<String, Arc<smol::lock::Mutex<()>>>>,
    /// containerId -> engine id, filled by create and lookups, emptied by
    /// remove and by Podman saying the container is gone.
    known: Mutex<HashMap<String, String>>,
    /// Set once `known` holds every managed container Podman had when the
    /// agent first needed it, so a create can trust a miss and skip the lookup.
    indexed: smol::lock::OnceCell<()>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("podman", &self.podman)
            .field("workspaces", &self.workspaces)
            .field("floor", &self.floor)
            .finish()
    }
}

impl Executor {
    /// Workspaces live under `data_dir/workspaces`; `floor` is the weakest
    /// profile allowed (`Profile::Open` allows all).
    /// A rootless agent deletes removed workspaces through `podman
    /// unshare` where it must (see `crate::workspace`).
    pub fn new(podman: Podman, data_dir: &Path, floor: Profile) -> Self {
        let rootless = crate::rootless::uid() != 0;
        let workspaces =
            Workspaces::new(data_dir).reclaiming_with(rootless.then(|| podman.clone()));
        workspaces.empty_trash_later();
        let egress = Egress::new(data_dir);
        let descriptors = crate::egress::raise_descriptor_limit();
        tracing::debug!(?descriptors, "open descriptors allowed");
        let served = egress.restore();
        if served > 0 {
            tracing::info!(served, "egress gates of existing containers serving again");
        }
        Self {
            git: Git::default(),
            workspaces,
            floor,
            background: Background::default(),
            terminals: Terminals::new(podman.clone(), crate::terminal::DEFAULT_GRACE),
            usage: UsageHistory::default(),
            egress,
            creating: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            indexed: smol::lock::OnceCell::new(),
            podman,
        }
    }

    /// Hang up terminals left without a link for `grace` (default 5 minutes).
    pub fn with_terminal_grace(mut self, grace: std::time::Duration) -> Self {
        self.terminals = Terminals::new(self.podman.clone(), grace);
        self
    }

    /// The terminal sessions, which connections stream and feed.
    pub fn terminals(&self) -> &Terminals {
        &self.terminals
    }

    /// The containers' recent use, which the heartbeat task samples.
    pub fn usage(&self) -> &UsageHistory {
        &self.usage
    }

    /// Use this git (tests add their own config through its environment).
    pub fn with_git(mut self, git: Git) -> Self {
        self.git = git;
        self
    }

    pub fn podman(&self) -> &Podman {
        &self.podman
    }

    /// Run one command in its own task and send its one reply into `out`
    /// (events such as build progress go there first). Detached: a command in
    /// flight finishes even if its connection drops (the reply is then lost;
    /// the orchestrator retries, and create is idempotent). A terminal opened
    /// here starts streaming only once its reply is queued, ahead of its output.
    pub fn spawn(self: &Arc<Self>, request_id: String, body: Body, out: Sender<Envelope>) {
        let this = self.clone();
        smol::spawn(async move {
            let reply = this.handle(request_id, body, &out).await;
            let opened = match &reply.body {
                Body::TerminalOpened(o) => Some(o.session_id),
                _ => None,
            };
            let _ = out.send(reply).await;
            if let Some(id) = opened {
                this.terminals.release(id);
            }
        })
        .detach();
    }

    /// Run one command and build its one reply; events go to `events`.
    pub async fn handle(
        &self,
        request_id: String,
        body: Body,
        events: &Sender<Envelope>,
    ) -> Envelope {
        let ty = body.type_name();
        let span = tracing::info_span!("command", %ty, request_id = %request_id);
        let started = std::time::Instant::now();
        // Boxed: some handlers' futures are large, and a caller may keep
        // this one on a small stack (a test's block_on).
        let result = Box::pin(
            self.execute(&request_id, body, events)
                .instrument(span.clone()),
        )
        .await;
        match result {
            Ok(reply) => {
                let elapsed_us = started.elapsed().as_micros();
                span.in_scope(|| tracing::debug!(elapsed_us, "command done"));
                Envelope::request(request_id, reply)
            }
            Err(e) => {
                let code = e.code();
                span.in_scope(|| match code {
                    ErrorCode::EngineFailed | ErrorCode::Internal | ErrorCode::Timeout => {
                        tracing::warn!(%code, error = %e, "command failed")
                    }
                    _ => tracing::info!(%code, error = %e, "command refused"),
                });
                Envelope::error(Some(request_id), e.to_reply())
            }
        }
    }

    /// [`Self::handle`] for tests and tools: the reply body, events dropped.
    pub async fn call(&self, body: Body) -> Body {
        let (tx, rx) = smol::channel::unbounded();
        drop(rx);
        self.handle("call".into(), body, &tx).await.body
    }

    async fn execute(
        &self,
        request_id: &str,
        body: Body,
        events: &Sender<Envelope>,
    ) -> Result<Body, CommandError> {
        match body {
            Body::ContainerCreate(req) => self.create(req).await,
            Body::ContainerSetup(req) => self.setup(req).await,
            Body::ContainerStart(req) => self.start(req).await,
            Body::ContainerStop(req) => self.stop(req).await,
            Body::ContainerRemove(req) => self.remove(req).await,
            Body::ContainerList(req) => self.list(req).await,
            Body::ContainerListAll(_) => self.list_all().await,
            Body::ContainerStats(req) => self.stats(req).await,
            Body::Exec(req) => self.exec(req).await,
            Body::ExecBackground(req) => self.exec_background(req).await,
            Body::BackgroundCapture(req) => self.capture(req),
            Body::BackgroundKill(req) => self.kill(req).await,
            Body::ImagesList(_) => self.images().await,
            Body::ImageBuild(req) => self.build(request_id, req, events).await,
            Body::TerminalOpen(req) => self.terminal_open(req, events).await,
            Body::TerminalResize(req) => self.terminal_resize(req),
            Body::TerminalClose(req) => self.terminal_close(req),
            Body::TerminalAttach(req) => self.terminal_attach(req, events),
            other => Err(CommandError::Unsupported {
                ty: other.type_name(),
            }),
        }
    }

    /// The per-id create lock of `container_id`.
    fn create_lock(&self, container_id: &str) -> Arc<smol::lock::Mutex<()>> {
        let mut map = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(container_id.to_owned()).or_default().clone()
    }

    /// Drop the create lock of `container_id` when nobody else holds it.
    fn release_create_lock(&self, container_id: &str) {
        let mut map = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(container_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(container_id);
        }
    }

    /// Fill `known` from Podman once per agent process (one `podman ps`).
    /// A failure leaves it unfilled, to be tried again by the next create.
    async fn ensure_index(&self, ty: &'static str) -> Result<(), CommandError> {
        self.indexed
            .get_or_try_init(|| async {
                let all = self
                    .podman
                    .list_managed(None)
                    .await
                    .map_err(|source| CommandError::Engine { ty, source })?;
                for c in &all {
                    self.remember(&c.container_id, &c.engine_id);
                }
                // Gates served again at start for containers gone since.
                let closed = self
                    .egress
                    .retain(|id| all.iter().any(|c| c.container_id == id));
                tracing::debug!(
                    containers = all.len(),
                    gates_closed = closed,
                    "indexed managed containers"
                );
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether `container_id` is in the index.
    fn is_known(&self, container_id: &str) -> bool {
        self.known
            .lock()
            .is_ok_and(|k| k.contains_key(container_id))
    }

    fn remember(&self, container_id: &str, engine_id: &str) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(container_id.to_owned(), engine_id.to_owned());
        }
    }

    fn forget(&self, container_id: &str) {
        if let Ok(mut k) = self.known.lock() {
            k.remove(container_id);
        }
    }

    /// The engine id of a managed container, or `not_found`.
    async fn resolve(&self, ty: &'static str, container_id: &str) -> Result<String, CommandError> {
        if let Some(id) = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(container_id).cloned())
        {
            return Ok(id);
        }
        match self.podman.find(container_id).await {
            Ok(Some(info)) => {
                self.remember(container_id, &info.engine_id);
                Ok(info.engine_id)
            }
            Ok(None) => Err(not_found(ty, container_id)),
            Err(source) => Err(CommandError::Engine { ty, source }),
        }
    }

    /// Map a Podman failure on a known container: gone -> forget it, `not_found`.
    fn engine_error(
        &self,
        ty: &'static str,
        container_id: &str,
        source: PodmanError,
    ) -> CommandError {
        if source.is_no_such_container() {
            self.forget(container_id);
            return not_found(ty, container_id);
        }
        CommandError::Engine { ty, source }
    }
}

fn not_found(ty: &'static str, container_id: &str) -> CommandError {
    CommandError::NotFound {
        ty,
        what: format!("container {container_id}"),
    }
}

fn invalid(ty: &'static str) -> impl FnOnce(Invalid) -> CommandError {
    move |source| CommandError::Invalid { ty, source }
}

/// Env names starting with `CROPS_` are the agent's own (e.g. the exec mark).
fn check_reserved_env(
    ty: &'static str,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), CommandError> {
    match env
        .keys()
        .find(|k| k.to_ascii_uppercase().starts_with("CROPS_"))
    {
        Some(k) => Err(CommandError::Invalid {
            ty,
            source: Invalid::new("env", format!("{k:?}: the CROPS_ prefix is reserved")),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
