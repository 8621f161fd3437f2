//! `crops-orchestrator`: parse the arguments, install the log subscriber, run.

use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args: orchestrator::cli::Args = argh::from_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    smol::block_on(orchestrator::cli::run(args))?;
    Ok(())
}
