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
        // The agent hands env to Podman in an env file, one variable a line.
        if val.contains(['\n', '\r']) {
            return Err(Invalid::new(
                "env",
                format!("{k}: a value cannot contain a line break (\\n or \\r)"),
            ));
        }
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
        crate::domains::check_list(&self.allowed_domains)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::container::ContainerCreate;
    use crate::exec::{Exec, ExecBackground};

    fn env(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("OK".to_owned(), "a=b c$(d)".to_owned()),
            ("PEM".to_owned(), value.to_owned()),
        ])
    }

    /// Every command that takes env refuses a value with a line break,
    /// naming the variable, and keeps taking `=`, spaces and shell syntax.
    #[test]
    fn env_values_with_a_line_break_are_refused_by_every_command() {
        let create = |v: &str| ContainerCreate {
            container_id: "c-1".into(),
            tenant_id: "t-1".into(),
            name: "box".into(),
            image: "localhost/img:1".into(),
            env: env(v),
            labels: BTreeMap::new(),
            command: None,
            workspace: false,
            profile: Default::default(),
            allowed_domains: Vec::new(),
        };
        let exec = |v: &str| Exec {
            container_id: "c-1".into(),
            command: vec!["env".into()],
            env: env(v),
            workdir: None,
            timeout_secs: None,
        };
        let background = |v: &str| ExecBackground {
            container_id: "c-1".into(),
            command: vec!["env".into()],
            env: env(v),
            workdir: None,
        };
        for bad in ["-----BEGIN\nKEY-----", "crlf\r\n", "cr\r"] {
            for err in [
                create(bad).validate().unwrap_err(),
                exec(bad).validate().unwrap_err(),
                background(bad).validate().unwrap_err(),
            ] {
                let text = err.to_string();
                assert!(
                    text.contains("PEM") && text.contains("line break"),
                    "{text}"
                );
            }
        }
        let fine = " leading, trailing \t and = signs ";
        create(fine).validate().unwrap();
        exec(fine).validate().unwrap();
        background(fine).validate().unwrap();
    }
}
