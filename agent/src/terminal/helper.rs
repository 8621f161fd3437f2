//! `crops-pty`, the PTY helper that runs *inside* a container: the agent's
//! own static executable, bind-mounted read-only at `/.crops/crops-pty` and
//! started by `podman exec --preserve-fds=1` (no `-i`, no `-t`) as
//!
//! ```text
//! /.crops/crops-pty COLS ROWS -- COMMAND [ARG…]
//! ```
//!
//! with fd 3 one end of a Unix socket pair whose other end the agent holds.
//! It opens a pseudo-terminal in the container (`posix_openpt`), sets its
//! window size, sends the master to the agent over fd 3 ([`super::handoff`])
//! and keeps none of it; then it starts COMMAND as a session leader whose
//! controlling terminal (and stdin, stdout, stderr) is the PTY's slave, and
//! waits for it. From then on the agent reads output from, writes input to
//! and resizes the master directly: nothing is relayed by the helper, by
//! conmon or by the `podman` client, whose own pipes carry only Podman's
//! diagnostics and the helper's (`crops-pty: …` lines on stderr).
//!
//! The helper exits with COMMAND's status (128 + signal if a signal killed
//! it). It holds the slave open until then, so the agent's read of the
//! master ends only after the command has. A COMMAND that cannot be started
//! prints why on the terminal and ends with 127 (not found) or 126. When the
//! agent hangs up (closes the master), the kernel hangs the terminal up:
//! SIGHUP to COMMAND's session, as on any terminal.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag};
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

use super::handoff::{self, HANDOFF_FD};
use super::pty;

/// The file name the agent's executable answers to as the helper.
pub const NAME: &str = "crops-pty";

/// Why the helper could not run its command.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("usage: {NAME} COLS ROWS -- COMMAND [ARG...] ({0})")]
    Usage(String),
    #[error(transparent)]
    Pty(#[from] pty::PtyError),
    #[error(transparent)]
    Handoff(#[from] handoff::HandoffError),
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: Errno,
    },
}

fn sys(step: &'static str) -> impl FnOnce(Errno) -> HelperError {
    move |source| HelperError::Sys { step, source }
}

/// Whether the process was started as the helper (its argv[0] names it).
pub fn invoked_as_helper(argv0: Option<&OsStr>) -> bool {
    argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == NAME)
}

/// The helper's `main`: `args` without argv[0]; returns the exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    match parse_args(&args).and_then(|a| run(&a)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "{NAME}: {e}");
            match e {
                HelperError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub cols: u16,
    pub rows: u16,
    pub argv: Vec<CString>,
}

/// `COLS ROWS -- COMMAND [ARG…]`, sizes from 1 to 65535.
pub fn parse_args(args: &[OsString]) -> Result<Args, HelperError> {
    let usage = |why: &str| HelperError::Usage(why.to_owned());
    let size = |s: Option<&OsString>, what: &str| {
        s.and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| usage(&format!("{what} must be a number from 1 to 65535")))
    };
    let cols = size(args.first(), "COLS")?;
    let rows = size(args.get(1), "ROWS")?;
    if args.get(2).map(OsString::as_os_str) != Some(OsStr::new("--")) {
        return Err(usage("`--` must follow the size"));
    }
    let argv = args[3..]
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| usage("an argument holds a NUL byte")))
        .collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        return Err(usage("no command"));
    }
    Ok(Args { cols, rows, argv })
}

/// Open the PTY, hand its master to the agent, start the command on the
/// slave and wait for it.
fn run(args: &Args) -> Result<i32, HelperError> {
    let socket = handoff_socket()?;
    let (master, slave) = pty::open_pair(args.cols, args.rows)?;
    handoff::send(socket.as_fd(), master.as_fd())?;
    // The agent holds the master now; the helper keeps only the slave, open
    // until the command ends, so the agent sees the terminal's end only
    // after the command's.
    drop((master, socket));
    let child = spawn(&slave, &args.argv)?;
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(st) => {
                if let Some(code) = exit_code(st) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("waitpid")(e)),
        }
    }
}

/// Fd [`HANDOFF_FD`], which `podman exec --preserve-fds=1` passes, made
/// close-on-exec so the command never inherits it.
fn handoff_socket() -> Result<OwnedFd, HelperError> {
    let missing = |_| {
        HelperError::Usage(format!(
            "fd {HANDOFF_FD} is not open: run me with podman exec --preserve-fds=1"
        ))
    };
    // SAFETY: F_GETFD only asks whether the descriptor is open; nothing is
    // owned or closed.
    let raw = unsafe { BorrowedFd::borrow_raw(HANDOFF_FD) };
    nix::fcntl::fcntl(raw, FcntlArg::F_GETFD).map_err(missing)?;
    nix::fcntl::fcntl(raw, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(sys("F_SETFD"))?;
    // SAFETY: the descriptor is open (checked above) and by the helper's
    // contract nothing else in this process uses it.
    Ok(unsafe { OwnedFd::from_raw_fd(HANDOFF_FD) })
}

/// Fork the command: a new session, the slave as its controlling terminal
/// and its stdin, stdout and stderr, default signal handling, then exec.
fn spawn(slave: &OwnedFd, argv: &[CString]) -> Result<Pid, HelperError> {
    // SAFETY: the helper has one thread, so the child may do anything the
    // parent could; it only makes system calls and then execs or exits.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork"))? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let err = exec_child(slave, argv);
            let _ = writeln!(
                io::stderr(),
                "{NAME}: cannot run {}: {err}",
                argv[0].to_string_lossy()
            );
            let code = if err == Errno::ENOENT { 127 } else { 126 };
            // SAFETY: ends the child without running the parent's atexit
            // handlers or flushing its buffers a second time.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The child's side of [`spawn`]; returns only on failure.
fn exec_child(slave: &OwnedFd, argv: &[CString]) -> Errno {
    let step = || -> Result<std::convert::Infallible, Errno> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // Rust ignores SIGPIPE at start-up, and an ignored signal stays
        // ignored across exec: give the command the default back.
        // SAFETY: installs the default disposition; no handler runs.
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }?;
        nix::unistd::setsid()?;
        // SAFETY: TIOCSCTTY takes an int argument, no pointer.
        Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) })?;
        nix::unistd::dup2_stdin(slave)?;
        nix::unistd::dup2_stdout(slave)?;
        nix::unistd::dup2_stderr(slave)?;
        // The original slave descriptor is close-on-exec.
        nix::unistd::execvp(&argv[0], argv)
    };
    match step() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The exit status a shell would report for `st`, if the process ended.
fn exit_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}
