//! The audit log's writer thread: entries queue up and are appended in
//! batches, one redb transaction per batch (group commit).
//!
//! Why: every mutating API call appends two entries (the command it sent to
//! an agent, then the call itself, durably; or, for a call on a worker's
//! container, an intent before and the entry after, see `crate::audit`). Appended one transaction each
//! from the request, that is two thread-pool round trips and two commits on
//! the call's path; on a busy two-core box each round trip costs
//! milliseconds. Here the command's entry is only queued (the request does
//! not wait), and the call's entry waits for the one durable commit of
//! whichever batch holds it. Calls arriving together share an fsync.
//!
//! Guarantees:
//! * FIFO: an entry queued before another is committed in the same batch
//!   or an earlier one, so a durable entry also makes every entry queued
//!   before it durable (a durable redb commit persists the non-durable
//!   ones before it).
//! * A waiter gets its own result: if a batch fails, its entries are
//!   retried one transaction each, so one bad entry fails only its caller.
//! * Readers of the log first [`AuditWriter::flush`], so everything queued
//!   before a read is in it.
//! * A batch of entries nobody waits for (commands' entries, calls'
//!   entries completing their intents) is committed at most [`LINGER`]
//!   after its first entry, at once when a waited-for job joins it.
//!
//! The thread runs under SCHED_BATCH ([`batch_scheduling`]) so that its
//! wake-ups never preempt the request threads that queue its jobs.
//!
//! The thread ends when the last [`AuditWriter`] is dropped, after
//! committing what was queued; it holds the store until then.

use std::sync::Arc;

use smol::channel::{Receiver, Sender};

use super::CommandDone;
use crate::store::{AuditEntry, AuditWrite, AuditWritten, Store, StoreError};

/// Entries waiting beyond this make queuing callers wait (backpressure
/// when the disk stalls, instead of unbounded memory).
const QUEUE: usize = 4096;
/// At most this many entries per transaction.
const BATCH: usize = 256;
/// How long a batch that nobody waits for stays open for more.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

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
type IntentReply = Sender<Result<u64, StoreError>>;

enum Job {
    /// An entry to append (clearing the intent it completes, if any);
    /// `reply`, if any, gets the stored entry.
    Entry {
        entry: AuditEntry,
        clears: Option<u64>,
        durable: bool,
        reply: Option<Reply>,
    },
    /// An intent to record durably; `reply` gets its id.
    Intent {
        entry: AuditEntry,
        reply: IntentReply,
    },
    /// A command's outcome; its entry's tenant is looked up on the thread.
    Command(CommandDone),
    /// Answered once everything queued before it is committed.
    Flush(Sender<()>),
}

/// An intent queued by [`AuditWriter::intend`].
pub struct Intent {
    answer: Receiver<Result<u64, StoreError>>,
}

impl Intent {
    /// Wait until the intent is durable; its id.
    pub async fn recorded(self) -> Result<u64, AuditError> {
        Ok(self
            .answer
            .recv()
            .await
            .map_err(|_| AuditError::Stopped)??)
    }
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
            .spawn(move || {
                batch_scheduling();
                run(&store, &rx)
            })
            .map_err(AuditError::Spawn)?;
        Ok(Self { tx })
    }

    /// Append `entry` and wait until it is committed (with fsync when
    /// `durable`); returns it with its sequence number.
    pub async fn append(&self, entry: AuditEntry, durable: bool) -> Result<AuditEntry, AuditError> {
        let (reply, answer) = smol::channel::bounded(1);
        let job = Job::Entry {
            entry,
            clears: None,
            durable,
            reply: Some(reply),
        };
        self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
        Ok(answer.recv().await.map_err(|_| AuditError::Stopped)??)
    }

    /// Queue `entry` as an intent (committed durably, as soon as the writer
    /// gets to it) without waiting: [`Intent::recorded`] waits.
    pub async fn intend(&self, entry: AuditEntry) -> Result<Intent, AuditError> {
        let (reply, answer) = smol::channel::bounded(1);
        let job = Job::Intent { entry, reply };
        self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
        Ok(Intent { answer })
    }

    /// Queue the entry completing intent `id` (committed durably, clearing
    /// the intent) without waiting for it.
    pub async fn complete(&self, id: u64, entry: AuditEntry) {
        let job = Job::Entry {
            entry,
            clears: Some(id),
            durable: true,
            reply: None,
        };
        if self.tx.send(job).await.is_err() {
            tracing::error!(
                intent = id,
                "audit writer stopped; a call's entry stays an intent"
            );
        }
    }

    /// Append the entry completing intent `id` (clearing the intent) and
    /// wait for its durable commit, which also makes durable every store
    /// write committed before it (a call's settled container record).
    pub async fn complete_durably(
        &self,
        id: u64,
        entry: AuditEntry,
    ) -> Result<AuditEntry, AuditError> {
        let (reply, answer) = smol::channel::bounded(1);
        let job = Job::Entry {
            entry,
            clears: Some(id),
            durable: true,
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

/// Put the calling thread (the writer) under SCHED_BATCH: its wake-up
/// (a job queued by a request) then never preempts the thread that queued
/// it, which would otherwise stall that request while the writer prepares
/// its commit (measured: 250-500 us added to half the calls on a 2-core
/// box). Durable commits are not delayed by it when a CPU is free; callers
/// that wait for one wait as before. Failing to set it changes nothing else.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a live local that the
    // call only reads.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if r != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "audit writer keeps the default scheduling policy");
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
        if jobs.iter().all(Job::can_wait) {
            linger(rx, &mut jobs);
        }
        commit(store, jobs);
    }
    tracing::debug!("audit writer stopped");
}

impl Job {
    /// Nobody waits for this job's commit: a command's entry, or a call's
    /// entry completing its intent.
    fn can_wait(&self) -> bool {
        match self {
            Self::Entry { reply, .. } => reply.is_none(),
            Self::Command(_) => true,
            Self::Intent { .. } | Self::Flush(_) => false,
        }
    }
}

/// Wait up to [`LINGER`] for more jobs before committing a batch nobody
/// waits for, ending early when one that is waited for arrives (or the
/// batch is full). The request that queued a command's entry goes on to
/// write its own record next: committing the entry at once would take the
/// store's write lock just then and make that write wait. Lingering also
/// folds a call's command entry and its completing entry into one commit.
fn linger(rx: &Receiver<Job>, jobs: &mut Vec<Job>) {
    let deadline = std::time::Instant::now() + LINGER;
    while jobs.len() < BATCH {
        let next = smol::block_on(async {
            futures_lite::FutureExt::or(async { rx.recv().await.ok() }, async {
                smol::Timer::at(deadline).await;
                None
            })
            .await
        });
        let Some(job) = next else {
            return;
        };
        let urgent = !job.can_wait();
        jobs.push(job);
        if urgent {
            return;
        }
    }
}

/// Who waits for a write.
enum Waiter {
    None,
    Entry(Reply),
    Intent(IntentReply),
}

impl Waiter {
    fn answer(self, result: Result<AuditWritten, StoreError>) {
        match (self, result) {
            (Self::Entry(r), Ok(AuditWritten::Appended(e))) => drop(r.try_send(Ok(e))),
            (Self::Intent(r), Ok(AuditWritten::Intent(id))) => drop(r.try_send(Ok(id))),
            (Self::Entry(r), Err(e)) => drop(r.try_send(Err(e))),
            (Self::Intent(r), Err(e)) => drop(r.try_send(Err(e))),
            (Self::None, Err(error)) => {
                tracing::error!(%error, "cannot append to the audit log")
            }
            // A write answers in its own kind; nobody waits otherwise.
            _ => {}
        }
    }
}

/// One queued write, resolved, and who waits for it.
struct Pending {
    write: AuditWrite,
    durable: bool,
    waiter: Waiter,
}

fn commit(store: &Store, jobs: Vec<Job>) {
    let mut pending = Vec::with_capacity(jobs.len());
    let mut flushes = Vec::new();
    for job in jobs {
        match job {
            Job::Entry {
                entry,
                clears,
                durable,
                reply,
            } => pending.push(Pending {
                write: AuditWrite::Append { entry, clears },
                durable,
                waiter: reply.map_or(Waiter::None, Waiter::Entry),
            }),
            Job::Intent { entry, reply } => pending.push(Pending {
                write: AuditWrite::Intent(entry),
                durable: true,
                waiter: Waiter::Intent(reply),
            }),
            Job::Command(done) => match super::command_entry(store, done) {
                Ok(entry) => pending.push(Pending {
                    write: AuditWrite::Append {
                        entry,
                        clears: None,
                    },
                    durable: false,
                    waiter: Waiter::None,
                }),
                Err(error) => tracing::error!(%error, "cannot resolve a command's audit entry"),
            },
            Job::Flush(done) => flushes.push(done),
        }
    }
    if !pending.is_empty() {
        let durable = pending.iter().any(|p| p.durable);
        let writes = pending.iter().map(|p| p.write.clone()).collect();
        match store.write_audit_batch(writes, durable) {
            Ok(written) => {
                for (p, w) in pending.into_iter().zip(written) {
                    p.waiter.answer(Ok(w));
                }
            }
            Err(error) => {
                tracing::warn!(%error, entries = pending.len(), "audit batch failed; writing one by one");
                for p in pending {
                    // One write, one result (a missing one drops the
                    // waiter's channel: it reads as a stopped writer).
                    match store.write_audit_batch(vec![p.write], p.durable) {
                        Ok(mut w) => {
                            if let Some(w) = w.pop() {
                                p.waiter.answer(Ok(w));
                            }
                        }
                        Err(error) => p.waiter.answer(Err(error)),
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
    use crate::hub::CommandSent;
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
