//! One PostgreSQL transaction on one pooled connection, begun and ended
//! with plain statements, and the tables read and written through it.
//!
//! Writers run side by side at SERIALIZABLE, each first taking the
//! advisory lock `TURN` in shared mode for its transaction. A write that
//! lost a conflict runs again **exclusive**: it takes `TURN` in
//! exclusive mode for its session *before* its `BEGIN`, so it waits for
//! every writer in flight to end, takes its snapshot after them, and runs
//! while new writers wait for their shared turn. Nothing can commit beside
//! it, so it cannot lose again: a hot spot (one tenant's counters under
//! many concurrent creates) costs each loser one retry, not a dozen.
//! (The lock must be taken before `BEGIN`: a SERIALIZABLE transaction's
//! snapshot is taken at its first statement, before that statement waits.)

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row};

use super::{block, PgError};

/// The advisory lock that orders writers (any constant: "crops" in ASCII,
/// 0x63726f7073), as the literal the statements below are built from.
macro_rules! turn {
    () => {
        "427121668211"
    };
}

/// What kind of transaction to begin.
#[derive(Debug, Clone, Copy)]
pub(super) enum Begin {
    Read,
    /// One statement, no transaction around it (it sees the last commit,
    /// as a snapshot would): a point read in one round trip, not three.
    One,
    Write {
        durable: bool,
        exclusive: bool,
    },
}

/// One transaction on one pooled connection; rolled back when dropped
/// uncommitted, before the drop returns: a refused write (a used token, a
/// plan at its limit) must not keep its locks until some executor gets
/// round to it.
pub struct Txn {
    conn: RefCell<Option<PoolConnection<Postgres>>>,
    /// Holds `TURN` exclusively for its session: released after the end.
    exclusive: bool,
    /// [`Begin::One`]: no transaction was begun, so none is ended.
    one: bool,
}

impl Txn {
    /// Begin `kind` on a pooled connection. Connections are not pinged
    /// before use, so one that died idle (a server restart) fails here:
    /// then another is taken, up to one per pooled connection.
    pub(super) fn begin(pool: &PgPool, kind: Begin) -> Result<Self, sqlx::Error> {
        let mut tries = pool.options().get_max_connections() + 1;
        loop {
            match Self::begin_once(pool, kind) {
                Err(e) if tries > 1 && broken(&e) => tries -= 1,
                other => return other,
            }
        }
    }

    fn begin_once(pool: &PgPool, kind: Begin) -> Result<Self, sqlx::Error> {
        let mut conn = block(pool.acquire())?;
        let (sql, exclusive) = match kind {
            Begin::One => {
                return Ok(Self {
                    conn: RefCell::new(Some(conn)),
                    exclusive: false,
                    one: true,
                })
            }
            Begin::Read => ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", false),
            Begin::Write { durable, exclusive } => {
                if exclusive {
                    let lock = concat!("SELECT pg_advisory_lock(", turn!(), ")");
                    if let Err(e) = block(sqlx::raw_sql(lock).execute(&mut *conn)) {
                        conn.close_on_drop();
                        return Err(e);
                    }
                }
                // One round trip: the simple protocol takes them at once.
                let sql = match (durable, exclusive) {
                    (true, true) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
                    (false, true) => {
                        "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL synchronous_commit TO off"
                    }
                    (true, false) => concat!(
                        "BEGIN ISOLATION LEVEL SERIALIZABLE; ",
                        "SELECT pg_advisory_xact_lock_shared(",
                        turn!(),
                        ")"
                    ),
                    (false, false) => concat!(
                        "BEGIN ISOLATION LEVEL SERIALIZABLE; ",
                        "SET LOCAL synchronous_commit TO off; ",
                        "SELECT pg_advisory_xact_lock_shared(",
                        turn!(),
                        ")"
                    ),
                };
                (sql, exclusive)
            }
        };
        let txn = Self {
            conn: RefCell::new(Some(conn)),
            exclusive,
            one: false,
        };
        txn.simple(sql)?;
        Ok(txn)
    }

    /// Run `sql` (statements without parameters) on the connection.
    fn simple(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        block(sqlx::raw_sql(sql).execute(&mut **conn)).map(drop)
    }

    /// End the transaction with `sql` (COMMIT or ROLLBACK) and give up an
    /// exclusive turn. A connection left in an unknown state (a failed
    /// end, a turn not given back) is closed, never returned to the pool.
    fn end(&self, sql: &'static str) -> Result<(), sqlx::Error> {
        if self.one {
            self.conn.borrow_mut().take();
            return Ok(());
        }
        let ended = self.simple(sql);
        let released = if self.exclusive {
            self.simple(UNLOCK)
        } else {
            Ok(())
        };
        let mut conn = self.conn.borrow_mut();
        if let Some(mut conn) = conn.take() {
            let in_doubt = ended.as_ref().is_err_and(broken) || released.is_err();
            if in_doubt {
                conn.close_on_drop();
            }
        }
        ended.and(released)
    }

    pub(in crate::store) fn table(&self, name: &str) -> Table<'_> {
        Table {
            txn: self,
            name: name.to_owned(),
        }
    }

    pub(in crate::store) fn commit(self) -> Result<(), PgError> {
        Ok(self.end("COMMIT")?)
    }

    fn run<T>(
        &self,
        f: impl for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + 'c>,
        >,
    ) -> Result<T, PgError> {
        let ended = || PgError::Corrupt("transaction already ended (or its one read done)".into());
        if self.one {
            // Its one statement; the connection goes back to the pool, and
            // a second statement is refused (it would see another commit).
            let mut conn = self.conn.borrow_mut().take().ok_or_else(ended)?;
            return Ok(block(f(&mut conn))?);
        }
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().ok_or_else(ended)?;
        Ok(block(f(conn))?)
    }
}

/// Gives back an exclusive turn.
const UNLOCK: &str = concat!("SELECT pg_advisory_unlock(", turn!(), ")");

/// The connection itself failed (as opposed to a statement refused).
fn broken(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
    )
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.conn.get_mut().is_some() {
            if let Err(error) = self.end("ROLLBACK") {
                tracing::warn!(%error, "rollback failed; the connection is closed");
            }
        }
    }
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Txn")
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

    /// The values of `keys`, in their order: one statement.
    pub(in crate::store) fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>, PgError> {
        let tbl = self.name.clone();
        let asked = keys.clone();
        let rows: Vec<(String, Vec<u8>)> = self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query_as("SELECT key, value FROM crops_kv WHERE tbl = $1 AND key = ANY($2)")
                    .bind(tbl)
                    .bind(asked)
                    .fetch_all(c)
                    .await
            })
        })?;
        let found: HashMap<String, Vec<u8>> = rows.into_iter().collect();
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Insert or replace every entry (the last of a key given twice wins:
    /// one row may be changed once per statement): one statement.
    pub(in crate::store) fn put_many(
        &self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), PgError> {
        let entries: BTreeMap<String, Vec<u8>> = entries.into_iter().collect();
        let (keys, values): (Vec<String>, Vec<Vec<u8>>) = entries.into_iter().unzip();
        let tbl = self.name.clone();
        self.txn.run(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO crops_kv (tbl, key, value) \
                     SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS u(k, v) \
                     ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(tbl)
                .bind(keys)
                .bind(values)
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
