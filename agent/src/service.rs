//! `crops-agent service install|uninstall|status`: the agent as a systemd
//! service that runs `crops-agent run` and is restarted when it fails.
//!
//! * As root, a system unit: `/etc/systemd/system/crops-agent.service`,
//!   after `network-online.target`, wanted by `multi-user.target`; Podman
//!   runs rootful.
//! * As anyone else, a user unit:
//!   `$XDG_CONFIG_HOME/systemd/user/crops-agent.service` (else
//!   `~/.config/systemd/user/`), wanted by `default.target`, with lingering
//!   enabled (`loginctl enable-linger UID`) so the user's manager, the agent
//!   and its rootless containers run from boot, without a login session.
//!   A user manager cannot see the system's network targets: the agent's
//!   own reconnect backoff covers a network that is not up yet.
//!
//! Install writes the unit (atomically, mode 0644: systemd's configuration
//! is readable by everyone through its APIs anyway; the credential is never
//! in it, it stays in the 0600 worker config), then `systemctl [--user]
//! daemon-reload`, `enable` and `restart` (not `enable --now`, so that
//! installing again with other options, or after replacing the binary,
//! takes effect at once). Uninstall is `disable --now`, removing the file
//! and `daemon-reload`; it leaves lingering alone (other services and the
//! agent's rootless containers may need it). Status asks `systemctl
//! is-enabled` and `is-active`.
//!
//! The unit holds no hardening: every candidate breaks Podman.
//! `NoNewPrivileges` stops the setuid `newuidmap` of rootless Podman;
//! anything with a mount namespace of its own (`PrivateTmp`,
//! `ProtectSystem`, `ProtectHome`, `ReadWritePaths`, `ProtectKernel*`)
//! hides the containers' mounts from the host and from the next run of the
//! agent; seccomp filters (`SystemCallFilter`, `LockPersonality`,
//! `RestrictNamespaces`) and `CapabilityBoundingSet` are inherited by the
//! containers, which need namespaces and capabilities of their own.
//! `KillMode=process`: stopping or restarting the agent signals the agent
//! only, never the containers' `conmon` processes, which can sit in the
//! service's cgroup (Podman with cgroupfs); containers outlive the agent,
//! as they outlive a lost connection.
//!
//! Every argument of `ExecStart` is written for systemd's parser
//! (`unit::exec_word`): `%` doubled (specifiers), `$` doubled (environment
//! substitution; not in the executable's path, which systemd does not
//! substitute), and anything beyond plain characters in double quotes with
//! `\` and `"` escaped. Control characters (a line break would end the
//! setting) are refused, as are the characters systemd refuses in an
//! executable's path (`"`, `'`, `\`).
//!
//! The seam: everything but [`run`] is pure (the unit's text, the calls
//! each verb makes). [`run`] starts one program with its arguments; the
//! programs are `systemctl` and `loginctl` from `PATH`, so a test puts
//! recording fakes first on `PATH`. Whether systemd runs is asked of
//! `systemctl is-system-running` too ("offline", or no `systemctl`: not
//! running), so that question goes through the same seam.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod unit;

pub use unit::{Unit, KEPT_ENV};

/// The unit's name, in either scope.
pub const UNIT: &str = "crops-agent.service";

/// Why a `service` command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "systemd is not running on this machine ({found}): start `crops-agent run` another way, \
         e.g. from the NAS's task scheduler, an init script, or `nohup crops-agent run >agent.log 2>&1 &`"
    )]
    NoSystemd { found: String },
    #[error("{what} {value:?} cannot be written in a systemd unit: {reason}")]
    Unwritable {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("no user unit directory: neither $XDG_CONFIG_HOME nor $HOME is set (pass --unit-dir)")]
    NoHome,
    #[error("cannot find this executable's path: {0}")]
    Exe(#[source] std::io::Error),
    #[error("these options would not start `crops-agent run`: {reason}")]
    RunArgs { reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{call}`: {source}")]
    Spawn {
        call: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{call}` failed ({status}){hint}: {stderr}")]
    Failed {
        call: String,
        status: std::process::ExitStatus,
        stderr: String,
        hint: &'static str,
    },
}

/// Which systemd manager the unit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// PID 1's, for root.
    System,
    /// The user's own manager, for everyone else.
    User,
}

impl Scope {
    /// System for root, user for everyone else.
    pub fn for_uid(uid: u32) -> Self {
        if uid == 0 {
            Self::System
        } else {
            Self::User
        }
    }

    /// Where the unit goes unless `--unit-dir` says otherwise.
    pub fn default_dir(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PathBuf, ServiceError> {
        match self {
            Self::System => Ok(PathBuf::from("/etc/systemd/system")),
            Self::User => env("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))
                .map(|c| c.join("systemd").join("user"))
                .ok_or(ServiceError::NoHome),
        }
    }

    /// `systemctl [--user] args…`.
    fn systemctl(self, args: &[&str]) -> Call {
        let user = (self == Self::User).then_some("--user");
        Call::new("systemctl", user.into_iter().chain(args.iter().copied()))
    }
}

/// One program and its arguments: what [`run`] starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub program: &'static str,
    pub args: Vec<String>,
}

impl Call {
    fn new<'a>(program: &'static str, args: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            program,
            args: args.into_iter().map(str::to_owned).collect(),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program)?;
        self.args.iter().try_for_each(|a| write!(f, " {a}"))
    }
}

/// The question whether systemd runs: `systemctl is-system-running`
/// prints `offline` without it (and `running`, `degraded`, `starting` …
/// with it).
pub fn probe_call() -> Call {
    Scope::System.systemctl(&["is-system-running"])
}

/// What install runs after writing the unit, in order.
pub fn install_calls(scope: Scope, uid: u32) -> Vec<Call> {
    let uid = uid.to_string();
    let mut calls = Vec::new();
    if scope == Scope::User {
        calls.push(Call::new("loginctl", ["enable-linger", uid.as_str()]));
    }
    calls.push(scope.systemctl(&["daemon-reload"]));
    calls.push(scope.systemctl(&["enable", UNIT]));
    calls.push(scope.systemctl(&["restart", UNIT]));
    calls
}

/// What uninstall runs before removing the unit file, and after.
pub fn uninstall_calls(scope: Scope) -> (Call, Call) {
    (
        scope.systemctl(&["disable", "--now", UNIT]),
        scope.systemctl(&["daemon-reload"]),
    )
}

/// What status asks: `is-enabled`, then `is-active`.
pub fn status_calls(scope: Scope) -> [Call; 2] {
    [
        scope.systemctl(&["is-enabled", UNIT]),
        scope.systemctl(&["is-active", UNIT]),
    ]
}

/// What `run` gives back: exit status, stdout, stderr.
pub type Ran = (std::process::ExitStatus, String, String);

/// Start `call.program` (from `PATH`) with its arguments, wait for it.
/// The one place this module starts a process.
pub fn run(call: &Call) -> Result<Ran, ServiceError> {
    let out = Command::new(call.program)
        .args(&call.args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ServiceError::Spawn {
            call: call.to_string(),
            source,
        })?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    Ok((out.status, text(&out.stdout), text(&out.stderr)))
}

/// [`run`], and a non-zero exit is an error with the program's words.
fn run_ok(call: &Call) -> Result<(), ServiceError> {
    let (status, _, stderr) = run(call)?;
    if status.success() {
        return Ok(());
    }
    let hint = if call.args.first().map(String::as_str) == Some("--user") {
        " (no user manager reachable? log in as this user over ssh or a console, \
         not with su, or set XDG_RUNTIME_DIR=/run/user/$(id -u))"
    } else {
        ""
    };
    Err(ServiceError::Failed {
        call: call.to_string(),
        status,
        stderr,
        hint,
    })
}

/// Fails with [`ServiceError::NoSystemd`] unless systemd runs here.
pub fn check_systemd() -> Result<(), ServiceError> {
    let found = match run(&probe_call()) {
        Ok((_, state, _)) if !state.is_empty() && state != "offline" => return Ok(()),
        Ok((_, state, stderr)) => format!(
            "`{}` says {:?}",
            probe_call(),
            if state.is_empty() { stderr } else { state }
        ),
        Err(ServiceError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            "no systemctl on PATH".to_owned()
        }
        Err(e) => return Err(e),
    };
    Err(ServiceError::NoSystemd { found })
}

/// Where the unit lives: its scope and directory.
#[derive(Debug, Clone)]
pub struct Place {
    pub scope: Scope,
    pub dir: PathBuf,
}

impl Place {
    pub fn unit_file(&self) -> PathBuf {
        self.dir.join(UNIT)
    }
}

/// Write `unit`, reload, enable and (re)start it; for a user unit enable
/// lingering first. Returns the unit file's path.
pub fn install(place: &Place, unit: &Unit, uid: u32) -> Result<PathBuf, ServiceError> {
    let text = unit.render()?;
    check_systemd()?;
    let path = place.unit_file();
    write_atomically(&path, &text)?;
    for call in install_calls(place.scope, uid) {
        run_ok(&call)?;
    }
    Ok(path)
}

/// Stop, disable and remove the unit. `Ok(false)`: there was none.
pub fn uninstall(place: &Place) -> Result<bool, ServiceError> {
    let path = place.unit_file();
    if !path.exists() {
        return Ok(false);
    }
    check_systemd()?;
    let (disable, reload) = uninstall_calls(place.scope);
    run_ok(&disable)?;
    std::fs::remove_file(&path).map_err(|source| ServiceError::Remove {
        path: path.clone(),
        source,
    })?;
    run_ok(&reload)?;
    Ok(true)
}

/// What status found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub unit_file: PathBuf,
    pub installed: bool,
    /// Why systemd could not be asked, if it could not.
    pub no_systemd: Option<String>,
    /// `is-enabled`'s and `is-active`'s answers.
    pub enabled: String,
    pub active: String,
}

impl Status {
    /// Active, as `systemctl is-active` means it (exit 0 when active, 3 otherwise).
    pub fn is_active(&self) -> bool {
        self.active == "active"
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let installed = if self.installed { "yes" } else { "no" };
        writeln!(
            f,
            "unit file: {} (installed: {installed})",
            self.unit_file.display()
        )?;
        match &self.no_systemd {
            Some(why) => writeln!(f, "{why}"),
            None => writeln!(f, "enabled: {}\nactive: {}", self.enabled, self.active),
        }
    }
}

/// Whether the unit is installed, enabled and active.
pub fn status(place: &Place) -> Result<Status, ServiceError> {
    let unit_file = place.unit_file();
    let mut status = Status {
        installed: unit_file.exists(),
        unit_file,
        no_systemd: None,
        enabled: String::new(),
        active: String::new(),
    };
    match check_systemd() {
        Ok(()) => {}
        Err(e @ ServiceError::NoSystemd { .. }) => {
            status.no_systemd = Some(e.to_string());
            return Ok(status);
        }
        Err(e) => return Err(e),
    }
    let [enabled, active] = status_calls(place.scope);
    // Both exit non-zero for "disabled" and "inactive": their words are the answer.
    let answer = |call: &Call| -> Result<String, ServiceError> {
        let (_, out, err) = run(call)?;
        Ok(match (out.is_empty(), err.is_empty()) {
            (false, _) => out,
            (true, false) => err,
            (true, true) => "unknown".to_owned(),
        })
    };
    status.enabled = answer(&enabled)?;
    status.active = answer(&active)?;
    Ok(status)
}

/// Write `text` to a temp file beside `path`, then rename it over `path`.
fn write_atomically(path: &Path, text: &str) -> Result<(), ServiceError> {
    let err = |source| ServiceError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("service.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        err(source)
    })
}

#[cfg(test)]
mod tests;
