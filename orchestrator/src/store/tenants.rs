//! Tenants in the store: creating and listing them (names are unique),
//! their join tokens, and their plans: the four stock plans of SPEC.md's table, or custom
//! numbers, stored inside the tenant record, and the one write that
//! changes a plan.
//!
//! Only the plan's *name* is stored for a stock plan, so the numbers below
//! are the single source of truth for every tenant on it; a custom plan
//! stores its own numbers. Enforcing the worker and container limits is the
//! plan policy's job; the orchestrator itself only uses `history_days` (the
//! retention of removed containers, see `store::history`).

use serde::{Deserialize, Serialize};

use super::{
    decode, encode, failed, get_json, JoinToken, Store, StoreError, Tenant, JOIN_TOKENS, TENANTS,
    TENANT_NAMES,
};

/// The numbers a plan grants. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimits {
    /// Self-hosted (byom) workers the tenant may enrol.
    pub workers: Option<u32>,
    /// Containers that may exist (not removed) at once.
    pub concurrent_containers: Option<u32>,
    /// Days a removed container stays visible before it is pruned.
    pub history_days: u32,
}

/// A tenant's plan. New tenants, and tenants stored before plans existed,
/// are on [`Plan::Free`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum Plan {
    #[default]
    Free,
    Starter,
    Pro,
    Enterprise,
    /// An operator's own numbers.
    Custom(PlanLimits),
}

/// The longest retention a custom plan may ask for: ten years.
pub const MAX_HISTORY_DAYS: u32 = 3650;

impl Plan {
    /// The stock plans, by name, for parsing and listing.
    pub const STOCK: [Plan; 4] = [Plan::Free, Plan::Starter, Plan::Pro, Plan::Enterprise];

    /// `free`, `starter`, `pro`, `enterprise` or `custom`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Starter => "starter",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
            Self::Custom(_) => "custom",
        }
    }

    /// The numbers of this plan (SPEC.md's table for the stock ones).
    pub fn limits(self) -> PlanLimits {
        let (workers, concurrent_containers, history_days) = match self {
            Self::Free => (Some(1), Some(3), 1),
            Self::Starter => (Some(2), Some(5), 14),
            Self::Pro => (Some(10), Some(15), 90),
            Self::Enterprise => (None, None, 365),
            Self::Custom(limits) => return limits,
        };
        PlanLimits {
            workers,
            concurrent_containers,
            history_days,
        }
    }

    /// How long a removed container of this plan stays visible, in ms.
    pub fn history_ms(self) -> u64 {
        u64::from(self.limits().history_days) * 24 * 3600 * 1000
    }

    /// The stock plan called `name`, if there is one.
    pub fn stock(name: &str) -> Option<Self> {
        Self::STOCK.into_iter().find(|p| p.name() == name)
    }
}

impl Store {
    pub fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
        let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
        get_json(&tenants, "tenants", id)
    }

    /// Store a new join token for an existing tenant.
    pub fn create_join_token(&self, hash_hex: &str, token: &JoinToken) -> Result<(), StoreError> {
        self.write("commit a join token", |txn| {
            let tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            if tenants
                .get(token.tenant_id.as_str())
                .map_err(failed("read a tenant"))?
                .is_none()
            {
                return Err(StoreError::NotFound {
                    what: "tenant",
                    id: token.tenant_id.clone(),
                });
            }
            let mut tokens = txn
                .open_table(JOIN_TOKENS)
                .map_err(failed("open join tokens"))?;
            tokens
                .insert(hash_hex, encode(token).as_str())
                .map_err(failed("insert a join token"))?;
            Ok(())
        })
    }

    /// Create a tenant; names are unique.
    pub fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.write("commit a tenant", |txn| {
            let mut names = txn
                .open_table(TENANT_NAMES)
                .map_err(failed("open tenant names"))?;
            if names
                .get(tenant.name.as_str())
                .map_err(failed("read tenant names"))?
                .is_some()
            {
                return Err(StoreError::TenantNameTaken {
                    name: tenant.name.clone(),
                });
            }
            names
                .insert(tenant.name.as_str(), tenant.id.as_str())
                .map_err(failed("insert a tenant name"))?;
            let mut tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            tenants
                .insert(tenant.id.as_str(), encode(tenant).as_str())
                .map_err(failed("insert a tenant"))?;
            Ok(())
        })
    }

    pub fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let table = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
        let mut out = Vec::new();
        for (key, value) in table.all().map_err(failed("list tenants"))? {
            out.push(decode::<Tenant>("tenants", &key, &value)?);
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Put a tenant on `plan`; the tenant as now stored.
    pub fn set_plan(&self, tenant_id: &str, plan: Plan) -> Result<Tenant, StoreError> {
        self.update_tenant(tenant_id, "commit a plan", |t| t.plan = plan)
    }

    /// Set a tenant's default egress allow-list (already checked by
    /// `protocol::domains::check_list`); the tenant as now stored.
    pub fn set_allowed_domains(
        &self,
        tenant_id: &str,
        domains: Vec<String>,
    ) -> Result<Tenant, StoreError> {
        self.update_tenant(tenant_id, "commit an allow-list", |t| {
            t.allowed_domains = domains.clone()
        })
    }

    /// Read, `change` and store tenant `tenant_id` in one transaction.
    fn update_tenant(
        &self,
        tenant_id: &str,
        op: &'static str,
        mut change: impl FnMut(&mut Tenant),
    ) -> Result<Tenant, StoreError> {
        self.write(op, |txn| {
            let mut tenants = txn.open_table(TENANTS).map_err(failed("open tenants"))?;
            let mut tenant =
                get_json::<Tenant>(&tenants, "tenants", tenant_id)?.ok_or_else(|| {
                    StoreError::NotFound {
                        what: "tenant",
                        id: tenant_id.to_owned(),
                    }
                })?;
            change(&mut tenant);
            tenants
                .insert(tenant_id, encode(&tenant).as_str())
                .map_err(failed("store a tenant"))?;
            Ok(tenant)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_plans_carry_the_specs_numbers() {
        let row = |p: Plan| {
            let l = p.limits();
            (l.workers, l.concurrent_containers, l.history_days)
        };
        assert_eq!(row(Plan::Free), (Some(1), Some(3), 1));
        assert_eq!(row(Plan::Starter), (Some(2), Some(5), 14));
        assert_eq!(row(Plan::Pro), (Some(10), Some(15), 90));
        assert_eq!(row(Plan::Enterprise), (None, None, 365));
        assert_eq!(Plan::Free.history_ms(), 86_400_000);
        for p in Plan::STOCK {
            assert_eq!(Plan::stock(p.name()), Some(p));
        }
        assert_eq!(Plan::stock("custom"), None);
    }

    #[test]
    fn plans_are_stored_by_name_or_with_their_numbers() {
        let text = serde_json::to_string(&Plan::Pro).unwrap();
        assert_eq!(text, r#"{"name":"pro"}"#);
        let custom = Plan::Custom(PlanLimits {
            workers: Some(4),
            concurrent_containers: None,
            history_days: 30,
        });
        let text = serde_json::to_string(&custom).unwrap();
        assert_eq!(
            text,
            r#"{"name":"custom","workers":4,"concurrentContainers":null,"historyDays":30}"#
        );
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), custom);
        // A tenant stored before plans existed reads as Free.
        let old: Tenant = serde_json::from_str(r#"{"id":"t","name":"n","created_at":1}"#).unwrap();
        assert_eq!(old.plan, Plan::Free);
    }
}
