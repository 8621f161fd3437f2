//! The two ways into a container's terminal, behind one interface
//! ([`Backend`]), so sessions, scrollback, acks and links never ask which:
//!
//! * **helper** (containers created with the PTY helper mounted, labelled
//!   `crops.pty=1`): `podman exec -i … /.crops/crops-pty COLS ROWS -- argv…`
//!   on two pipes. The PTY lives inside the container ([`super::helper`]);
//!   the agent reads the raw output from one pipe and writes input and
//!   window sizes, framed ([`super::wire`]), to the other. No tty sits on
//!   Podman's path, whose tty relay (conmon's) is what capped throughput.
//! * **host PTY** (every other container, e.g. created before the helper
//!   existed or by a dynamically linked agent): a PTY on the host and
//!   `podman exec -it` on its slave; a resize is TIOCSWINSZ on the master
//!   and reaches the container through Podman's SIGWINCH handling.
//!
//! Both ends the agent keeps are non-blocking [`Async`] files read the same
//! way: `Ok(0)` is the end. The client's stderr shares the output pipe, so
//! Podman's own errors (and the helper's) show in the terminal as they do
//! on the host PTY path.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

use futures_lite::FutureExt;

use smol::process::Child;
use smol::Async;

use super::{pty, wire, TerminalError};
use crate::podman::Podman;

/// Which way a session reaches its container's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `/.crops/crops-pty` in the container over `podman exec -i`.
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

/// One session's terminal: where its output comes from and its input goes.
pub enum Backend {
    HostPty {
        master: Async<File>,
    },
    Helper {
        /// The client's stdout and stderr: the PTY's raw output.
        output: Async<File>,
        /// The client's stdin: frames for the helper.
        input: Async<File>,
        /// The newest size asked for and not yet sent.
        size: Mutex<Option<(u16, u16)>>,
    },
}

/// A started terminal: its backend and the `podman exec` client.
pub struct Started {
    pub backend: Backend,
    pub child: Child,
}

/// Start `argv` in `engine_id` on a `cols` x `rows` terminal, the `way`
/// asked for; `mark` goes into the environment of what runs there.
pub fn start(
    podman: &Podman,
    way: Way,
    engine_id: &str,
    argv: &[String],
    (cols, rows): (u16, u16),
    mark: &str,
) -> Result<Started, TerminalError> {
    match way {
        Way::HostPty => {
            let pty = pty::open(cols, rows)?;
            let child = podman
                .spawn_terminal(engine_id, argv, mark, &pty.slave)
                .map_err(TerminalError::Spawn)?;
            // Only the client holds the slave now: its end is the master's end.
            drop(pty.slave);
            Ok(Started {
                backend: Backend::HostPty { master: pty.master },
                child,
            })
        }
        Way::Helper => {
            let (out_r, out_w) = pipe()?;
            let (in_r, in_w) = pipe()?;
            let child = podman
                .spawn_terminal_helper(engine_id, argv, (cols, rows), mark, in_r, out_w)
                .map_err(TerminalError::Spawn)?;
            let register =
                |fd: OwnedFd| Async::new(File::from(fd)).map_err(pty::PtyError::Register);
            Ok(Started {
                backend: Backend::Helper {
                    output: register(out_r)?,
                    input: register(in_w)?,
                    size: Mutex::new(None),
                },
                child,
            })
        }
    }
}

/// A close-on-exec pipe: (read end, write end). The child's copies are
/// made by dup2 when it starts, which clears close-on-exec on them alone.
fn pipe() -> Result<(OwnedFd, OwnedFd), TerminalError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| {
        TerminalError::Pty(pty::PtyError::Open {
            step: "pipe",
            source,
        })
    })
}

impl Backend {
    fn output(&self) -> &Async<File> {
        match self {
            Self::HostPty { master } => master,
            Self::Helper { output, .. } => output,
        }
    }

    /// Read output, waiting for some. `Ok(0)` is the end.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        pty::read(self.output(), buf).await
    }

    /// Read what output is there now, without waiting: `Ok(0)` when there
    /// is none (or at the end; the next [`Self::read`] tells which).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        pty::try_read(self.output(), buf)
    }

    /// Wait until more output is there to read, for at most `limit`.
    pub async fn readable_within(&self, limit: Duration) {
        let _ = self
            .output()
            .readable()
            .or(async {
                smol::Timer::after(limit).await;
                Ok(())
            })
            .await;
    }

    /// Ask for a new window size. On the host PTY it is set at once; for the
    /// helper it is kept and sent by [`Self::send`] (the caller wakes the
    /// session's writer), after the input already queued.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), TerminalError> {
        match self {
            Self::HostPty { master } => Ok(pty::resize_master(master, cols, rows)?),
            Self::Helper { size, .. } => {
                *size.lock().unwrap_or_else(|p| p.into_inner()) = Some((cols, rows));
                Ok(())
            }
        }
    }

    /// Whether a size waits to be sent (helper only).
    pub fn resize_pending(&self) -> bool {
        match self {
            Self::HostPty { .. } => false,
            Self::Helper { size, .. } => size.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
        }
    }

    /// Write keyboard input (and, to the helper, a pending size after it),
    /// waiting while the other side is full.
    pub async fn send(&self, input: &[u8]) -> io::Result<()> {
        match self {
            Self::HostPty { master } => pty::write_all(master, input).await,
            Self::Helper {
                input: pipe, size, ..
            } => {
                let mut frames = Vec::with_capacity(input.len() + 16);
                wire::encode_input(input, &mut frames);
                let size = size.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some((cols, rows)) = size {
                    wire::encode_resize(cols, rows, &mut frames);
                }
                pty::write_all(pipe, &frames).await
            }
        }
    }
}
