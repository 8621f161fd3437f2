//! Admin subcommands for worker administration, plans and the fleet:
//! `worker cordon|uncordon|drain|undrain|delete|rotate-credential ID`,
//! `tenant plan ID --name NAME [--workers N --concurrent-containers N
//! --history-days N]` and `fleet join-token --region R [--platform P]`.
//! Each is one API call (see ARCHITECTURE.md); `--json` prints its answer.

use argh::FromArgs;
use hyper::Method;
use serde_json::{json, Value};

use super::output::text;
use super::{client, print_or_json, CliError};

/// One subcommand per worker action: a worker id and the connection options.
macro_rules! worker_action {
    ($($name:ident = $cmd:literal, $method:ident $suffix:literal, $done:literal, $doc:literal;)*) => {$(
        admin_subcommand!(#[doc = $doc] $name = $cmd {
            /// worker id
            #[argh(positional)]
            pub id: String,
        });

        impl $name {
            pub async fn run(self) -> Result<(), CliError> {
                let client = client(self.url, self.admin_token, self.ca_file)?;
                let path = format!("/v1/workers/{}{}", self.id, $suffix);
                let worker = client.call(Method::$method, &path, None).await?;
                print_or_json(self.json, &worker, || summary($done, &worker))
            }
        }
    )*};
}

worker_action! {
    WorkerCordon = "cordon", POST "/cordon", "cordoned", "Place no new containers on a worker.";
    WorkerUncordon = "uncordon", POST "/uncordon", "uncordoned", "Place containers on a worker again.";
    WorkerDrain = "drain", POST "/drain", "draining", "Give a worker no new work; its running containers stay.";
    WorkerUndrain = "undrain", POST "/undrain", "undrained", "Give a worker new work again.";
    WorkerDelete = "delete", DELETE "", "deleted", "Delete a worker: revoke it, close its connection, keep its record.";
    WorkerRotate = "rotate-credential", POST "/rotate-credential", "rotated the credential of", "Rotate a worker's credential over its live connection.";
}

/// One line about a worker after a change.
fn summary(done: &str, w: &Value) -> String {
    format!(
        "{done} {} (cordoned: {}, draining: {}, deleted: {})",
        text(&w["id"]),
        w["cordoned"],
        w["draining"],
        w["deleted"]
    )
}

admin_subcommand!(/// Put a tenant on a plan: free, starter, pro, enterprise, or custom numbers.
TenantPlan = "plan" {
    /// tenant id
    #[argh(positional)]
    pub id: String,
    /// free, starter, pro, enterprise or custom
    #[argh(option)]
    pub name: String,
    /// custom: self-hosted workers (absent: unlimited)
    #[argh(option)]
    pub workers: Option<u32>,
    /// custom: concurrent containers (absent: unlimited)
    #[argh(option)]
    pub concurrent_containers: Option<u32>,
    /// custom: days a removed container stays listed
    #[argh(option)]
    pub history_days: Option<u32>,
});

impl TenantPlan {
    pub async fn run(self) -> Result<(), CliError> {
        let client = client(self.url, self.admin_token, self.ca_file)?;
        let mut body = json!({ "name": self.name });
        for (key, value) in [
            ("workers", self.workers),
            ("concurrentContainers", self.concurrent_containers),
            ("historyDays", self.history_days),
        ] {
            if let Some(v) = value {
                body[key] = json!(v);
            }
        }
        let path = format!("/v1/tenants/{}/plan", self.id);
        let tenant = client.call(Method::PUT, &path, Some(body)).await?;
        print_or_json(self.json, &tenant, || {
            let plan = &tenant["plan"];
            format!(
                "{} is on {} (workers: {}, concurrent containers: {}, history: {} days)",
                text(&tenant["id"]),
                text(&plan["name"]),
                plan["workers"],
                plan["concurrentContainers"],
                plan["historyDays"]
            )
        })
    }
}

/// The managed fleet.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "fleet")]
pub struct FleetArgs {
    #[argh(subcommand)]
    pub command: FleetCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum FleetCommand {
    JoinToken(FleetJoinToken),
}

admin_subcommand!(/// Mint a single-use join token that enrols a fleet worker; prints the token.
FleetJoinToken = "join-token" {
    /// the worker's region, e.g. eu-west-1
    #[argh(option)]
    pub region: String,
    /// linux, darwin or windows
    #[argh(option)]
    pub platform: Option<String>,
    /// lifetime in seconds (default 3600)
    #[argh(option)]
    pub ttl_secs: Option<u64>,
});

impl FleetArgs {
    pub async fn run(self) -> Result<(), CliError> {
        let FleetCommand::JoinToken(a) = self.command;
        let client = client(a.url, a.admin_token, a.ca_file)?;
        let mut body = json!({ "region": a.region });
        if let Some(p) = a.platform {
            body["platform"] = json!(p);
        }
        if let Some(t) = a.ttl_secs {
            body["ttlSecs"] = json!(t);
        }
        let token = client
            .call(Method::POST, "/v1/fleet/join-tokens", Some(body))
            .await?;
        print_or_json(a.json, &token, || text(&token["token"]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Args, Command, TenantCommand, WorkerCommand};
    use argh::FromArgs;

    #[test]
    fn worker_fleet_and_plan_subcommands_parse() {
        let parse = |args: &[&str]| Args::from_args(&["crops-orchestrator"], args).unwrap();
        let a = parse(&["worker", "drain", "abc", "--json"]);
        assert!(
            matches!(a.command, Command::Worker(super::super::WorkerArgs { command: WorkerCommand::Drain(ref d) }) if d.id == "abc" && d.json)
        );
        let a = parse(&["worker", "rotate-credential", "abc"]);
        assert!(matches!(
            a.command,
            Command::Worker(super::super::WorkerArgs {
                command: WorkerCommand::RotateCredential(_)
            })
        ));
        let a = parse(&[
            "tenant",
            "plan",
            "t1",
            "--name",
            "custom",
            "--history-days",
            "30",
        ]);
        assert!(
            matches!(a.command, Command::Tenant(super::super::TenantArgs { command: TenantCommand::Plan(ref p) }) if p.history_days == Some(30))
        );
        let a = parse(&["fleet", "join-token", "--region", "eu-west-1"]);
        assert!(matches!(a.command, Command::Fleet(_)));
    }
}
