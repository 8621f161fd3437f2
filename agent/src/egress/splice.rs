//! Moving a connection's bytes from one socket to another without copying
//! them through the process: `splice(2)` into a pipe and out again, so the
//! kernel hands pages along. The gate pipes every byte of a container's
//! traffic, on the agent's executor; through a buffer each byte costs two
//! copies, which took a third of an HTTPS download's throughput
//! (BENCHMARKS.md, issue 16).
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

fn pipe() -> Result<(OwnedFd, OwnedFd), SpliceError> {
    let flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let (r, w) = nix::unistd::pipe2(flags).map_err(|_| SpliceError::Unsupported)?;
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok((r, w))
}

/// Splice non-blocking `from` to `to` until `from` ends, waiting on the
/// executor when a side is not ready.
pub async fn nonblocking<A: AsFd, B: AsFd>(
    from: &Async<A>,
    to: &Async<B>,
) -> Result<(), SpliceError> {
    let (r, w) = pipe()?;
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
    fn a_stream_is_spliced_whole_and_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
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
        assert!(reader.join().unwrap() == data, "every byte, in order");
    }
}
