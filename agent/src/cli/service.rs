//! `crops-agent service install|uninstall|status`: the arguments, and the
//! `run` command line the unit gets ([`run_argv`]). That line is what
//! `run` would use in the installing shell, minus the credential (it stays
//! in the worker config): each of `run`'s options from its flag or its
//! `CROPS_*` variable, written as a flag, with paths made absolute (a
//! service starts in `/`), and always `--config` (a system service has no
//! `$HOME`). It is parsed back and resolved as `run` would resolve it
//! before anything is written, so a unit that could not start (no worker
//! config yet, a bad label) is refused here. The rest is `crate::service`.

use std::path::{Path, PathBuf};

use argh::FromArgs;

use super::{
    config_path, run_settings, Cli, CliError, Command, ENV_CA_FILE, ENV_DATA_DIR, ENV_LABELS,
    ENV_NAME, ENV_PODMAN, ENV_SECURITY_FLOOR, ENV_URL,
};
use crate::service::{self, Place, Scope, ServiceError, Unit};

/// Install, remove or inspect the systemd service that runs `crops-agent run`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "service")]
pub struct ServiceArgs {
    #[argh(subcommand)]
    pub action: Action,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Action {
    Install(InstallArgs),
    Uninstall(UninstallArgs),
    Status(StatusArgs),
}

/// Write, enable and start a systemd unit running `crops-agent run` with
/// these options (each also read from its CROPS_ variable, as run does),
/// restarted on failure: a system unit as root, else a user unit with
/// lingering. HTTPS_PROXY, NO_PROXY and RUST_LOG are kept in the unit.
/// Needs the worker config: run `crops-agent enroll` first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install")]
pub struct InstallArgs {
    /// config file (default: $CROPS_CONFIG, then $HOME/.cropscode/worker.json)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// orchestrator URL (default: $CROPS_URL, then the config's)
    #[argh(option)]
    pub url: Option<String>,
    /// worker name (default: $CROPS_WORKER_NAME, then the config's, then the hostname)
    #[argh(option)]
    pub name: Option<String>,
    /// extra trusted CA certificates, PEM (default: $CROPS_CA_FILE, then the config's)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// HTTP proxy, as for run (default: $HTTPS_PROXY unless $NO_PROXY names the host)
    #[argh(option)]
    pub proxy: Option<String>,
    /// the Podman CLI (default: $CROPS_PODMAN, then podman from the service's PATH)
    #[argh(option)]
    pub podman: Option<PathBuf>,
    /// byom or fleet (default: the config's)
    #[argh(option)]
    pub mode: Option<String>,
    /// directory holding workspaces (default: $CROPS_DATA_DIR, then the config file's directory)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// weakest security profile to run: open, standard, strict or offline (default: $CROPS_SECURITY_FLOOR)
    #[argh(option)]
    pub security_floor: Option<String>,
    /// a label for placement policies, key=value (repeatable; default: $CROPS_LABELS)
    #[argh(option)]
    pub label: Vec<String>,
    /// seconds a terminal session outlives its link (default: 300)
    #[argh(option)]
    pub terminal_grace_secs: Option<u64>,
    /// directory to write the unit to (default: /etc/systemd/system as root, else $XDG_CONFIG_HOME/systemd/user, i.e. ~/.config/systemd/user); it must be one systemd reads
    #[argh(option)]
    pub unit_dir: Option<PathBuf>,
}

/// Stop, disable and remove the unit `install` wrote (nothing to do when
/// there is none). Leaves lingering and the worker config alone.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "uninstall")]
pub struct UninstallArgs {
    /// the unit's directory, if install was given one
    #[argh(option)]
    pub unit_dir: Option<PathBuf>,
}

/// Say whether the unit is installed, enabled and active; exits 0 when
/// active, 3 otherwise (as systemctl does).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusArgs {
    /// the unit's directory, if install was given one
    #[argh(option)]
    pub unit_dir: Option<PathBuf>,
}

/// Run one `service` command. A status that is not active is
/// [`CliError::Inactive`] (exit 3), after the status is printed.
pub fn main(args: ServiceArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<(), CliError> {
    let uid = uid();
    let scope = Scope::for_uid(uid);
    let unit_dir = match &args.action {
        Action::Install(a) => a.unit_dir.clone(),
        Action::Uninstall(a) => a.unit_dir.clone(),
        Action::Status(a) => a.unit_dir.clone(),
    };
    let place = Place {
        scope,
        dir: match unit_dir {
            Some(dir) => dir,
            None => scope.default_dir(env)?,
        },
    };
    let user = if scope == Scope::User { " --user" } else { "" };
    match args.action {
        Action::Install(a) => {
            let exe = std::env::current_exe().map_err(ServiceError::Exe)?;
            let unit = unit(a, &exe, scope, env)?;
            let path = service::install(&place, &unit, uid)?;
            println!(
                "installed {path} and started {name}; see it with `systemctl{user} status {name}` \
                 and `journalctl{user} -u {name}`",
                path = path.display(),
                name = service::UNIT
            );
        }
        Action::Uninstall(_) => {
            let path = place.unit_file();
            if service::uninstall(&place)? {
                println!("stopped {} and removed {}", service::UNIT, path.display());
            } else {
                println!("{} is not installed (no {})", service::UNIT, path.display());
            }
        }
        Action::Status(_) => {
            let status = service::status(&place)?;
            print!("{status}");
            if !status.is_active() {
                return Err(CliError::Inactive);
            }
        }
    }
    Ok(())
}

/// The unit for these options: [`run_argv`], checked as `run` would
/// resolve it, and the installing shell's [`service::KEPT_ENV`].
pub fn unit(
    args: InstallArgs,
    exe: &Path,
    scope: Scope,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Unit, CliError> {
    let argv = run_argv(args, exe, env)?;
    let kept: Vec<(String, String)> = service::KEPT_ENV
        .iter()
        .filter_map(|k| env(k).map(|v| ((*k).to_owned(), v)))
        .collect();
    let as_run: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let refused = |reason| CliError::Service(ServiceError::RunArgs { reason });
    let run_args = match Cli::from_args(&["crops-agent"], &as_run) {
        Ok(Cli {
            command: Command::Run(run_args),
        }) => run_args,
        Ok(_) => return Err(refused("it is not a run command line".to_owned())),
        Err(exit) => return Err(refused(exit.output.trim().to_owned())),
    };
    let service_env = |key: &str| kept.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    run_settings(run_args, &service_env)?;
    Ok(Unit {
        scope,
        argv,
        env: kept,
    })
}

/// `exe run --config CONFIG [options…]`: every option from its flag or
/// its variable, paths absolute.
pub fn run_argv(
    args: InstallArgs,
    exe: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, CliError> {
    let path = |what, p: &Path| utf8(what, &std::path::absolute(p).unwrap_or_else(|_| p.into()));
    let mut argv = vec![path("the agent's path", exe)?, "run".to_owned()];
    let mut add = |flag: &str, value: String| {
        argv.push(flag.to_owned());
        argv.push(value);
    };
    add(
        "--config",
        path("config path", &config_path(args.config, env)?)?,
    );
    let or_env = |flag: Option<String>, var: &str| flag.or_else(|| env(var));
    let or_env_path =
        |flag: Option<PathBuf>, var: &str| flag.or_else(|| env(var).map(PathBuf::from));
    if let Some(url) = or_env(args.url, ENV_URL) {
        add("--url", url);
    }
    if let Some(name) = or_env(args.name, ENV_NAME) {
        add("--name", name);
    }
    if let Some(ca) = or_env_path(args.ca_file, ENV_CA_FILE) {
        add("--ca-file", path("CA file", &ca)?);
    }
    if let Some(proxy) = args.proxy {
        add("--proxy", proxy);
    }
    if let Some(podman) = or_env_path(args.podman, ENV_PODMAN) {
        // A bare name is looked up on the service's PATH, as run does.
        let podman = if podman.components().count() > 1 {
            path("Podman path", &podman)?
        } else {
            utf8("Podman", &podman)?
        };
        add("--podman", podman);
    }
    if let Some(mode) = args.mode {
        add("--mode", mode);
    }
    if let Some(dir) = or_env_path(args.data_dir, ENV_DATA_DIR) {
        add("--data-dir", path("data directory", &dir)?);
    }
    if let Some(floor) = or_env(args.security_floor, ENV_SECURITY_FLOOR) {
        add("--security-floor", floor);
    }
    let labels = if args.label.is_empty() {
        env(ENV_LABELS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        args.label
    };
    for label in labels {
        add("--label", label);
    }
    if let Some(secs) = args.terminal_grace_secs {
        add("--terminal-grace-secs", secs.to_string());
    }
    Ok(argv)
}

/// `p` as UTF-8, which a unit file is.
fn utf8(what: &'static str, p: &Path) -> Result<String, ServiceError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ServiceError::Unwritable {
            what,
            value: p.display().to_string(),
            reason: "it is not UTF-8",
        })
}

/// This process's user id (the owner of `/proc/self`).
fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}
