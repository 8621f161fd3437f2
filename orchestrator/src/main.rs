//! `crops-orchestrator`: parse the arguments, install the log subscriber, run.
//!
//! Logs go to stderr, coloured only when stderr is a terminal: a log file
//! or a journal gets plain text, without ANSI escape codes.

mod cli;
mod client;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Threads of the blocking pool that runs every redb call (`smol::unblock`).
/// Its default of 500 is reached when calls queue behind redb's one
/// writer (thousands of agents registering at once), and each idle thread
/// keeps ~24 KiB of stack resident (plus its malloc cache): 12 MB at
/// 10,000 agents. Writes are serialized by redb anyway, so 32 threads on
/// a few cores lose nothing (64 held 3.6 MB more with 10,000 agents). An
/// operator's own `BLOCKING_MAX_THREADS` wins.
const BLOCKING_MAX_THREADS: &str = "32";

/// glibc malloc arenas (its default is 8 per core, 16 here). A connection
/// is set up on the executor's threads and its records on the blocking
/// pool's, so with many arenas every one of them keeps its own free,
/// fragmented share of the agents' memory. Measured holding 10,000 idle
/// agents: 1 arena instead of the default 16 kept 17 MB less, and 8.5 MB
/// less than 2 (allocations are mostly small, served by glibc's
/// per-thread caches without the arena lock; writes and enrolments ran
/// as fast). An operator's own `MALLOC_ARENA_MAX` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: std::ffi::c_int = 1;

fn main() -> anyhow::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable of glibc's allocator, here
        // while the process is still single-threaded.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
    if std::env::var_os("BLOCKING_MAX_THREADS").is_none() {
        // Still single-threaded here; the pool reads it once, on first use.
        std::env::set_var("BLOCKING_MAX_THREADS", BLOCKING_MAX_THREADS);
    }
    let args: cli::Args = argh::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    smol::block_on(cli::run(args))?;
    Ok(())
}
