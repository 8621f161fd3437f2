//! Admin subcommands for people and their trail: `org create|list`,
//! `member add|list|assign|remove`, `token create|list|revoke` and `audit`.
//! Each is one API call (ARCHITECTURE.md has the routes); tables for people,
//! `--json` for programs. The token may be the operator's admin token or a
//! member's API token: the API decides what each may do.

use argh::FromArgs;
use hyper::Method;
use serde_json::{json, Value};

use super::output::{table, text};
use super::{client, print_or_json, CliError};

/// Manage organisations.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "org")]
pub struct OrgArgs {
    #[argh(subcommand)]
    pub command: OrgCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum OrgCommand {
    Create(OrgCreate),
    List(OrgList),
}

admin_subcommand!(/// Create an organisation; prints its id.
OrgCreate = "create" {
    /// the organisation's name
    #[argh(option)]
    pub name: String,
});

admin_subcommand!(/// List the organisations you can see.
OrgList = "list" {});

/// Manage the members of an organisation.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "member")]
pub struct MemberArgs {
    #[argh(subcommand)]
    pub command: MemberCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum MemberCommand {
    Add(MemberAdd),
    List(MemberList),
    Assign(MemberAssign),
    Remove(MemberRemove),
}

admin_subcommand!(/// Add a member to an organisation; prints the member's id.
MemberAdd = "add" {
    /// organisation id
    #[argh(option)]
    pub org: String,
    /// the member's name
    #[argh(option)]
    pub name: String,
    /// admin or member
    #[argh(option, default = "String::from(\"member\")")]
    pub role: String,
    /// a tenant the member may use (repeatable)
    #[argh(option)]
    pub tenant: Vec<String>,
});

admin_subcommand!(/// List an organisation's members.
MemberList = "list" {
    /// organisation id
    #[argh(option)]
    pub org: String,
});

admin_subcommand!(/// Let a member use a tenant.
MemberAssign = "assign" {
    /// member id
    #[argh(positional)]
    pub id: String,
    /// tenant id
    #[argh(option)]
    pub tenant: String,
});

admin_subcommand!(/// Remove a member (and revoke their tokens).
MemberRemove = "remove" {
    /// member id
    #[argh(positional)]
    pub id: String,
});

/// Manage members' API tokens.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "token")]
pub struct TokenArgs {
    #[argh(subcommand)]
    pub command: TokenCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TokenCommand {
    Create(TokenCreate),
    List(TokenList),
    Revoke(TokenRevoke),
}

admin_subcommand!(/// Mint an API token for a member; prints the secret, shown this once.
TokenCreate = "create" {
    /// member id
    #[argh(option)]
    pub member: String,
    /// a name to recognise the token by
    #[argh(option)]
    pub name: Option<String>,
});

admin_subcommand!(/// List a member's tokens (never their secrets).
TokenList = "list" {
    /// member id
    #[argh(option)]
    pub member: String,
});

admin_subcommand!(/// Revoke a token.
TokenRevoke = "revoke" {
    /// token id
    #[argh(positional)]
    pub id: String,
});

admin_subcommand!(/// Read the audit log of a tenant or an organisation, newest first.
AuditArgs = "audit" {
    /// tenant id
    #[argh(option)]
    pub tenant: Option<String>,
    /// organisation id
    #[argh(option)]
    pub org: Option<String>,
    /// how many entries (default 50)
    #[argh(option, default = "50")]
    pub limit: u32,
});

/// One call with the subcommand's connection options; prints the answer as
/// JSON or through `human`.
macro_rules! call {
    ($a:expr, $method:ident, $path:expr, $body:expr, $human:expr) => {{
        let client = client($a.url, $a.admin_token, $a.ca_file)?;
        let path: &str = &$path;
        let answer = client.call(Method::$method, path, $body).await?;
        print_or_json($a.json, &answer, || $human(&answer))
    }};
}

impl OrgArgs {
    pub async fn run(self) -> Result<(), CliError> {
        match self.command {
            OrgCommand::Create(a) => {
                let body = Some(json!({ "name": a.name }));
                call!(a, POST, "/v1/orgs", body, |o: &Value| text(&o["id"]))
            }
            OrgCommand::List(a) => call!(a, GET, "/v1/orgs", None, |l: &Value| {
                rows(l, "orgs", &["ID", "NAME"], |o| {
                    vec![text(&o["id"]), text(&o["name"])]
                })
            }),
        }
    }
}

impl MemberArgs {
    pub async fn run(self) -> Result<(), CliError> {
        match self.command {
            MemberCommand::Add(a) => {
                let body = json!({ "name": a.name, "role": a.role, "tenants": a.tenant });
                let path = format!("/v1/orgs/{}/members", a.org);
                call!(a, POST, path, Some(body), |m: &Value| text(&m["id"]))
            }
            MemberCommand::List(a) => {
                let path = format!("/v1/orgs/{}/members", a.org);
                call!(a, GET, path, None, member_table)
            }
            MemberCommand::Assign(a) => {
                let path = format!("/v1/members/{}/tenants/{}", a.id, a.tenant);
                call!(a, PUT, path, None, |m: &Value| format!(
                    "assigned: {}",
                    text(&m["id"])
                ))
            }
            MemberCommand::Remove(a) => {
                let path = format!("/v1/members/{}", a.id);
                call!(a, DELETE, path, None, |_: &Value| "removed".to_owned())
            }
        }
    }
}

impl TokenArgs {
    pub async fn run(self) -> Result<(), CliError> {
        match self.command {
            TokenCommand::Create(a) => {
                let path = format!("/v1/members/{}/tokens", a.member);
                let body = Some(json!({ "name": a.name }));
                call!(a, POST, path, body, |t: &Value| text(&t["token"]))
            }
            TokenCommand::List(a) => {
                let path = format!("/v1/members/{}/tokens", a.member);
                call!(a, GET, path, None, |l: &Value| {
                    rows(l, "tokens", &["ID", "NAME", "CREATED", "REVOKED"], |t| {
                        vec![
                            text(&t["id"]),
                            text(&t["name"]),
                            text(&t["createdAt"]),
                            text(&t["revokedAt"]),
                        ]
                    })
                })
            }
            TokenCommand::Revoke(a) => {
                let path = format!("/v1/tokens/{}", a.id);
                call!(a, DELETE, path, None, |_: &Value| "revoked".to_owned())
            }
        }
    }
}

impl AuditArgs {
    pub async fn run(self) -> Result<(), CliError> {
        let scope = match (&self.tenant, &self.org) {
            (Some(t), _) => format!("tenantId={t}&"),
            (None, Some(o)) => format!("orgId={o}&"),
            (None, None) => String::new(),
        };
        let path = format!("/v1/audit?{scope}limit={}", self.limit);
        call!(self, GET, path, None, |l: &Value| {
            rows(
                l,
                "entries",
                &["SEQ", "AT", "WHO", "ACTION", "TARGET", "OUTCOME"],
                |e| {
                    vec![
                        text(&e["seq"]),
                        text(&e["at"]),
                        text(&e["principal"]),
                        text(&e["action"]),
                        text(&e["target"]),
                        format!("{} {}", text(&e["outcome"]), text(&e["status"])),
                    ]
                },
            )
        })
    }
}

fn member_table(list: &Value) -> String {
    rows(list, "members", &["ID", "NAME", "ROLE", "TENANTS"], |m| {
        let tenants = m["tenants"]
            .as_array()
            .map(|ts| ts.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        vec![text(&m["id"]), text(&m["name"]), text(&m["role"]), tenants]
    })
}

/// A table of `list[key]`, one row per element.
fn rows(list: &Value, key: &str, head: &[&str], row: impl Fn(&Value) -> Vec<String>) -> String {
    let body = list[key]
        .as_array()
        .map(|items| items.iter().map(&row).collect())
        .unwrap_or_default();
    table(head, body)
}
