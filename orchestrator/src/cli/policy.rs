//! `crops-orchestrator policy test MODULE --cases FILE`: run a policy
//! component against conformance cases offline (no server, no store), with
//! the same engine, limits and checks as the orchestrator. Prints one line
//! per case and fails when any case fails.

use std::path::PathBuf;

use argh::FromArgs;

use crate::policy::cases::{self, CaseFile};
use crate::policy::{Limits, Policies, PolicyError};

/// Policy modules.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "policy")]
pub struct PolicyArgs {
    #[argh(subcommand)]
    pub command: PolicyCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum PolicyCommand {
    Test(PolicyTest),
}

/// Run a policy component (a .wasm file, or stock:NAME) against cases.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "test")]
pub struct PolicyTest {
    /// the component: a path, or stock:plan-limits|least-loaded|binpack|spread
    #[argh(positional)]
    pub module: String,
    /// a JSON file of cases (see policies/conformance/)
    #[argh(option)]
    pub cases: PathBuf,
    /// fuel per call (default 200000000)
    #[argh(option)]
    pub fuel: Option<u64>,
    /// memory cap per instance in bytes (default 67108864)
    #[argh(option)]
    pub memory: Option<usize>,
}

/// Why `policy test` failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a case file: {source}")]
    Cases {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{module}: {source}")]
    Module {
        module: String,
        #[source]
        source: PolicyError,
    },
    #[error("{failed} of {total} cases failed")]
    Failed { failed: usize, total: usize },
    #[error("{module} answers none of the {total} cases")]
    NoCase { module: String, total: usize },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, PolicyTestError> {
    std::fs::read(path).map_err(|source| PolicyTestError::Read {
        path: path.clone(),
        source,
    })
}

impl PolicyTest {
    pub fn run(self) -> Result<(), PolicyTestError> {
        let file: CaseFile = serde_json::from_slice(&read(&self.cases)?).map_err(|source| {
            PolicyTestError::Cases {
                path: self.cases.clone(),
                source,
            }
        })?;
        let module_err = |source| PolicyTestError::Module {
            module: self.module.clone(),
            source,
        };
        let policies = Policies::new(4).map_err(module_err)?;
        let defaults = Limits::default();
        let limits = Limits {
            fuel: self.fuel.unwrap_or(defaults.fuel),
            memory_bytes: self.memory.unwrap_or(defaults.memory_bytes),
        };
        let module = match self.module.strip_prefix("stock:") {
            Some(name) => policies
                .stock(name)
                .ok_or_else(|| module_err(PolicyError::NotFound(self.module.clone())))?,
            None => {
                let bytes = read(&PathBuf::from(&self.module))?;
                std::sync::Arc::new(
                    policies
                        .host()
                        .compile(&bytes, limits)
                        .map_err(module_err)?,
                )
            }
        };
        let outcomes = cases::run(policies.host(), &module, &file);
        for o in &outcomes {
            let mark = if o.passed { "ok  " } else { "FAIL" };
            println!("{mark} {}: {}", o.name, o.detail);
        }
        let failed = outcomes.iter().filter(|o| !o.passed).count();
        println!("{} passed, {failed} failed", outcomes.len() - failed);
        if outcomes.is_empty() {
            return Err(PolicyTestError::NoCase {
                module: self.module,
                total: file.cases.len(),
            });
        }
        if failed > 0 {
            return Err(PolicyTestError::Failed {
                failed,
                total: outcomes.len(),
            });
        }
        Ok(())
    }
}
