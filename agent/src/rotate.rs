//! The worker credential as the running agent holds it, and its rotation.
//!
//! The orchestrator rotates a credential over the live connection with
//! `worker.rotate-credential {credential}`. The agent first makes the new
//! credential durable where it read the old one from (its config file:
//! rewritten atomically, mode 0600, by `Config::save`), then switches the
//! in-memory copy, then answers `worker.rotate-credential.result {}`. The
//! current connection stays up; the next one presents the new credential.
//! A credential given by `--credential` or `$CROPS_CREDENTIAL` has no file
//! to go to, so its rotation is refused (`unsupported`) and the orchestrator
//! keeps the old one: an agent never accepts a credential it would lose at
//! its next restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::worker::RotateCredential;
use protocol::{ErrorCode, ErrorReply};

use crate::config::{Config, ConfigError};

/// Why a rotation was refused; the agent keeps its current credential.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("worker.rotate-credential: {0}")]
    Invalid(#[source] protocol::error::Invalid),
    #[error("worker.rotate-credential: this agent's credential comes from a flag or the environment, not a config file it could update")]
    NoFile,
    #[error("worker.rotate-credential: cannot store the new credential: {0}")]
    Config(#[source] ConfigError),
}

impl RotateError {
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::NoFile => ErrorCode::Unsupported,
            Self::Config(_) => ErrorCode::Internal,
        };
        ErrorReply::new(code, self.to_string())
    }
}

/// The credential this agent presents, shared by every connection attempt
/// of one run. `Debug` never shows it.
#[derive(Clone)]
pub struct Credential {
    /// Written by [`Credential::rotate`] only; read at every dial.
    current: Arc<Mutex<String>>,
    /// The config file the credential was read from, if any.
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("current", &"<redacted>")
            .field("file", &self.file)
            .finish()
    }
}

impl Credential {
    /// `secret`, persisted on rotation to `file` when there is one.
    pub fn new(secret: impl Into<String>, file: Option<PathBuf>) -> Self {
        Self {
            current: Arc::new(Mutex::new(secret.into())),
            file,
        }
    }

    /// The credential to present now.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Store `rotate.credential` in the config file (atomically, 0600),
    /// then use it from the next connection on. Blocking file I/O: call it
    /// off the executor (see [`Credential::rotate_async`]).
    pub fn rotate(&self, rotate: &RotateCredential) -> Result<(), RotateError> {
        rotate.validate().map_err(RotateError::Invalid)?;
        let file = self.file.as_deref().ok_or(RotateError::NoFile)?;
        persist(file, &rotate.credential).map_err(RotateError::Config)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = rotate.credential.clone();
        tracing::info!(config = %file.display(), "worker credential rotated and stored");
        Ok(())
    }

    /// [`Credential::rotate`] on the blocking pool.
    pub async fn rotate_async(&self, rotate: RotateCredential) -> Result<(), RotateError> {
        let this = self.clone();
        smol::unblock(move || this.rotate(&rotate)).await
    }
}

/// Rewrite the config at `path` with `credential`, keeping every other field.
fn persist(path: &Path, credential: &str) -> Result<(), ConfigError> {
    let mut config = Config::load(path)?;
    config.credential = credential.to_owned();
    config.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(credential: &str) -> Config {
        Config {
            worker_id: "w-1".into(),
            tenant_id: "t-1".into(),
            tenant_name: "acme".into(),
            url: "wss://orch.example/v1/agent".into(),
            credential: credential.into(),
            name: Some("nas".into()),
            ca_file: None,
            mode: None,
        }
    }

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!(
            "crops-agent-rotate-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    #[test]
    fn a_rotation_is_written_to_the_config_with_mode_0600_then_used() {
        let dir = scratch();
        let path = dir.join("worker.json");
        config("crops_wkr_old").save(&path).unwrap();
        let cred = Credential::new("crops_wkr_old", Some(path.clone()));
        let rotate = RotateCredential {
            credential: "crops_wkr_new".into(),
        };
        smol::block_on(cred.rotate_async(rotate)).unwrap();
        assert_eq!(cred.current(), "crops_wkr_new");
        assert_eq!(Config::load(&path).unwrap(), config("crops_wkr_new"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rotation_that_cannot_be_stored_changes_nothing() {
        let flag_only = Credential::new("crops_wkr_old", None);
        let rotate = RotateCredential {
            credential: "crops_wkr_new".into(),
        };
        let err = flag_only.rotate(&rotate).unwrap_err();
        assert_eq!(err.to_reply().code, ErrorCode::Unsupported);
        assert_eq!(flag_only.current(), "crops_wkr_old");

        let missing = Credential::new("crops_wkr_old", Some(scratch().join("worker.json")));
        let err = missing.rotate(&rotate).unwrap_err();
        assert_eq!(err.to_reply().code, ErrorCode::Internal, "{err}");
        assert_eq!(missing.current(), "crops_wkr_old");

        let bad = RotateCredential {
            credential: "two words".into(),
        };
        let err = flag_only.rotate(&bad).unwrap_err();
        assert_eq!(err.to_reply().code, ErrorCode::InvalidArgument);
        assert!(!format!("{flag_only:?}").contains("crops_wkr_"));
    }
}
