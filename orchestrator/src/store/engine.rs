//! The key-value engine under the store: one redb file (the default, a single
//! orchestrator) or one PostgreSQL database shared by every replica.
//!
//! The store's modules are written once, against this small API: ordered
//! tables of string or sequence keys to text or bytes, read in snapshot
//! transactions and written in serialisable write transactions. The two
//! engines give the same guarantees, so every invariant the store keeps in
//! one transaction (plan limits, single-use join tokens, idempotent creates)
//! holds across replicas as it holds in one process:
//!
//! * **Writers are serialisable.** redb has one writer at a time; on
//!   PostgreSQL write transactions run concurrently at the SERIALIZABLE
//!   isolation level ([`postgres`]): the outcome is that of some serial
//!   order, and a transaction that could not be fitted into one fails with
//!   a conflict ([`EngineError::is_conflict`]), to be run again from its
//!   start (`Store::write`). Writers of every replica run as if one after
//!   another, and each sees everything committed before it.
//! * **Readers see a snapshot**, never a half-written transaction.
//! * **Durability is per commit.** A commit is durable when it returns,
//!   except in a transaction set to [`Durability::None`]; such a commit
//!   becomes durable with the next durable one (redb's commit order;
//!   PostgreSQL's write-ahead log is flushed in order, so a synchronous
//!   commit flushes every asynchronous commit before it).
//!
//! Tables are declared as redb `TableDefinition`s of one of three kinds
//! (text to text, sequence number to text, text to bytes); on PostgreSQL a
//! table is a name in one key-value relation, keys compared bytewise.

use std::ops::{Bound, RangeBounds};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

pub(super) mod postgres;

pub use redb::Durability;

/// What an engine reports; the store adds what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
}

macro_rules! redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for EngineError {
            fn from(e: $ty) -> Self {
                Self::Redb(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl EngineError {
    /// A write transaction lost a conflict with a concurrent one
    /// (PostgreSQL's serialization failure or deadlock): nothing of it was
    /// committed, and running it again from the start may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Postgres(pg) if pg.is_conflict())
    }
}

/// An open database of either engine.
#[derive(Debug)]
pub(super) enum Engine {
    Redb(redb::Database),
    Postgres(postgres::Pg),
}

impl Engine {
    /// A write transaction whose commit is durable when it returns, or
    /// (`Durability::None`) with the next durable commit. An `exclusive`
    /// one (for a write that lost a conflict) runs with no other writer
    /// beside it; redb's writers always do.
    pub(super) fn begin_write(
        &self,
        durability: Durability,
        exclusive: bool,
    ) -> Result<WriteTxn, EngineError> {
        let durable = !matches!(durability, Durability::None);
        Ok(match self {
            Self::Redb(db) => {
                let mut txn = db.begin_write()?;
                if !durable {
                    txn.set_durability(durability)?;
                }
                WriteTxn::Redb(txn)
            }
            Self::Postgres(pg) => WriteTxn::Postgres(pg.begin_write(durable, exclusive)?),
        })
    }

    /// A read transaction for exactly one point read (one `get`): on
    /// PostgreSQL one round trip instead of three (no BEGIN and ROLLBACK
    /// around it); a lone statement sees one commit, as a snapshot would.
    /// A second statement in it would see a later commit, so it must not
    /// have one.
    pub(super) fn begin_read_one(&self) -> Result<ReadTxn, EngineError> {
        Ok(match self {
            Self::Redb(db) => ReadTxn::Redb(db.begin_read()?),
            Self::Postgres(pg) => ReadTxn::Postgres(pg.begin_read_one()?),
        })
    }

    pub(super) fn begin_read(&self) -> Result<ReadTxn, EngineError> {
        Ok(match self {
            Self::Redb(db) => ReadTxn::Redb(db.begin_read()?),
            Self::Postgres(pg) => ReadTxn::Postgres(pg.begin_read()?),
        })
    }
}

/// A write transaction: committed by [`WriteTxn::commit`], rolled back when
/// dropped without it.
// One per transaction, on the stack: boxing redb's (the common case) would
// allocate per transaction.
#[allow(clippy::large_enum_variant)]
pub(super) enum WriteTxn {
    Redb(redb::WriteTransaction),
    Postgres(postgres::Txn),
}

impl WriteTxn {
    pub(super) fn open_table<D: TableDef>(&self, def: D) -> Result<D::Table<'_>, EngineError> {
        def.open_write(self)
    }

    /// Remove every entry of the table.
    pub(super) fn clear_table<D: TableDef>(&self, def: D) -> Result<(), EngineError> {
        def.clear_in(self)
    }

    pub(super) fn commit(self) -> Result<(), EngineError> {
        match self {
            Self::Redb(txn) => Ok(txn.commit()?),
            Self::Postgres(txn) => Ok(txn.commit()?),
        }
    }
}

/// A read transaction: a snapshot of the last commit.
pub(super) enum ReadTxn {
    Redb(redb::ReadTransaction),
    Postgres(postgres::Txn),
}

impl ReadTxn {
    /// A table that was never written reads as empty.
    pub(super) fn open_table<D: TableDef>(&self, def: D) -> Result<D::Table<'_>, EngineError> {
        def.open_read(self)
    }
}

/// A table's definition: opens it in either kind of transaction.
pub(super) trait TableDef: Copy {
    type Table<'t>;
    fn open_write(self, txn: &WriteTxn) -> Result<Self::Table<'_>, EngineError>;
    fn open_read(self, txn: &ReadTxn) -> Result<Self::Table<'_>, EngineError>;
    fn clear_in(self, txn: &WriteTxn) -> Result<(), EngineError>;
}

/// A bound of a key, encoded for PostgreSQL.
fn encoded<K>(bound: Bound<K>, enc: impl Fn(&K) -> String) -> Bound<String> {
    match bound {
        Bound::Included(k) => Bound::Included(enc(&k)),
        Bound::Excluded(k) => Bound::Excluded(enc(&k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

type Entry<'a, K, V> = (redb::AccessGuard<'a, K>, redb::AccessGuard<'a, V>);

/// A redb range's entries, owned, in order or reversed, at most `limit`.
fn own_all<'a, K, V, KO, VO>(
    iter: impl DoubleEndedIterator<Item = Result<Entry<'a, K, V>, redb::StorageError>>,
    rev: bool,
    limit: usize,
    key: impl Fn(K::SelfType<'_>) -> KO,
    value: impl Fn(V::SelfType<'_>) -> VO,
) -> Result<Vec<(KO, VO)>, EngineError>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let own = |e: Result<Entry<'a, K, V>, redb::StorageError>| {
        let (k, v) = e?;
        Ok((key(k.value()), value(v.value())))
    };
    if rev {
        iter.rev().take(limit).map(own).collect()
    } else {
        iter.take(limit).map(own).collect()
    }
}

/// Sequence keys as text that sorts like the numbers.
fn seq_key(k: &u64) -> String {
    format!("{k:020}")
}

fn seq_of(text: &str) -> Result<u64, EngineError> {
    text.parse()
        .map_err(|_| postgres::PgError::Corrupt(format!("sequence key {text:?}")).into())
}

fn text_of(bytes: Vec<u8>) -> Result<String, EngineError> {
    String::from_utf8(bytes)
        .map_err(|_| postgres::PgError::Corrupt("text value is not UTF-8".into()).into())
}

macro_rules! table_kind {
    (
        $(#[$doc:meta])*
        $name:ident: $k:ty => $v:ty;
        key $karg:ty, scan $kscan:ty, owned $kown:ty, $kref:expr, $kenc:expr, $kdec:expr;
        value $varg:ty, owned $vown:ty, $vref:expr, $venc:expr, $vdec:expr;
    ) => {
        $(#[$doc])*
        pub(super) enum $name<'t> {
            Write(redb::Table<'t, $k, $v>),
            Read(redb::ReadOnlyTable<$k, $v>),
            /// A table redb never created, read: empty.
            Missing,
            Postgres(postgres::Table<'t>),
        }

        impl TableDef for TableDefinition<'static, $k, $v> {
            type Table<'t> = $name<'t>;

            fn open_write(self, txn: &WriteTxn) -> Result<$name<'_>, EngineError> {
                Ok(match txn {
                    WriteTxn::Redb(t) => $name::Write(t.open_table(self)?),
                    WriteTxn::Postgres(t) => $name::Postgres(t.table(self.name())),
                })
            }

            fn clear_in(self, txn: &WriteTxn) -> Result<(), EngineError> {
                match txn {
                    WriteTxn::Redb(t) => {
                        t.delete_table(self)?;
                        Ok(())
                    }
                    WriteTxn::Postgres(t) => Ok(t.table(self.name()).clear()?),
                }
            }

            fn open_read(self, txn: &ReadTxn) -> Result<$name<'_>, EngineError> {
                Ok(match txn {
                    ReadTxn::Redb(t) => match t.open_table(self) {
                        Ok(table) => $name::Read(table),
                        Err(redb::TableError::TableDoesNotExist(_)) => $name::Missing,
                        Err(e) => return Err(e.into()),
                    },
                    ReadTxn::Postgres(t) => $name::Postgres(t.table(self.name())),
                })
            }
        }

        // Not every kind uses every method.
        #[allow(dead_code)]
        impl $name<'_> {
            pub(super) fn get(&self, key: $karg) -> Result<Option<$vown>, EngineError> {
                let redb = |g: Option<redb::AccessGuard<'_, $v>>| g.map(|g| ($vref)(g.value()));
                match self {
                    Self::Write(t) => Ok(redb(t.get(key)?)),
                    Self::Read(t) => Ok(redb(t.get(key)?)),
                    Self::Missing => Ok(None),
                    Self::Postgres(t) => t.get(&($kenc)(&key))?.map($vdec).transpose(),
                }
            }

            /// Insert or replace.
            pub(super) fn insert(&mut self, key: $karg, value: $varg) -> Result<(), EngineError> {
                match self {
                    Self::Write(t) => {
                        t.insert(key, value)?;
                        Ok(())
                    }
                    Self::Postgres(t) => Ok(t.put(&($kenc)(&key), ($venc)(value))?),
                    Self::Read(_) | Self::Missing => unreachable!("tables of a read are never written"),
                }
            }

            /// The values of `keys`, in their order (`None` where there is
            /// none): one statement on PostgreSQL, not one per key.
            pub(super) fn get_many(&self, keys: &[$karg]) -> Result<Vec<Option<$vown>>, EngineError> {
                match self {
                    Self::Postgres(t) => {
                        let keys = keys.iter().map($kenc).collect();
                        t.get_many(keys)?
                            .into_iter()
                            .map(|v| v.map($vdec).transpose())
                            .collect()
                    }
                    _ => keys.iter().map(|key| self.get(*key)).collect(),
                }
            }

            /// Insert or replace each of `entries` (the last of a key
            /// given twice wins): one statement on PostgreSQL.
            pub(super) fn insert_many(&mut self, entries: &[($karg, $varg)]) -> Result<(), EngineError> {
                match self {
                    Self::Postgres(t) => {
                        let entries = entries
                            .iter()
                            .map(|(k, v)| (($kenc)(k), ($venc)(*v).to_vec()))
                            .collect();
                        Ok(t.put_many(entries)?)
                    }
                    _ => entries.iter().try_for_each(|(k, v)| self.insert(*k, *v)),
                }
            }

            /// Remove `key`; its value, if it was there.
            pub(super) fn remove(&mut self, key: $karg) -> Result<Option<$vown>, EngineError> {
                match self {
                    Self::Write(t) => Ok(t.remove(key)?.map(|g| ($vref)(g.value()))),
                    Self::Postgres(t) => t.delete(&($kenc)(&key))?.map($vdec).transpose(),
                    Self::Read(_) | Self::Missing => unreachable!("tables of a read are never written"),
                }
            }

            /// Every entry in key order.
            pub(super) fn all(&self) -> Result<Vec<($kown, $vown)>, EngineError> {
                self.scan(.., false, usize::MAX)
            }

            /// The entries within `range`, in key order (`rev`: from the
            /// end), at most `limit` of them.
            // `'k` names the borrowed key of text tables only.
            #[allow(clippy::extra_unused_lifetimes)]
            pub(super) fn scan<'k>(
                &self,
                range: impl RangeBounds<$kscan>,
                rev: bool,
                limit: usize,
            ) -> Result<Vec<($kown, $vown)>, EngineError> {
                let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
                match self {
                    Self::Write(t) => own_all(t.range::<$kscan>(bounds)?, rev, limit, $kref, $vref),
                    Self::Read(t) => own_all(t.range::<$kscan>(bounds)?, rev, limit, $kref, $vref),
                    Self::Missing => Ok(Vec::new()),
                    Self::Postgres(t) => {
                        let (from, to) = (encoded(bounds.0, $kenc), encoded(bounds.1, $kenc));
                        t.scan(from, to, rev, limit)?
                            .into_iter()
                            .map(|(k, v)| Ok((($kdec)(&k)?, ($vdec)(v)?)))
                            .collect()
                    }
                }
            }

            /// The entry with the greatest key.
            pub(super) fn last(&self) -> Result<Option<($kown, $vown)>, EngineError> {
                Ok(self.scan(.., true, 1)?.pop())
            }
        }
    };
}

table_kind! {
    /// A table of text keys to text values (JSON records, index entries).
    TextTable: &'static str => &'static str;
    key &str, scan &'k str, owned String, |k: &str| k.to_owned(), |k: &&str| (*k).to_owned(), |k: &str| Ok::<_, EngineError>(k.to_owned());
    value &str, owned String, |v: &str| v.to_owned(), str::as_bytes, text_of;
}

table_kind! {
    /// A table of sequence numbers to text values (the audit log).
    SeqTable: u64 => &'static str;
    key u64, scan u64, owned u64, |k: u64| k, seq_key, seq_of;
    value &str, owned String, |v: &str| v.to_owned(), str::as_bytes, text_of;
}

table_kind! {
    /// A table of text keys to bytes (policy modules, secrets).
    BlobTable: &'static str => &'static [u8];
    key &str, scan &'k str, owned String, |k: &str| k.to_owned(), |k: &&str| (*k).to_owned(), |k: &str| Ok::<_, EngineError>(k.to_owned());
    value &[u8], owned Vec<u8>, |v: &[u8]| v.to_vec(), std::convert::identity, Ok::<_, EngineError>;
}
