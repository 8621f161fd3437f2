//! The real-Podman rig for the command-layer tests: an [`Executor`] driving
//! the real CLI with the project's containers.conf, a scratch data dir, a
//! unique tenant per test, and cleanup of every container that tenant owns
//! (on drop, so also when a test fails). Podman is required: a missing one
//! fails the tests, never skips them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use agent::{Executor, Limits, Podman};
use protocol::container::{ContainerCreate, ContainerCreated, Profile};
use protocol::exec::{Exec, ExecResult};
use protocol::{Body, ErrorCode};

pub const IMAGE: &str = "localhost/crops-test/busybox:latest";

pub fn containers_conf() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/podman/containers.conf"
    )
    .to_owned()
}

/// `podman args…` with the project's containers.conf; panics with the whole
/// story (argv, status, stdout, stderr) when it fails and `must` is set.
pub fn podman(args: &[&str], must: bool) -> std::process::Output {
    let out = Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", containers_conf())
        .output()
        .expect("podman must be installed for these tests");
    if must && !out.status.success() {
        panic!(
            "podman {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The test image, built once per test binary if missing.
pub fn ensure_image() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if podman(&["image", "exists", IMAGE], false).status.success() {
            return;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/podman/image.sh");
        let out = Command::new(script)
            .env("CONTAINERS_CONF", containers_conf())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "image.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

pub fn unique(tag: &str) -> String {
    format!("it-{tag}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// One test's executor, tenant and data dir; removes what it made on drop.
pub struct Rig {
    pub ex: Arc<Executor>,
    pub tenant: String,
    pub data: PathBuf,
}

impl Rig {
    pub fn new(tag: &str) -> Self {
        Self::with(tag, Profile::Open, Limits::default(), None)
    }

    pub fn with(tag: &str, floor: Profile, limits: Limits, git: Option<agent::Git>) -> Self {
        ensure_image();
        let data = std::env::temp_dir().join(unique(tag));
        let podman = Podman::new("podman")
            .with_env(vec![("CONTAINERS_CONF".into(), containers_conf())])
            .with_limits(limits);
        let mut ex = Executor::new(podman, &data, floor);
        if let Some(g) = git {
            ex = ex.with_git(g);
        }
        Self {
            ex: Arc::new(ex),
            tenant: unique(tag),
            data,
        }
    }

    pub async fn call(&self, body: Body) -> Body {
        self.ex.call(body).await
    }

    pub fn create_req(&self, id: &str, profile: Profile, command: &[&str]) -> ContainerCreate {
        ContainerCreate {
            container_id: id.into(),
            tenant_id: self.tenant.clone(),
            name: id.into(),
            image: IMAGE.into(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
            workspace: true,
            profile,
            allowed_domains: Vec::new(),
        }
    }

    /// Create and start a container running `sleep 3600`; its engine id.
    pub async fn running(&self, id: &str, profile: Profile) -> String {
        let created = expect_created(
            self.call(Body::ContainerCreate(self.create_req(
                id,
                profile,
                &["sleep", "3600"],
            )))
            .await,
        );
        let start = Body::ContainerStart(protocol::container::ContainerRef {
            container_id: id.into(),
        });
        let reply = self.call(start).await;
        assert!(
            matches!(reply, Body::ContainerStarted(_)),
            "start {id}: {reply:?}"
        );
        created.container.engine_id
    }

    pub async fn exec(&self, id: &str, argv: &[&str]) -> ExecResult {
        let reply = self.call(exec_body(id, argv)).await;
        match reply {
            Body::ExecDone(r) => r,
            other => panic!("exec {argv:?} in {id}: {other:?}"),
        }
    }

    pub fn workspace(&self, id: &str) -> PathBuf {
        self.data.join("workspaces").join(id)
    }

    /// `podman inspect` of one container, as JSON.
    pub fn inspect(&self, engine_id: &str) -> serde_json::Value {
        let out = podman(&["inspect", "--format", "json", "--", engine_id], true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let filter = format!("label=crops.tenant={}", self.tenant);
        let out = podman(&["ps", "--all", "--quiet", "--filter", &filter], false);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            podman(&["rm", "--force", "-t", "0", "--", id], false);
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub fn exec_body(id: &str, argv: &[&str]) -> Body {
    Body::Exec(Exec {
        container_id: id.into(),
        command: argv.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        workdir: None,
        timeout_secs: Some(60),
    })
}

pub fn expect_created(reply: Body) -> ContainerCreated {
    match reply {
        Body::ContainerCreated(c) => c,
        other => panic!("expected container.create.result, got {other:?}"),
    }
}

/// The error code and message of an error reply.
pub fn error_of(reply: &Body) -> (ErrorCode, String) {
    match reply {
        Body::Error(e) => (e.code, e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Engine ids of the containers labelled with `container_id`.
pub fn engine_ids_labelled(container_id: &str) -> Vec<String> {
    let filter = format!("label=crops.container-id={container_id}");
    let out = podman(
        &["ps", "--all", "--quiet", "--no-trunc", "--filter", &filter],
        true,
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A bare git repository with one commit on `main` holding README.md.
pub fn git_repo(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.md"), "hello from the repo\n").unwrap();
    let git = |args: &[&str], cwd: &Path| {
        let out = Command::new("git")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"], &src);
    git(&["add", "README.md"], &src);
    git(
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
        &src,
    );
    let bare = dir.join("repo.git");
    git(
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
        dir,
    );
    bare
}
