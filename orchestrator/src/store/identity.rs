//! Who may call the API: organisations, their members (role `admin` or
//! `member`, with the tenants a `member` is assigned), each change one
//! redb write transaction; members' API tokens are in `tokens`. Names are
//! unique: organisations globally, members within their organisation.
//! Deleting a member revokes their tokens in the same transaction.

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, failed, get_json, MemberToken, Store, StoreError, Tenant, META, TENANTS,
};

/// Org id -> [`Org`] (JSON).
const ORGS: TableDefinition<&str, &str> = TableDefinition::new("orgs");
/// Org name -> org id.
const ORG_NAMES: TableDefinition<&str, &str> = TableDefinition::new("org_names");
/// Member id -> [`Member`] (JSON).
pub(super) const MEMBERS: TableDefinition<&str, &str> = TableDefinition::new("members");
/// `orgId/name` -> member id.
const MEMBER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("member_names");
/// Token id -> [`MemberToken`](super::MemberToken) (JSON), revoked ones included.
pub(super) const MEMBER_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("member_tokens");
/// Hash (hex) of a live member token -> token id.
pub(super) const TOKEN_HASHES: TableDefinition<&str, &str> = TableDefinition::new("token_hashes");

const DEFAULT_ORG_ID: &str = "default_org_id";
/// The name of the organisation created at the first start.
pub const DEFAULT_ORG_NAME: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: u64,
}

/// A member's role in their organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Members, tenants, and every worker and container operation of the org.
    Admin,
    /// Launch containers and view workers of the assigned tenants.
    Member,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: Role,
    /// Tenant ids this member may use (for role `member`), sorted.
    pub tenants: Vec<String>,
    pub created_at: u64,
}

pub(super) fn not_found(what: &'static str, id: &str) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_owned(),
    }
}

fn taken(what: &'static str, name: &str) -> StoreError {
    StoreError::NameTaken {
        what,
        name: name.to_owned(),
    }
}

impl Store {
    /// Make sure the `default` organisation exists (created at the first
    /// start) and holds every tenant that belongs to none. Returns it.
    pub fn ensure_default_org(&self, new_id: &str, now_ms: u64) -> Result<Org, StoreError> {
        self.write("commit the default org", |txn| {
            let mut meta = txn.open_table(META).map_err(failed("open meta"))?;
            let mut orgs = txn.open_table(ORGS).map_err(failed("open orgs"))?;
            let mut names = txn
                .open_table(ORG_NAMES)
                .map_err(failed("open org names"))?;
            for table in [MEMBERS, MEMBER_NAMES, MEMBER_TOKENS, TOKEN_HASHES] {
                txn.open_table(table)
                    .map_err(failed("create identity tables"))?;
            }
            let stored = meta
                .get(DEFAULT_ORG_ID)
                .map_err(failed("read the default org id"))?;
            let existing = match stored {
                Some(id) => get_json::<Org>(&orgs, "orgs", &id)?,
                None => None,
            };
            let org = match existing {
                Some(org) => org,
                None => {
                    let org = Org {
                        id: new_id.to_owned(),
                        name: DEFAULT_ORG_NAME.to_owned(),
                        created_at: now_ms,
                    };
                    if names
                        .get(DEFAULT_ORG_NAME)
                        .map_err(failed("read org names"))?
                        .is_some()
                    {
                        return Err(taken("organisation", DEFAULT_ORG_NAME));
                    }
                    names
                        .insert(org.name.as_str(), org.id.as_str())
                        .map_err(failed("insert an org name"))?;
                    orgs.insert(org.id.as_str(), encode(&org).as_str())
                        .map_err(failed("insert an org"))?;
                    meta.insert(DEFAULT_ORG_ID, org.id.as_str())
                        .map_err(failed("store the default org id"))?;
                    tracing::info!(org_id = %org.id, "default organisation created");
                    org
                }
            };
            let mut tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            let mut orphans = Vec::new();
            for (key, value) in tenants.all().map_err(failed("list tenants"))? {
                let tenant: Tenant = decode("tenants", &key, &value)?;
                if tenant.org_id.is_empty() {
                    orphans.push(tenant);
                }
            }
            for mut tenant in orphans {
                tenant.org_id = org.id.clone();
                tenants
                    .insert(tenant.id.as_str(), encode(&tenant).as_str())
                    .map_err(failed("move a tenant into the default org"))?;
                tracing::info!(tenant_id = %tenant.id, "tenant moved into the default organisation");
            }
            Ok(org)
        })
    }

    /// The `default` organisation's id, once [`Store::ensure_default_org`] ran.
    pub fn default_org_id(&self) -> Result<String, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let meta = txn.open_table(META).map_err(failed("open meta"))?;
        let id = meta
            .get(DEFAULT_ORG_ID)
            .map_err(failed("read the default org id"))?;
        id.ok_or_else(|| not_found("organisation", DEFAULT_ORG_NAME))
    }

    pub fn create_org(&self, org: &Org) -> Result<(), StoreError> {
        self.write("commit an org", |txn| {
            let mut names = txn
                .open_table(ORG_NAMES)
                .map_err(failed("open org names"))?;
            if names
                .get(org.name.as_str())
                .map_err(failed("read org names"))?
                .is_some()
            {
                return Err(taken("organisation", &org.name));
            }
            names
                .insert(org.name.as_str(), org.id.as_str())
                .map_err(failed("insert an org name"))?;
            let mut orgs = txn.open_table(ORGS).map_err(failed("open orgs"))?;
            orgs.insert(org.id.as_str(), encode(org).as_str())
                .map_err(failed("insert an org"))?;
            Ok(())
        })
    }

    pub fn get_org(&self, id: &str) -> Result<Option<Org>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let orgs = txn.open_table(ORGS).map_err(failed("open orgs"))?;
        get_json(&orgs, "orgs", id)
    }

    /// Every organisation, oldest first.
    pub fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let orgs = txn.open_table(ORGS).map_err(failed("open orgs"))?;
        let mut out: Vec<Org> = Vec::new();
        for (key, value) in orgs.all().map_err(failed("list orgs"))? {
            out.push(decode("orgs", &key, &value)?);
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Add a member to an existing organisation; its assigned tenants must
    /// belong to that organisation.
    pub fn create_member(&self, member: &Member) -> Result<(), StoreError> {
        self.write("commit a member", |txn| {
            let orgs = txn.open_table(ORGS).map_err(failed("open orgs"))?;
            if get_json::<Org>(&orgs, "orgs", &member.org_id)?.is_none() {
                return Err(not_found("organisation", &member.org_id));
            }
            let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            for id in &member.tenants {
                let tenant = get_json::<Tenant>(&tenants, "tenants", id)?;
                if tenant.is_none_or(|t| t.org_id != member.org_id) {
                    return Err(not_found("tenant", id));
                }
            }
            let mut names = txn
                .open_table(MEMBER_NAMES)
                .map_err(failed("open member names"))?;
            let key = format!("{}/{}", member.org_id, member.name);
            if names
                .get(key.as_str())
                .map_err(failed("read member names"))?
                .is_some()
            {
                return Err(taken("member", &member.name));
            }
            names
                .insert(key.as_str(), member.id.as_str())
                .map_err(failed("insert a member name"))?;
            let mut members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
            members
                .insert(member.id.as_str(), encode(member).as_str())
                .map_err(failed("insert a member"))?;
            Ok(())
        })
    }

    pub fn get_member(&self, id: &str) -> Result<Option<Member>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
        get_json(&members, "members", id)
    }

    /// An organisation's members, oldest first.
    pub fn list_members(&self, org_id: &str) -> Result<Vec<Member>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
        let mut out: Vec<Member> = Vec::new();
        for (key, value) in members.all().map_err(failed("list members"))? {
            let member: Member = decode("members", &key, &value)?;
            if member.org_id == org_id {
                out.push(member);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Change a member: its role, or its tenants (`assign` adds, `unassign`
    /// removes; a tenant must belong to the member's organisation).
    pub fn update_member(&self, id: &str, change: MemberChange) -> Result<Member, StoreError> {
        self.write("commit a member change", |txn| {
            let mut members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
            let mut member = get_json::<Member>(&members, "members", id)?
                .ok_or_else(|| not_found("member", id))?;
            match &change {
                MemberChange::Role(role) => member.role = *role,
                MemberChange::Assign(tenant_id) => {
                    let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
                    let tenant = get_json::<Tenant>(&tenants, "tenants", tenant_id)?;
                    if tenant.is_none_or(|t| t.org_id != member.org_id) {
                        return Err(not_found("tenant", tenant_id));
                    }
                    if let Err(at) = member.tenants.binary_search(tenant_id) {
                        member.tenants.insert(at, tenant_id.clone());
                    }
                }
                MemberChange::Unassign(tenant_id) => member.tenants.retain(|t| t != tenant_id),
            }
            members
                .insert(id, encode(&member).as_str())
                .map_err(failed("update a member"))?;
            Ok(member)
        })
    }

    /// Delete a member and revoke every token of theirs, atomically.
    pub fn delete_member(&self, id: &str, now_ms: u64) -> Result<Member, StoreError> {
        self.write("commit a member deletion", |txn| {
            let mut members = txn.open_table(MEMBERS).map_err(failed("open members"))?;
            let member = get_json::<Member>(&members, "members", id)?
                .ok_or_else(|| not_found("member", id))?;
            members.remove(id).map_err(failed("delete a member"))?;
            let mut names = txn
                .open_table(MEMBER_NAMES)
                .map_err(failed("open member names"))?;
            let key = format!("{}/{}", member.org_id, member.name);
            names
                .remove(key.as_str())
                .map_err(failed("delete a member name"))?;
            let mut tokens = txn
                .open_table(MEMBER_TOKENS)
                .map_err(failed("open member tokens"))?;
            let mut hashes = txn
                .open_table(TOKEN_HASHES)
                .map_err(failed("open token hashes"))?;
            let mut theirs = Vec::new();
            for (key, value) in tokens.all().map_err(failed("list tokens"))? {
                let token: MemberToken = decode("member_tokens", &key, &value)?;
                if token.member_id == id && token.revoked_at.is_none() {
                    theirs.push(token);
                }
            }
            for mut token in theirs {
                hashes
                    .remove(token.hash.as_str())
                    .map_err(failed("forget a token hash"))?;
                token.revoked_at = Some(now_ms);
                tokens
                    .insert(token.id.as_str(), encode(&token).as_str())
                    .map_err(failed("revoke a token"))?;
            }
            Ok(member)
        })
    }
}

/// One change [`Store::update_member`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Role(Role),
    Assign(String),
    Unassign(String),
}
