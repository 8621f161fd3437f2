//! `crops-orchestrator`: parse the arguments, install the log subscriber, run.
//!
//! Logs go to stderr, coloured only when stderr is a terminal: a log file
//! or a journal gets plain text, without ANSI escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Threads of the blocking pool that runs every redb call (`smol::unblock`).
/// Its default of 500 is reached when calls queue behind redb's one
/// writer (thousands of agents registering at once), and each idle thread
/// keeps ~24 KiB of stack resident: 12 MB at 10,000 agents. Writes are
/// serialized by redb anyway, so 64 threads lose nothing. An operator's
/// own `BLOCKING_MAX_THREADS` wins.
const BLOCKING_MAX_THREADS: &str = "64";

fn main() -> anyhow::Result<()> {
    if std::env::var_os("BLOCKING_MAX_THREADS").is_none() {
        // Still single-threaded here; the pool reads it once, on first use.
        std::env::set_var("BLOCKING_MAX_THREADS", BLOCKING_MAX_THREADS);
    }
    let args: orchestrator::cli::Args = argh::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    smol::block_on(orchestrator::cli::run(args))?;
    Ok(())
}
