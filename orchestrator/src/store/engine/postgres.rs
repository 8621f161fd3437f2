//! PostgreSQL as the store's engine, shared by every replica: one relation
//! of `(table, key) -> value`, keys compared bytewise (`COLLATE "C"`), so a
//! range scan reads in the order redb reads.
//!
//! Reached through sqlx on smol's reactor (no tokio). The store's methods
//! are synchronous and run on smol's blocking pool ([`crate::store::Store::call`]),
//! so each statement here is driven to completion with `block_on` on that
//! thread; one transaction holds one pooled connection.
//!
//! A write transaction is SERIALIZABLE: writers of every replica run side
//! by side, PostgreSQL commits them as if one after another, and one it
//! cannot fit into such an order fails with a serialization failure
//! ([`PgError::is_conflict`]), which the store answers by running it again
//! (`Store::write`). Concurrent durable commits share the log's flush
//! (group commit), which is what lets many clients write faster than one.
//! (Until issue 14's benchmark, every write took one advisory lock: serial
//! like redb, each holding the lock through its own flush, a third of
//! redb's rate at 64 clients.) A read transaction is a REPEATABLE READ
//! snapshot. The schema is versioned in
//! `crops_schema`; [`Pg::connect`] migrates it under a session advisory
//! lock, so replicas starting together migrate once, and refuses a
//! database whose schema is newer than this binary knows.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

mod txn;

use txn::Begin;
pub use txn::{Table, Txn};

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

/// Tenants whose turn one replica can hold at once ([`Pg::turn`]).
const TURN_CONNECTIONS: u32 = 8;

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
    /// The transaction lost a conflict with a concurrent one: SQLSTATE
    /// 40001 (serialization failure) or 40P01 (deadlock). It was rolled
    /// back; running it again may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Query(sqlx::Error::Database(db))
            if db.code().is_some_and(|c| c == "40001" || c == "40P01"))
    }

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

/// The first key of every turn's lock ("crop" in ASCII).
const TURN_CLASS: i32 = 0x6372_6f70;

/// A turn held ([`Pg::turn`]); given back when dropped.
pub struct Turn {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = block(
            sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind(TURN_CLASS)
                .bind(&self.key)
                .execute(&mut *conn),
        );
        if let Err(error) = unlocked {
            // Closing the session gives the lock back.
            tracing::warn!(%error, "a turn was not given back; its connection is closed");
            conn.close_on_drop();
        }
    }
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").field("key", &self.key).finish()
    }
}

/// A pool of connections to one database.
#[derive(Debug)]
pub struct Pg {
    pool: PgPool,
    /// Connections that hold tenants' turns ([`Pg::turn`]), apart from
    /// `pool`: a holder then needs `pool` for its writes, and drawing both
    /// from one pool could leave every connection held by a waiting turn.
    turns: PgPool,
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
                // No ping before each use (a round trip on every call's
                // path): a connection that died idle (a server restart)
                // fails its BEGIN, and `Txn::begin` takes another.
                .test_before_acquire(false)
                .connect_with(options.clone()),
        )
        .map_err(|e| PgError::Connect(redacted(url), e))?;
        let turns = PgPoolOptions::new()
            .max_connections(TURN_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let pg = Self {
            pool,
            turns,
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

    /// A SERIALIZABLE write transaction; one that is not `durable` commits
    /// without waiting for the log's flush (the next durable commit of any
    /// session flushes it: the log is written in order). An `exclusive`
    /// one runs alone (see `txn`): for a write that lost a conflict.
    pub(in crate::store) fn begin_write(
        &self,
        durable: bool,
        exclusive: bool,
    ) -> Result<Txn, PgError> {
        Ok(Txn::begin(&self.pool, Begin::Write { durable, exclusive })?)
    }

    /// The turn named `key`, across every replica: held until the [`Turn`]
    /// is dropped, on a connection of its own (a session advisory lock in
    /// the two-key space, apart from the writers' one-key lock).
    pub(in crate::store) fn turn(&self, key: &str) -> Result<Turn, PgError> {
        let mut conn = block(self.turns.acquire())?;
        block(
            sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
                .bind(TURN_CLASS)
                .bind(key)
                .execute(&mut *conn),
        )
        .inspect_err(|_| conn.close_on_drop())?;
        Ok(Turn {
            conn: Some(conn),
            key: key.to_owned(),
        })
    }

    /// A read of one statement, outside any transaction ([`Begin::One`]).
    pub(in crate::store) fn begin_read_one(&self) -> Result<Txn, PgError> {
        Ok(Txn::begin(&self.pool, Begin::One)?)
    }

    /// A REPEATABLE READ snapshot.
    pub(in crate::store) fn begin_read(&self) -> Result<Txn, PgError> {
        Ok(Txn::begin(&self.pool, Begin::Read)?)
    }
}
