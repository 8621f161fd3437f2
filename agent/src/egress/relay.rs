//! `crops-egress`, the entrypoint of a Standard or Strict container (see
//! [`super`]): the agent's own static executable, bind-mounted read-only
//! at [`PATH`] and started as
//!
//! ```text
//! /.crops/crops-egress -- COMMAND [ARG…]
//! ```
//!
//! It binds `127.0.0.1:3128` ([`PORT`]) in the container's network
//! namespace, forks a child that **hands the listening socket to the
//! gate** over the gate's Unix socket ([`super::MOUNT`]`/`[`super::SOCKET`],
//! `SCM_RIGHTS`), and `exec`s COMMAND, which so becomes the container's
//! PID 1 as it would have been without it. The agent then accepts the
//! container's proxy connections itself: no byte of traffic passes through
//! this process.
//!
//! The child holds its connection to the gate for as long as the agent
//! keeps it; the agent lets the listener go when it closes. While the
//! gate is away (the agent is restarting) the child tries again every
//! [`RETRY`], and at once when a client connects, so a restarted agent
//! is handed the listener anew and takes the waiting client from the
//! queue; only a client that finds the gate still away, or refusing the
//! listener (closing the connection within [`RETRY`]), is answered `503`
//! with a `crops egress:` body. When the port cannot be bound the command
//! runs anyway, with no way out, and this says why on stderr. Plain system
//! calls, no runtime: it starts with every container.

use std::ffi::{CString, OsString};
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::ForkResult;

/// The file name the agent's executable answers to as the relay.
pub const NAME: &str = "crops-egress";
/// Where the relay is mounted in a container.
pub const PATH: &str = "/.crops/crops-egress";
/// The port the relay listens on, on the container's loopback.
pub const PORT: u16 = 3128;
/// The proxy URL a container's environment names.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";
/// The message that carries the listener to the gate.
pub const HELLO: &[u8] = b"crops-egress listener\n";
/// How long the child waits between tries while the gate is away.
pub const RETRY: Duration = Duration::from_millis(200);

/// Whether the process was started as the relay (its argv[0] names it).
pub fn invoked_as_relay(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == NAME)
}

/// The relay's `main`: `args` without argv[0] (`-- COMMAND [ARG…]`);
/// returns only when COMMAND could not be started.
pub fn main(args: Vec<OsString>) -> i32 {
    let command: Vec<CString> = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" && !rest.is_empty() => rest
            .iter()
            .filter_map(|a| CString::new(a.as_bytes()).ok())
            .collect(),
        _ => {
            eprintln!("{NAME}: usage: {NAME} -- COMMAND [ARG...]");
            return 2;
        }
    };
    if command.len() + 1 != args.len() {
        eprintln!("{NAME}: an argument holds a NUL byte");
        return 2;
    }
    // Bound before COMMAND starts, so its first request finds the port.
    match TcpListener::bind(("127.0.0.1", PORT)) {
        // SAFETY: nothing but this thread exists yet (no runtime, no
        // threads before this point), so the child may do anything.
        Ok(listener) => match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                keep_handed(&listener, &format!("{}/{}", super::MOUNT, super::SOCKET))
            }
            Ok(ForkResult::Parent { .. }) => drop(listener),
            Err(e) => eprintln!("{NAME}: cannot start the relay ({e}); no egress"),
        },
        Err(e) => eprintln!("{NAME}: cannot listen on 127.0.0.1:{PORT} ({e}); no egress"),
    }
    let e = nix::unistd::execvp(&command[0], &command).unwrap_err();
    let name = command[0].to_string_lossy();
    eprintln!("{NAME}: cannot run {name}: {e}");
    if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}

/// The child: keep the gate at `socket` holding `listener`, for as long
/// as the container lives.
pub(super) fn keep_handed(listener: &TcpListener, socket: &str) -> ! {
    let mut waiting = false;
    loop {
        let tried = Instant::now();
        let held = UnixStream::connect(socket).and_then(|mut gate| {
            hand_over(&gate, listener)?;
            // Held until the agent closes it: its stop or restart.
            let _ = gate.read(&mut [0u8; 1]);
            if tried.elapsed() < RETRY {
                // Closed at once: the gate refused the listener (it holds
                // as many of this container's as it takes). Trying again
                // at once would spin for as long as a client waits.
                return Err(io::Error::other(
                    "the gate refused this container's listener",
                ));
            }
            Ok(())
        });
        // A client is waiting and the gate is away: say so.
        if let (Err(e), true) = (held, waiting) {
            tell_away(listener, &e);
        }
        // Try again in a while, or at once when a client is waiting: the
        // gate may be back (a restarted agent) and take it from the queue.
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        waiting = nix::poll::poll(&mut fds, RETRY.as_millis() as u16) == Ok(1);
    }
}

/// Answer one waiting client `503`: the gate cannot be reached.
fn tell_away(listener: &TcpListener, why: &io::Error) {
    // The agent may have left the shared listener non-blocking.
    let Ok((mut client, _)) = listener.accept() else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(RETRY));
    let _ = client.set_write_timeout(Some(RETRY));
    let mut sent = [0u8; 4096];
    let _ = client.read(&mut sent);
    let body =
        format!("crops egress: the agent's gate is not reachable ({why}); try again shortly\n");
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes());
    // Closed with unread input, a socket resets the connection, and the
    // client may lose the answer: end the write side, then drain.
    let _ = client.shutdown(std::net::Shutdown::Write);
    for _ in 0..16 {
        if !matches!(client.read(&mut sent), Ok(1..)) {
            break;
        }
    }
}

/// Send `listener` to the gate on `gate`: [`HELLO`] with the descriptor.
pub fn hand_over(gate: &UnixStream, listener: &TcpListener) -> io::Result<()> {
    let fds = [listener.as_raw_fd()];
    sendmsg::<()>(
        gate.as_raw_fd(),
        &[IoSlice::new(HELLO)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}
