//! `validate()` for each command that carries user input: whole-message
//! checks built from the patterns in [`crate::validate`].

use std::collections::BTreeMap;

use crate::container::{ContainerCreate, ContainerSetup};
use crate::error::Invalid;
use crate::validate as v;

fn check_env(env: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if env.len() > 256 {
        return Err(Invalid::new("env", "at most 256 variables"));
    }
    for (k, val) in env {
        v::env_key(k)?;
        v::argv_value("env", val, 32 * 1024)?;
    }
    Ok(())
}

impl ContainerCreate {
    /// Every value that reaches Podman's argv, checked against its pattern.
    pub fn validate(&self) -> Result<(), Invalid> {
        v::id("containerId", &self.container_id)?;
        v::id("tenantId", &self.tenant_id)?;
        v::container_name(&self.name)?;
        v::image_ref(&self.image)?;
        check_env(&self.env)?;
        if self.labels.len() > 64 {
            return Err(Invalid::new("labels", "at most 64 labels"));
        }
        for (k, val) in &self.labels {
            v::label_key(k)?;
            if k.starts_with("crops.") {
                return Err(Invalid::new(
                    "labels",
                    format!("{k:?}: the crops. prefix is reserved"),
                ));
            }
            v::argv_value("labels", val, 4096)?;
        }
        if let Some(cmd) = &self.command {
            v::command("command", cmd)?;
        }
        Ok(())
    }
}

impl ContainerSetup {
    pub fn validate(&self) -> Result<(), Invalid> {
        v::id("containerId", &self.container_id)?;
        if let Some(repo) = &self.repository {
            v::git_url(&repo.url)?;
            if let Some(b) = &repo.branch {
                v::git_ref(b)?;
            }
            if let Some(t) = &repo.token {
                v::argv_value("repository.token", t, 4096)?;
            }
        }
        if self.files.len() > 256 {
            return Err(Invalid::new("files", "at most 256 files"));
        }
        for f in &self.files {
            v::relative_path("files.path", &f.path)?;
            if f.mode.is_some_and(|m| m > 0o777) {
                return Err(Invalid::new(
                    "files.mode",
                    "permission bits only (at most 0777)",
                ));
            }
        }
        Ok(())
    }
}

impl crate::exec::Exec {
    pub fn validate(&self) -> Result<(), Invalid> {
        v::id("containerId", &self.container_id)?;
        v::command("command", &self.command)?;
        check_env(&self.env)?;
        if let Some(w) = &self.workdir {
            v::absolute_path("workdir", w)?;
        }
        if self.timeout_secs.is_some_and(|t| t == 0 || t > 3600) {
            return Err(Invalid::new("timeoutSecs", "must be 1 to 3600"));
        }
        Ok(())
    }
}

impl crate::exec::ExecBackground {
    pub fn validate(&self) -> Result<(), Invalid> {
        v::id("containerId", &self.container_id)?;
        v::command("command", &self.command)?;
        check_env(&self.env)?;
        if let Some(w) = &self.workdir {
            v::absolute_path("workdir", w)?;
        }
        Ok(())
    }
}

impl crate::image::ImageBuild {
    pub fn validate(&self) -> Result<(), Invalid> {
        v::image_ref(&self.tag)?;
        if self.containerfile.is_empty() || self.containerfile.len() > 256 * 1024 {
            return Err(Invalid::new("containerfile", "must be 1 byte to 256 KiB"));
        }
        if let Some(t) = &self.tenant_id {
            v::id("tenantId", t)?;
        }
        Ok(())
    }
}

impl crate::terminal::TerminalResize {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.cols == 0 || self.rows == 0 || self.cols > 1000 || self.rows > 1000 {
            return Err(Invalid::new("cols/rows", "must be 1 to 1000"));
        }
        Ok(())
    }
}

impl crate::terminal::TerminalOpen {
    pub fn validate(&self) -> Result<(), Invalid> {
        v::id("containerId", &self.container_id)?;
        if self.cols == 0 || self.rows == 0 || self.cols > 1000 || self.rows > 1000 {
            return Err(Invalid::new("cols/rows", "must be 1 to 1000"));
        }
        if let Some(cmd) = &self.command {
            v::command("command", cmd)?;
        }
        Ok(())
    }
}
