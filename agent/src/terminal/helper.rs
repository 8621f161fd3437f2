//! `crops-pty`, the PTY helper that runs *inside* a container: the agent's
//! own static executable, bind-mounted read-only at `/.crops/crops-pty` and
//! started by `podman exec -i` (pipes, no `-t`) as
//!
//! ```text
//! /.crops/crops-pty COLS ROWS -- COMMAND [ARG…]
//! ```
//!
//! It opens a pseudo-terminal in the container (`posix_openpt`), sets its
//! window size, and starts COMMAND as a session leader whose controlling
//! terminal is the PTY's slave. Then it relays, in one blocking `poll` loop
//! (no async runtime, no threads):
//!
//! * **stdout** is the raw PTY output, unframed;
//! * **stdin** is frames from the agent (input bytes, window sizes; see
//!   [`super::wire`]): input is written to the PTY, a size set with
//!   TIOCSWINSZ, which sends SIGWINCH to the foreground process group;
//! * **stderr** carries the helper's own diagnostics, `crops-pty: …` lines.
//!
//! Every fd is non-blocking and each direction has its own small buffer, so
//! a program that stops reading its input never stops its output from
//! flowing, and an agent that stops reading the output (its window is
//! full) never keeps a keystroke like Ctrl-C from reaching the terminal.
//!
//! When COMMAND exits the helper drains what the PTY still holds and exits
//! with COMMAND's status (128 + signal if a signal killed it). When stdin
//! ends (the agent hung up) or stdout breaks, it sends SIGHUP (and SIGCONT)
//! to COMMAND's process group and exits with 129. A COMMAND that cannot be
//! started prints why on the terminal and ends with 127 (not found) or 126.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::pty;
use super::wire::{Decoder, Message};

/// The file name the agent's executable answers to as the helper.
pub const NAME: &str = "crops-pty";
/// Bytes read from stdin or the PTY at once, and the most each direction
/// holds before it stops reading its source.
const CHUNK: usize = 64 * 1024;
/// The exit status after a hang-up: 128 + SIGHUP.
const HUNG_UP: i32 = 129;
/// Chunks moved in one go before stdin and signals are looked at again.
const PUMP_ROUNDS: usize = 16;
/// Output taken from the PTY after the command ended, at most.
const DRAIN: usize = 4 * 1024 * 1024;

/// Why the helper could not run its command.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("usage: {NAME} COLS ROWS -- COMMAND [ARG...] ({0})")]
    Usage(String),
    #[error(transparent)]
    Pty(#[from] pty::PtyError),
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("relaying the terminal: {0}")]
    Io(#[from] io::Error),
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

/// Open the PTY, start the command on it, relay until the end.
fn run(args: &Args) -> Result<i32, HelperError> {
    let (master, slave_name) = open_pty(args.cols, args.rows)?;
    let slave_name = CString::new(slave_name)
        .map_err(|_| HelperError::Usage("the slave's name holds a NUL byte".into()))?;
    // SIGCHLD arrives through a signalfd in the poll loop, so it is blocked
    // here; the child unblocks everything before it runs the command.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old))
        .map_err(sys("blocking SIGCHLD"))?;
    let signals = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(sys("signalfd"))?;
    let child = spawn(&slave_name, &args.argv)?;
    let mut relay = Relay::new(master, child)?;
    relay.run(&signals)
}

/// A PTY whose window is `cols` x `rows`: the master, and the slave's path.
fn open_pty(cols: u16, rows: u16) -> Result<(File, String), HelperError> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).map_err(sys("posix_openpt"))?;
    nix::pty::grantpt(&master).map_err(sys("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(sys("ptsname"))?;
    let master = File::from(OwnedFd::from(master));
    pty::resize(master.as_fd(), cols, rows)?;
    Ok((master, name))
}

/// Fork the command: a new session, the slave as its controlling terminal
/// and its stdin, stdout and stderr, default signal handling, then exec.
fn spawn(slave: &CString, argv: &[CString]) -> Result<Pid, HelperError> {
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
fn exec_child(slave: &CString, argv: &[CString]) -> Errno {
    let step = || -> Result<std::convert::Infallible, Errno> {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        // Rust ignores SIGPIPE at start-up, and an ignored signal stays
        // ignored across exec: give the command the default back.
        // SAFETY: installs the default disposition; no handler runs.
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }?;
        nix::unistd::setsid()?;
        let fd = nix::fcntl::open(
            slave.as_c_str(),
            OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )?;
        // SAFETY: TIOCSCTTY takes an int argument, no pointer.
        Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) })?;
        nix::unistd::dup2_stdin(&fd)?;
        nix::unistd::dup2_stdout(&fd)?;
        nix::unistd::dup2_stderr(&fd)?;
        drop(fd);
        nix::unistd::execvp(&argv[0], argv)
    };
    match step() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The relay's state: both directions' buffers and what is still open.
struct Relay {
    master: File,
    stdin: ManuallyDrop<File>,
    stdout: ManuallyDrop<File>,
    child: Pid,
    /// PTY output not yet written to stdout.
    out: Vec<u8>,
    out_at: usize,
    /// Input decoded from stdin, not yet written to the PTY.
    input: Vec<u8>,
    input_at: usize,
    frames: Decoder,
    /// The PTY's end was seen (every slave closed).
    master_done: bool,
    /// The command's exit status, once reaped.
    status: Option<i32>,
    /// Output still taken from the PTY after the command ended: what its
    /// children write meanwhile is not waited for beyond this.
    drain_left: usize,
}

/// stdin or stdout as a `File` that is never closed.
fn std_file(fd: i32) -> ManuallyDrop<File> {
    // SAFETY: fds 0 and 1 are open for the helper's whole life, and the
    // `File` is never dropped, so it never closes them.
    ManuallyDrop::new(unsafe { File::from_raw_fd(fd) })
}

fn nonblocking(fd: BorrowedFd<'_>) -> Result<(), HelperError> {
    let flags = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL).map_err(sys("F_GETFL"))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(sys("F_SETFL"))?;
    Ok(())
}

/// `Ok(None)` for "nothing now" (EAGAIN), `Ok(Some(0))` for the end (EIO on
/// a PTY master whose slaves are all closed counts as the end).
fn try_io(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

impl Relay {
    fn new(master: File, child: Pid) -> Result<Self, HelperError> {
        let (stdin, stdout) = (std_file(0), std_file(1));
        for fd in [master.as_fd(), stdin.as_fd(), stdout.as_fd()] {
            nonblocking(fd)?;
        }
        Ok(Self {
            master,
            stdin,
            stdout,
            child,
            out: Vec::with_capacity(CHUNK),
            out_at: 0,
            input: Vec::new(),
            input_at: 0,
            frames: Decoder::default(),
            master_done: false,
            status: None,
            drain_left: DRAIN,
        })
    }

    fn run(&mut self, signals: &SignalFd) -> Result<i32, HelperError> {
        loop {
            if let Some(status) = self.status {
                // The command is gone: what the PTY still holds, then its status.
                let drained = self.master_done || self.drain_left == 0;
                if drained || self.out_at == self.out.len() && !self.fill_out()? {
                    self.flush_out_blocking()?;
                    return Ok(status);
                }
            }
            let want_stdin = self.input.len() - self.input_at < CHUNK;
            let want_master_in = self.out_at == self.out.len() && !self.master_done;
            let want_master_out = self.input_at < self.input.len();
            let mut fds = [
                poll_fd(self.stdin.as_raw_fd(), want_stdin, false),
                poll_fd(self.master.as_raw_fd(), want_master_in, want_master_out),
                poll_fd(self.stdout.as_raw_fd(), false, self.out_at < self.out.len()),
                poll_fd(signals.as_raw_fd(), self.status.is_none(), false),
            ];
            // SAFETY: `fds` is a live array of initialised pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if let Err(e) = Errno::result(n) {
                if e == Errno::EINTR {
                    continue;
                }
                return Err(sys("poll")(e));
            }
            let ready = |i: usize| fds[i].revents != 0;
            if ready(3) {
                while signals.read_signal().ok().flatten().is_some() {}
                self.reap();
            }
            if ready(1) && want_master_out {
                self.write_input()?;
            }
            if (ready(1) && want_master_in || ready(2)) && !self.pump_out()? {
                return Ok(self.hang_up());
            }
            if ready(0) && !self.read_stdin()? {
                return Ok(self.hang_up());
            }
        }
    }

    /// Move output from the PTY to stdout until one of them would block,
    /// or for at most [`PUMP_ROUNDS`] chunks (then stdin gets its turn);
    /// false if stdout is broken. Polling only when one side would block
    /// keeps a flood at about one system call per PTY read.
    fn pump_out(&mut self) -> Result<bool, HelperError> {
        for _ in 0..PUMP_ROUNDS {
            if self.out_at == self.out.len() && (self.master_done || !self.fill_out()?) {
                break;
            }
            if !self.write_out()? {
                return Ok(false);
            }
            if self.out_at < self.out.len() {
                break;
            }
        }
        Ok(true)
    }

    /// Read what the PTY holds (up to a chunk) into the output buffer; false
    /// when it held nothing right now.
    fn fill_out(&mut self) -> Result<bool, HelperError> {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        let mut got = false;
        let mut buf = [0u8; 16 * 1024];
        while self.out.len() < CHUNK {
            let room = (CHUNK - self.out.len()).min(buf.len());
            match try_io((&self.master).read(&mut buf[..room]))? {
                None => break,
                Some(0) => {
                    self.master_done = true;
                    break;
                }
                Some(n) => {
                    self.out.extend_from_slice(&buf[..n]);
                    if self.status.is_some() {
                        self.drain_left = self.drain_left.saturating_sub(n);
                    }
                    got = true;
                }
            }
        }
        Ok(got)
    }

    /// Write buffered output to stdout; false if stdout is broken.
    fn write_out(&mut self) -> Result<bool, HelperError> {
        while self.out_at < self.out.len() {
            match (&*self.stdout).write(&self.out[self.out_at..]) {
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Write all buffered output, waiting for stdout as needed.
    fn flush_out_blocking(&mut self) -> Result<(), HelperError> {
        while self.out_at < self.out.len() {
            if !self.write_out()? {
                return Ok(());
            }
            let mut fds = [poll_fd(self.stdout.as_raw_fd(), false, true)];
            // SAFETY: as in `run`.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
        }
        Ok(())
    }

    /// Read frames from stdin; false at its end.
    fn read_stdin(&mut self) -> Result<bool, HelperError> {
        let mut buf = [0u8; 16 * 1024];
        match try_io((&*self.stdin).read(&mut buf))? {
            None => return Ok(true),
            Some(0) => return Ok(false),
            Some(n) => self.frames.push(&buf[..n]),
        }
        if self.input_at == self.input.len() {
            self.input.clear();
            self.input_at = 0;
        }
        while let Some(msg) = self.frames.next_frame() {
            match msg {
                Message::Input(bytes) => self.input.extend_from_slice(bytes),
                Message::Resize { cols, rows } if cols > 0 && rows > 0 => {
                    if let Err(e) = pty::resize(self.master.as_fd(), cols, rows) {
                        let _ = writeln!(io::stderr(), "{NAME}: {e}");
                    }
                }
                Message::Resize { .. } | Message::Unknown { .. } => {}
            }
        }
        Ok(true)
    }

    /// Write pending input to the PTY as far as its input queue takes it.
    fn write_input(&mut self) -> Result<(), HelperError> {
        while self.input_at < self.input.len() {
            match try_io((&self.master).write(&self.input[self.input_at..]))? {
                None => return Ok(()),
                // The terminal is gone: nothing will read this input.
                Some(0) => {
                    self.input_at = self.input.len();
                }
                Some(n) => self.input_at += n,
            }
        }
        Ok(())
    }

    /// Collect the command's status if it has ended.
    fn reap(&mut self) {
        self.status = self.status.or_else(|| {
            let st = nix::sys::wait::waitpid(self.child, Some(WaitPidFlag::WNOHANG)).ok()?;
            exit_code(st)
        });
    }

    /// SIGHUP (and SIGCONT, for a stopped job) to the command's group.
    fn hang_up(&mut self) -> i32 {
        let group = self.child;
        let _ = nix::sys::signal::killpg(group, Signal::SIGHUP);
        let _ = nix::sys::signal::killpg(group, Signal::SIGCONT);
        HUNG_UP
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

fn poll_fd(fd: i32, read: bool, write: bool) -> libc::pollfd {
    let mut events = 0;
    if read {
        events |= libc::POLLIN;
    }
    if write {
        events |= libc::POLLOUT;
    }
    libc::pollfd {
        // A negative fd is skipped by poll: nothing wanted from it now.
        fd: if events == 0 { -1 } else { fd },
        events,
        revents: 0,
    }
}
