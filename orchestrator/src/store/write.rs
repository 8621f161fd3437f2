//! Write transactions: [`Store::write`] runs a body in one and commits it.
//! On PostgreSQL, writers of every replica run side by side at the
//! SERIALIZABLE level, and one that loses a conflict with a concurrent
//! writer is rolled back whole; its body then runs again from the start
//! on a fresh snapshot, so it decides again on what is there now (a plan
//! that just filled up refuses the second of two racing creates). It runs
//! again *exclusive*, alone among the writers of every replica
//! (`engine/postgres/txn`), so it cannot lose twice to the same hot spot;
//! [`ATTEMPTS`] bounds the rare case of a connection lost meanwhile. redb
//! has one writer at a time and never conflicts.
//!
//! A body is therefore a function of the transaction alone: it reads and
//! writes through the transaction and returns its result; effects outside
//! the store (memory, channels) belong after [`Store::write`] returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::engine::{Durability, WriteTxn};
use super::{failed, Store, StoreError};

/// How many times a body runs before its conflicts are reported (503).
/// Every run after the first is exclusive and should not lose: this only
/// bounds what should not happen.
const ATTEMPTS: u32 = 12;

/// The longest pause between two attempts; each pause is random below a
/// bound that doubles from 1 ms, so racing writers spread out.
const MAX_PAUSE: Duration = Duration::from_millis(32);

/// How many writes ran again after a conflict, and how many gave up.
#[derive(Debug, Default)]
pub(super) struct Conflicts {
    retried: AtomicU64,
    gave_up: AtomicU64,
}

impl Store {
    /// Writes run again after losing a conflict, and writes given up after
    /// [`ATTEMPTS`] (answered 503), since this process started.
    pub fn conflicts(&self) -> (u64, u64) {
        let c = &self.conflicts;
        (
            c.retried.load(Ordering::Relaxed),
            c.gave_up.load(Ordering::Relaxed),
        )
    }

    /// Run `body` in one durable write transaction and commit it (`op`
    /// names the commit in errors); run it again if it lost a conflict.
    pub(super) fn write<T>(
        &self,
        op: &'static str,
        body: impl FnMut(&WriteTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_with(Durability::Immediate, op, body)
    }

    /// [`Store::write`] with the commit's durability: `Durability::None`
    /// commits without waiting for the disk; the next durable commit
    /// carries it there.
    pub(super) fn write_with<T>(
        &self,
        durability: Durability,
        op: &'static str,
        mut body: impl FnMut(&WriteTxn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            let result = self
                .db
                .begin_write(durability, attempt > 1)
                .map_err(failed("begin a write"))
                .and_then(|txn| {
                    let value = body(&txn)?;
                    txn.commit().map_err(failed(op))?;
                    Ok(value)
                });
            match result {
                Err(e) if e.is_conflict() && attempt < ATTEMPTS => {
                    self.conflicts.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(op, attempt, "write conflicted; running it again");
                    std::thread::sleep(pause(attempt));
                    attempt += 1;
                }
                Err(e) if e.is_conflict() => {
                    self.conflicts.gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(op, attempts = attempt, "write gave up after conflicts");
                    return Err(StoreError::Contended {
                        op,
                        attempts: attempt,
                        source: Box::new(e),
                    });
                }
                other => return other,
            }
        }
    }
}

/// A tenant's turn to admit, across every replica ([`Store::tenant_turn`]);
/// given back when dropped.
#[derive(Debug)]
#[must_use = "the turn is given back when dropped"]
pub struct TenantTurn(#[allow(dead_code)] Option<super::engine::postgres::Turn>);

impl Store {
    /// Wait for `tenant_id`'s turn to admit, among the processes sharing
    /// this store (`scheduling::admission`): on PostgreSQL a lock of the
    /// database's, held on a connection of its own until the turn is
    /// dropped; redb has one process, whose own turn is enough. Admission
    /// is decided outside the write that checks it, so without a turn the
    /// replicas would keep deciding on a usage another one just changed.
    /// Only about wasted work: the write's own check keeps the plan.
    pub fn tenant_turn(&self, tenant_id: &str) -> Result<TenantTurn, StoreError> {
        match &self.db {
            super::engine::Engine::Redb(_) => Ok(TenantTurn(None)),
            super::engine::Engine::Postgres(pg) => {
                let key = format!("tenant/{tenant_id}");
                let turn = pg.turn(&key).map_err(StoreError::Postgres)?;
                Ok(TenantTurn(Some(turn)))
            }
        }
    }
}

/// A random pause before attempt `attempt + 1`.
fn pause(attempt: u32) -> Duration {
    let bound = Duration::from_millis(1 << attempt.min(5)).min(MAX_PAUSE);
    bound.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_stay_bounded() {
        for attempt in 1..ATTEMPTS {
            let p = pause(attempt);
            assert!(p <= MAX_PAUSE, "attempt {attempt}: {p:?}");
            assert!(p < Duration::from_millis(1 << attempt.min(5)));
        }
    }
}
