//! `crops-egress`, the relay that runs *inside* a Standard or Strict
//! container as its entrypoint (see [`super`]): the agent's own static
//! executable, bind-mounted read-only at [`PATH`] and started as
//!
//! ```text
//! /.crops/crops-egress -- COMMAND [ARG…]
//! ```
//!
//! It binds `127.0.0.1:3128` ([`PORT`]), forks a child that pipes every
//! connection to the gate's socket ([`super::MOUNT`]`/`[`super::SOCKET`]),
//! and `exec`s COMMAND, which so becomes the container's PID 1 as it would
//! have been without the relay. Plain threads, no runtime: it starts with
//! every container. When the gate's socket cannot be reached (the agent
//! is restarting) a client gets `503` with a `crops egress:` body. When the
//! port cannot be bound the command runs anyway, with no way out, and the
//! relay says why on stderr.

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use nix::unistd::ForkResult;

use super::splice::{self, SpliceError};

/// The file name the agent's executable answers to as the relay.
pub const NAME: &str = "crops-egress";
/// Where the relay is mounted in a container.
pub const PATH: &str = "/.crops/crops-egress";
/// The port the relay listens on, on the container's loopback.
pub const PORT: u16 = 3128;
/// The proxy URL a container's environment names.
pub const PROXY_URL: &str = "http://127.0.0.1:3128";

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
    match TcpListener::bind(("127.0.0.1", PORT)) {
        // SAFETY: nothing but this thread exists yet (no runtime, no
        // threads before this point), so the child may do anything.
        Ok(listener) => match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                serve(&listener);
                std::process::exit(0);
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

fn serve(listener: &TcpListener) {
    for conn in listener.incoming() {
        match conn {
            Ok(tcp) => {
                std::thread::spawn(move || relay(tcp));
            }
            Err(e) => eprintln!("{NAME}: accept: {e}"),
        }
    }
}

/// Pipe one client connection to the gate, both ways.
fn relay(mut tcp: TcpStream) {
    // What the gate hands over goes out at once: a small answer must not
    // wait for the client's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let socket = format!("{}/{}", super::MOUNT, super::SOCKET);
    let gate = match UnixStream::connect(&socket) {
        Ok(gate) => gate,
        Err(e) => {
            let body = format!(
                "crops egress: the agent's gate is not reachable ({e}); try again shortly\n"
            );
            let _ = write!(
                tcp,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
    };
    let (Ok(tcp2), Ok(gate2)) = (tcp.try_clone(), gate.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy(tcp2, gate2, |g| g.shutdown(Shutdown::Write)));
    copy(gate, tcp, |t| t.shutdown(Shutdown::Write));
    let _ = up.join();
}

/// Copy until `from` ends (spliced: [`super::splice`]), then `done` on `to`.
fn copy<R, W>(mut from: R, mut to: W, done: impl FnOnce(&W) -> io::Result<()>)
where
    R: Read + AsFd,
    W: Write + AsFd,
{
    if splice::blocking(&from, &to) == Err(SpliceError::Unsupported) {
        let _ = splice::copy_blocking(&mut from, &mut to);
    }
    let _ = done(&to);
}
