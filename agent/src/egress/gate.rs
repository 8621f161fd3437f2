//! The gate: where a Standard or Strict container's way out is served
//! (see [`super`]). Its Unix socket is where the container's relay hands
//! over the socket listening on the container's `127.0.0.1:3128`
//! ([`super::relay`]); the gate then accepts the container's connections
//! on it, in the container's own network namespace, and proxies each one
//! ([`super::proxy`]), at most [`MAX_CONNECTIONS`] at once (`503` over).
//!
//! What arrives on the Unix socket is the container's to choose, so it is
//! checked: one message, [`super::relay::HELLO`], carrying a socket that
//! listens for TCP; anything else is closed and logged. A container holds
//! at most [`MAX_HANDOVERS`] at once. The gate keeps a listener only while
//! the relay's connection lives: a socket keeps its network namespace
//! alive, and a stopped container's must go.

use std::io::IoSliceMut;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt};
use nix::sys::socket::{
    getsockopt, recvmsg, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockType,
    SockaddrLike, SockaddrStorage,
};
use std::os::unix::net::{UnixListener, UnixStream};

use smol::Async;

use super::proxy::{handle, refuse, refused};

/// How long a relay may take to hand its listener over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections one container may hold open through its gate:
/// each costs the agent two sockets and two pipes, and the agent's
/// descriptors are shared by every container and its own connection (the
/// agent raises its soft limit to the hard one at start).
pub const MAX_CONNECTIONS: usize = 256;
/// The most listeners one container may have handed over at once (its
/// relay hands one; a new one comes when the container restarts).
pub const MAX_HANDOVERS: usize = 4;

/// One container's gate: whose it is, what it may reach, what it holds.
struct Gate {
    container_id: Arc<str>,
    list: Arc<[String]>,
    open: AtomicUsize,
}

/// Take listeners handed over on `control` for the container
/// `container_id`, whose checked, lowercase allow-list is `list`, and
/// serve them, until dropped (which lets every listener go).
pub async fn serve(control: Async<UnixListener>, container_id: String, list: Arc<[String]>) {
    let gate = Arc::new(Gate {
        container_id: Arc::from(container_id),
        list,
        open: AtomicUsize::new(0),
    });
    let mut held: Vec<smol::Task<()>> = Vec::new();
    loop {
        match control.accept().await {
            Ok((relay, _)) => {
                held.retain(|t| !t.is_finished());
                if held.len() >= MAX_HANDOVERS {
                    tracing::warn!(container_id = %gate.container_id, "egress gate: too many listeners handed over; closed");
                    continue;
                }
                held.push(smol::spawn(hold(relay, gate.clone())));
            }
            Err(e) => {
                tracing::warn!(container_id = %gate.container_id, error = %e, "egress gate: accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One hand-over: take the listener, then serve it until `relay` closes.
async fn hold(relay: Async<UnixStream>, gate: Arc<Gate>) {
    let taken = future::or(take_listener(&relay), async {
        smol::Timer::after(HANDOVER_TIMEOUT).await;
        Err("nothing handed over in time".to_owned())
    });
    let listener = match taken.await {
        Ok(listener) => listener,
        Err(why) => {
            tracing::warn!(container_id = %gate.container_id, why, "egress gate: a hand-over refused");
            return;
        }
    };
    tracing::debug!(container_id = %gate.container_id, "egress gate: listener handed over");
    let closed = async {
        let mut buf = [0u8; 64];
        while let Ok(1..) = (&relay).read(&mut buf).await {}
    };
    future::or(accept(listener, &gate), closed).await;
}

/// Receive [`super::relay::HELLO`] and the listening TCP socket with it.
async fn take_listener(relay: &Async<UnixStream>) -> Result<Async<TcpListener>, String> {
    let (hello, fds) = relay
        .read_with(receive)
        .await
        .map_err(|e| format!("receiving: {e}"))?;
    let mut fds = fds.into_iter();
    let (Some(fd), None, true) = (fds.next(), fds.next(), hello) else {
        return Err("not one listener with the relay's greeting".to_owned());
    };
    let listening = getsockopt(&fd, sockopt::SockType) == Ok(SockType::Stream)
        && getsockopt(&fd, sockopt::AcceptConn) == Ok(true);
    let inet = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family())
        .is_some_and(|f| matches!(f, AddressFamily::Inet | AddressFamily::Inet6));
    if !(listening && inet) {
        return Err("what was handed over is not a listening TCP socket".to_owned());
    }
    Async::new(TcpListener::from(fd)).map_err(|e| e.to_string())
}

/// One `recvmsg`: whether it was [`super::relay::HELLO`], and every
/// descriptor that came with it (owned, so none is left open).
fn receive(relay: &UnixStream) -> std::io::Result<(bool, Vec<OwnedFd>)> {
    let mut buf = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buf)];
    // Room for the most a message can carry (SCM_MAX_FD), so none is cut off.
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let msg = recvmsg::<()>(
        relay.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(rights) = cmsg {
                // SAFETY: the kernel just installed these descriptors in
                // this process for this message; nothing else owns them.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
    }
    let n = msg.bytes;
    Ok((buf[..n] == *super::relay::HELLO, fds))
}

/// Accept the container's connections on `listener` for ever.
async fn accept(listener: Async<TcpListener>, gate: &Arc<Gate>) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                // What the gate hands over goes out at once: a small answer
                // must not wait for the client's delayed ACK.
                let _ = stream.get_ref().set_nodelay(true);
                if gate.open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    gate.open.fetch_sub(1, Ordering::AcqRel);
                    let r = refuse(
                        "503 Service Unavailable",
                        format!("this container already has {MAX_CONNECTIONS} connections open"),
                    );
                    // Told on its own task: a client that does not read
                    // must not hold up the accept loop.
                    let id = gate.container_id.clone();
                    smol::spawn(async move { refused(&mut stream, &id, &r).await }).detach();
                    continue;
                }
                let gate = gate.clone();
                smol::spawn(async move {
                    handle(stream, &gate.container_id, &gate.list).await;
                    gate.open.fetch_sub(1, Ordering::AcqRel);
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(container_id = %gate.container_id, error = %e, "egress gate: accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}
