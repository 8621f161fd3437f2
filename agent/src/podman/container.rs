//! The container verbs: argv builders (pure functions, unit-tested for what
//! would run) and the [`Podman`] methods that run them: find by label,
//! create, start, stop, remove, exec, stats, build.
//!
//! Rules every builder follows: user values come after `--` where Podman
//! takes positionals (image, container, command); every value was validated
//! by `protocol::check` first; a request's env reaches the container only
//! through a private `--env-file` ([`super::env`]): never argv, never the
//! podman process's own environment.
//!
//! The PTY helper: when the agent knows a static executable of itself
//! ([`set_pty_helper`], done at start-up by a static agent), every create
//! bind-mounts it read-only at [`PTY_HELPER_PATH`] and labels the container
//! `crops.pty=2`, so a terminal opened later runs its PTY inside the
//! container (the agent's `terminal` module). The label's value is the version of the
//! helper's contract ([`PTY_HELPER_VERSION`]): 1 was a helper relaying the
//! terminal over pipes, 2 hands the PTY master to the agent. An agent uses
//! the helper only in containers labelled with the version it speaks and
//! gives every other container a host PTY, so an upgrade never breaks a
//! terminal into a container made before it. A bind mount needs no writable root
//! filesystem, so this holds under every profile, Strict's `--read-only`
//! included. The host file must stay at its path for the container's life
//! (a restart mounts it again); replacing it in place, as an upgrade does,
//! is fine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use protocol::container::{ContainerCreate, ContainerInfo, ContainerStats};

use super::env::EnvPlan;
use super::parse::{PsEntry, StatsEntry};
use super::{profile, Call, Podman, PodmanError, LABEL_CONTAINER_ID, LABEL_MANAGED};
use super::{LABEL_ALLOWED, LABEL_PROFILE, LABEL_TENANT};
use crate::egress::{self, relay};

const QUICK: Duration = Duration::from_secs(30);
/// `podman create` may have to set up storage for a big image.
const CREATE: Duration = Duration::from_secs(120);
/// Added to a stop's grace period for Podman's own work.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// Where the workspace is mounted in every container.
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// Where the PTY helper is mounted in a container that has it.
pub const PTY_HELPER_PATH: &str = "/.crops/crops-pty";
/// Label of a container created with the PTY helper mounted; its value is
/// [`PTY_HELPER_VERSION`].
pub const LABEL_PTY: &str = "crops.pty";
/// The helper contract this agent speaks (see the module docs).
pub const PTY_HELPER_VERSION: &str = "2";

/// Label of a container whose entrypoint is the egress relay.
pub const LABEL_EGRESS: &str = "crops.egress";

/// The static executable mounted as the PTY helper, once set.
static PTY_HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Why an executable cannot serve as the PTY helper.
#[derive(Debug, thiserror::Error)]
pub enum PtyHelperError {
    #[error("the PTY helper {0} must be an absolute path without ':' or ','")]
    BadPath(PathBuf),
    #[error("the PTY helper {path}: {source}")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the PTY helper is already {0}")]
    AlreadySet(PathBuf),
}

/// Mount `exe` (a **statically linked** build of this agent: it runs inside
/// containers whatever their libc) as the PTY helper of every container
/// created from now on. Process-wide, set once: by `main` for a static
/// agent, or by whatever embeds the library.
pub fn set_pty_helper(exe: &Path) -> Result<(), PtyHelperError> {
    let text = exe.to_string_lossy();
    if !exe.is_absolute() || text.contains(':') || text.contains(',') {
        return Err(PtyHelperError::BadPath(exe.to_owned()));
    }
    let meta = std::fs::metadata(exe).map_err(|source| PtyHelperError::Missing {
        path: exe.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(PtyHelperError::Missing {
            path: exe.to_owned(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    }
    let set = PTY_HELPER.get_or_init(|| exe.to_owned());
    if set == exe {
        Ok(())
    } else {
        Err(PtyHelperError::AlreadySet(set.clone()))
    }
}

/// The executable mounted as the PTY helper, if any.
pub fn pty_helper() -> Option<&'static Path> {
    PTY_HELPER.get().map(PathBuf::as_path)
}

/// How a Standard or Strict container reaches its egress gate
/// (`crate::egress`): the gate's directory, the relay executable (the
/// agent's static self), the whole command the relay then runs (the
/// image's entrypoint and the request's or image's command) and the
/// checked list the gate enforces.
#[derive(Debug, Clone)]
pub struct GatePlan {
    pub dir: String,
    pub relay: PathBuf,
    pub command: Vec<String>,
    pub list: Vec<String>,
}

/// `podman create` for a validated request. `workspace` is the host
/// directory to mount at `/workspace` (checked free of `:` and `,`); the
/// PTY helper is mounted if one is set ([`set_pty_helper`]); `gate` makes
/// the egress relay the entrypoint.
pub fn create_args(
    req: &ContainerCreate,
    workspace: Option<&str>,
    env: &EnvPlan,
    gate: Option<&GatePlan>,
) -> Vec<String> {
    create_args_with(req, workspace, env, pty_helper(), gate)
}

/// [`create_args`] with the PTY helper (`helper`) named.
pub fn create_args_with(
    req: &ContainerCreate,
    workspace: Option<&str>,
    env: &EnvPlan,
    helper: Option<&Path>,
    gate: Option<&GatePlan>,
) -> Vec<String> {
    let mut a: Vec<String> = ["create", "--pull", "never", "--name", &req.name]
        .map(str::to_owned)
        .to_vec();
    let mut label = |k: &str, v: &str| a.extend(["--label".to_owned(), format!("{k}={v}")]);
    label(LABEL_MANAGED, "true");
    label(LABEL_TENANT, &req.tenant_id);
    label(LABEL_CONTAINER_ID, &req.container_id);
    label(LABEL_PROFILE, profile::name(req.profile));
    for (k, v) in &req.labels {
        label(k, v);
    }
    if helper.is_some() {
        label(LABEL_PTY, PTY_HELPER_VERSION);
    }
    a.extend(env.args.iter().cloned());
    if let Some(ws) = workspace {
        a.extend(["--volume".to_owned(), format!("{ws}:{WORKSPACE_MOUNT}:Z")]);
    }
    if let Some(exe) = helper {
        // Read-only, and never relabelled: it is the agent's own file.
        let exe = exe.display();
        a.extend(["--volume".to_owned(), format!("{exe}:{PTY_HELPER_PATH}:ro")]);
    }
    a.extend(profile::flags(req.profile));
    let mut command = req.command.as_ref();
    if let Some(gate) = gate {
        let (dir, relay) = (&gate.dir, gate.relay.display());
        a.extend(["--label".to_owned(), format!("{LABEL_EGRESS}=1")]);
        let list = gate.list.join(",");
        a.extend(["--label".to_owned(), format!("{LABEL_ALLOWED}={list}")]);
        a.extend(["--volume".to_owned(), format!("{dir}:{}:ro", egress::MOUNT)]);
        a.extend(["--volume".to_owned(), format!("{relay}:{}:ro", relay::PATH)]);
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            a.extend(["--env".to_owned(), format!("{key}={}", relay::PROXY_URL)]);
        }
        for key in ["NO_PROXY", "no_proxy"] {
            a.extend(["--env".to_owned(), format!("{key}=localhost,127.0.0.1,::1")]);
        }
        a.extend([
            "--entrypoint".to_owned(),
            format!(r#"["{}","--"]"#, relay::PATH),
        ]);
        command = Some(&gate.command);
    }
    a.push("--".to_owned());
    a.push(req.image.clone());
    if let Some(cmd) = command {
        a.extend(cmd.iter().cloned());
    }
    a
}

/// What an exec needs: a validated command in a known container.
#[derive(Debug, Clone)]
pub struct ExecSpec<'a> {
    pub engine_id: &'a str,
    pub command: &'a [String],
    pub workdir: Option<&'a str>,
}

/// `podman exec [env] [--workdir W] -- ENGINE_ID argv…`.
pub fn exec_args(spec: &ExecSpec<'_>, env: &EnvPlan) -> Vec<String> {
    let mut a = vec!["exec".to_owned()];
    a.extend(env.args.iter().cloned());
    if let Some(w) = spec.workdir {
        a.extend(["--workdir".to_owned(), w.to_owned()]);
    }
    a.push("--".to_owned());
    a.push(spec.engine_id.to_owned());
    a.extend(spec.command.iter().cloned());
    a
}

/// `podman build` of `containerfile` into `tag`, with an empty context.
pub fn build_args(
    tag: &str,
    file: &str,
    context: &str,
    iidfile: &str,
    tenant: Option<&str>,
) -> Vec<String> {
    let mut a: Vec<String> = ["build", "--pull=never", "--iidfile", iidfile, "--label"]
        .map(str::to_owned)
        .to_vec();
    a.push(format!("{LABEL_MANAGED}=true"));
    if let Some(t) = tenant {
        a.extend(["--label".to_owned(), format!("{LABEL_TENANT}={t}")]);
    }
    a.extend(["-t", tag, "-f", file, "--", context].map(str::to_owned));
    a
}

/// The part of `podman image inspect` a gate's command needs.
#[derive(Debug, Default, serde::Deserialize)]
struct ImageConfig {
    #[serde(rename = "Config", default)]
    config: ImageRun,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ImageRun {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

impl Podman {
    /// The managed container labelled `crops.container-id=<id>`, if any.
    pub async fn find(&self, container_id: &str) -> Result<Option<ContainerInfo>, PodmanError> {
        Ok(self.find_with_helper(container_id).await?.map(|(c, _)| c))
    }

    /// [`Self::find`], and whether the container has a PTY helper this
    /// agent speaks to (its `crops.pty` label), from the same `podman ps`.
    pub async fn find_with_helper(
        &self,
        container_id: &str,
    ) -> Result<Option<(ContainerInfo, bool)>, PodmanError> {
        let by_id = format!("label={LABEL_CONTAINER_ID}={container_id}");
        let managed = format!("label={LABEL_MANAGED}=true");
        let args = [
            "ps", "--all", "--format", "json", "--filter", &managed, "--filter", &by_id,
        ];
        let out = self.checked(Call::new(strings(&args), QUICK)).await?;
        let entries: Option<Vec<serde_json::Value>> = super::parse_json("ps", &out)?;
        Ok(entries.unwrap_or_default().into_iter().find_map(|v| {
            let helper = v["Labels"][LABEL_PTY].as_str() == Some(PTY_HELPER_VERSION);
            let info = serde_json::from_value::<PsEntry>(v).ok()?.into_info()?;
            (info.container_id == container_id).then_some((info, helper))
        }))
    }

    /// The command a container of `image` runs by default: its entrypoint,
    /// then `command` if given, else the image's own `CMD`.
    pub async fn image_command(
        &self,
        image: &str,
        command: Option<&[String]>,
    ) -> Result<Vec<String>, PodmanError> {
        let args = strings(&["image", "inspect", "--format", "json", "--", image]);
        let out = self.checked(Call::new(args, QUICK)).await?;
        let found: Option<Vec<ImageConfig>> = super::parse_json("image inspect", &out)?;
        let config = found
            .and_then(|v| v.into_iter().next())
            .map(|i| i.config)
            .unwrap_or_default();
        let mut argv = config.entrypoint.unwrap_or_default();
        match command {
            Some(c) => argv.extend(c.iter().cloned()),
            None => argv.extend(config.cmd.unwrap_or_default()),
        }
        Ok(argv)
    }

    /// Run `podman create` (its env is in the plan's `--env-file`); the new
    /// engine id.
    pub async fn create(&self, args: Vec<String>) -> Result<String, PodmanError> {
        let out = self.checked(Call::new(args, CREATE)).await?;
        let id = String::from_utf8_lossy(&out).trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PodmanError::Unexpected {
                verb: "create".into(),
                detail: format!("not a container id: {id:?}"),
            });
        }
        Ok(id)
    }

    pub async fn start(&self, engine_id: &str) -> Result<(), PodmanError> {
        let call = Call::new(strings(&["start", "--", engine_id]), QUICK).lifecycle();
        self.checked(call).await.map(drop)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, engine_id: &str, grace: Duration) -> Result<(), PodmanError> {
        let secs = grace.as_secs().to_string();
        let call = Call::new(
            strings(&["stop", "-t", &secs, "--", engine_id]),
            grace + STOP_SLACK,
        );
        self.checked(call.lifecycle()).await.map(drop)
    }

    /// `podman rm [--force -t 0]`.
    pub async fn remove(&self, engine_id: &str, force: bool) -> Result<(), PodmanError> {
        let args = if force {
            strings(&["rm", "--force", "-t", "0", "--", engine_id])
        } else {
            strings(&["rm", "--", engine_id])
        };
        self.checked(Call::new(args, QUICK + STOP_SLACK).lifecycle())
            .await
            .map(drop)
    }

    /// Resource use of running containers, keyed by engine id. An empty
    /// list asks nothing (`podman stats` without names means *every* container).
    pub async fn stats(
        &self,
        engine_ids: &[&str],
    ) -> Result<Vec<(String, ContainerStats)>, PodmanError> {
        if engine_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = strings(&[
            "stats",
            "--no-stream",
            "--no-reset",
            "--format",
            "{{json .ContainerStats}}",
            "--",
        ]);
        args.extend(engine_ids.iter().map(|s| (*s).to_owned()));
        let out = self.checked(Call::new(args, QUICK)).await?;
        let mut stats = Vec::new();
        for line in String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let e: StatsEntry = super::parse_json("stats", line.as_bytes())?;
            stats.push((
                e.container_id,
                ContainerStats {
                    container_id: String::new(),
                    cpu_percent: if e.cpu.is_finite() {
                        e.cpu.max(0.0)
                    } else {
                        0.0
                    },
                    memory_used: e.mem_usage,
                    memory_limit: (e.mem_limit > 0).then_some(e.mem_limit),
                    disk_used: None,
                    pids: u32::try_from(e.pids).unwrap_or(u32::MAX),
                    history: Vec::new(),
                },
            ));
        }
        Ok(stats)
    }

    /// Bytes in each managed container's writable layer (`podman ps --size`),
    /// keyed by engine id.
    pub async fn layer_sizes(&self) -> Result<BTreeMap<String, u64>, PodmanError> {
        let managed = format!("label={LABEL_MANAGED}=true");
        let args = [
            "ps", "--all", "--size", "--format", "json", "--filter", &managed,
        ];
        let out = self.checked(Call::new(strings(&args), QUICK)).await?;
        let entries: Option<Vec<PsEntry>> = super::parse_json("ps", &out)?;
        Ok(entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.size.map(|s| (e.id, s.rw_size)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::container::Profile;

    #[test]
    fn the_pty_helper_is_mounted_read_only_and_labelled_only_when_set() {
        let req = ContainerCreate {
            container_id: "c-1".into(),
            tenant_id: "t".into(),
            name: "c-1".into(),
            image: "img".into(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            command: None,
            workspace: false,
            profile: Profile::Strict,
            allowed_domains: Vec::new(),
        };
        let env = EnvPlan::default();
        let with =
            create_args_with(&req, None, &env, Some(Path::new("/opt/crops-agent")), None).join(" ");
        assert!(with.contains("--label crops.pty=2"), "{with}");
        assert!(
            with.contains("--volume /opt/crops-agent:/.crops/crops-pty:ro --network"),
            "read-only, not relabelled, before the profile's flags: {with}"
        );
        let without = create_args_with(&req, None, &env, None, None).join(" ");
        assert!(
            !without.contains("crops.pty") && !without.contains("/.crops/"),
            "{without}"
        );
        let gate = GatePlan {
            dir: "/data/egress/c-1".into(),
            relay: "/opt/crops-agent".into(),
            command: vec!["/entry".into(), "--flag".into(), "cmd".into()],
            list: vec!["pypi.org".into(), "*.example.com".into()],
        };
        let gated = create_args_with(&req, None, &env, None, Some(&gate)).join(" ");
        assert!(
            gated.contains(
                "--volume /data/egress/c-1:/.crops/egress:ro --volume /opt/crops-agent:/.crops/crops-egress:ro"
            ),
            "{gated}"
        );
        assert!(
            gated.contains("--label crops.allowed-domains=pypi.org,*.example.com"),
            "the list goes with the container, for its inventory: {gated}"
        );
        assert!(
            gated.contains("--env HTTPS_PROXY=http://127.0.0.1:3128"),
            "{gated}"
        );
        assert!(
            gated.ends_with(
                r#"--entrypoint ["/.crops/crops-egress","--"] -- img /entry --flag cmd"#
            ),
            "the relay runs the image's entrypoint and command: {gated}"
        );
        for bad in ["relative/agent", "/a:b/agent", "/a,b/agent"] {
            assert!(matches!(
                set_pty_helper(Path::new(bad)),
                Err(PtyHelperError::BadPath(_))
            ));
        }
    }
}
