//! The Crops worker agent: one static binary that dials **out** to the
//! orchestrator over a WebSocket and drives Podman on the machine it runs on.
//!
//! Two entry points, each a thin call from `main`:
//!
//! * [`enroll`] exchanges a single-use join token for this worker's
//!   credential (`POST /v1/enroll`) and writes `~/.cropscode/worker.json`.
//! * [`run`] connects to `wss://…/v1/agent` with that credential, registers,
//!   heartbeats and answers commands, reconnecting with backoff until
//!   [`Shutdown`] fires.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = agent::RunSettings::new(
//!     "wss://orch.example:8443/v1/agent",
//!     "crops_wkr_…",
//!     "nas",
//! );
//! let shutdown = agent::Shutdown::on_signals()?;
//! smol::block_on(agent::run(settings, shutdown))?;
//! # Ok(()) }
//! ```
//!
//! The binary's `cli` (arguments, and where settings come from: flag, then
//! env, then config file) sits outside this library, which it calls.
//!
//! The public surface is what the binary, embedders and the tests use:
//! [`run`] and its [`RunSettings`], [`enroll`], [`Shutdown`], the
//! [`config`] file and the [`sysinfo`] facts; the command layer without a
//! socket ([`Executor`] over [`Podman`], with [`Git`]); and the PTY helper
//! the binary re-runs itself as ([`pty_helper`]). Every other module is
//! private.
//!
//! Module map: [`config`] (the worker.json file), `enroll`, `net` (URLs,
//! TCP and TLS dialing), `tls`, `connection` (protocol messages over the
//! WebSocket), `session` (one connection's life), `rotate` (the credential
//! and its rotation), `commands` (every command, one reply each),
//! `background` (background exec jobs), `terminal` (live terminals on
//! PTYs, which outlive connections), `workspace` (host workspace
//! directories), `git` (the only module that spawns `git`), `status`
//! (register and heartbeat facts), `rootless` (what rootless Podman
//! cannot do on this host), [`sysinfo`], `podman` (the only module
//! that spawns `podman`), `backoff` and `shutdown`.

mod background;
mod backoff;
mod commands;
pub mod config;
mod connection;
mod doctor;
mod egress;
mod enroll;
mod gateway;
mod git;
mod net;
mod podman;
pub mod proxy;
mod rootless;
mod rotate;
mod session;
mod shutdown;
mod status;
pub mod sysinfo;
mod terminal;
mod tls;
mod usage;
mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
pub use protocol::container::Profile;
pub use protocol::worker::Mode;

pub use backoff::BackoffPolicy;
pub use commands::Executor;
pub use doctor::{doctor, report, Check, DoctorOptions, Verdict};
pub use enroll::{enroll, EnrollError, EnrollOptions};
pub use git::Git;
pub use net::proxy_for;
pub use podman::profile::parse as parse_profile;
pub use podman::{Limits, Podman};
pub use shutdown::{Shutdown, ShutdownError, ShutdownTrigger};

/// The PTY helper, `crops-pty`: the agent's own static executable, run
/// inside a container to open a terminal's PTY and hand its master to the
/// agent (`terminal/helper.rs`). The binary runs as it when started under
/// that name ([`invoked_as_helper`](pty_helper::invoked_as_helper),
/// [`main`](pty_helper::main)) and offers itself to every container
/// ([`set_pty_helper`](pty_helper::set_pty_helper)); tests host it
/// directly ([`handoff`](pty_helper::handoff),
/// [`place_for_exec`](pty_helper::place_for_exec)).
pub mod pty_helper {
    pub use crate::podman::container::set_pty_helper;
    pub use crate::podman::process::place_for_exec;
    pub use crate::terminal::handoff;
    pub use crate::terminal::helper::{invoked_as_helper, main};
}

/// The egress relay, `crops-egress`: the agent's own static executable as
/// the entrypoint of a Standard or Strict container, piping its proxy port
/// to the agent's gate (`egress.rs`). The binary runs as it when started
/// under that name.
pub mod egress_relay {
    pub use crate::egress::relay::{invoked_as_relay, main};
}

/// Why [`run`] could not start. Once running, every failure is retried.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Url(#[from] net::NetError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The session clocks. [`Timing::default`] is the product's; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the agent pings the orchestrator until `worker.accepted`;
    /// from then on, every half of the heartbeat interval it dictates
    /// ([`session::clocks`]).
    pub ping_interval: Duration,
    /// With nothing at all heard for this long before `worker.accepted`,
    /// the connection is presumed half-open and dropped; from then on, after
    /// two of the dictated heartbeat intervals ([`session::clocks`]).
    pub liveness: Duration,
    /// Bound on dial plus TLS, and separately on the WebSocket upgrade.
    pub connect_timeout: Duration,
    /// How long a closing handshake may take.
    pub close_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            // Two of the default heartbeat intervals, as after acceptance.
            ping_interval: Duration::from_secs(5),
            liveness: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(20),
            close_grace: Duration::from_secs(2),
        }
    }
}

/// Everything [`run`] needs, resolved from the config file, flags and
/// environment by the binary's `cli`. `Debug` redacts the credential.
#[derive(Clone)]
pub struct RunSettings {
    /// The orchestrator: its agent socket, `wss://host:port/v1/agent`
    /// (`ws://` for loopback development), or the API's base URL
    /// `https://host:port`, from which [`run`] derives the socket as
    /// `enroll` does ([`net::socket_url`]).
    pub url: String,
    /// The worker credential, sent as `Authorization: Bearer …`.
    pub credential: String,
    /// The config file `credential` was read from: a rotation is written
    /// there. `None` (a flag or the environment) refuses rotations.
    pub credential_file: Option<PathBuf>,
    /// The worker name sent in `worker.register`.
    pub name: String,
    pub mode: Mode,
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// The HTTP proxy to the orchestrator (`--proxy`, `HTTPS_PROXY`);
    /// `None`: direct.
    pub proxy: Option<proxy::Proxy>,
    /// The Podman CLI to drive.
    pub podman: PathBuf,
    /// Where workspaces live (`<data_dir>/workspaces/<containerId>`).
    pub data_dir: PathBuf,
    /// The weakest security profile this worker runs (`Open`: any).
    pub security_floor: Profile,
    /// Labels offered to placement policies (`--label key=value`).
    pub labels: BTreeMap<String, String>,
    /// How long a terminal session may go without a link to the
    /// orchestrator before it is hung up.
    pub terminal_grace: Duration,
    pub backoff: BackoffPolicy,
    pub timing: Timing,
}

impl RunSettings {
    /// Settings with the product's defaults: `byom`, `podman` from `PATH`.
    pub fn new(
        url: impl Into<String>,
        credential: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            credential: credential.into(),
            credential_file: None,
            name: name.into(),
            mode: Mode::Byom,
            ca_file: None,
            proxy: None,
            podman: PathBuf::from("podman"),
            data_dir: default_data_dir(),
            security_floor: Profile::Open,
            labels: BTreeMap::new(),
            terminal_grace: terminal::DEFAULT_GRACE,
            backoff: BackoffPolicy::default(),
            timing: Timing::default(),
        }
    }
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings")
            .field("url", &self.url)
            .field("credential", &"<redacted>")
            .field("credential_file", &self.credential_file)
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("ca_file", &self.ca_file)
            .field("proxy", &self.proxy)
            .field("podman", &self.podman)
            .field("data_dir", &self.data_dir)
            .field("security_floor", &self.security_floor)
            .field("labels", &self.labels)
            .field("terminal_grace", &self.terminal_grace)
            .field("backoff", &self.backoff)
            .field("timing", &self.timing)
            .finish()
    }
}

/// The directory of the default config file (`~/.cropscode`), else a
/// directory under the system's temporary directory.
fn default_data_dir() -> PathBuf {
    config::default_path()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join("crops-agent"))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Byom => "byom",
        Mode::Fleet => "fleet",
    }
}

/// Serve the orchestrator until `shutdown` fires: connect, register, heartbeat,
/// answer commands; after any failure wait out the backoff and reconnect.
/// Returns `Ok(())` on shutdown; errors only for settings that can never work.
pub async fn run(settings: RunSettings, shutdown: Shutdown) -> Result<(), RunError> {
    // An https base URL becomes its socket URL; a URL that can never work
    // stops the agent here instead of failing every attempt.
    let url = net::socket_url(&settings.url)?;
    let endpoint = net::Endpoint::parse(&url)?.through(settings.proxy.clone());
    if let Some(p) = &settings.proxy {
        tracing::info!(proxy = %p.authority(), "reaching the orchestrator through an HTTP proxy");
    }
    let tls = tls::client_config(settings.ca_file.as_deref())?;
    let podman = podman::Podman::new(&settings.podman);
    let host = rootless::Report::detect();
    for limitation in &host.limitations {
        tracing::warn!(%limitation, "rootless Podman: reported to the orchestrator");
    }
    let executor = Arc::new(
        commands::Executor::new(podman.clone(), &settings.data_dir, settings.security_floor)
            .with_terminal_grace(settings.terminal_grace),
    );
    let ctx = session::Context {
        url: url.clone(),
        endpoint,
        tls,
        credential: rotate::Credential::new(
            settings.credential.clone(),
            settings.credential_file.clone(),
        ),
        name: settings.name.clone(),
        mode: settings.mode,
        labels: settings.labels.clone(),
        security_floor: settings.security_floor,
        host: host.clone(),
        podman,
        executor: executor.clone(),
        timing: settings.timing,
        shutdown: shutdown.clone(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        name = %settings.name,
        mode = mode_name(settings.mode),
        data_dir = %settings.data_dir.display(),
        security_floor = podman::profile::name(settings.security_floor),
        rootless = host.rootless,
        "crops-agent starting"
    );
    let mut backoff = backoff::Backoff::new(settings.backoff);
    let mut attempt: u32 = 0;
    while !shutdown.is_requested() {
        attempt = attempt.saturating_add(1);
        tracing::info!(attempt, %url, "connecting to orchestrator");
        match session::run(&ctx).await {
            session::End::Shutdown => break,
            session::End::Failed {
                error,
                accepted_for,
            } => {
                tracing::warn!(attempt, %url, "{error}");
                backoff.connection_ended(accepted_for);
            }
        }
        let delay = backoff.next_delay();
        tracing::info!("retrying in {:.1}s", delay.as_secs_f64());
        let stopped = async {
            shutdown.wait().await;
            true
        }
        .or(async {
            smol::Timer::after(delay).await;
            false
        })
        .await;
        if stopped {
            break;
        }
    }
    // A terminal cannot outlive the agent holding its PTY: end them all.
    executor.terminals().hangup_all().await;
    tracing::info!("crops-agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The library exposes what the binary and the tests use, not every
    /// module: the public modules are exactly these (the rest of the
    /// surface is re-exported items at the crate root).
    #[test]
    fn only_the_used_modules_are_public() {
        let public: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches([';', '{', ' ']))
            .collect();
        assert_eq!(
            public,
            ["config", "proxy", "sysinfo", "pty_helper", "egress_relay"]
        );
    }
}
