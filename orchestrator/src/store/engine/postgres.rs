//! PostgreSQL as the store's engine, shared by every replica: one relation
//! of `(table, key) -> value`, keys compared bytewise (`COLLATE "C"`), so a
//! range scan reads in the order redb reads.
//!
//! Reached through sqlx on smol's reactor (no tokio). The store's methods
//! are synchronous and run on smol's blocking pool ([`crate::store::Store::call`]),
//! so each statement here is driven to completion with `block_on` on that
//! thread; one transaction holds one pooled connection.
//!
//! A write transaction takes the advisory lock [`WRITE_LOCK`] for its whole
//! life: writers of all replicas are serial, as redb's are, and each sees
//! every commit before it (READ COMMITTED reads the latest commit at each
//! statement, and none can land while the lock is held). A read
//! transaction is a REPEATABLE READ snapshot. The schema is versioned in
//! `crops_schema`; [`Pg::connect`] migrates it under a session advisory
//! lock, so replicas starting together migrate once, and refuses a
//! database whose schema is newer than this binary knows.

use std::cell::RefCell;
use std::ops::Bound;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool, Postgres, Row};

/// The advisory lock every write transaction holds (any constant; "crops").
const WRITE_LOCK: i64 = 0x0063_726f_7073;
/// The advisory lock held while migrating the schema.
const MIGRATE_LOCK: i64 = 0x0063_726f_7074;

/// Each schema version's statements, in order; the version is the index
/// plus one. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the key-value relation.
    r#"CREATE TABLE crops_kv (
        tbl text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (tbl, key)
    )"#,
];

/// How long a statement may wait for a pooled connection; also how long
/// a call waits before a database that is down is answered with 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Pg::probe`] waits for a connection of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0} is not a PostgreSQL URL (postgres://user@host/db or postgres:///db?host=/socket/dir): {1}")]
    Url(String, #[source] sqlx::Error),
    #[error("cannot reach PostgreSQL at {0}: {1}")]
    Connect(String, #[source] sqlx::Error),
    #[error("the database has schema version {found}; this orchestrator knows up to {known}: upgrade the orchestrator")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("PostgreSQL: {0}")]
    Query(#[from] sqlx::Error),
    #[error("corrupt value in PostgreSQL: {0}")]
    Corrupt(String),
}

impl PgError {
    /// The database could not be reached or went away (a cut network, a
    /// restart, a pool with no connection to hand out): the call may be
    /// tried again once it is back, as opposed to a refusal or a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Connect(..) => true,
            Self::Query(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57
                // (operator intervention: shutdown, restart, starting up).
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A pool of connections to one database.
#[derive(Debug)]
pub struct Pg {
    pool: PgPool,
    /// How to open a connection of its own, outside the pool ([`Pg::probe`]);
    /// boxed: it is large, and the engine enum holds a `Pg` inline.
    options: Box<PgConnectOptions>,
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    smol::block_on(f)
}

/// `url` with any password replaced, for messages and logs.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let secret = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{secret}@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

impl Pg {
    /// Connect to `url` and bring its schema to this binary's version.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self, PgError> {
        let options: PgConnectOptions = url.parse().map_err(|e| PgError::Url(redacted(url), e))?;
        let pool = block(
            PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone()),
        )
        .map_err(|e| PgError::Connect(redacted(url), e))?;
        let pg = Self {
            pool,
            options: Box::new(options),
        };
        block(pg.migrate())?;
        Ok(pg)
    }

    /// Whether the server accepts a connection now, opened outside the
    /// pool: tells a database that is down from a pool that is only busy
    /// (both time out acquiring).
    pub fn probe(&self) -> Result<(), PgError> {
        let connect = async {
            let conn = sqlx::PgConnection::connect_with(&self.options).await?;
            conn.close().await
        };
        let timed = async {
            smol::Timer::after(PROBE_TIMEOUT).await;
            Err(sqlx::Error::PoolTimedOut)
        };
        block(futures_lite::FutureExt::or(connect, timed)).map_err(PgError::Query)
    }

    async fn migrate(&self) -> Result<(), PgError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *conn)
            .await?;
        let done = self.migrate_locked(&mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *conn)
            .await;
        done?;
        unlocked?;
        Ok(())
    }

    async fn migrate_locked(&self, conn: &mut sqlx::PgConnection) -> Result<(), PgError> {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('crops_schema')::text")
            .fetch_one(&mut *conn)
            .await?;
        if exists.is_none() {
            sqlx::query("CREATE TABLE crops_schema (version bigint NOT NULL)")
                .execute(&mut *conn)
                .await?;
        }
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM crops_schema")
            .fetch_one(&mut *conn)
            .await?;
        let found = found.unwrap_or(0);
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if found > known {
            return Err(PgError::SchemaTooNew { found, known });
        }
        for (version, statement) in (found + 1..).zip(MIGRATIONS.iter().skip(found as usize)) {
            let mut txn = conn.begin().await?;
            sqlx::query(*statement).execute(&mut *txn).await?;
            sqlx::query("INSERT INTO crops_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *txn)
                .await?;
            txn.commit().await?;
            tracing::info!(version, "database schema migrated");
        }
        Ok(())
    }

    pub(in crate::store) fn begin_write(&self) -> Result<Txn, PgError> {
        let txn = block(async {
            let mut txn = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *txn)
                .await?;
            Ok::<_, sqlx::Error>(txn)
        })?;
        Ok(Txn {
            txn: RefCell::new(Some(txn)),
        })
    }

    pub(in crate::store) fn begin_read(&self) -> Result<Txn, PgError> {
        let txn = block(
            self.pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        )?;
        Ok(Txn {
            txn: RefCell::new(Some(txn)),
        })
    }
}

/// One transaction on one pooled connection; rolled back when dropped
/// uncommitted, before the drop returns: a refused write (a used token, a
/// plan at its limit) must not hold the write lock of every replica until
/// some executor gets round to sqlx's deferred rollback.
pub struct Txn {
    txn: RefCell<Option<sqlx::Transaction<'static, Postgres>>>,
}

impl Drop for Txn {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.get_mut().take() {
            if let Err(error) = block(txn.rollback()) {
                tracing::warn!(%error, "rollback failed; the connection is dropped");
            }
        }
    }
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Txn")
    }
}

impl Txn {
    pub(in crate::store) fn table(&self, name: &str) -> Table<'_> {
        Table {
            txn: self,
            name: name.to_owned(),
        }
    }

    /// Whether this transaction's commit waits for the log flush.
    pub(in crate::store) fn set_durable(&self, durable: bool) -> Result<(), PgError> {
        let sql = if durable {
            "SET LOCAL synchronous_commit TO on"
        } else {
            "SET LOCAL synchronous_commit TO off"
        };
        self.run(|c| Box::pin(async move { sqlx::query(sql).execute(c).await.map(drop) }))
    }

    pub(in crate::store) fn commit(self) -> Result<(), PgError> {
        match self.txn.borrow_mut().take() {
            Some(txn) => Ok(block(txn.commit())?),
            None => Ok(()),
        }
    }

    fn run<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + 'c>,
        >,
    ) -> Result<T, PgError> {
        let mut txn = self.txn.borrow_mut();
        let txn = txn
            .as_mut()
            .ok_or_else(|| PgError::Corrupt("transaction already ended".into()))?;
        Ok(block(f(txn))?)
    }
}

/// One table of a transaction.
pub struct Table<'t> {
    txn: &'t Txn,
    name: String,
}

impl Table<'_> {
    pub(in crate::store) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PgError> {
        let (tbl, key) = (self.name.clone(), key.to_owned());
        self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT value FROM crops_kv WHERE tbl = $1 AND key = $2")
                    .bind(tbl)
                    .bind(key)
                    .fetch_optional(c)
                    .await
            })
        })
    }

    pub(in crate::store) fn put(&self, key: &str, value: &[u8]) -> Result<(), PgError> {
        let (tbl, key, value) = (self.name.clone(), key.to_owned(), value.to_vec());
        self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO crops_kv (tbl, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(tbl)
                .bind(key)
                .bind(value)
                .execute(c)
                .await
                .map(drop)
            })
        })
    }

    /// Delete `key`; its value, if it was there.
    pub(in crate::store) fn delete(&self, key: &str) -> Result<Option<Vec<u8>>, PgError> {
        let (tbl, key) = (self.name.clone(), key.to_owned());
        self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "DELETE FROM crops_kv WHERE tbl = $1 AND key = $2 RETURNING value",
                )
                .bind(tbl)
                .bind(key)
                .fetch_optional(c)
                .await
            })
        })
    }

    /// The entries between `from` and `to` in key order (`rev`: from the
    /// end), at most `limit`.
    pub(in crate::store) fn scan(
        &self,
        from: Bound<String>,
        to: Bound<String>,
        rev: bool,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, PgError> {
        // Built from constant fragments only; every value is a parameter.
        let mut sql = String::from("SELECT key, value FROM crops_kv WHERE tbl = $1");
        let mut params = Vec::new();
        for (bound, incl, excl) in [(from, " >= ", " > "), (to, " <= ", " < ")] {
            let (op, key) = match bound {
                Bound::Included(k) => (incl, k),
                Bound::Excluded(k) => (excl, k),
                Bound::Unbounded => continue,
            };
            params.push(key);
            sql.push_str(&format!(" AND key{op}${}", params.len() + 1));
        }
        sql.push_str(if rev {
            " ORDER BY key DESC"
        } else {
            " ORDER BY key"
        });
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        sql.push_str(&format!(" LIMIT ${}", params.len() + 2));
        let tbl = self.name.clone();
        self.txn.run(move |c| {
            Box::pin(async move {
                let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tbl);
                for p in params {
                    query = query.bind(p);
                }
                let rows = query.bind(limit).fetch_all(c).await?;
                rows.into_iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            })
        })
    }

    pub(in crate::store) fn clear(&self) -> Result<(), PgError> {
        let tbl = self.name.clone();
        self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM crops_kv WHERE tbl = $1")
                    .bind(tbl)
                    .execute(c)
                    .await
                    .map(drop)
            })
        })
    }
}
