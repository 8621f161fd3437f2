//! The two ways into a container's terminal. Both end the same way: the
//! agent holds the PTY's master ([`Backend`]) and reads, writes and resizes
//! it directly, so sessions, scrollback, acks and links never ask which.
//!
//! * **helper** (containers created with the PTY helper mounted, labelled
//!   `crops.pty=2`): `podman exec --preserve-fds=1 … /.crops/crops-pty COLS
//!   ROWS -- argv…`. The PTY is made inside the container ([`super::helper`])
//!   and its master handed to the agent over a socket pair
//!   ([`super::handoff`]); nothing relays the terminal's bytes. Podman's own
//!   output (its errors, the helper's) goes to a separate diagnostics pipe.
//! * **host PTY** (every other container, e.g. created before the helper
//!   existed, with an older helper, or by a dynamically linked agent): a PTY
//!   on the host and `podman exec -it` on its slave; Podman relays the bytes
//!   through conmon and passes a resize on through its SIGWINCH handling.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use futures_lite::{AsyncReadExt, FutureExt};
use smol::process::Child;
use smol::{Async, Timer};

use super::handoff::{self, HandoffError};
use super::{pty, TerminalError};
use crate::podman::Podman;

/// How long `podman exec` may take to start the helper and hand the
/// terminal over (a loaded Raspberry Pi takes a few seconds).
pub const HANDOFF_WAIT: Duration = Duration::from_secs(60);
/// Podman's diagnostics kept from a failed start, bytes.
const DIAG_LIMIT: usize = 4096;

/// Which way a session reaches its container's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `/.crops/crops-pty` in the container, its master handed over.
    Helper,
    /// A host PTY and `podman exec -it`.
    HostPty,
}

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Self::Helper => "helper",
            Self::HostPty => "host-pty",
        }
    }
}

/// One session's terminal: the PTY master, wherever the PTY was made.
pub struct Backend {
    master: Async<File>,
}

/// A started terminal: its backend, the `podman exec` client, and (helper
/// only) the pipe with the client's own stdout and stderr.
pub struct Started {
    pub backend: Backend,
    pub child: Child,
    pub diag: Option<Async<File>>,
}

/// Start `argv` in `engine_id` on a `cols` x `rows` terminal, the `way`
/// asked for; `mark` goes into the environment of what runs there.
pub async fn start(
    podman: &Podman,
    way: Way,
    engine_id: &str,
    argv: &[String],
    size: (u16, u16),
    mark: &str,
) -> Result<Started, TerminalError> {
    match way {
        Way::HostPty => {
            let pty = pty::open(size.0, size.1)?;
            let child = podman
                .spawn_terminal(engine_id, argv, mark, &pty.slave)
                .map_err(TerminalError::Spawn)?;
            // Only the client holds the slave now: its end is the master's end.
            drop(pty.slave);
            Ok(Started {
                backend: Backend { master: pty.master },
                child,
                diag: None,
            })
        }
        Way::Helper => {
            let (ours, theirs) = handoff::pair()?;
            let (diag_r, diag_w) = pipe()?;
            let mut child = podman
                .spawn_terminal_helper(engine_id, argv, size, mark, theirs, diag_w)
                .map_err(TerminalError::Spawn)?;
            let ours = Async::new(ours).map_err(pty::PtyError::Register)?;
            let mut diag = register(diag_r)?;
            let got = handoff::receive(&ours)
                .or(async {
                    Timer::after(HANDOFF_WAIT).await;
                    Err(HandoffError::Receive(io::ErrorKind::TimedOut.into()))
                })
                .await;
            match got {
                Ok(Some(master)) => Ok(Started {
                    backend: Backend {
                        master: register(master)?,
                    },
                    child,
                    diag: Some(diag),
                }),
                Ok(None) => {
                    // `podman exec` (or the helper) gave up before the hand-off.
                    let output = read_diag(&mut diag).await;
                    let code = child.status().await.ok().and_then(|s| s.code());
                    Err(TerminalError::NoHandoff { code, output })
                }
                Err(e) => {
                    // Whatever the exec started in the container goes too.
                    let _ = child.kill();
                    let mark = mark.to_owned();
                    smol::unblock(move || crate::podman::process::kill_marked(&mark)).await;
                    Err(e.into())
                }
            }
        }
    }
}

fn register(fd: OwnedFd) -> Result<Async<File>, TerminalError> {
    Ok(Async::new(File::from(fd)).map_err(pty::PtyError::Register)?)
}

/// A close-on-exec pipe: (read end, write end). The child's copy is made by
/// dup2 when it starts, which clears close-on-exec on it alone.
fn pipe() -> Result<(OwnedFd, OwnedFd), TerminalError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| {
        TerminalError::Pty(pty::PtyError::Open {
            step: "pipe",
            source,
        })
    })
}

/// What a failed client wrote, up to [`DIAG_LIMIT`] bytes, trimmed; read
/// for at most a few seconds (the client has ended, so its end is near).
async fn read_diag(diag: &mut Async<File>) -> String {
    let mut out = Vec::new();
    let mut take = diag.take(DIAG_LIMIT as u64);
    let _ = take
        .read_to_end(&mut out)
        .or(async {
            Timer::after(Duration::from_secs(5)).await;
            Ok(0)
        })
        .await;
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// The last non-blank line a `podman exec` client wrote to its diagnostics
/// pipe, read to its end; for naming a failure once the session ended.
pub async fn last_diag_line(diag: &mut Async<File>) -> String {
    let mut last = String::new();
    let mut buf = vec![0u8; DIAG_LIMIT];
    loop {
        match diag.read(&mut buf).await {
            Ok(0) | Err(_) => return last,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                tracing::debug!(output = %text.trim_end(), "podman exec diagnostics");
                if let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                    last = line.trim().to_owned();
                }
            }
        }
    }
}

impl Backend {
    /// Read output, waiting for some. `Ok(0)` is the end.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        pty::read(&self.master, buf).await
    }

    /// Read what output is there now, without waiting: `Ok(0)` when there
    /// is none (or at the end; the next [`Self::read`] tells which).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        pty::try_read(&self.master, buf)
    }

    /// Wait until more output is there to read, for at most `limit`.
    pub async fn readable_within(&self, limit: Duration) {
        let _ = self
            .master
            .readable()
            .or(async {
                Timer::after(limit).await;
                Ok(())
            })
            .await;
    }

    /// Set the window size; the kernel sends SIGWINCH to the terminal's
    /// foreground process group.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), TerminalError> {
        Ok(pty::resize_master(&self.master, cols, rows)?)
    }

    /// Write keyboard input, waiting while the terminal's input queue is full.
    pub async fn send(&self, input: &[u8]) -> io::Result<()> {
        pty::write_all(&self.master, input).await
    }
}
