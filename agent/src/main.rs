//! `crops-agent`: parse arguments, install the tracing subscriber (stderr,
//! `RUST_LOG` filter, default `info`; see [`log_filter`]) and hand over to
//! the library.
//!
//! The executable is multi-call: started under the name `crops-pty` (as it
//! is inside containers, bind-mounted at `/.crops/crops-pty`) it is the
//! in-container PTY helper ([`agent::pty_helper`]) and nothing else:
//! no argument parsing, no logging set-up, no async runtime. A statically
//! linked agent offers itself as that helper to every container it creates.
//! Started as `crops-egress` it is the egress relay of a Standard or Strict
//! container ([`agent::egress_relay`]), likewise bare.

mod cli;
mod service;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, ParseError, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if agent::pty_helper::invoked_as_helper(argv0.as_deref()) {
        let code = agent::pty_helper::main(args.collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    if agent::egress_relay::invoked_as_relay(argv0.as_deref()) {
        let code = agent::egress_relay::main(args.collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let cli: cli::Cli = argh::from_env();
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, refused) = match log_filter(rust_log.as_deref()) {
        Ok(filter) => (filter, None),
        Err(e) => (default_filter(), Some(e)),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    if let Some(e) = refused {
        let rust_log = rust_log.unwrap_or_default();
        tracing::warn!(%rust_log, error = %e, "RUST_LOG not understood; logging at info");
    }
    offer_pty_helper();
    match cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `service status` printed what it found; exit as systemctl would.
        Err(cli::CliError::Inactive) => ExitCode::from(3),
        Err(e) => {
            // The library's messages already name their causes; print just the top.
            eprintln!("crops-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A statically linked agent runs in any container: mount it as the PTY
/// helper of the containers it creates. A dynamically linked one (a dev
/// build) cannot, and its terminals use `podman exec -it` on a host PTY.
fn offer_pty_helper() {
    if !cfg!(target_feature = "crt-static") {
        tracing::debug!("dynamically linked: terminals use a host PTY");
        return;
    }
    let result = std::env::current_exe()
        .map_err(|e| e.to_string())
        .and_then(|exe| {
            agent::pty_helper::set_pty_helper(&exe)
                .map(|()| exe)
                .map_err(|e| e.to_string())
        });
    match result {
        Ok(exe) => tracing::debug!(exe = %exe.display(), "PTY helper for new containers"),
        Err(e) => {
            tracing::warn!(error = %e, "no PTY helper: terminals of new containers use a host PTY")
        }
    }
}

/// What is logged without a usable `RUST_LOG`: `info` and above.
fn default_filter() -> Targets {
    Targets::new().with_default(LevelFilter::INFO)
}

/// The filter `RUST_LOG` asks for: comma-separated directives, each a level
/// (`debug`), a `target=level` pair (`agent::podman=debug`) or a bare target
/// (all its levels); e.g. `agent=debug,warn`. A target covers every target
/// it begins (`agent` covers `agent::podman`); the longest match wins.
/// Unset or empty: [`default_filter`]; an unreadable directive refuses the
/// whole value. These are `EnvFilter`'s common forms; its span filters
/// (`[span]=debug`) and regular expressions are not understood (tracing's
/// `Targets`, for the agent's size: see `agent/Cargo.toml`).
fn log_filter(var: Option<&str>) -> Result<Targets, ParseError> {
    let directives: Vec<&str> = var
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Ok(default_filter());
    }
    directives.join(",").parse()
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    const TRACE: Level = Level::TRACE;
    const DEBUG: Level = Level::DEBUG;
    const INFO: Level = Level::INFO;
    const WARN: Level = Level::WARN;

    /// `(target, level, logged?)` under the filter `RUST_LOG` gives.
    fn check(rust_log: Option<&str>, cases: &[(&str, Level, bool)]) {
        let filter = log_filter(rust_log).unwrap();
        for &(target, level, want) in cases {
            assert_eq!(
                filter.would_enable(target, &level),
                want,
                "RUST_LOG={rust_log:?}: {target} at {level}"
            );
        }
    }

    #[test]
    fn log_filter_reads_the_common_rust_log_forms() {
        for unset in [None, Some(""), Some(" , ")] {
            check(
                unset,
                &[
                    ("agent", INFO, true),
                    ("agent", DEBUG, false),
                    ("rustls", INFO, true),
                ],
            );
        }
        check(
            Some("info"),
            &[("agent::session", INFO, true), ("agent", DEBUG, false)],
        );
        check(
            Some("DEBUG"),
            &[
                ("agent::podman", DEBUG, true),
                ("async_io", DEBUG, true),
                ("agent", TRACE, false),
            ],
        );
        check(
            Some("agent=debug,warn"),
            &[
                ("agent", DEBUG, true),
                ("agent::podman::container", DEBUG, true),
                ("agent", TRACE, false),
                ("rustls", INFO, false),
                ("rustls", WARN, true),
            ],
        );
        check(
            Some("info, agent::podman=debug"),
            &[
                ("agent::podman", DEBUG, true),
                ("agent::session", DEBUG, false),
                ("x", INFO, true),
            ],
        );
        check(Some("off"), &[("agent", Level::ERROR, false)]);
        check(
            Some("agent"),
            &[("agent", TRACE, true), ("rustls", Level::ERROR, false)],
        );
    }

    #[test]
    fn log_filter_refuses_what_it_cannot_read() {
        for bad in ["agent=loud", "a=b=c", "info,agent=verbose"] {
            assert!(log_filter(Some(bad)).is_err(), "{bad}");
        }
    }
}
