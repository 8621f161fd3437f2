//! The unit file of `crops-agent service install`: its text, and each word
//! of `ExecStart` and `Environment=` written for systemd's parser (see the
//! parent module's docs for the rules and why the unit holds no hardening).

use super::{Scope, ServiceError};

/// The unit for `crops-agent run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub scope: Scope,
    /// The absolute path of the agent, then `run` and its options.
    pub argv: Vec<String>,
    /// `Environment=` assignments (the proxy variables and `RUST_LOG` of
    /// the shell that installed it).
    pub env: Vec<(String, String)>,
}

impl Unit {
    /// The unit file's text.
    pub fn render(&self) -> Result<String, ServiceError> {
        let (exe, args) = self.argv.split_first().ok_or(ServiceError::Unwritable {
            what: "command line",
            value: String::new(),
            reason: "it is empty",
        })?;
        let mut exec = exec_word(exe, true)?;
        for arg in args {
            exec.push(' ');
            exec.push_str(&exec_word(arg, false)?);
        }
        let mut text = String::from(
            "# Written by `crops-agent service install`; `crops-agent service uninstall` removes it.\n\
             [Unit]\nDescription=Crops agent: development containers for a Crops orchestrator\n",
        );
        if self.scope == Scope::System {
            text.push_str("After=network-online.target\nWants=network-online.target\n");
        }
        text.push_str("\n[Service]\n");
        for (key, value) in &self.env {
            text.push_str(&format!("Environment={}\n", env_word(key, value)?));
        }
        text.push_str(&format!("ExecStart={exec}\n"));
        text.push_str("Restart=on-failure\nRestartSec=5\nKillMode=process\n\n[Install]\n");
        text.push_str(match self.scope {
            Scope::System => "WantedBy=multi-user.target\n",
            Scope::User => "WantedBy=default.target\n",
        });
        Ok(text)
    }
}

/// Characters written as they are; anything else goes in double quotes.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/._:=,@+-".contains(c)
}

/// One word of `ExecStart`. `%` is doubled everywhere, `$` only in
/// arguments: systemd substitutes variables in those, not in the path.
pub fn exec_word(word: &str, executable: bool) -> Result<String, ServiceError> {
    let refuse = |reason| ServiceError::Unwritable {
        what: if executable {
            "the agent's path"
        } else {
            "argument"
        },
        value: word.to_owned(),
        reason,
    };
    if word.chars().any(char::is_control) {
        return Err(refuse("it holds a line break or another control character"));
    }
    if executable {
        if !word.starts_with('/') {
            return Err(refuse("it is not absolute"));
        }
        if word.contains(['"', '\'', '\\']) {
            return Err(refuse(
                "systemd refuses quotes and backslashes in a program's path: move the agent",
            ));
        }
    }
    let mut out = String::with_capacity(word.len() + 2);
    for c in word.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' if !executable => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    if word.is_empty() || !word.chars().all(plain) {
        out = format!("\"{out}\"");
    }
    Ok(out)
}

/// `"KEY=value"` for `Environment=`: quoted, with `%`, `\` and `"` escaped
/// (systemd substitutes no variables there).
fn env_word(key: &str, value: &str) -> Result<String, ServiceError> {
    if value.chars().any(char::is_control) {
        return Err(ServiceError::Unwritable {
            what: "environment variable",
            value: key.to_owned(),
            reason: "its value holds a line break or another control character",
        });
    }
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    Ok(format!("\"{key}={escaped}\""))
}

/// The variables of the installing shell the unit keeps: how to reach the
/// orchestrator (as for `run`) and what to log.
pub const KEPT_ENV: [&str; 7] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "RUST_LOG",
];
