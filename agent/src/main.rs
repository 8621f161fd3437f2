//! `crops-agent`: parse arguments, install the tracing subscriber (stderr,
//! `RUST_LOG`-style filter, default `info`) and hand over to the library.
//!
//! The executable is multi-call: started under the name `crops-pty` (as it
//! is inside containers, bind-mounted at `/.crops/crops-pty`) it is the
//! in-container PTY helper ([`agent::terminal::helper`]) and nothing else:
//! no argument parsing, no logging set-up, no async runtime. A statically
//! linked agent offers itself as that helper to every container it creates.

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if agent::terminal::helper::invoked_as_helper(argv0.as_deref()) {
        let code = agent::terminal::helper::main(args.collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX));
    }
    let cli: agent::cli::Cli = argh::from_env();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    offer_pty_helper();
    match agent::cli::main(cli).map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
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
            agent::podman::container::set_pty_helper(&exe)
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
