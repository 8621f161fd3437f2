//! Durable state in one redb file (`DIR/crops.redb`): the only module that touches redb.
//!
//! The interface is a [`Store`] with plain synchronous methods taking and
//! returning the stored record types below (not the wire types), so another
//! backend could stand behind the same methods later. Async callers go
//! through [`Store::call`], which runs the work on smol's blocking pool,
//! except point reads on a request's path, which use [`Store::read_now`].
//!
//! Every method is one transaction ([`Store::write`] for writes), committed before it returns;
//! everything is committed with full durability except heartbeats
//! ([`Store::record_heartbeat`]), which are frequent and replaceable, and
//! the writes made while answering an API call, which a durable commit
//! carries to disk before the answer goes out (`durable`); both use
//! `Durability::None` (redb makes them durable at the next durable commit or
//! when the database closes).
//!
//! One module per resource: `tenants` (and their join tokens and plans),
//! `workers` (enrolment, lookups, reports, administration), `containers`,
//! `identity` and `tokens` (organisations, members, their tokens),
//! `audit`, `terminals`, `policies`, `decisions`, `usage` (plan counters),
//! `history`.
//!
//! Secrets are stored only as SHA-256 hashes, in hex. The record types are
//! in `records`; container records and the inventory reconcile in
//! `containers`.

mod audit;
mod audit_query;
mod containers;
mod decisions;
mod durable;
mod engine;
mod history;
mod identity;
mod policies;
mod records;
mod replicas;
mod rotation;
mod tenants;
mod terminals;
mod tokens;
mod usage;
mod workers;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::TableDefinition;

use engine::{EngineError, TextTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use audit::{AuditEntry, AuditWrite, AuditWritten, INTERRUPTED};
pub use audit_query::{AuditFilter, AuditPage, AuditScope, MAX_AUDIT_PAGE, SCAN_BUDGET};
pub use containers::{AdmittedCreate, CreateOutcome};
pub use decisions::{DecisionRecord, MAX_DECISION_PAGE};
pub use history::Pruned;
pub use identity::{Member, MemberChange, Org, Role, DEFAULT_ORG_NAME};
pub use policies::{ActiveEntry, ActivePolicy, LegacyActive, PolicyRecord, RolledBack};
pub use records::*;
pub use replicas::{Ownership, ReplicaRecord};
pub use tenants::{Plan, PlanLimits, MAX_HISTORY_DAYS};
pub use terminals::TerminalRecord;
pub use tokens::MemberToken;
pub use usage::TenantUsage;
pub use workers::{Admitted, Enrolment, FleetEnrolment, WorkerFlags, WorkerMode};
pub use write::TenantTurn;

/// Tenant id -> [`Tenant`] (JSON).
const TENANTS: TableDefinition<&str, &str> = TableDefinition::new("tenants");
/// Tenant name -> tenant id, so names stay unique.
const TENANT_NAMES: TableDefinition<&str, &str> = TableDefinition::new("tenant_names");
/// Join token hash (hex) -> [`JoinToken`] (JSON).
const JOIN_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("join_tokens");
/// Worker id -> [`Worker`] (JSON).
const WORKERS: TableDefinition<&str, &str> = TableDefinition::new("workers");
/// Worker credential hash (hex) -> worker id.
const CREDENTIALS: TableDefinition<&str, &str> = TableDefinition::new("credentials");
/// Worker id -> [`HeartbeatRecord`] (JSON), written with reduced durability.
const HEARTBEATS: TableDefinition<&str, &str> = TableDefinition::new("heartbeats");
/// Container id -> [`ContainerRecord`] (JSON).
const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");
/// `tenantId/containerId` -> `""`: a tenant's containers, by range scan.
const TENANT_CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("tenant_containers");
/// `workerId/containerId` -> `""`: a worker's containers, by range scan.
const WORKER_CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("worker_containers");
/// Single values: the admin token hash.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const ADMIN_TOKEN_HASH: &str = "admin_token_hash";

/// What can go wrong in the store, in the domain's words.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("{0}")]
    Postgres(#[source] engine::postgres::PgError),
    #[error("database failure while trying to {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: EngineError,
    },
    #[error("the database is busy: {op} lost {attempts} conflicts in a row with concurrent writes; try again")]
    Contended {
        op: &'static str,
        attempts: u32,
        #[source]
        source: Box<StoreError>,
    },
    #[error("corrupt record in table {table} at key {key}: {source}")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("a tenant named {name:?} already exists")]
    TenantNameTaken { name: String },
    #[error("{what} name {name:?} is already taken")]
    NameTaken { what: &'static str, name: String },
    #[error("worker {id} is revoked")]
    Revoked { id: String },
    #[error("worker {id}: connection epoch {epoch} no longer owns it (owner now {owner:?})")]
    Fenced {
        id: String,
        epoch: u64,
        owner: Option<Ownership>,
    },
    #[error("replica identity {id:?} is held by a live process (last beat at {beat_ms} ms): give this one another --replica-id")]
    ReplicaTaken { id: String, beat_ms: u64 },
    #[error("worker {id} was enrolled as {enrolled} but registers as {claimed}")]
    ModeMismatch {
        id: String,
        enrolled: &'static str,
        claimed: String,
    },
}

/// Why a join token was refused at enrolment. Nothing is changed when refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("unknown join token")]
    Unknown,
    #[error("join token already used")]
    Used,
    #[error("join token expired")]
    Expired,
}

/// A database URL with its password hidden, for logs and messages.
pub fn redacted_url(url: &str) -> String {
    engine::postgres::redacted(url)
}

/// The last stamp handed out; see [`stamp`].
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// A revision stamp: microseconds since the Unix epoch, strictly
/// increasing within this process (so two calls never tie), and above
/// anything an earlier process stamped unless the clock went back.
pub fn stamp() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let prev = LAST_STAMP
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    now.max(prev.saturating_add(1))
}

/// The state behind every API write. Cheap to share through an `Arc`.
#[derive(Debug)]
pub struct Store {
    db: engine::Engine,
    api_writes: durable::ApiWrites,
    conflicts: write::Conflicts,
}

impl StoreError {
    /// The shared database could not be reached (see
    /// `PgError::is_unavailable`): the API answers 503 and the caller may
    /// try again.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Postgres(pg)
            | Self::Db {
                source: EngineError::Postgres(pg),
                ..
            } => pg.is_unavailable(),
            _ => false,
        }
    }

    /// A write lost a conflict with a concurrent one and was rolled back
    /// (`write`): running it again may succeed.
    fn is_conflict(&self) -> bool {
        match self {
            Self::Db { source, .. } => source.is_conflict(),
            _ => false,
        }
    }

    /// Told to the caller as 503, like an unreachable database: the write
    /// lost too many conflicts in a row (`write`), nothing of it stands,
    /// and it may be tried again.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || matches!(self, Self::Contended { .. })
    }
}

fn failed<E: Into<EngineError>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: e.into(),
    }
}

fn encode<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("record serializes: {e}"))
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        table,
        key: key.to_owned(),
        source,
    })
}

/// Read one JSON record from any readable table.
fn get_json<T: DeserializeOwned>(
    table: &TextTable<'_>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(failed("read a record"))? {
        Some(text) => decode(name, key, &text).map(Some),
        None => Ok(None),
    }
}

impl Store {
    /// Open (or create) `dir/crops.redb`, creating `dir` and every table.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("crops.redb");
        let db = redb::Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = Self::on(engine::Engine::Redb(db))?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(store)
    }

    /// Connect to the PostgreSQL database at `url` (shared by every
    /// replica), migrating its schema to this binary's version first.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pg =
            engine::postgres::Pg::connect(url, max_connections).map_err(StoreError::Postgres)?;
        let store = Self::on(engine::Engine::Postgres(pg))?;
        tracing::debug!(url = %engine::postgres::redacted(url), "store connected");
        Ok(store)
    }

    /// Every table created, the plan counters checked.
    fn on(db: engine::Engine) -> Result<Self, StoreError> {
        let store = Self {
            db,
            api_writes: durable::ApiWrites::default(),
            conflicts: write::Conflicts::default(),
        };
        store.write("commit the tables", |txn| {
            for table in [
                TENANTS,
                TENANT_NAMES,
                JOIN_TOKENS,
                WORKERS,
                CREDENTIALS,
                HEARTBEATS,
                CONTAINERS,
                TENANT_CONTAINERS,
                WORKER_CONTAINERS,
                META,
            ] {
                txn.open_table(table).map_err(failed("create the tables"))?;
            }
            usage::recount(txn)
        })?;
        Ok(store)
    }

    /// Whether other replicas may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.db, engine::Engine::Postgres(_))
    }

    /// Run `f` against the store on the blocking thread pool.
    pub async fn call<T, F>(self: &Arc<Self>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        let store = Arc::clone(self);
        smol::unblock(move || f(&store)).await
    }

    /// Run the point read `f` right here, on the caller's thread, when the
    /// engine is redb; through [`Store::call`] on PostgreSQL (a network
    /// round trip must not block an executor thread).
    ///
    /// For lookups of a handful of keys on a request's path (authorisation,
    /// a container's or worker's record): a redb reader never waits for a
    /// writer, not even one in the middle of an fsync (readers see the last
    /// commit), and a few keys from its cache take microseconds, less than
    /// the two thread wake-ups of [`Store::call`] (which cost milliseconds
    /// on a busy machine). Scans and every write go through `call`.
    pub async fn read_now<T, F>(self: &Arc<Self>, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> T + Send + 'static,
    {
        if self.is_shared() {
            self.call(f).await
        } else {
            f(self)
        }
    }

    /// Whether the database server accepts a new connection now, outside
    /// the pool (PostgreSQL; the embedded store always does): a replica
    /// fences itself only when this fails too, never because its pool is
    /// merely busy (`replica`).
    pub fn probe(&self) -> Result<(), StoreError> {
        match &self.db {
            engine::Engine::Redb(_) => Ok(()),
            engine::Engine::Postgres(pg) => pg.probe().map_err(StoreError::Postgres),
        }
    }

    /// Prove the database answers: one read transaction (for `/readyz`).
    pub fn check(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        txn.open_table(META).map_err(failed("open meta"))?;
        Ok(())
    }

    /// The stored admin token hash (hex), if one was ever set.
    pub fn admin_token_hash(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read_one().map_err(failed("begin a read"))?;
        let table = txn.open_table(META).map_err(failed("open meta"))?;
        table
            .get(ADMIN_TOKEN_HASH)
            .map_err(failed("read the admin token hash"))
    }

    pub fn set_admin_token_hash(&self, hash_hex: &str) -> Result<(), StoreError> {
        self.write("commit the admin token hash", |txn| {
            let mut table = txn.open_table(META).map_err(failed("open meta"))?;
            table
                .insert(ADMIN_TOKEN_HASH, hash_hex)
                .map_err(failed("store the admin token hash"))?;
            Ok(())
        })
    }
}
