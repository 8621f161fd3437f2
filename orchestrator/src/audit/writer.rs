//! The audit log's writer thread: entries queue up and are appended in
//! batches, one redb transaction per batch (group commit).
//!
//! Why: every mutating API call appends two entries (the command it sent to
//! an agent, then the call itself, durably). Appended one transaction each
//! from the request, that is two thread-pool round trips and two commits on
//! the call's path; on a busy two-core box each round trip costs
//! milliseconds. Here the command's entry is only queued (the request does
//! not wait), and the call's entry waits for the one durable commit of
//! whichever batch holds it. Calls arriving together share an fsync.
//!
//! Guarantees:
//! * FIFO: an entry queued before another is committed in the same batch
//!   or an earlier one, so a call's durable entry also makes the command
//!   entries it caused durable (a durable redb commit persists the
//!   non-durable ones before it).
//! * A waiter gets its own result: if a batch fails, its entries are
//!   retried one transaction each, so one bad entry fails only its caller.
//! * Readers of the log first [`AuditWriter::flush`], so everything queued
//!   before a read is in it.
//!
//! The thread ends when the last [`AuditWriter`] is dropped, after
//! committing what was queued; it holds the store until then.

use std::sync::Arc;

use smol::channel::{Receiver, Sender};

use super::CommandDone;
use crate::store::{AuditEntry, Store, StoreError};

/// Entries waiting beyond this make queuing callers wait (backpressure
/// when the disk stalls, instead of unbounded memory).
const QUEUE: usize = 4096;
/// At most this many entries per transaction.
const BATCH: usize = 256;

/// Why an entry was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the audit writer has stopped")]
    Stopped,
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

type Reply = Sender<Result<AuditEntry, StoreError>>;

enum Job {
    /// An entry to append; `reply`, if any, gets the stored entry.
    Entry {
        entry: AuditEntry,
        durable: bool,
        reply: Option<Reply>,
    },
    /// A command's outcome; its entry's tenant is looked up on the thread.
    Command(CommandDone),
    /// Answered once everything queued before it is committed.
    Flush(Sender<()>),
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: Sender<Job>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl AuditWriter {
    /// Start the writer thread on `store`.
    pub fn start(store: Arc<Store>) -> Result<Self, AuditError> {
        let (tx, rx) = smol::channel::bounded(QUEUE);
        std::thread::Builder::new()
            .name("crops-audit".into())
            .spawn(move || run(&store, &rx))
            .map_err(AuditError::Spawn)?;
        Ok(Self { tx })
    }

    /// Append `entry` and wait until it is committed (with fsync when
    /// `durable`); returns it with its sequence number.
    pub async fn append(&self, entry: AuditEntry, durable: bool) -> Result<AuditEntry, AuditError> {
        let (reply, answer) = smol::channel::bounded(1);
        let job = Job::Entry {
            entry,
            durable,
            reply: Some(reply),
        };
        self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
        Ok(answer.recv().await.map_err(|_| AuditError::Stopped)??)
    }

    /// Queue a command's entry without waiting for its commit (it is
    /// committed before anything queued after it).
    pub async fn command(&self, done: CommandDone) {
        let (worker_id, ty) = (done.sent.worker_id.clone(), done.sent.ty);
        if self.tx.send(Job::Command(done)).await.is_err() {
            tracing::error!(%worker_id, ty, "audit writer stopped; a command's entry is lost");
        }
    }

    /// Wait until everything queued so far is committed.
    pub async fn flush(&self) {
        let (done, flushed) = smol::channel::bounded(1);
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = flushed.recv().await;
        }
    }
}

fn run(store: &Store, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv_blocking() {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit(store, jobs);
    }
    tracing::debug!("audit writer stopped");
}

/// One queued entry, resolved, and who waits for it.
struct Pending {
    entry: AuditEntry,
    durable: bool,
    reply: Option<Reply>,
}

fn commit(store: &Store, jobs: Vec<Job>) {
    let mut pending = Vec::with_capacity(jobs.len());
    let mut flushes = Vec::new();
    for job in jobs {
        match job {
            Job::Entry {
                entry,
                durable,
                reply,
            } => pending.push(Pending {
                entry,
                durable,
                reply,
            }),
            Job::Command(done) => match super::command_entry(store, done) {
                Ok(entry) => pending.push(Pending {
                    entry,
                    durable: false,
                    reply: None,
                }),
                Err(error) => tracing::error!(%error, "cannot resolve a command's audit entry"),
            },
            Job::Flush(done) => flushes.push(done),
        }
    }
    if !pending.is_empty() {
        let durable = pending.iter().any(|p| p.durable);
        let entries = pending.iter().map(|p| p.entry.clone()).collect();
        match store.append_audit_batch(entries, durable) {
            Ok(stored) => {
                for (p, entry) in pending.into_iter().zip(stored) {
                    if let Some(reply) = p.reply {
                        let _ = reply.try_send(Ok(entry));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, entries = pending.len(), "audit batch failed; appending one by one");
                for p in pending {
                    let result = store.append_audit(p.entry, p.durable);
                    match (p.reply, result) {
                        (Some(reply), result) => {
                            let _ = reply.try_send(result);
                        }
                        (None, Err(error)) => {
                            tracing::error!(%error, "cannot append a command to the audit log")
                        }
                        (None, Ok(_)) => {}
                    }
                }
            }
        }
    }
    for done in flushes {
        let _ = done.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::CommandSent;
    use crate::store::AuditScope;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: n,
            principal: "operator".into(),
            kind: "api".into(),
            action: format!("call-{n}"),
            target: "/v1/x".into(),
            tenant_id: None,
            org_id: None,
            outcome: "ok".into(),
            status: Some(200),
        }
    }

    fn command(n: u64) -> CommandDone {
        CommandDone {
            sent: CommandSent {
                worker_id: "w1".into(),
                ty: "container.start",
                container_id: None,
                tenant_id: Some(format!("t{n}")),
            },
            outcome: "ok".into(),
            at: n,
        }
    }

    #[test]
    fn a_burst_keeps_its_order_and_every_waiter_gets_its_own_entry() {
        let dir = std::env::temp_dir().join(format!(
            "crops-audit-writer-{}-{}",
            std::process::id(),
            crate::now_ms()
        ));
        let store = Arc::new(Store::open(&dir).unwrap());
        let writer = AuditWriter::start(Arc::clone(&store)).unwrap();
        smol::block_on(async {
            // Each call queues its command, then waits for its own entry:
            // 50 calls at once share batches, and each gets its own seq.
            let calls: Vec<_> = (0..50u64)
                .map(|n| {
                    let w = writer.clone();
                    smol::spawn(async move {
                        w.command(command(n)).await;
                        w.append(entry(n), true).await.unwrap()
                    })
                })
                .collect();
            let mut seqs = Vec::new();
            for (n, call) in calls.into_iter().enumerate() {
                let stored = call.await;
                assert_eq!(stored.action, format!("call-{n}"));
                seqs.push(stored.seq);
            }
            seqs.sort_unstable();
            seqs.dedup();
            assert_eq!(seqs.len(), 50, "every call its own entry");
            // A command queued last is visible once flushed.
            writer.command(command(99)).await;
            writer.flush().await;
        });
        let all = store.query_audit(&AuditScope::All, None, 200).unwrap();
        assert_eq!(all.len(), 101);
        // Each command entry precedes the call entry that queued it.
        for n in 0..50u64 {
            let pos = |kind: &str| {
                all.iter()
                    .position(|e| e.kind == kind && e.at == n)
                    .unwrap_or_else(|| panic!("{kind} {n} missing"))
            };
            // Newest first: the command is further down the page.
            assert!(pos("command") > pos("api"), "command {n} after its call");
        }
        assert_eq!(all[0].tenant_id.as_deref(), Some("t99"));
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
