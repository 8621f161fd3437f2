//! The pseudo-terminal itself: opening a master/slave pair with a window
//! size, resizing it, reading and writing the master without blocking the
//! executor, and the signals that hang a session up.
//!
//! Both ends are opened close-on-exec from the start (`posix_openpt` and
//! `open` with `O_CLOEXEC`), so no other child the agent spawns meanwhile
//! inherits them: a stray copy of the slave would keep the master from ever
//! seeing the end of the session. The master is handed to
//! [`smol::Async`], which makes it non-blocking and wakes on readiness.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::Winsize;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use smol::Async;

/// Why a PTY could not be opened or resized.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("opening a pseudo-terminal ({step}): {source}")]
    Open {
        step: &'static str,
        #[source]
        source: Errno,
    },
    #[error("registering the pseudo-terminal with the reactor: {0}")]
    Register(#[source] io::Error),
    #[error("setting the terminal size to {cols}x{rows}: {source}")]
    Resize {
        cols: u16,
        rows: u16,
        #[source]
        source: Errno,
    },
}

/// A fresh PTY: the master (async, non-blocking) and the slave for the child.
pub struct Pty {
    pub master: Async<File>,
    pub slave: OwnedFd,
}

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, Winsize);

/// Open a PTY whose window is `cols` x `rows`.
pub fn open(cols: u16, rows: u16) -> Result<Pty, PtyError> {
    let (master, slave) = open_pair(cols, rows)?;
    let master = Async::new(master).map_err(PtyError::Register)?;
    Ok(Pty { master, slave })
}

/// Open a PTY whose window is `cols` x `rows`, both ends blocking and
/// close-on-exec: (master, slave). Neither becomes a controlling terminal.
pub fn open_pair(cols: u16, rows: u16) -> Result<(File, OwnedFd), PtyError> {
    let step = |step| move |source| PtyError::Open { step, source };
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).map_err(step("posix_openpt"))?;
    nix::pty::grantpt(&master).map_err(step("grantpt"))?;
    nix::pty::unlockpt(&master).map_err(step("unlockpt"))?;
    let name = nix::pty::ptsname_r(&master).map_err(step("ptsname"))?;
    let slave = nix::fcntl::open(name.as_str(), flags, Mode::empty()).map_err(step("open"))?;
    let master = File::from(OwnedFd::from(master));
    resize(master_fd(&master), cols, rows)?;
    Ok((master, slave))
}

fn master_fd(file: &File) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(file)
}

/// Set the window size of the terminal whose master is `fd`; the kernel
/// sends SIGWINCH to the terminal's foreground process group (the program
/// itself on a PTY made in the container; `podman exec -t` on a host PTY,
/// which passes the new size on).
pub fn resize(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> Result<(), PtyError> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points at a live local; `fd` is open for the duration of the call.
    unsafe { set_winsize(fd.as_raw_fd(), &size) }
        .map(|_| ())
        .map_err(|source| PtyError::Resize { cols, rows, source })
}

/// Resize through the async master.
pub fn resize_master(master: &Async<File>, cols: u16, rows: u16) -> Result<(), PtyError> {
    resize(master_fd(master.get_ref()), cols, rows)
}

/// Read what the program wrote. `Ok(0)` is the end: every slave is closed
/// (Linux reports that as EIO on the master).
pub async fn read(master: &Async<File>, buf: &mut [u8]) -> io::Result<usize> {
    match master.read_with(|mut f: &File| f.read(buf)).await {
        Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
        other => other,
    }
}

/// Read what the terminal holds now, without waiting: `Ok(0)` when it holds
/// nothing (or is at its end; the next [`read`] tells which).
pub fn try_read(master: &Async<File>, buf: &mut [u8]) -> io::Result<usize> {
    let mut f: &File = master.get_ref();
    match f.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
        other => other,
    }
}

/// Write all of `bytes` as keyboard input, waiting while the terminal's
/// input queue is full.
pub async fn write_all(master: &Async<File>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = master.write_with(|mut f: &File| f.write(bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Send `signal` to the process group led by `leader` (the `podman exec`
/// client, which is a session leader: its group id is its pid).
pub fn signal_group(leader: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(leader) else {
        return;
    };
    if let Err(e) = nix::sys::signal::killpg(Pid::from_raw(pid), signal) {
        tracing::debug!(pid, %signal, error = %e, "signalling the terminal's process group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, Winsize);

    fn size_of(fd: BorrowedFd<'_>) -> (u16, u16) {
        let mut ws = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the live local.
        unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.unwrap();
        (ws.ws_col, ws.ws_row)
    }

    #[test]
    fn the_window_size_is_set_at_open_and_by_resize() {
        let pty = open(132, 43).unwrap();
        assert_eq!(size_of(std::os::fd::AsFd::as_fd(&pty.slave)), (132, 43));
        resize_master(&pty.master, 80, 24).unwrap();
        assert_eq!(size_of(std::os::fd::AsFd::as_fd(&pty.slave)), (80, 24));
    }

    #[test]
    fn bytes_cross_the_pty_and_closing_the_slave_ends_the_stream() {
        smol::block_on(async {
            let pty = open(80, 24).unwrap();
            // Raw mode would need termios; canonical mode echoes and ends lines.
            let mut slave = File::from(pty.slave);
            slave.write_all(b"from the program\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&got).contains("program") {
                let n = read(&pty.master, &mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            write_all(&pty.master, b"typed\n").await.unwrap();
            let mut line = [0u8; 6];
            slave.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"typed\n");
            drop(slave);
            // Drain the echo of "typed", then the end.
            loop {
                if read(&pty.master, &mut buf).await.unwrap() == 0 {
                    break;
                }
            }
        });
    }
}
