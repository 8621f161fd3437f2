//! Moving a connection's bytes from one socket to another without copying
//! them through the process: `splice(2)` into a pipe and out again, so the
//! kernel hands pages along. Both the relay (blocking, one thread a
//! direction) and the gate (non-blocking, on the agent's executor) pipe
//! every byte of a container's traffic; through a buffer each costs two
//! copies, and the relay and the gate together took a third of an HTTPS
//! download's throughput that way (BENCHMARKS.md, issue 16).
//!
//! Where splice is refused before anything moved (`EINVAL`: a kernel or a
//! socket type without it) the caller copies through a buffer instead.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use smol::Async;

/// The most moved at once, and the pipe's size.
pub const CHUNK: usize = 64 * 1024;

/// How a copy ended other than at the end of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum SpliceError {
    /// Nothing was moved: splice does not work with these descriptors.
    Unsupported,
    /// A side failed or went away.
    Failed,
}

fn pipe(nonblocking: bool) -> Result<(OwnedFd, OwnedFd), SpliceError> {
    let mut flags = OFlag::O_CLOEXEC;
    if nonblocking {
        flags |= OFlag::O_NONBLOCK;
    }
    let (r, w) = nix::unistd::pipe2(flags).map_err(|_| SpliceError::Unsupported)?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok((r, w))
}

/// Splice blocking `from` to `to` until `from` ends.
pub fn blocking(from: &impl AsFd, to: &impl AsFd) -> Result<(), SpliceError> {
    let (r, w) = pipe(false)?;
    let mut moved = false;
    loop {
        let n = match splice(from, None, &w, None, CHUNK, SpliceFFlags::SPLICE_F_MOVE) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EINVAL) if !moved => return Err(SpliceError::Unsupported),
            Err(_) => return Err(SpliceError::Failed),
        };
        moved = true;
        let mut left = n;
        while left > 0 {
            match splice(&r, None, to, None, left, SpliceFFlags::SPLICE_F_MOVE) {
                Ok(0) => return Err(SpliceError::Failed),
                Ok(m) => left -= m,
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(SpliceError::Failed),
            }
        }
    }
}

/// Splice non-blocking `from` to `to` until `from` ends, waiting on the
/// executor when a side is not ready.
pub async fn nonblocking<A: AsFd, B: AsFd>(
    from: &Async<A>,
    to: &Async<B>,
) -> Result<(), SpliceError> {
    let (r, w) = pipe(true)?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut moved = false;
    loop {
        // The pipe is empty here, so EAGAIN means `from` has nothing yet.
        let n = match splice(from.get_ref(), None, &w, None, CHUNK, flags) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EAGAIN) => {
                from.readable().await.map_err(|_| SpliceError::Failed)?;
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EINVAL) if !moved => return Err(SpliceError::Unsupported),
            Err(_) => return Err(SpliceError::Failed),
        };
        moved = true;
        let mut left = n;
        while left > 0 {
            match splice(&r, None, to.get_ref(), None, left, flags) {
                Ok(0) => return Err(SpliceError::Failed),
                Ok(m) => left -= m,
                Err(Errno::EAGAIN) => to.writable().await.map_err(|_| SpliceError::Failed)?,
                Err(Errno::EINTR) => continue,
                Err(_) => return Err(SpliceError::Failed),
            }
        }
    }
}

/// Copy blocking `from` to `to` through a buffer until `from` ends.
pub fn copy_blocking(mut from: impl Read, mut to: impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(()),
            n => to.write_all(&buf[..n])?,
        }
    }
}

/// Copy non-blocking `from` to `to` through a buffer until `from` ends.
pub async fn copy_nonblocking<A, B>(from: &Async<A>, to: &Async<B>) -> io::Result<()>
where
    for<'a> &'a A: Read,
    for<'a> &'a B: Write,
{
    let (mut from, mut to) = (from, to);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await? {
            0 => return Ok(()),
            n => to.write_all(&buf[..n]).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_stream_is_spliced_whole_and_in_order_both_ways() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        // blocking: a -> b spliced into c -> d
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            a.write_all(&sent).unwrap();
        });
        let mover = std::thread::spawn(move || {
            let r = blocking(&b, &c);
            drop(c);
            r
        });
        let mut got = Vec::new();
        d.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(mover.join().unwrap(), Ok(()));
        assert!(got == data, "blocking: every byte, in order");

        // non-blocking, on the executor
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            a.write_all(&sent).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            d.read_to_end(&mut got).unwrap();
            got
        });
        let (b, c) = (Async::new(b).unwrap(), Async::new(c).unwrap());
        assert_eq!(smol::block_on(nonblocking(&b, &c)), Ok(()));
        drop(c);
        writer.join().unwrap();
        assert!(
            reader.join().unwrap() == data,
            "non-blocking: every byte, in order"
        );
    }
}
