//! The worker's config file (`~/.cropscode/worker.json`): what enrolment
//! wrote, loaded by `run`. Written atomically with mode 0600 in a 0700 directory.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the config file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no worker config at {path}; run `crops-agent enroll` first")]
    NotFound { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid worker config: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find a default config path: $HOME is not set (pass --config)")]
    NoHome,
}

/// The contents of `worker.json`. The credential is a secret: [`Config`]'s
/// `Debug` redacts it, and nothing logs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The worker's id, assigned by the orchestrator at enrolment.
    pub worker_id: String,
    /// The tenant a byom worker serves; empty for a fleet worker.
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub tenant_name: String,
    /// The orchestrator's agent socket, e.g. `wss://orch.example:8443/v1/agent`.
    pub url: String,
    /// The worker credential (`crops_wkr_…`), presented as a Bearer token.
    pub credential: String,
    /// The worker name chosen at enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extra trusted CA certificates (PEM), for an orchestrator with its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// What enrolment made this worker (`byom` or `fleet`): the mode `run`
    /// registers with unless `--mode` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<protocol::worker::Mode>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("worker_id", &self.worker_id)
            .field("tenant_id", &self.tenant_id)
            .field("tenant_name", &self.tenant_name)
            .field("url", &self.url)
            .field("credential", &"<redacted>")
            .field("name", &self.name)
            .field("ca_file", &self.ca_file)
            .field("mode", &self.mode)
            .finish()
    }
}

/// `$HOME/.cropscode/worker.json`.
pub fn default_path() -> Result<PathBuf, ConfigError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(ConfigError::NoHome)?;
    Ok(PathBuf::from(home).join(".cropscode").join("worker.json"))
}

impl Config {
    /// Read `path`. A missing file is [`ConfigError::NotFound`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Write to `path` atomically: a 0600 temp file beside it, fsync, rename.
    /// Creates missing parent directories with mode 0700.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write_err = |source| ConfigError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(write_err)?;
        let file_name = path.file_name().map_or_else(
            || "worker.json".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let mut text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.into()))?;
        text.push('\n');
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Config {
        Config {
            worker_id: "3f1c".into(),
            tenant_id: "t-1".into(),
            tenant_name: "acme".into(),
            url: "wss://orch.example:8443/v1/agent".into(),
            credential: "crops_wkr_secret".into(),
            name: Some("nas".into()),
            ca_file: None,
            mode: None,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "crops-agent-config-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn save_then_load_round_trips_with_private_modes() {
        let dir = scratch("rt");
        let path = dir.join("nested").join("worker.json");
        let config = sample();
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        let file_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(file_mode, 0o600);
        assert_eq!(dir_mode, 0o700);
        // Overwriting keeps one file and no temp leftovers.
        config.save(&path).unwrap();
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_camel_case_and_omits_absent_options() {
        let mut config = sample();
        config.name = None;
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "workerId": "3f1c", "tenantId": "t-1", "tenantName": "acme",
                "url": "wss://orch.example:8443/v1/agent", "credential": "crops_wkr_secret"
            })
        );
    }

    #[test]
    fn debug_never_shows_the_credential() {
        assert!(!format!("{:?}", sample()).contains("secret"));
    }

    #[test]
    fn missing_and_broken_files_are_told_apart() {
        let dir = scratch("missing");
        let path = dir.join("worker.json");
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::NotFound { .. })
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
