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
    Upload(PolicyUpload),
    List(PolicyList),
    Activate(PolicyActivate),
    Rollback(PolicyRollback),
    Simulate(PolicySimulate),
}

/// Upload a policy component (a new version of NAME in its scope).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "upload")]
pub struct PolicyUpload {
    /// the component (.wasm)
    #[argh(positional)]
    pub file: PathBuf,
    /// admission or placement
    #[argh(option)]
    pub kind: String,
    /// the policy's name
    #[argh(option)]
    pub name: String,
    /// a tenant's policy (default: global)
    #[argh(option)]
    pub tenant: Option<String>,
    #[argh(option, description = "orchestrator URL (default: $CROPS_URL)")]
    pub url: Option<String>,
    #[argh(option, description = "admin token (default: $CROPS_ADMIN_TOKEN)")]
    pub admin_token: Option<String>,
    #[argh(option, description = "extra CA certificate (PEM) to trust for https")]
    pub ca_file: Option<PathBuf>,
}

/// List uploaded policies and what is active.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct PolicyList {
    /// a tenant's policies (default: all, the operator)
    #[argh(option)]
    pub tenant: Option<String>,
    #[argh(option, description = "orchestrator URL (default: $CROPS_URL)")]
    pub url: Option<String>,
    #[argh(option, description = "admin token (default: $CROPS_ADMIN_TOKEN)")]
    pub admin_token: Option<String>,
    #[argh(option, description = "extra CA certificate (PEM) to trust for https")]
    pub ca_file: Option<PathBuf>,
}

macro_rules! policy_action {
    ($($name:ident = $cmd:literal, $suffix:literal, $doc:literal;)*) => {$(
        #[doc = $doc]
        #[derive(FromArgs, Debug)]
        #[argh(subcommand, name = $cmd)]
        pub struct $name {
            /// policy id
            #[argh(positional)]
            pub id: String,
            /// simulate: the last N decisions (default 20); activate: ignored
            #[argh(option)]
            pub last: Option<u32>,
            /// activate: closed (default) or lastGood
            #[argh(option)]
            pub fail_mode: Option<String>,
            #[argh(option, description = "orchestrator URL (default: $CROPS_URL)")]
            pub url: Option<String>,
            #[argh(option, description = "admin token (default: $CROPS_ADMIN_TOKEN)")]
            pub admin_token: Option<String>,
            #[argh(option, description = "extra CA certificate (PEM) to trust for https")]
            pub ca_file: Option<PathBuf>,
        }

        impl $name {
            pub async fn run(self) -> Result<(), crate::cli::CliError> {
                let client = crate::cli::client(self.url, self.admin_token, self.ca_file)?;
                let mut path = format!("/v1/policies/{}{}", self.id, $suffix);
                let mut sep = '?';
                if let Some(n) = self.last {
                    path.push_str(&format!("{sep}last={n}"));
                    sep = '&';
                }
                if let Some(m) = self.fail_mode {
                    path.push_str(&format!("{sep}failMode={m}"));
                }
                let reply = client.call(hyper::Method::POST, &path, None).await?;
                crate::cli::print_or_json(true, &reply, String::new)
            }
        }
    )*};
}

policy_action! {
    PolicyActivate = "activate", "/activate", "Make a policy version the active one of its scope.";
    PolicyRollback = "rollback", "/rollback", "Back to the version active before this one.";
    PolicySimulate = "simulate", "/simulate", "Replay the last N decisions of the policy's scope through it.";
}

impl PolicyUpload {
    pub async fn run(self) -> Result<(), crate::cli::CliError> {
        let bytes = read(&self.file)?;
        let client = crate::cli::client(self.url, self.admin_token, self.ca_file)?;
        let mut path = format!("/v1/policies?kind={}&name={}", self.kind, self.name);
        if let Some(t) = self.tenant {
            path.push_str(&format!("&tenantId={t}"));
        }
        let body = Some((hyper::body::Bytes::from(bytes), "application/wasm"));
        let reply = client.call_raw(hyper::Method::POST, &path, body).await?;
        crate::cli::print_or_json(true, &reply, String::new)
    }
}

impl PolicyList {
    pub async fn run(self) -> Result<(), crate::cli::CliError> {
        let client = crate::cli::client(self.url, self.admin_token, self.ca_file)?;
        let path = match self.tenant {
            Some(t) => format!("/v1/policies?tenantId={t}"),
            None => "/v1/policies".to_owned(),
        };
        let reply = client.call(hyper::Method::GET, &path, None).await?;
        crate::cli::print_or_json(true, &reply, String::new)
    }
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
    /// fuel per call (default 1000000000)
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
