//! The host's `git`, for `container.setup`: a shallow clone into a workspace
//! directory and the commit it checked out. The only module that spawns git.
//!
//! argv is `git clone --depth 1 [--branch B] -- URL DIR` (URL and branch
//! validated by `protocol::check`, so neither can be read as an option; a
//! "dumb" HTTP server, which cannot serve shallow clones, gets the same
//! without `--depth 1`), with
//! stdin closed, `GIT_TERMINAL_PROMPT=0` (never wait for a password) and a
//! deadline. A token never enters argv or logs: it travels only in the child's
//! environment as a config entry git reads at start-up,
//! `GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader
//! GIT_CONFIG_VALUE_0="Authorization: Basic base64(x-access-token:TOKEN)"`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_lite::FutureExt;

/// Why git failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run {program} {verb}: {source}")]
    Spawn {
        program: PathBuf,
        verb: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("git {verb} did not finish within {}s and was killed", .timeout.as_secs())]
    Timeout {
        verb: &'static str,
        timeout: Duration,
    },
    #[error("git {verb} failed ({status}): {stderr}")]
    Failed {
        verb: &'static str,
        status: String,
        /// The tail of stderr (git never prints the header's value).
        stderr: String,
    },
}

/// How long a clone may take.
const CLONE: Duration = Duration::from_secs(600);
const QUICK: Duration = Duration::from_secs(30);

/// The git CLI, plus environment added to every call (tests point
/// `GIT_CONFIG_GLOBAL` at a config of their own).
#[derive(Debug, Clone)]
pub struct Git {
    program: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl Default for Git {
    fn default() -> Self {
        Self::new("git")
    }
}

impl Git {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            extra_env: Vec::new(),
        }
    }

    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.extra_env = env;
        self
    }

    /// The argv of a clone (without the program), shallow unless `full`.
    pub fn clone_args(url: &str, branch: Option<&str>, dir: &Path, full: bool) -> Vec<String> {
        let mut a = vec!["clone".to_owned()];
        if !full {
            a.extend(["--depth".to_owned(), "1".to_owned()]);
        }
        if let Some(b) = branch {
            a.extend(["--branch".to_owned(), b.to_owned()]);
        }
        a.extend(["--".to_owned(), url.to_owned(), dir.display().to_string()]);
        a
    }

    /// The environment of a clone: no prompts, and the token (if any) as an
    /// HTTP header config entry.
    pub fn clone_env(token: Option<&str>) -> Vec<(String, String)> {
        let mut env = vec![("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned())];
        if let Some(t) = token {
            let basic = STANDARD.encode(format!("x-access-token:{t}"));
            env.extend([
                ("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()),
                ("GIT_CONFIG_KEY_0".to_owned(), "http.extraHeader".to_owned()),
                (
                    "GIT_CONFIG_VALUE_0".to_owned(),
                    format!("Authorization: Basic {basic}"),
                ),
            ]);
        }
        env
    }

    /// Clone `url` (at `branch`) into `dir`, which must be empty or absent;
    /// returns the commit checked out. Shallow first; a server that cannot
    /// serve shallow clones (git's "dumb" HTTP) gets a full clone instead.
    pub async fn clone_into(
        &self,
        url: &str,
        branch: Option<&str>,
        token: Option<&str>,
        dir: &Path,
    ) -> Result<String, GitError> {
        tracing::info!(%url, ?branch, with_token = token.is_some(), dir = %dir.display(), "cloning");
        let args = Self::clone_args(url, branch, dir, false);
        match self
            .run("clone", &args, Self::clone_env(token), CLONE)
            .await
        {
            Err(GitError::Failed { stderr, .. }) if stderr.contains("does not support shallow") => {
                tracing::info!(%url, "the server cannot serve a shallow clone; cloning in full");
                let args = Self::clone_args(url, branch, dir, true);
                self.run("clone", &args, Self::clone_env(token), CLONE)
                    .await?;
            }
            other => {
                other?;
            }
        }
        self.head(dir).await
    }

    /// `git -C DIR rev-parse HEAD`.
    pub async fn head(&self, dir: &Path) -> Result<String, GitError> {
        let args = [
            "-C".to_owned(),
            dir.display().to_string(),
            "rev-parse".to_owned(),
            "HEAD".to_owned(),
        ];
        let out = self.run("rev-parse", &args, Vec::new(), QUICK).await?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    async fn run(
        &self,
        verb: &'static str,
        args: &[String],
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Vec<u8>, GitError> {
        let mut cmd = smol::process::Command::new(&self.program);
        cmd.args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("CROPS_CREDENTIAL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in self.extra_env.iter().chain(env.iter()) {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| GitError::Spawn {
            program: self.program.clone(),
            verb,
            source,
        })?;
        let out = async { Some(child.output().await) }
            .or(async {
                smol::Timer::after(timeout).await;
                None
            })
            .await;
        match out {
            None => Err(GitError::Timeout { verb, timeout }),
            Some(Err(source)) => Err(GitError::Spawn {
                program: self.program.clone(),
                verb,
                source,
            }),
            Some(Ok(out)) if out.status.success() => Ok(out.stdout),
            Some(Ok(out)) => Err(GitError::Failed {
                verb,
                status: out.status.to_string(),
                stderr: crate::podman::tail(&out.stderr),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_only_in_the_environment() {
        let args = Git::clone_args(
            "https://git.example.com/a/b.git",
            Some("main"),
            Path::new("/data/ws/c1"),
            false,
        );
        assert_eq!(
            args.join(" "),
            "clone --depth 1 --branch main -- https://git.example.com/a/b.git /data/ws/c1"
        );
        let env = Git::clone_env(Some("s3cret"));
        assert!(!args.iter().any(|a| a.contains("s3cret")));
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GIT_TERMINAL_PROMPT"), Some("0"));
        assert_eq!(get("GIT_CONFIG_COUNT"), Some("1"));
        assert_eq!(get("GIT_CONFIG_KEY_0"), Some("http.extraHeader"));
        assert_eq!(
            get("GIT_CONFIG_VALUE_0"),
            Some("Authorization: Basic eC1hY2Nlc3MtdG9rZW46czNjcmV0")
        );
        let full = Git::clone_args("https://h/r", None, Path::new("/d"), true);
        assert_eq!(full.join(" "), "clone -- https://h/r /d");
        assert!(Git::clone_env(None)
            .iter()
            .all(|(k, _)| !k.starts_with("GIT_CONFIG")));
    }
}
