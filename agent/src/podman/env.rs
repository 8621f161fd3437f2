//! How a tenant's environment reaches a container, and only the container.
//!
//! Every variable of a `container.create`, `container.exec` or
//! `exec.background` goes into a private env file (`NAME=VALUE` lines, mode
//! 0600, in a fresh 0700 directory under the agent's temporary directory)
//! that the `podman` client reads with `--env-file` and copies into the
//! container's configuration. The file is removed when the call ends (for a
//! background command: when its `podman exec` exits). So a value never
//! enters argv or a log, and no tenant variable ever sits in the environment
//! of the `podman` process itself: `CONTAINER_HOST`, `CONTAINERS_CONF`,
//! `LD_PRELOAD`, `PATH` … are the container's data, never the worker's
//! configuration. There is no list of "dangerous" names to keep complete.
//!
//! The `podman` process's environment is the agent's own (what the operator
//! started it with, minus its credential) plus the agent's own pairs: the
//! exec mark (`CROPS_EXEC_MARK`, passed as `--env NAME`, see
//! [`super::process`]) and [`super::Podman::with_env`]'s. The type of
//! [`plan_env`]'s `agent` argument (`&'static str` names) keeps tenant names
//! out of that list. The agent's environment is kept rather than cleared: it
//! is the operator's, and may hold what Podman needs on that host (`HOME`,
//! `XDG_RUNTIME_DIR` for rootless Podman, `CONTAINERS_CONF`).
//!
//! Podman reads an env file line by line (Go's `bufio.Scanner`): a value
//! cannot hold a line feed, and a carriage return at its end would be
//! dropped. A value with a line break (`\n` or `\r`) is therefore refused
//! with `invalid_argument` naming the variable (`protocol::check` refuses it
//! first, so the API answers 400), never altered. Everything else, `=`,
//! quotes, `#`, `$(…)`, leading and trailing spaces, arrives byte for byte:
//! Podman splits a line at its first `=` and keeps the rest verbatim, and
//! names (`[A-Za-z_][A-Za-z0-9_]*`) never start with `#` or a space.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// How a request's env reaches its container without entering argv or the
/// podman process's environment.
#[derive(Debug, Default)]
pub struct EnvPlan {
    /// `--env-file PATH` (tenant variables) and `--env NAME` (the agent's own).
    pub args: Vec<String>,
    /// The agent's own NAME=VALUE pairs for the podman child's environment;
    /// never a tenant's.
    pub agent_env: Vec<(String, String)>,
    /// The env file, if any; removed on drop.
    file: Option<EnvFile>,
}

#[cfg(test)]
impl EnvPlan {
    /// Where the tenant's variables were written, if there were any.
    pub fn file_path(&self) -> Option<&std::path::Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

/// Why an env plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("env {key}: a value cannot contain a line break (\\n or \\r)")]
    Newline { key: String },
    #[error("env: writing the env file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A private env file, deleted with its directory on drop.
#[derive(Debug)]
struct EnvFile {
    dir: PathBuf,
    path: PathBuf,
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Plan `env` (a request's, names validated by `protocol::check`) plus the
/// agent's own `agent` pairs. Writes the env file when `env` is not empty;
/// keep the plan until podman has exited.
pub fn plan_env(
    env: &BTreeMap<String, String>,
    agent: &[(&'static str, String)],
) -> Result<EnvPlan, EnvError> {
    let mut plan = EnvPlan::default();
    if !env.is_empty() {
        let mut lines = String::new();
        for (k, v) in env {
            if v.contains(['\n', '\r']) {
                return Err(EnvError::Newline { key: k.clone() });
            }
            lines.push_str(k);
            lines.push('=');
            lines.push_str(v);
            lines.push('\n');
        }
        let file = write_private(&lines)?;
        plan.args
            .extend(["--env-file".to_owned(), file.path.display().to_string()]);
        plan.file = Some(file);
    }
    // After the file: Podman lets `--env` override `--env-file`.
    for (k, v) in agent {
        plan.args.extend(["--env".to_owned(), (*k).to_owned()]);
        plan.agent_env.push(((*k).to_owned(), v.clone()));
    }
    Ok(plan)
}

/// `text` in `<tmp>/crops-env-<random>/env`: the directory 0700 and the
/// file 0600, both created fresh (never an existing path).
fn write_private(text: &str) -> Result<EnvFile, EnvError> {
    let dir = std::env::temp_dir().join(format!("crops-env-{}", super::process::new_mark()));
    let path = dir.join("env");
    let err = |source| EnvError::File {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(err)?;
    let file = EnvFile {
        dir,
        path: path.clone(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tenant(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn tenant_values_go_only_to_a_private_file_and_the_agents_by_name() {
        let env = tenant(&[
            ("CONTAINER_HOST", "tcp://10.0.0.1:2375"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("PATH", "/tenant/bin"),
            ("TOKEN", "a=b==c  # not a comment $(id) `x` 'q' \"d\" "),
            ("EMPTY", ""),
        ]);
        let plan = plan_env(&env, &[("CROPS_EXEC_MARK", "m1".to_owned())]).unwrap();
        let path = plan.file_path().expect("a file").to_owned();
        assert_eq!(
            plan.args,
            [
                "--env-file".to_owned(),
                path.display().to_string(),
                "--env".into(),
                "CROPS_EXEC_MARK".into()
            ]
        );
        assert_eq!(
            plan.agent_env,
            [("CROPS_EXEC_MARK".to_owned(), "m1".to_owned())],
            "no tenant variable in the podman process's environment"
        );
        let argv = plan.args.join(" ");
        for (k, v) in &env {
            assert!(
                !plan.agent_env.iter().any(|(n, _)| n == k),
                "{k} in the child env"
            );
            assert!(
                v.is_empty() || !argv.contains(v.as_str()),
                "{k}'s value in argv"
            );
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "CONTAINER_HOST=tcp://10.0.0.1:2375\nEMPTY=\nLD_PRELOAD=/tmp/evil.so\n\
             PATH=/tenant/bin\nTOKEN=a=b==c  # not a comment $(id) `x` 'q' \"d\" \n"
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(plan);
        assert!(!path.parent().unwrap().exists(), "removed with the plan");
    }

    #[test]
    fn no_tenant_env_writes_no_file() {
        let plan = plan_env(&BTreeMap::new(), &[]).unwrap();
        assert!(plan.args.is_empty() && plan.agent_env.is_empty());
        assert!(plan.file_path().is_none());
    }

    #[test]
    fn a_line_break_is_refused_naming_the_variable() {
        for bad in ["one\ntwo", "trailing\r", "a\rb"] {
            let env = tenant(&[("A_OK", "fine"), ("PEM", bad)]);
            let err = plan_env(&env, &[]).unwrap_err();
            assert!(
                matches!(&err, EnvError::Newline { key } if key == "PEM"),
                "{err}"
            );
            assert!(err.to_string().contains("PEM"), "{err}");
        }
    }
}
