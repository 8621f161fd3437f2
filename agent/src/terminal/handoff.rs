//! The hand-off of a PTY master from the helper inside a container
//! (`crops-pty`, [`super::helper`]) to the agent on the host: one Unix
//! socket pair, whose far end `podman exec --preserve-fds=1` places at fd
//! [`HANDOFF_FD`] of the helper, and one message on it: a single byte
//! ([`TAG`]) carrying the master as `SCM_RIGHTS`.
//!
//! A file descriptor is a kernel object, so the master keeps working across
//! the container's namespaces: the agent reads the terminal's output and
//! writes its input, and sets its window size (TIOCSWINSZ), on the master
//! itself, with no process (the helper, conmon, the `podman` client) and no
//! pipe between the program's PTY and the agent. The slave, and so what the
//! program sees (`tty` names the container's own `/dev/pts/N`), stays in
//! the container.
//!
//! The socket's end without a message is the helper (or `podman exec`
//! before it) failing: the caller then reports `podman exec`'s own words.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use smol::Async;

/// The helper's descriptor for the socket: the first one
/// `podman exec --preserve-fds` passes.
pub const HANDOFF_FD: RawFd = crate::podman::process::PRESERVED_FD;
/// The one byte the master travels with.
pub const TAG: u8 = b'M';

/// Why a hand-off failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("making the hand-off socket pair: {0}")]
    Pair(#[source] io::Error),
    #[error("sending the terminal over fd {HANDOFF_FD}: {0}")]
    Send(#[source] Errno),
    #[error("receiving the terminal: {0}")]
    Receive(#[source] io::Error),
    #[error("the hand-off carried {0} descriptors and tag {1:?}, not one master")]
    Malformed(usize, Option<u8>),
}

/// A close-on-exec socket pair: (the agent's end, the helper's end).
pub fn pair() -> Result<(UnixStream, OwnedFd), HandoffError> {
    let (ours, theirs) = UnixStream::pair().map_err(HandoffError::Pair)?;
    Ok((ours, OwnedFd::from(theirs)))
}

/// Send `master` over `socket` (the helper's side). The kernel holds a
/// reference to it until the agent takes it, so the sender may close its
/// own copy right away.
pub fn send(socket: BorrowedFd<'_>, master: BorrowedFd<'_>) -> Result<(), HandoffError> {
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&[TAG])];
    loop {
        match socket::sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(HandoffError::Send(e)),
        }
    }
}

/// One receive attempt: `Ok(Some(master))`, `Ok(None)` at the socket's end
/// (the sender is gone without sending), or the error (`WouldBlock` too).
fn receive_once(socket: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    // Room for the most descriptors one message can carry (SCM_MAX_FD):
    // the control data is never truncated, so every descriptor the kernel
    // installs here is owned below and closed unless it is the master.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let msg = socket::recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let bytes = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this
            // process; nothing else owns them.
            fds.extend(
                got.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let tag = (bytes == 1).then_some(byte[0]);
    match (bytes, fds.len(), tag) {
        (0, 0, _) => Ok(None),
        (1, 1, Some(TAG)) => Ok(fds.pop()),
        (_, n, tag) => Err(io::Error::other(HandoffError::Malformed(n, tag))),
    }
}

/// Wait for the master on the agent's end of the pair; `Ok(None)` when the
/// helper's side closed without sending one.
pub async fn receive(socket: &Async<UnixStream>) -> Result<Option<OwnedFd>, HandoffError> {
    loop {
        match socket.read_with(|s| receive_once(s.as_raw_fd())).await {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other.map_err(HandoffError::Receive),
        }
    }
}

/// [`receive`] for a blocking socket (tests, tools).
pub fn receive_blocking(socket: &UnixStream) -> Result<Option<OwnedFd>, HandoffError> {
    loop {
        match receive_once(socket.as_raw_fd()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other.map_err(HandoffError::Receive),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_descriptor_crosses_and_still_names_the_same_file() {
        let (ours, theirs) = pair().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        send(theirs.as_fd(), b.as_fd()).unwrap();
        drop(b);
        let got = receive_blocking(&ours).unwrap().expect("a descriptor");
        let mut got = UnixStream::from(got);
        a.write_all(b"through").unwrap();
        let mut buf = [0u8; 7];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"through");
    }

    #[test]
    fn the_end_without_a_message_is_none_and_a_bare_byte_is_refused() {
        let (ours, theirs) = pair().unwrap();
        drop(theirs);
        assert!(receive_blocking(&ours).unwrap().is_none());

        let (ours, theirs) = pair().unwrap();
        UnixStream::from(theirs).write_all(&[TAG]).unwrap();
        let err = receive_blocking(&ours).unwrap_err();
        assert!(err.to_string().contains("0 descriptors"), "{err}");
    }

    #[test]
    fn several_descriptors_are_refused_not_taken() {
        let (ours, theirs) = pair().unwrap();
        let files: Vec<UnixStream> = (0..8).map(|_| UnixStream::pair().unwrap().0).collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&[TAG])];
        socket::sendmsg::<()>(theirs.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        let err = receive_blocking(&ours).unwrap_err();
        assert!(err.to_string().contains("8 descriptors"), "{err}");
    }
}
