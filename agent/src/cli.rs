//! The command line: `crops-agent enroll`, `run`, `doctor` and `service`
//! (its arguments in `cli/service`), and where each setting comes from
//! (flag, then environment, then config file, then a default).

use std::collections::BTreeMap;
use std::path::PathBuf;

use argh::FromArgs;
use protocol::container::Profile;
use protocol::worker::Mode;

use agent::config::{self, Config, ConfigError};
use agent::{EnrollError, EnrollOptions, RunError, RunSettings, Shutdown};

/// Environment variables `run` (and partly `enroll`) read.
pub const ENV_CONFIG: &str = "CROPS_CONFIG";
pub const ENV_URL: &str = "CROPS_URL";
pub const ENV_CREDENTIAL: &str = "CROPS_CREDENTIAL";
pub const ENV_NAME: &str = "CROPS_WORKER_NAME";
pub const ENV_CA_FILE: &str = "CROPS_CA_FILE";
pub const ENV_PODMAN: &str = "CROPS_PODMAN";
pub const ENV_DATA_DIR: &str = "CROPS_DATA_DIR";
pub const ENV_SECURITY_FLOOR: &str = "CROPS_SECURITY_FLOOR";
/// Comma-separated `key=value` labels, used when no `--label` is given.
pub const ENV_LABELS: &str = "CROPS_LABELS";

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no {what}: pass {flag}, set {env}, or enroll first")]
    Missing {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("invalid ${env}: {reason}")]
    BadEnv { env: &'static str, reason: String },
    #[error("invalid worker name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("invalid label {label:?}: {reason}")]
    BadLabel { label: String, reason: String },
    #[error(transparent)]
    Proxy(#[from] agent::proxy::ProxyError),
    #[error("{failed} check(s) failed: see the fixes above")]
    Unhealthy { failed: usize },
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Shutdown(#[from] agent::ShutdownError),
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// `service status` found the unit not active (exit 3, nothing more said).
    #[error("the service is not active")]
    Inactive,
}

/// The Crops worker agent: dials out to a Crops orchestrator and runs
/// development containers on this machine with Podman.
#[derive(FromArgs, Debug)]
#[argh(
    note = "Logs go to stderr at info and above. RUST_LOG picks others: a level
(RUST_LOG=debug), or target=level pairs and a default, comma-separated
(RUST_LOG=agent=debug,warn)."
)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Enroll(EnrollArgs),
    Run(RunArgs),
    Doctor(DoctorArgs),
    Service(service::ServiceArgs),
}

/// Check what this box needs (Podman, rootless set-up, cgroups, the
/// orchestrator's reachability, CA trust and clock) and print each problem
/// with its fix; exits 1 when a check fails. Changes nothing.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "doctor")]
pub struct DoctorArgs {
    /// config file (default: $CROPS_CONFIG, then $HOME/.cropscode/worker.json); its URL and CA file are used
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// orchestrator URL (overrides $CROPS_URL and the config)
    #[argh(option)]
    pub url: Option<String>,
    /// extra trusted CA certificates, PEM (overrides $CROPS_CA_FILE and the config)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// HTTP proxy, as for run (default: $HTTPS_PROXY unless $NO_PROXY names the host)
    #[argh(option)]
    pub proxy: Option<String>,
    /// the Podman CLI (overrides $CROPS_PODMAN; default: podman from PATH)
    #[argh(option)]
    pub podman: Option<PathBuf>,
}

/// Exchange a single-use join token for this worker's credential and write
/// its config file (mode 0600).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "enroll")]
pub struct EnrollArgs {
    /// orchestrator base URL: https://host:port (http://host:port for loopback development)
    #[argh(option)]
    pub url: String,
    /// the join token an administrator minted (crops_join_...)
    #[argh(option)]
    pub token: String,
    /// worker name (default: $CROPS_WORKER_NAME, then the hostname)
    #[argh(option)]
    pub name: Option<String>,
    /// config file to write (default: $CROPS_CONFIG, then $HOME/.cropscode/worker.json)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// extra trusted CA certificates, PEM, for an orchestrator with its own CA (default: $CROPS_CA_FILE)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// HTTP proxy to reach the orchestrator through: http://[user:password@]host[:port] (default: $HTTPS_PROXY unless $NO_PROXY names the host)
    #[argh(option)]
    pub proxy: Option<String>,
}

/// Connect to the orchestrator and serve it until SIGTERM or SIGINT.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// config file (default: $CROPS_CONFIG, then $HOME/.cropscode/worker.json)
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// orchestrator URL: the API's base URL https://host:port, or the agent socket wss://host:port/v1/agent (overrides $CROPS_URL and the config)
    #[argh(option)]
    pub url: Option<String>,
    /// worker credential (overrides $CROPS_CREDENTIAL and the config)
    #[argh(option)]
    pub credential: Option<String>,
    /// worker name (overrides $CROPS_WORKER_NAME, the config and the hostname)
    #[argh(option)]
    pub name: Option<String>,
    /// extra trusted CA certificates, PEM (overrides $CROPS_CA_FILE and the config)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// HTTP proxy to reach the orchestrator through: http://[user:password@]host[:port] (default: $HTTPS_PROXY unless $NO_PROXY names the host)
    #[argh(option)]
    pub proxy: Option<String>,
    /// the Podman CLI to drive (overrides $CROPS_PODMAN; default: podman from PATH)
    #[argh(option)]
    pub podman: Option<PathBuf>,
    /// byom (a tenant's own machine, the default) or fleet (a managed worker)
    #[argh(option, from_str_fn(parse_mode))]
    pub mode: Option<Mode>,
    /// directory holding workspaces/<containerId> (overrides $CROPS_DATA_DIR; default: the config file's directory)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// weakest security profile this worker runs: open, standard, strict or offline (overrides $CROPS_SECURITY_FLOOR; default: open, i.e. any)
    #[argh(option, from_str_fn(parse_floor))]
    pub security_floor: Option<Profile>,
    /// a label for placement policies, key=value (repeatable; overrides $CROPS_LABELS, comma-separated)
    #[argh(option)]
    pub label: Vec<String>,
    /// seconds a terminal session keeps running without a link to the orchestrator before it is hung up (default: 300)
    #[argh(option)]
    pub terminal_grace_secs: Option<u64>,
}

fn parse_floor(s: &str) -> Result<Profile, String> {
    agent::parse_profile(s)
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "byom" => Ok(Mode::Byom),
        "fleet" => Ok(Mode::Fleet),
        _ => Err(format!("mode must be byom or fleet, not {s:?}")),
    }
}

/// Run the parsed command line to completion.
pub fn main(cli: Cli) -> Result<(), CliError> {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    match cli.command {
        Command::Enroll(args) => {
            let opts = enroll_options(args, &env)?;
            let config = smol::block_on(agent::enroll(&opts))?;
            println!(
                "enrolled worker {} in tenant {}; config written to {}",
                config.worker_id,
                config.tenant_name,
                opts.config_path.display()
            );
            Ok(())
        }
        Command::Run(args) => {
            let settings = run_settings(args, &env)?;
            let shutdown = Shutdown::on_signals()?;
            smol::block_on(agent::run(settings, shutdown))?;
            Ok(())
        }
        Command::Doctor(args) => {
            let opts = doctor_options(args, &env)?;
            let checks = smol::block_on(agent::doctor(&opts));
            print!("{}", agent::report(&checks));
            let failed = checks
                .iter()
                .filter(|c| c.verdict == agent::Verdict::Fail)
                .count();
            if failed > 0 {
                return Err(CliError::Unhealthy { failed });
            }
            Ok(())
        }
        Command::Service(args) => service::main(args, &env),
    }
}

/// Resolve `doctor`'s options as `run` would: flag, environment, config.
/// A missing or unreadable config is no error here: the doctor says so.
pub fn doctor_options(
    args: DoctorArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<agent::DoctorOptions, CliError> {
    let config = config_path(args.config, env)
        .ok()
        .and_then(|p| Config::load(&p).ok());
    let url = args
        .url
        .or_else(|| env(ENV_URL))
        .or_else(|| config.as_ref().map(|c| c.url.clone()));
    let ca_file = args
        .ca_file
        .or_else(|| env(ENV_CA_FILE).map(PathBuf::from))
        .or_else(|| config.as_ref().and_then(|c| c.ca_file.clone()));
    let proxy = match &url {
        Some(url) => agent::proxy_for(args.proxy.as_deref(), url, env)?,
        None => None,
    };
    let podman = args
        .podman
        .or_else(|| env(ENV_PODMAN).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("podman"));
    Ok(agent::DoctorOptions {
        podman,
        url,
        ca_file,
        proxy,
    })
}

/// Resolve `enroll`'s options.
pub fn enroll_options(
    args: EnrollArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EnrollOptions, CliError> {
    let config_path = config_path(args.config, env)?;
    let name = args.name.or_else(|| env(ENV_NAME));
    if let Some(name) = &name {
        check_name(name)?;
    }
    let proxy = agent::proxy_for(args.proxy.as_deref(), &args.url, env)?;
    Ok(EnrollOptions {
        url: args.url,
        join_token: args.token,
        name,
        config_path,
        ca_file: args.ca_file.or_else(|| env(ENV_CA_FILE).map(PathBuf::from)),
        proxy,
    })
}

/// Resolve `run`'s settings: flag, then environment, then config file.
/// A missing config file is fine when the URL and credential come from elsewhere.
pub fn run_settings(
    args: RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunSettings, CliError> {
    let config_path = config_path(args.config, env)?;
    let config = match Config::load(&config_path) {
        Ok(c) => Some(c),
        Err(ConfigError::NotFound { .. })
            if (args.url.is_some() || env(ENV_URL).is_some())
                && (args.credential.is_some() || env(ENV_CREDENTIAL).is_some()) =>
        {
            None
        }
        Err(e) => return Err(e.into()),
    };
    let url = args
        .url
        .or_else(|| env(ENV_URL))
        .or_else(|| config.as_ref().map(|c| c.url.clone()))
        .ok_or(CliError::Missing {
            what: "orchestrator URL",
            flag: "--url",
            env: ENV_URL,
        })?;
    // A rotation is written back only to the file the credential came from.
    let (credential, credential_file) = match args.credential.or_else(|| env(ENV_CREDENTIAL)) {
        Some(c) => (c, None),
        None => match config.as_ref() {
            Some(c) => (c.credential.clone(), Some(config_path.clone())),
            None => {
                return Err(CliError::Missing {
                    what: "worker credential",
                    flag: "--credential",
                    env: ENV_CREDENTIAL,
                })
            }
        },
    };
    let name = match args
        .name
        .or_else(|| env(ENV_NAME))
        .or_else(|| config.as_ref().and_then(|c| c.name.clone()))
    {
        Some(name) => name,
        None => agent::sysinfo::hostname().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the hostname; naming this worker \"worker\"");
            "worker".into()
        }),
    };
    check_name(&name)?;
    let ca_file = args
        .ca_file
        .or_else(|| env(ENV_CA_FILE).map(PathBuf::from))
        .or_else(|| config.as_ref().and_then(|c| c.ca_file.clone()));
    let podman = args
        .podman
        .or_else(|| env(ENV_PODMAN).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("podman"));
    let data_dir = args
        .data_dir
        .or_else(|| env(ENV_DATA_DIR).map(PathBuf::from))
        .unwrap_or_else(|| {
            config_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
        });
    let security_floor = match args.security_floor {
        Some(p) => p,
        None => match env(ENV_SECURITY_FLOOR) {
            Some(s) => parse_floor(&s).map_err(|reason| CliError::BadEnv {
                env: ENV_SECURITY_FLOOR,
                reason,
            })?,
            None => Profile::Open,
        },
    };
    let labels = if args.label.is_empty() {
        let from_env = env(ENV_LABELS).unwrap_or_default();
        parse_labels(from_env.split(',').filter(|l| !l.trim().is_empty()))?
    } else {
        parse_labels(args.label.iter().map(String::as_str))?
    };
    let mut settings = RunSettings::new(url, credential, name);
    settings.data_dir = data_dir;
    settings.security_floor = security_floor;
    settings.labels = labels;
    if let Some(secs) = args.terminal_grace_secs {
        settings.terminal_grace = std::time::Duration::from_secs(secs);
    }
    settings.mode = args
        .mode
        .or_else(|| config.as_ref().and_then(|c| c.mode))
        .unwrap_or(Mode::Byom);
    settings.credential_file = credential_file;
    settings.ca_file = ca_file;
    settings.proxy = agent::proxy_for(args.proxy.as_deref(), &settings.url, env)?;
    settings.podman = podman;
    Ok(settings)
}

/// `key=value` pairs, checked as the orchestrator checks `worker.register`
/// ([`protocol::worker::check_label`], at most
/// [`protocol::worker::MAX_WORKER_LABELS`]), so a bad label stops the agent
/// here instead of every registration failing later.
fn parse_labels<'a>(
    pairs: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, CliError> {
    let mut labels = BTreeMap::new();
    for pair in pairs {
        let bad = |reason: String| CliError::BadLabel {
            label: pair.to_owned(),
            reason,
        };
        let (key, value) = pair
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("must be key=value".into()))?;
        protocol::worker::check_label(key, value).map_err(|e| bad(e.to_string()))?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(bad(format!("{key} is given twice")));
        }
    }
    if labels.len() > protocol::worker::MAX_WORKER_LABELS {
        return Err(CliError::BadLabel {
            label: format!("{} labels", labels.len()),
            reason: format!("at most {}", protocol::worker::MAX_WORKER_LABELS),
        });
    }
    Ok(labels)
}

fn config_path(
    flag: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, CliError> {
    match flag.or_else(|| env(ENV_CONFIG).map(PathBuf::from)) {
        Some(path) => Ok(path),
        None => Ok(config::default_path()?),
    }
}

/// A worker name is 1 to 64 bytes without control characters (as the
/// orchestrator checks it).
fn check_name(name: &str) -> Result<(), CliError> {
    let bad = |reason| CliError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 bytes long"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    Ok(())
}

mod service;
#[cfg(test)]
mod tests;
