//! What names a registry slot, a scope (global or one tenant) and a role
//! (`admission`: `admit`, `admit-worker`; `placement`: `place`), and how a
//! slot's failures are handled.

use serde::{Deserialize, Serialize};

use super::super::{stock, Kind};

/// Who a module decides for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "tenantId")]
pub enum Scope {
    Global,
    Tenant(String),
}

impl Scope {
    /// `global` or `tenant:<id>`: the store's key.
    pub fn key(&self) -> String {
        match self {
            Self::Global => "global".into(),
            Self::Tenant(id) => format!("tenant:{id}"),
        }
    }

    /// The scope a store key names.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "global" => Some(Self::Global),
            other => other
                .strip_prefix("tenant:")
                .filter(|t| !t.is_empty())
                .map(|t| Self::Tenant(t.to_owned())),
        }
    }
}

/// What happens to a decision when its module fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailMode {
    /// The decision fails, with the module's error.
    #[default]
    Closed,
    /// The previously active module (or the stock default) decides.
    LastGood,
}

/// The kind of decision a slot makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `admit` and `admit-worker`.
    Admission,
    /// `place`.
    Placement,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Admission, Role::Placement];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admission => "admission",
            Self::Placement => "placement",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Does a module of `kind` make this decision?
    pub fn implemented_by(self, kind: Kind) -> bool {
        match self {
            Self::Admission => kind.admits(),
            Self::Placement => kind.places(),
        }
    }

    /// Every role a module of `kind` takes when activated.
    pub fn of(kind: Kind) -> Vec<Role> {
        Self::ALL
            .into_iter()
            .filter(|r| r.implemented_by(kind))
            .collect()
    }

    /// The stock policy deciding when no slot is filled.
    pub fn stock_default(self) -> &'static str {
        match self {
            Self::Admission => stock::DEFAULT_ADMISSION,
            Self::Placement => stock::DEFAULT_PLACEMENT,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
