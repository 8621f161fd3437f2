//! `crops-orchestrator policy ...`: the operator's policy commands.
//!
//! * `test MODULE --cases FILE`: run a policy component against
//!   conformance cases offline (no server, no store), with the same
//!   engine, limits and checks as the orchestrator. Prints one line per
//!   case and fails when any case fails.
//! * `upload`, `activate`, `rollback`, `simulate`: the API's policy
//!   routes; they print its JSON answer (an activation or rollback lists
//!   each slot it changed, by scope and role).
//! * `list`: the active slots, one row per scope and role (its module,
//!   fail mode, health and last-good), who decides each role for the
//!   tenant with `--tenant`, and the uploaded versions; `--json` prints
//!   the API's answer instead.

use std::path::PathBuf;

use argh::FromArgs;
use serde_json::Value;

use super::output::{table, text};

use orchestrator::policy::cases::{self, CaseFile};
use orchestrator::policy::{Limits, Policies, PolicyError};

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
    /// the world it must implement at least: admission, placement or policy (both)
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
    #[argh(
        option,
        description = "extra CA certificate (PEM) to trust for https (default: $CROPS_CA_FILE)"
    )]
    pub ca_file: Option<PathBuf>,
}

/// List what is active per scope and role, and the uploaded versions.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct PolicyList {
    /// a tenant's policies (default: all, the operator)
    #[argh(option)]
    pub tenant: Option<String>,
    /// print the API's JSON answer
    #[argh(switch)]
    pub json: bool,
    #[argh(option, description = "orchestrator URL (default: $CROPS_URL)")]
    pub url: Option<String>,
    #[argh(option, description = "admin token (default: $CROPS_ADMIN_TOKEN)")]
    pub admin_token: Option<String>,
    #[argh(
        option,
        description = "extra CA certificate (PEM) to trust for https (default: $CROPS_CA_FILE)"
    )]
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
            #[argh(option, description = "extra CA certificate (PEM) to trust for https (default: $CROPS_CA_FILE)")]
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
    PolicyActivate = "activate", "/activate", "Make a policy version the active one of every role it implements in its scope.";
    PolicyRollback = "rollback", "/rollback", "Back to the version active before this one, in each role it is active in.";
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
        crate::cli::print_or_json(self.json, &reply, || list_text(&reply))
    }
}

/// `policy list` for a human: the active slots, who decides for the
/// tenant (with `--tenant`), the versions.
fn list_text(list: &Value) -> String {
    let rows = |key: &str, row: &dyn Fn(&Value) -> Vec<String>| -> Vec<Vec<String>> {
        list[key]
            .as_array()
            .map(|xs| xs.iter().map(row).collect())
            .unwrap_or_default()
    };
    let active = rows("active", &|a| {
        let registry = &a["registry"];
        let health = match (
            &registry["health"]["healthy"],
            &registry["health"]["failures"],
        ) {
            (Value::Bool(true), _) => "healthy".to_owned(),
            (Value::Bool(false), n) => format!("unhealthy ({} failures)", text(n)),
            _ => "not loaded".to_owned(),
        };
        let module = a["module"]
            .as_str()
            .unwrap_or_else(|| a["current"]["policyId"].as_str().unwrap_or_default());
        vec![
            text(&a["scope"]),
            text(&a["role"]),
            module.to_owned(),
            text(&a["current"]["failMode"]),
            health,
            text(&registry["lastGood"]),
            a["previous"].as_array().map_or(0, Vec::len).to_string(),
        ]
    });
    let header = [
        "SCOPE",
        "ROLE",
        "MODULE",
        "FAIL MODE",
        "HEALTH",
        "LAST-GOOD",
        "HISTORY",
    ];
    let mut out = vec![if active.is_empty() {
        "No module active: the stock defaults decide.".to_owned()
    } else {
        table(&header, active)
    }];
    if let Some(effective) = list["effective"].as_object() {
        let lines: Vec<String> = effective
            .iter()
            .map(|(role, module)| format!("{role}: {}", text(module)))
            .collect();
        out.push(format!("Deciding for the tenant now: {}", lines.join(", ")));
    }
    let versions = rows("policies", &|p| {
        let version = format!("{}@{}", text(&p["name"]), text(&p["version"]));
        vec![text(&p["id"]), text(&p["scope"]), version, text(&p["kind"])]
    });
    if !versions.is_empty() {
        out.push(table(&["ID", "SCOPE", "VERSION", "KIND"], versions));
    }
    out.join("\n\n")
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn list_shows_one_row_per_scope_and_role() {
        let slot = |role: &str, module: &str, healthy: bool| {
            json!({
                "scope": "tenant:t1", "role": role, "module": module,
                "current": { "policyId": "p", "failMode": "lastGood" },
                "previous": [{ "policyId": "q", "failMode": "closed" }],
                "registry": { "health": { "healthy": healthy, "failures": 2 },
                              "lastGood": "tenant:t1:old@1" },
            })
        };
        let list = json!({
            "active": [slot("admission", "tenant:t1:limits@2", true),
                       slot("placement", "tenant:t1:bp@1", false)],
            "effective": { "admission": "tenant:t1:limits@2", "placement": "tenant:t1:bp@1" },
            "policies": [{ "id": "p", "scope": "tenant:t1", "name": "bp", "version": 1, "kind": "placement" }],
        });
        let text = super::list_text(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SCOPE"), "{text}");
        assert!(lines[1].contains("admission") && lines[1].contains("tenant:t1:limits@2"));
        assert!(lines[1].contains("lastGood") && lines[1].contains("healthy"));
        assert!(lines[2].contains("placement") && lines[2].contains("unhealthy (2 failures)"));
        assert!(text.contains(
            "Deciding for the tenant now: admission: tenant:t1:limits@2, placement: tenant:t1:bp@1"
        ));
        assert!(text.contains("bp@1") && text.contains("ID"), "{text}");
        let empty = super::list_text(&json!({ "active": [], "policies": [] }));
        assert_eq!(empty, "No module active: the stock defaults decide.");
    }
}
