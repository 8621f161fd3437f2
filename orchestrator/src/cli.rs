//! The command line: `serve`, and the admin subcommands that speak the HTTP
//! API (`tenant`, `join-token`, `worker`, `fleet`, `org`, `member`, `token`,
//! `audit`) and `policy test`.
//!
//! `serve` prints to stdout exactly: `admin token: crops_adm_...` (only when
//! it generated one) and then `listening on http(s)://ADDR`, flushed, once
//! the listener serves. Everything else goes to the log on stderr.

/// Declares an admin subcommand: its own fields plus the connection options
/// every admin subcommand takes (`--url`, `--admin-token`, `--ca-file`,
/// `--json`). Fields stay plain tokens, not `ty` fragments, so argh still
/// sees `Option<…>` and `Vec<…>` for what they are.
macro_rules! admin_subcommand {
    ($(#[doc = $doc:literal])* $name:ident = $cmd:literal { $($fields:tt)* }) => {
        $(#[doc = $doc])*
        #[derive(argh::FromArgs, Debug)]
        #[argh(subcommand, name = $cmd)]
        pub struct $name {
            $($fields)*
            /// orchestrator URL (default: $CROPS_URL)
            #[argh(option)]
            pub url: Option<String>,
            /// admin or member token (default: $CROPS_ADMIN_TOKEN)
            #[argh(option)]
            pub admin_token: Option<String>,
            /// extra CA certificate (PEM) to trust for https (default: $CROPS_CA_FILE)
            #[argh(option)]
            pub ca_file: Option<std::path::PathBuf>,
            /// print the API's JSON
            #[argh(switch)]
            pub json: bool,
        }
    };
}

mod fleet;
mod identity;
mod output;
mod policy;

use std::io::Write;
use std::path::PathBuf;

use argh::FromArgs;
use futures_lite::StreamExt;
use hyper::Method;
use serde_json::{json, Value};

use self::output::{tenant_table, text, worker_table};
use crate::client::{Client, ClientError};
use orchestrator::{ServeConfig, TlsFiles};

/// Crops orchestrator: HTTP API, agent WebSocket hub and state in redb.
#[derive(FromArgs, Debug)]
pub struct Args {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
    Tenant(TenantArgs),
    JoinToken(JoinTokenArgs),
    Worker(WorkerArgs),
    Fleet(fleet::FleetArgs),
    Policy(policy::PolicyArgs),
    Org(identity::OrgArgs),
    Member(identity::MemberArgs),
    Token(identity::TokenArgs),
    Audit(identity::AuditArgs),
}

/// Run the orchestrator.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to listen on, e.g. 0.0.0.0:8443 (port 0 picks a free one)
    #[argh(option)]
    pub listen: String,
    /// data directory: holds crops.redb, the embedded store (with
    /// --database: only local caches; default a directory under $TMPDIR)
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// the store shared by several replicas: a PostgreSQL URL, e.g.
    /// postgres://crops@db.example/crops (default: $CROPS_DATABASE_URL)
    #[argh(option)]
    pub database: Option<String>,
    /// this replica's identity in a shared database (default: a new one
    /// per start); a second live process with the same one is refused
    #[argh(option)]
    pub replica_id: Option<String>,
    /// the URL other replicas reach this one at
    #[argh(option)]
    pub advertise: Option<String>,
    /// PEM certificate chain; serves HTTPS with --tls-key
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// heartbeat interval dictated to agents, seconds
    #[argh(option, default = "protocol::DEFAULT_HEARTBEAT_SECS")]
    pub heartbeat_secs: u32,
    /// admin token (default: $CROPS_ADMIN_TOKEN, else the stored one, else a new one)
    #[argh(option)]
    pub admin_token: Option<String>,
    /// after SIGTERM, seconds to keep accepting while /readyz answers 503
    #[argh(option, default = "0")]
    pub drain_secs: u64,
    /// directory of static agent binaries served at /download/agent/{x86_64,aarch64}
    /// (crops-agent-ARCH, or cargo's target layout)
    #[argh(option)]
    pub agent_dir: Option<PathBuf>,
    /// seconds a terminal session may have no viewer before it is closed
    #[argh(option, default = "300")]
    pub terminal_grace_secs: u64,
    /// connections kept before one authenticates, in all; beyond, the oldest
    /// is closed (default: a quarter of the open-files limit, at most 4096)
    #[argh(option)]
    pub max_unauthenticated: Option<usize>,
    /// the same, per source address (IPv6: per /64; default: a quarter of
    /// --max-unauthenticated's default)
    #[argh(option)]
    pub max_unauthenticated_per_source: Option<usize>,
    /// seconds a new connection has to finish TLS and send a request (10)
    #[argh(option)]
    pub first_request_secs: Option<u64>,
}

/// Manage tenants.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "tenant")]
pub struct TenantArgs {
    #[argh(subcommand)]
    pub command: TenantCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TenantCommand {
    Create(TenantCreate),
    List(TenantList),
    Plan(fleet::TenantPlan),
}

admin_subcommand!(/// Create a tenant; prints its id.
TenantCreate = "create" {
    /// the tenant's name
    #[argh(option)]
    pub name: String,
});

admin_subcommand!(/// List tenants.
TenantList = "list" {
});

/// Manage join tokens.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "join-token")]
pub struct JoinTokenArgs {
    #[argh(subcommand)]
    pub command: JoinTokenCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum JoinTokenCommand {
    Create(JoinTokenCreate),
}

admin_subcommand!(/// Create a single-use join token for a tenant; prints the token.
JoinTokenCreate = "create" {
    /// tenant id
    #[argh(option)]
    pub tenant: String,
    /// lifetime in seconds (default 3600)
    #[argh(option)]
    pub ttl_secs: Option<u64>,
});

/// Manage workers.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "worker")]
pub struct WorkerArgs {
    #[argh(subcommand)]
    pub command: WorkerCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum WorkerCommand {
    List(WorkerList),
    Revoke(WorkerRevoke),
    Cordon(fleet::WorkerCordon),
    Uncordon(fleet::WorkerUncordon),
    Drain(fleet::WorkerDrain),
    Undrain(fleet::WorkerUndrain),
    Delete(fleet::WorkerDelete),
    RotateCredential(fleet::WorkerRotate),
}

admin_subcommand!(/// List workers with their status and last heartbeat.
WorkerList = "list" {
});

admin_subcommand!(/// Revoke a worker's credential and close its connection.
WorkerRevoke = "revoke" {
    /// worker id
    #[argh(positional)]
    pub id: String,
});

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{flag} is required (or set {env})")]
    Missing {
        flag: &'static str,
        env: &'static str,
    },
    #[error("--tls-cert and --tls-key go together")]
    TlsPair,
    #[error("say where the state lives: --data DIR (the embedded store) or --database postgres://... (or set CROPS_DATABASE_URL)")]
    NoStore,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] orchestrator::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Policy(#[from] policy::PolicyTestError),
}

/// Run a parsed command line.
pub async fn run(args: Args) -> Result<(), CliError> {
    match args.command {
        Command::Serve(a) => serve(a).await,
        Command::Fleet(a) => a.run().await,
        Command::Org(a) => a.run().await,
        Command::Member(a) => a.run().await,
        Command::Token(a) => a.run().await,
        Command::Audit(a) => a.run().await,
        Command::Policy(policy::PolicyArgs { command }) => match command {
            policy::PolicyCommand::Test(a) => Ok(a.run()?),
            policy::PolicyCommand::Upload(a) => a.run().await,
            policy::PolicyCommand::List(a) => a.run().await,
            policy::PolicyCommand::Activate(a) => a.run().await,
            policy::PolicyCommand::Rollback(a) => a.run().await,
            policy::PolicyCommand::Simulate(a) => a.run().await,
        },
        Command::Tenant(TenantArgs {
            command: TenantCommand::Plan(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Cordon(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Uncordon(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Drain(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Undrain(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Delete(a),
        }) => a.run().await,
        Command::Worker(WorkerArgs {
            command: WorkerCommand::RotateCredential(a),
        }) => a.run().await,
        Command::Tenant(TenantArgs {
            command: TenantCommand::Create(a),
        }) => {
            let client = client(a.url, a.admin_token, a.ca_file)?;
            let tenant = client
                .call(Method::POST, "/v1/tenants", Some(json!({ "name": a.name })))
                .await?;
            print_or_json(a.json, &tenant, || text(&tenant["id"]))
        }
        Command::Tenant(TenantArgs {
            command: TenantCommand::List(a),
        }) => {
            let client = client(a.url, a.admin_token, a.ca_file)?;
            let list = client.call(Method::GET, "/v1/tenants", None).await?;
            print_or_json(a.json, &list, || tenant_table(&list))
        }
        Command::JoinToken(JoinTokenArgs {
            command: JoinTokenCommand::Create(a),
        }) => {
            let client = client(a.url, a.admin_token, a.ca_file)?;
            let body = match a.ttl_secs {
                Some(ttl) => json!({ "ttlSecs": ttl }),
                None => json!({}),
            };
            let path = format!("/v1/tenants/{}/join-tokens", a.tenant);
            let token = client.call(Method::POST, &path, Some(body)).await?;
            print_or_json(a.json, &token, || text(&token["token"]))
        }
        Command::Worker(WorkerArgs {
            command: WorkerCommand::List(a),
        }) => {
            let client = client(a.url, a.admin_token, a.ca_file)?;
            let workers = client.call(Method::GET, "/v1/workers", None).await?;
            if a.json {
                return print_or_json(true, &workers, String::new);
            }
            let tenants = client.call(Method::GET, "/v1/tenants", None).await?;
            print_or_json(false, &workers, || {
                worker_table(&workers, &tenants, now_ms())
            })
        }
        Command::Worker(WorkerArgs {
            command: WorkerCommand::Revoke(a),
        }) => {
            let client = client(a.url, a.admin_token, a.ca_file)?;
            let path = format!("/v1/workers/{}/revoke", a.id);
            let worker = client.call(Method::POST, &path, None).await?;
            print_or_json(a.json, &worker, || {
                format!("revoked {}", text(&worker["id"]))
            })
        }
    }
}

async fn serve(a: ServeArgs) -> Result<(), CliError> {
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => return Err(CliError::TlsPair),
    };
    let listener = smol::net::TcpListener::bind(a.listen.as_str())
        .await
        .map_err(|source| CliError::Bind {
            addr: a.listen.clone(),
            source,
        })?;
    let database = a.database.or_else(|| env("CROPS_DATABASE_URL"));
    let data = match (a.data, &database) {
        (Some(dir), _) => dir,
        (None, Some(_)) => std::env::temp_dir().join("crops-orchestrator"),
        (None, None) => return Err(CliError::NoStore),
    };
    let mut config = ServeConfig::new(data);
    config.database = database;
    config.replica_id = a.replica_id;
    config.advertise = a.advertise;
    config.tls = tls;
    config.heartbeat_secs = a.heartbeat_secs;
    config.drain = std::time::Duration::from_secs(a.drain_secs);
    config.terminal_grace = std::time::Duration::from_secs(a.terminal_grace_secs);
    config.agent_dir = a.agent_dir;
    let limits = &mut config.connections;
    limits.unauthenticated = a.max_unauthenticated.unwrap_or(limits.unauthenticated);
    limits.unauthenticated_per_source = a
        .max_unauthenticated_per_source
        .unwrap_or(limits.unauthenticated_per_source);
    if let Some(secs) = a.first_request_secs {
        limits.first_request = std::time::Duration::from_secs(secs);
    }
    config.admin_token = a.admin_token.or_else(|| env("CROPS_ADMIN_TOKEN"));
    config.on_ready = Some(Box::new(|ready| {
        let mut out = std::io::stdout().lock();
        if let Some(token) = &ready.generated_admin_token {
            let _ = writeln!(out, "admin token: {token}");
        }
        let _ = writeln!(out, "listening on {}", ready.url());
        let _ = out.flush();
    }));
    let mut signals =
        async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(CliError::Signals)?;
    let shutdown = async move {
        if let Some(Ok(signal)) = signals.next().await {
            tracing::info!(?signal, "signal received");
        }
    };
    orchestrator::serve(config, listener, shutdown).await?;
    Ok(())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn client(
    url: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<Client, CliError> {
    let url = url.or_else(|| env("CROPS_URL")).ok_or(CliError::Missing {
        flag: "--url",
        env: "CROPS_URL",
    })?;
    let token = token
        .or_else(|| env("CROPS_ADMIN_TOKEN"))
        .ok_or(CliError::Missing {
            flag: "--admin-token",
            env: "CROPS_ADMIN_TOKEN",
        })?;
    let ca_file = ca_file.or_else(|| env("CROPS_CA_FILE").map(PathBuf::from));
    Ok(Client::new(&url, Some(token), ca_file.as_deref())?)
}

fn print_or_json(
    as_json: bool,
    value: &Value,
    human: impl FnOnce() -> String,
) -> Result<(), CliError> {
    let out = if as_json {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    } else {
        human()
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")
        .and_then(|()| stdout.flush())
        .map_err(CliError::Output)
}

/// Milliseconds since the Unix epoch, for ages in tables.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse() {
        let a = Args::from_args(
            &["crops-orchestrator"],
            &["serve", "--listen", "127.0.0.1:0", "--data", "/tmp/x"],
        )
        .unwrap();
        let Command::Serve(s) = a.command else {
            panic!("not serve")
        };
        assert_eq!(s.heartbeat_secs, 10);
        assert_eq!(s.terminal_grace_secs, 300);
        let a = Args::from_args(
            &["crops-orchestrator"],
            &["worker", "revoke", "abc", "--json"],
        )
        .unwrap();
        assert!(
            matches!(a.command, Command::Worker(WorkerArgs { command: WorkerCommand::Revoke(ref r) }) if r.id == "abc" && r.json)
        );
    }
}
