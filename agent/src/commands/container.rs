//! Container lifecycle handlers: create (idempotent on `containerId`,
//! floor-checked), setup (git clone and task files into the workspace),
//! start, stop, remove, list, list-all and stats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol::container::*;
use protocol::validate as v;
use protocol::Body;

use super::{check_reserved_env, invalid, not_found, CommandError, Executor};
use crate::podman::container::{create_args, pty_helper, GatePlan};
use crate::podman::env::plan_env;
use crate::podman::profile;

/// Longest grace period a stop may ask for.
const MAX_STOP_SECS: u32 = 3600;

impl Executor {
    pub(super) async fn create(&self, req: ContainerCreate) -> Result<Body, CommandError> {
        const TY: &str = "container.create";
        req.validate().map_err(invalid(TY))?;
        check_reserved_env(TY, &req.env)?;
        if !profile::allowed(req.profile, self.floor) {
            return Err(CommandError::Forbidden {
                ty: TY,
                reason: format!(
                    "profile {} is weaker than this worker's security floor ({}); use {} or stronger",
                    profile::name(req.profile),
                    profile::name(self.floor),
                    profile::name(self.floor),
                ),
            });
        }
        let lock = self.create_lock(&req.container_id);
        let result = {
            let _held = lock.lock().await;
            self.create_locked(&req).await
        };
        drop(lock);
        self.release_create_lock(&req.container_id);
        result
    }

    /// Under the id's lock: return the existing container, or create it.
    ///
    /// The index of managed containers makes the common case one `podman
    /// create`: only an id the index knows (a retried create) or a name
    /// Podman says is taken costs a lookup by label.
    async fn create_locked(&self, req: &ContainerCreate) -> Result<Body, CommandError> {
        const TY: &str = "container.create";
        self.ensure_index(TY).await?;
        if self.is_known(&req.container_id) {
            if let Some(existing) = self.existing(req).await? {
                return Ok(existing);
            }
            self.forget(&req.container_id);
        }
        let workspace = if req.workspace {
            let ws = self
                .workspaces
                .create(&req.container_id)
                .map_err(|source| CommandError::Workspace { ty: TY, source })?;
            Some(ws)
        } else {
            None
        };
        let env = plan_env(&req.env, &[]).map_err(|source| CommandError::Env { ty: TY, source })?;
        let gate = match self.gate_plan(req).await {
            Ok(gate) => gate,
            Err(e) => {
                if workspace.is_some() {
                    let _ = self.workspaces.remove(&req.container_id);
                }
                return Err(e);
            }
        };
        let args = create_args(req, workspace.as_deref(), &env, gate.as_ref());
        let engine_id = match self.podman.create(args).await {
            Ok(id) => id,
            Err(e) => {
                if workspace.is_some() {
                    let _ = self.workspaces.remove(&req.container_id);
                }
                if gate.is_some() {
                    self.egress.close(&req.container_id);
                }
                if e.is_image_unknown() {
                    return Err(CommandError::NotFound {
                        ty: TY,
                        what: format!("image {} ({e})", req.image),
                    });
                }
                if matches!(&e, crate::podman::PodmanError::Failed { stderr, .. } if stderr.contains("already in use"))
                {
                    if let Some(existing) = self.existing(req).await? {
                        return Ok(existing);
                    }
                    return Err(CommandError::Conflict {
                        ty: TY,
                        reason: format!("the name {:?} is taken: {e}", req.name),
                    });
                }
                return Err(CommandError::Engine { ty: TY, source: e });
            }
        };
        tracing::info!(container_id = %req.container_id, %engine_id, profile = profile::name(req.profile), "container created");
        self.remember(&req.container_id, &engine_id);
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok());
        Ok(Body::ContainerCreated(ContainerCreated {
            container: ContainerInfo {
                container_id: req.container_id.clone(),
                tenant_id: req.tenant_id.clone(),
                engine_id,
                name: req.name.clone(),
                image: req.image.clone(),
                state: ContainerState::Created,
                profile: Some(req.profile),
                created_at,
                allowed_domains: gate.as_ref().map(|g| g.list.clone()),
            },
            created: true,
        }))
    }

    /// The egress gate of a Standard or Strict container (`crate::egress`),
    /// serving from now on; None for Open and Offline, and for an empty
    /// list on an agent with no static executable to run as the relay (a
    /// development build), whose containers then reach nothing, as the
    /// list says. A list such an agent cannot serve is refused.
    async fn gate_plan(&self, req: &ContainerCreate) -> Result<Option<GatePlan>, CommandError> {
        const TY: &str = "container.create";
        if !matches!(req.profile, Profile::Standard | Profile::Strict) {
            return Ok(None);
        }
        let Some(relay) = pty_helper() else {
            // Without a relay the container reaches nothing: fine for an
            // empty list, a broken promise for any other.
            if req.allowed_domains.is_empty() {
                return Ok(None);
            }
            return Err(CommandError::Egress {
                ty: TY,
                source: crate::egress::EgressError::NoRelay,
            });
        };
        let command = self
            .podman
            .image_command(&req.image, req.command.as_deref())
            .await
            .map_err(|e| {
                if e.is_image_unknown() {
                    CommandError::NotFound {
                        ty: TY,
                        what: format!("image {} ({e})", req.image),
                    }
                } else {
                    CommandError::Engine { ty: TY, source: e }
                }
            })?;
        if command.is_empty() {
            return Err(CommandError::Invalid {
                ty: TY,
                source: protocol::error::Invalid::new(
                    "command",
                    format!(
                        "image {} has no command and the request names none",
                        req.image
                    ),
                ),
            });
        }
        let list = protocol::domains::check_list(&req.allowed_domains).map_err(invalid(TY))?;
        let dir = self
            .egress
            .open(&req.container_id, &list)
            .map_err(|source| CommandError::Egress { ty: TY, source })?;
        Ok(Some(GatePlan {
            dir: dir.to_string_lossy().into_owned(),
            relay: relay.to_owned(),
            command,
            list,
        }))
    }

    /// The container already labelled with `req`'s id, as a create result
    /// (`created: false`), or None when Podman holds no such container.
    async fn existing(&self, req: &ContainerCreate) -> Result<Option<Body>, CommandError> {
        const TY: &str = "container.create";
        let found = self
            .podman
            .find(&req.container_id)
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?;
        let Some(existing) = found else {
            return Ok(None);
        };
        tracing::info!(container_id = %req.container_id, engine_id = %existing.engine_id, "create retried; returning the existing container");
        if existing.tenant_id != req.tenant_id {
            return Err(CommandError::Conflict {
                ty: TY,
                reason: format!("container {} belongs to another tenant", req.container_id),
            });
        }
        self.remember(&req.container_id, &existing.engine_id);
        Ok(Some(Body::ContainerCreated(ContainerCreated {
            container: existing,
            created: false,
        })))
    }

    pub(super) async fn setup(&self, req: ContainerSetup) -> Result<Body, CommandError> {
        const TY: &str = "container.setup";
        req.validate().map_err(invalid(TY))?;
        let info = self
            .podman
            .find(&req.container_id)
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?
            .ok_or_else(|| not_found(TY, &req.container_id))?;
        let has_token = req.repository.as_ref().is_some_and(|r| r.token.is_some());
        if has_token && info.profile == Some(Profile::Offline) {
            return Err(CommandError::Forbidden {
                ty: TY,
                reason:
                    "an offline container gets no secrets: setup with a repository token is refused"
                        .into(),
            });
        }
        if !self.workspaces.exists(&req.container_id) {
            return Err(CommandError::Conflict {
                ty: TY,
                reason: format!(
                    "container {} was created without a workspace",
                    req.container_id
                ),
            });
        }
        let dir = self.workspaces.path(&req.container_id);
        let git = |source| CommandError::Git { ty: TY, source };
        let commit = match &req.repository {
            // A retried setup finds its clone done.
            Some(_) if dir.join(".git").exists() => Some(self.git.head(&dir).await.map_err(git)?),
            Some(repo) => Some(
                self.git
                    .clone_into(
                        &repo.url,
                        repo.branch.as_deref(),
                        repo.token.as_deref(),
                        &dir,
                    )
                    .await
                    .map_err(git)?,
            ),
            None => None,
        };
        let workspaces = self.workspaces.clone();
        let id = req.container_id.clone();
        let files = req.files;
        let written = smol::unblock(move || {
            for f in &files {
                workspaces.write_file(
                    &id,
                    &f.path,
                    f.content.as_bytes(),
                    f.mode.unwrap_or(0o644),
                )?;
            }
            Ok(files.len())
        })
        .await
        .map_err(|source| CommandError::Workspace { ty: TY, source })?;
        Ok(Body::ContainerSetupDone(ContainerSetupDone {
            commit,
            files_written: u32::try_from(written).unwrap_or(u32::MAX),
        }))
    }

    pub(super) async fn start(&self, req: ContainerRef) -> Result<Body, CommandError> {
        const TY: &str = "container.start";
        v::id("containerId", &req.container_id).map_err(invalid(TY))?;
        let engine_id = self.resolve(TY, &req.container_id).await?;
        self.podman
            .start(&engine_id)
            .await
            .map_err(|e| self.engine_error(TY, &req.container_id, e))?;
        Ok(Body::ContainerStarted(ContainerStatus {
            container_id: req.container_id,
            state: ContainerState::Running,
        }))
    }

    pub(super) async fn stop(&self, req: ContainerStop) -> Result<Body, CommandError> {
        const TY: &str = "container.stop";
        v::id("containerId", &req.container_id).map_err(invalid(TY))?;
        let secs = req.timeout_secs.unwrap_or(10);
        if secs > MAX_STOP_SECS {
            return Err(CommandError::Invalid {
                ty: TY,
                source: protocol::error::Invalid::new("timeoutSecs", "must be 0 to 3600"),
            });
        }
        let engine_id = self.resolve(TY, &req.container_id).await?;
        // Terminals ending from here on end because of this stop.
        self.terminals.container_stopping(&req.container_id, true);
        let stopped = self
            .podman
            .stop(&engine_id, Duration::from_secs(u64::from(secs)))
            .await;
        if stopped.is_err() {
            self.terminals.container_stopping(&req.container_id, false);
        }
        stopped.map_err(|e| self.engine_error(TY, &req.container_id, e))?;
        Ok(Body::ContainerStopped(ContainerStatus {
            container_id: req.container_id,
            state: ContainerState::Exited,
        }))
    }

    /// Remove the container and its workspace. An unknown id still has any
    /// leftover workspace deleted, then answers `not_found`.
    pub(super) async fn remove(&self, req: ContainerRemove) -> Result<Body, CommandError> {
        const TY: &str = "container.remove";
        v::id("containerId", &req.container_id).map_err(invalid(TY))?;
        let ws = |source| CommandError::Workspace { ty: TY, source };
        let engine_id = match self.resolve(TY, &req.container_id).await {
            Ok(id) => id,
            Err(e @ CommandError::NotFound { .. }) => {
                self.egress.close(&req.container_id);
                self.workspaces.remove(&req.container_id).map_err(ws)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.terminals.container_stopping(&req.container_id, true);
        let removed = self.podman.remove(&engine_id, req.force).await;
        if removed.as_ref().is_err_and(|e| !e.is_no_such_container()) {
            self.terminals.container_stopping(&req.container_id, false);
        }
        match removed {
            Ok(()) => {}
            Err(e) if e.is_no_such_container() => {
                self.forget(&req.container_id);
                self.egress.close(&req.container_id);
                self.workspaces.remove(&req.container_id).map_err(ws)?;
                return Err(not_found(TY, &req.container_id));
            }
            Err(e) => return Err(self.engine_error(TY, &req.container_id, e)),
        }
        self.forget(&req.container_id);
        self.egress.close(&req.container_id);
        self.workspaces.remove(&req.container_id).map_err(ws)?;
        tracing::info!(container_id = %req.container_id, %engine_id, "container removed");
        Ok(Body::ContainerRemoved(ContainerStatus {
            container_id: req.container_id,
            state: ContainerState::Removed,
        }))
    }

    pub(super) async fn list(&self, req: ContainerList) -> Result<Body, CommandError> {
        const TY: &str = "container.list";
        v::id("tenantId", &req.tenant_id).map_err(invalid(TY))?;
        let containers = self
            .podman
            .list_managed(Some(&req.tenant_id))
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?;
        Ok(Body::ContainerListed(ContainerListing { containers }))
    }

    pub(super) async fn list_all(&self) -> Result<Body, CommandError> {
        const TY: &str = "container.list-all";
        let containers = self
            .podman
            .list_all()
            .await
            .map_err(|source| CommandError::Engine { ty: TY, source })?;
        Ok(Body::ContainerListedAll(ContainerListing { containers }))
    }

    /// CPU, memory and pids from `podman stats`; `diskUsed` is the
    /// container's writable layer from `podman ps --size` (the workspace is
    /// not walked: it can be large, and it is the tenant's own data).
    pub(super) async fn stats(&self, req: ContainerStatsRequest) -> Result<Body, CommandError> {
        const TY: &str = "container.stats";
        let engine = |source| CommandError::Engine { ty: TY, source };
        if let Some(id) = &req.container_id {
            v::id("containerId", id).map_err(invalid(TY))?;
        }
        let all = self.podman.list_all().await.map_err(engine)?;
        if let Some(id) = &req.container_id {
            if !all.iter().any(|c| &c.container_id == id) {
                return Err(not_found(TY, id));
            }
        }
        let running: Vec<&ContainerInfo> = all
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .filter(|c| {
                req.container_id
                    .as_ref()
                    .is_none_or(|id| &c.container_id == id)
            })
            .collect();
        let ids: Vec<&str> = running.iter().map(|c| c.engine_id.as_str()).collect();
        let raw = self.podman.stats(&ids).await.map_err(engine)?;
        let sizes = if raw.is_empty() {
            Default::default()
        } else {
            self.podman.layer_sizes().await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no layer sizes; diskUsed omitted");
                Default::default()
            })
        };
        let stats = raw
            .into_iter()
            .filter_map(|(engine_id, mut s)| {
                let c = running.iter().find(|c| c.engine_id == engine_id)?;
                s.container_id = c.container_id.clone();
                s.disk_used = sizes.get(&engine_id).copied();
                s.history = self.usage.of(&c.container_id);
                Some(s)
            })
            .collect();
        Ok(Body::ContainerStatsResult(ContainerStatsList { stats }))
    }
}
