//! What the registry keeps per session: the output ring and its flow, the
//! input stream (deduplicated by offset), which link the session streams
//! to, how it ended, and the handles its tasks share ([`Io`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::Signal;
use smol::channel::Sender;

use super::backend::Backend;
use super::pty;
use super::scrollback::{Flow, Scrollback};

/// Input accepted but not yet written to the PTY, bytes. Beyond it input is
/// dropped (and logged): the program has stopped reading its terminal.
pub const INPUT_BACKLOG: usize = 1024 * 1024;

/// The handles a session's tasks share with the registry.
pub struct Io {
    /// The terminal: the PTY master, made on the host or in the container.
    pub backend: Backend,
    /// The `podman exec` client: a session leader, so also its process group.
    pub pid: u32,
    /// `CROPS_EXEC_MARK` of the session's processes inside the container.
    pub mark: String,
    /// Set once the client was reaped: its pid may then name another process.
    pub reaped: AtomicBool,
    /// Rung when the window opens or the session is hung up.
    pub wake_reader: Sender<()>,
    /// Rung when input is queued.
    pub wake_input: Sender<()>,
}

impl Io {
    /// Signal the client's process group (unless reaped) and every process
    /// carrying the session's mark (inside the container, where killing the
    /// client does not reach: conmon keeps the command alive).
    pub async fn signal(&self, signal: Signal) {
        if !self.reaped.load(Ordering::SeqCst) {
            pty::signal_group(self.pid, signal);
        }
        let mark = self.mark.clone();
        let n = smol::unblock(move || crate::podman::process::signal_marked(&mark, signal)).await;
        tracing::debug!(%signal, processes = n, "signalled a terminal's processes");
    }

    pub fn ring(bell: &Sender<()>) {
        let _ = bell.try_send(());
    }
}

/// How a session ended, for `terminal.exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub exit_code: Option<i32>,
    pub reason: String,
}

/// One session in the registry.
pub struct Session {
    pub container_id: String,
    pub output: Scrollback,
    pub flow: Flow,
    pub input: Input,
    /// The link this session streams to; `None` while detached.
    pub link: Option<u64>,
    /// Counts detachments, so a grace timer knows whether it is still current.
    pub detached: u64,
    /// In the link's ready queue.
    pub queued: bool,
    /// Opened on the live link, its open reply not yet queued: silent.
    pub held: bool,
    /// Why the agent hung it up (`closed`, `orphaned`), if it did.
    pub hangup: Option<&'static str>,
    /// This agent is stopping or removing the container.
    pub stopping: bool,
    /// Set once the process is gone and all its output read.
    pub ended: Option<Ending>,
    pub io: std::sync::Arc<Io>,
}

impl Session {
    /// Something to put on the link: output not yet sent, or the end.
    pub fn has_news(&self) -> bool {
        self.flow.sent < self.output.end() || self.ended.is_some()
    }
}

/// The input stream: offsets the orchestrator assigned, and bytes waiting
/// for the PTY.
#[derive(Debug, Default)]
pub struct Input {
    /// Bytes of input received so far: the next frame's expected offset.
    end: u64,
    pending: VecDeque<u8>,
}

/// What became of one input frame.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Bytes queued for the PTY.
    pub queued: usize,
    /// Bytes below what was already received (a retry), dropped.
    pub duplicate: usize,
    /// Bytes missing between the last frame and this one.
    pub gap: u64,
    /// Bytes dropped because the backlog was full.
    pub overflow: usize,
}

impl Input {
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Take a frame whose first byte is input byte `offset`: bytes already
    /// received are dropped, a gap is accepted (those bytes are lost).
    pub fn accept(&mut self, offset: u64, payload: &[u8]) -> Accepted {
        let mut out = Accepted::default();
        let skip = usize::try_from(self.end.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(payload.len());
        out.duplicate = skip;
        let fresh = &payload[skip..];
        if fresh.is_empty() {
            return out;
        }
        out.gap = offset.saturating_sub(self.end);
        let room = INPUT_BACKLOG.saturating_sub(self.pending.len());
        let take = fresh.len().min(room);
        self.pending.extend(&fresh[..take]);
        out.queued = take;
        out.overflow = fresh.len() - take;
        self.end = offset.max(self.end) + fresh.len() as u64;
        out
    }

    /// Up to `max` queued bytes, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.pending.len());
        self.pending.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(input: &mut Input) -> String {
        String::from_utf8(input.take(usize::MAX)).unwrap()
    }

    #[test]
    fn input_in_order_is_queued_and_advances_the_offset() {
        let mut input = Input::default();
        assert_eq!(input.accept(0, b"echo ").queued, 5);
        assert_eq!(input.accept(5, b"hi\r").queued, 3);
        assert_eq!(input.end(), 8);
        assert_eq!(taken(&mut input), "echo hi\r");
        assert_eq!(input.take(10), Vec::<u8>::new());
    }

    #[test]
    fn a_retried_frame_is_dropped_and_an_overlap_keeps_only_new_bytes() {
        let mut input = Input::default();
        input.accept(0, b"ls\r");
        let again = input.accept(0, b"ls\r");
        assert_eq!(
            again,
            Accepted {
                duplicate: 3,
                ..Accepted::default()
            }
        );
        let overlap = input.accept(1, b"s\rpwd\r");
        assert_eq!((overlap.duplicate, overlap.queued), (2, 4));
        assert_eq!(input.end(), 7);
        assert_eq!(taken(&mut input), "ls\rpwd\r");
    }

    #[test]
    fn a_gap_is_accepted_and_moves_the_offset_past_it() {
        let mut input = Input::default();
        input.accept(0, b"a");
        let after_gap = input.accept(10, b"b");
        assert_eq!((after_gap.gap, after_gap.queued), (9, 1));
        assert_eq!(input.end(), 11);
        assert_eq!(taken(&mut input), "ab");
        assert_eq!(input.accept(5, b"zz").duplicate, 2, "inside the gap: old");
    }

    #[test]
    fn the_backlog_is_bounded() {
        let mut input = Input::default();
        let big = vec![b'x'; INPUT_BACKLOG - 1];
        assert_eq!(input.accept(0, &big).queued, INPUT_BACKLOG - 1);
        let more = input.accept(big.len() as u64, b"yz");
        assert_eq!((more.queued, more.overflow), (1, 1));
        assert_eq!(input.end(), INPUT_BACKLOG as u64 + 1);
        assert_eq!(input.take(4).len(), 4);
    }
}
