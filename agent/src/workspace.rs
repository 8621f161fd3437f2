//! Workspace directories on the host: `<data dir>/workspaces/<containerId>`,
//! bind-mounted at `/workspace` in the container. Creates and removes them,
//! and writes task files into them without ever leaving the directory.
//!
//! A removal renames the directory into `<data dir>/workspaces.trash/`
//! (one system call, so the workspace is gone from its path when the
//! remove answers) and deletes the contents on a blocking thread
//! afterwards; a removal of thousands of files never delays the reply, and
//! whatever an interrupted deletion left in the trash goes at the next
//! removal or start-up.
//!
//! Rootless, container root is the agent's user, so whatever the agent
//! writes into a workspace is root's in the container and what container
//! root writes is the agent's. A container user other than root writes
//! files of the user's subordinate ids, which the agent cannot delete
//! itself: those removed workspaces are deleted through `podman unshare rm
//! -rf` (in the user namespace, where the agent's user is root), so a
//! removal never leaves them behind ([`Workspaces::reclaiming_with`]).
//!
//! The container can write into its workspace, so a task file's path may meet
//! a symlink planted from inside. Files are therefore written with `openat`
//! one component at a time from a descriptor of the workspace root, each with
//! `O_NOFOLLOW`: a symlink anywhere on the path is refused, never followed
//! (no check-then-open race).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::podman::Podman;

/// Why a workspace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data dir {path} cannot be mounted: it must not contain ':' or ','")]
    Unmountable { path: PathBuf },
    #[error(
        "task file {path:?}: {component:?} is a symlink or not a directory; refusing to follow it"
    )]
    Escape { path: String, component: String },
    #[error("task file {path:?}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {container_id} has no workspace on this worker")]
    Missing { container_id: String },
}

/// The agent's data directory, holding `workspaces/`.
#[derive(Debug, Clone)]
pub struct Workspaces {
    root: PathBuf,
    trash: PathBuf,
    /// Rootless: the Podman whose `unshare` deletes what the agent may not.
    reclaim: Option<Podman>,
}

impl Workspaces {
    /// Workspaces under `<data_dir>/workspaces`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("workspaces"),
            trash: data_dir.join("workspaces.trash"),
            reclaim: None,
        }
    }

    /// Delete what the agent may not (files of subordinate ids, rootless)
    /// with `podman unshare` of `podman`; `None`: as root, never needed.
    pub fn reclaiming_with(mut self, podman: Option<Podman>) -> Self {
        self.reclaim = podman;
        self
    }

    /// The directory of `container_id` (a validated id: no `/`, no `..`).
    pub fn path(&self, container_id: &str) -> PathBuf {
        self.root.join(container_id)
    }

    /// Create the directory (mode 0755) and return it as a mount source.
    pub fn create(&self, container_id: &str) -> Result<String, WorkspaceError> {
        let path = self.path(container_id);
        let text = path.display().to_string();
        if text.contains([':', ',']) {
            return Err(WorkspaceError::Unmountable { path });
        }
        // One mkdir in the common case; the parents only the first time.
        let made = match std::fs::create_dir(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(&path),
            other => other,
        };
        made.map_err(|source| WorkspaceError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(text)
    }

    /// Empty the trash on a blocking thread (after each removal, and at
    /// start-up for what an agent that died mid-deletion left).
    pub fn empty_trash_later(&self) {
        let trash = self.trash.clone();
        let reclaim = self.reclaim.clone();
        smol::spawn(async move {
            let denied = smol::unblock(move || empty_trash(&trash)).await;
            let Some(podman) = reclaim else { return };
            for path in denied {
                if let Err(error) = podman.unshare_remove(&path).await {
                    tracing::warn!(path = %path.display(), %error, "cannot delete a removed workspace");
                }
            }
        })
        .detach();
    }

    /// The trash directory removed workspaces are moved to.
    #[cfg(test)]
    pub fn trash(&self) -> &Path {
        &self.trash
    }

    pub fn exists(&self, container_id: &str) -> bool {
        self.path(container_id).is_dir()
    }

    /// Delete the directory and everything in it (symlinks are removed, not
    /// followed). A missing directory is fine. The directory leaves its
    /// path at once; its contents are deleted in the background (module
    /// docs), or here if it cannot be moved to the trash.
    pub fn remove(&self, container_id: &str) -> Result<(), WorkspaceError> {
        let path = self.path(container_id);
        let gone = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(WorkspaceError::Io {
                path: path.clone(),
                source: e,
            }),
            _ => Ok(()),
        };
        let moved = self
            .trash
            .join(format!("{container_id}.{:016x}", fastrand::u64(..)));
        let mut renamed = std::fs::rename(&path, &moved);
        if renamed
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            && path.exists()
        {
            // The trash itself is missing: make it, then try once more.
            renamed =
                std::fs::create_dir_all(&self.trash).and_then(|()| std::fs::rename(&path, &moved));
        }
        match renamed {
            Ok(()) => {
                self.empty_trash_later();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Another filesystem, permissions: delete in place.
            Err(_) => gone(std::fs::remove_dir_all(&path)),
        }
    }

    /// Write `content` to `rel` (a validated relative path) inside the
    /// workspace of `container_id` with permission bits `mode`, creating
    /// parent directories; refuses any symlink on the way.
    pub fn write_file(
        &self,
        container_id: &str,
        rel: &str,
        content: &[u8],
        mode: u32,
    ) -> Result<(), WorkspaceError> {
        let root = self.path(container_id);
        let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut dir: OwnedFd =
            nix::fcntl::open(&root, dir_flags, Mode::empty()).map_err(|e| match e {
                Errno::ENOENT => WorkspaceError::Missing {
                    container_id: container_id.to_owned(),
                },
                e => WorkspaceError::Io {
                    path: root.clone(),
                    source: e.into(),
                },
            })?;
        let parts: Vec<&str> = rel.split('/').collect();
        let Some((file, parents)) = parts.split_last() else {
            return Err(escape(rel, rel));
        };
        let write_err = |e: Errno| WorkspaceError::Write {
            path: rel.to_owned(),
            source: e.into(),
        };
        for part in parents {
            match mkdirat(dir.as_fd(), *part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(write_err(e)),
            }
            dir = match openat(dir.as_fd(), *part, dir_flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(escape(rel, part)),
                Err(e) => return Err(write_err(e)),
            };
        }
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC;
        let fd = match openat(
            dir.as_fd(),
            *file,
            flags,
            Mode::from_bits_truncate(mode & 0o777),
        ) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(escape(rel, file)),
            Err(e) => return Err(write_err(e)),
        };
        let mut f = std::fs::File::from(fd);
        let io_err = |source| WorkspaceError::Write {
            path: rel.to_owned(),
            source,
        };
        f.write_all(content).map_err(io_err)?;
        // The umask may have narrowed the mode at creation; an existing file
        // keeps its old one: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(io_err)?;
        Ok(())
    }
}

fn escape(path: &str, component: &str) -> WorkspaceError {
    WorkspaceError::Escape {
        path: path.to_owned(),
        component: component.to_owned(),
    }
}

/// Delete everything in the trash (removed workspaces), logging what
/// cannot be deleted; it is tried again at the next removal. Returns the
/// entries the agent was not permitted to delete (for `podman unshare`).
fn empty_trash(trash: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(trash) else {
        return Vec::new();
    };
    let mut denied = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied.push(path),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), %error, "cannot delete a removed workspace");
            }
            _ => {}
        }
    }
    denied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (Workspaces, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "crops-ws-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        (Workspaces::new(&dir), dir)
    }

    #[test]
    fn files_are_written_with_parents_and_mode() {
        let (ws, dir) = scratch();
        ws.create("c1").unwrap();
        ws.write_file("c1", "a/b/task.md", b"hello", 0o600).unwrap();
        ws.write_file("c1", "a/b/task.md", b"again", 0o640).unwrap();
        let p = ws.path("c1").join("a/b/task.md");
        assert_eq!(std::fs::read(&p).unwrap(), b"again");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        ws.remove("c1").unwrap();
        assert!(!ws.exists("c1"));
        ws.remove("c1").unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let (ws, dir) = scratch();
        ws.create("c2").unwrap();
        let outside = dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let root = ws.path("c2");
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("file")).unwrap();
        for rel in ["link/x", "file", "link/deeper/x"] {
            let err = ws.write_file("c2", rel, b"x", 0o644).unwrap_err();
            assert!(matches!(err, WorkspaceError::Escape { .. }), "{rel}: {err}");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Removing the workspace removes the links, not their targets.
        ws.remove("c2").unwrap();
        assert!(outside.is_dir());
        assert!(matches!(
            ws.write_file("c2", "x", b"", 0o644),
            Err(WorkspaceError::Missing { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_removed_workspace_leaves_its_path_at_once_and_the_trash_empties() {
        let (ws, dir) = scratch();
        let kept = dir.join("kept");
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::write(kept.join("precious"), b"x").unwrap();
        for id in ["c3", "c4"] {
            ws.create(id).unwrap();
            ws.write_file(id, "deep/er/file", b"data", 0o644).unwrap();
            std::os::unix::fs::symlink(&kept, ws.path(id).join("link")).unwrap();
            ws.remove(id).unwrap();
            assert!(
                !ws.exists(id),
                "{id} gone from its path when remove returns"
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_dir(ws.trash()).unwrap().next().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the trash never emptied"
            );
            std::thread::yield_now();
        }
        assert!(
            kept.join("precious").is_file(),
            "links removed, not followed"
        );
        // A workspace made again under a removed id starts empty.
        ws.create("c3").unwrap();
        assert_eq!(std::fs::read_dir(ws.path("c3")).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
