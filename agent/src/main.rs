//! `crops-agent`: parse arguments, install the tracing subscriber (stderr,
//! `RUST_LOG`-style filter, default `info`) and hand over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli: agent::cli::Cli = argh::from_env();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match agent::cli::main(cli).map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The library's messages already name their causes; print just the top.
            eprintln!("crops-agent: error: {e}");
            ExitCode::FAILURE
        }
    }
}
