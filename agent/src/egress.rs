//! Egress allow-lists, enforced: what a Standard or Strict container may
//! reach is decided here, outside the container, by name.
//!
//! How it works:
//!
//! * A Standard or Strict container has **no network** but `lo`
//!   (`--network none`): no address to route from, no resolver to ask, so
//!   no raw IP, no DNS query and no UDP gets out, whatever runs inside,
//!   root included.
//! * Its only way out is the agent's **gate** ([`gate`]), an HTTP proxy
//!   on the container's own `127.0.0.1:3128`. The container's entrypoint
//!   is the agent's static executable under the name `crops-egress`
//!   ([`relay`]): it binds that port inside the container, hands the
//!   listening socket to the agent over a Unix socket the agent serves,
//!   one per container (`<data_dir>/egress/<containerId>/gate.sock`,
//!   bind-mounted with its directory read-only at `/.crops/egress`), and
//!   `exec`s the image's own entrypoint and command, which so keeps PID 1
//!   and its signals. The agent accepts on the handed socket itself: a
//!   connection is one hop from the container's client to the agent, and
//!   the agent's connection to the destination is in the host's network.
//! * The gate speaks HTTP proxy ([`proxy`]): `CONNECT host:port` for
//!   HTTPS (TLS stays end to end) and absolute-form requests for plain
//!   HTTP. It answers a name not on the container's list, or an IP
//!   address, with `403` and a body starting `crops egress:`, resolves
//!   allowed names itself, and never connects to a loopback, link-local,
//!   multicast or unspecified address (a name pointed at the host's
//!   `127.0.0.1` reaches nothing).
//! * The container's environment names the port in `HTTP_PROXY`,
//!   `HTTPS_PROXY` and their lowercase forms, with `NO_PROXY` for
//!   `localhost`. A process that kills the relay, binds the port first or
//!   ignores the variables loses its way out; it gains none: the relay is
//!   plumbing, the list is enforced by the gate.
//! * The list comes with `container.create` (the orchestrator resolves it
//!   from the request and the tenant's default) and is written next to the
//!   socket as `allow`, one pattern a line, so a restarted agent serves the
//!   gates of the containers it already has ([`Egress::restore`]), and a
//!   process in the container can read what it may reach.
//!
//! A gate lives from the create to the remove; one a previous run served
//! for a container since removed behind the agent's back is closed when
//! the agent first lists its containers ([`Egress::retain`]).
//!
//! What it does not cover: clients that ignore the proxy variables
//! (BusyBox `wget` for HTTPS, for one) reach nothing; protocols other than
//! HTTP and TCP through `CONNECT` (UDP, QUIC, ICMP) reach nothing; any port
//! of an allowed name is allowed; a wildcard allows every name under it,
//! so data can be carried out in the names of queries the gate resolves
//! for allowed wildcards; an allowed name that resolves to an address on
//! the worker's own network (a NAS's LAN) is reached: the list is by name.
//! Not tested: SELinux-enforcing hosts, where the unrelabelled socket may
//! be refused to the container. Open containers use the host's network;
//! Offline ones have no gate.

pub mod gate;
mod proxy;
pub mod relay;
mod splice;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a container sees its gate's directory.
pub const MOUNT: &str = "/.crops/egress";
/// The gate's socket in that directory.
pub const SOCKET: &str = "gate.sock";
/// The allow-list file in that directory, one pattern a line.
pub const ALLOW: &str = "allow";

/// Why a gate could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error(
        "this agent cannot serve an allow-list: it is not a static build, so it has no \
         egress relay to put in the container (run the static crops-agent)"
    )]
    NoRelay,
    #[error("data dir {path} cannot be mounted: it must not contain ':' or ','")]
    Unmountable { path: PathBuf },
    #[error("setting up the egress gate in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The gates of this agent's containers, by container id.
#[derive(Debug)]
pub struct Egress {
    root: PathBuf,
    gates: Mutex<HashMap<String, smol::Task<()>>>,
}

impl Egress {
    /// Gates under `<data_dir>/egress`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("egress"),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The gate directory of `container_id` (a validated id).
    pub fn dir(&self, container_id: &str) -> PathBuf {
        self.root.join(container_id)
    }

    /// Write `list` for `container_id` and serve its gate; the directory to
    /// mount at [`MOUNT`] (refused, before anything is made, when its path
    /// cannot be a `--volume` source). Serving again replaces the socket.
    pub fn open(&self, container_id: &str, list: &[String]) -> Result<PathBuf, EgressError> {
        let dir = self.dir(container_id);
        if dir.to_string_lossy().contains([':', ',']) {
            return Err(EgressError::Unmountable { path: dir });
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| EgressError::Io { path, source }
        };
        create_dir(&dir).map_err(io(&dir))?;
        let allow = dir.join(ALLOW);
        let mut text = list.join("\n");
        text.push('\n');
        std::fs::write(&allow, text).map_err(io(&allow))?;
        self.serve(container_id, &dir, list.to_vec())?;
        Ok(dir)
    }

    fn serve(&self, container_id: &str, dir: &Path, list: Vec<String>) -> Result<(), EgressError> {
        let socket = dir.join(SOCKET);
        let io = |source| EgressError::Io {
            path: socket.clone(),
            source,
        };
        match std::fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let listener =
            smol::Async::<std::os::unix::net::UnixListener>::bind(&socket).map_err(io)?;
        // Whatever user the container's processes run as may connect.
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(io)?;
        let task = smol::spawn(gate::serve(
            listener,
            container_id.to_owned(),
            Arc::from(list),
        ));
        self.lock().insert(container_id.to_owned(), task);
        tracing::debug!(container_id, socket = %socket.display(), "egress gate serving");
        Ok(())
    }

    /// Stop serving `container_id`'s gate and remove its directory.
    pub fn close(&self, container_id: &str) {
        self.lock().remove(container_id);
        let dir = self.dir(container_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove an egress gate");
            }
        }
    }

    /// Serve again every gate a previous run left (its containers outlive
    /// the agent); returns how many.
    pub fn restore(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let mut served = 0;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            let Ok(text) = std::fs::read_to_string(dir.join(ALLOW)) else {
                continue;
            };
            let list: Vec<String> = text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            match self.serve(&id, &dir, list) {
                Ok(()) => served += 1,
                Err(e) => {
                    tracing::warn!(container_id = %id, error = %e, "could not serve an egress gate again")
                }
            }
        }
        served
    }

    /// Close the gate of every container `keep` says is gone (removed
    /// behind the agent's back while it was down); returns how many.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self.lock().keys().filter(|id| !keep(id)).cloned().collect();
        for id in &gone {
            self.close(id);
        }
        gone.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, smol::Task<()>>> {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Raise this process's soft limit of open descriptors to its hard limit
/// (as Go programs do at start): a gate connection holds two sockets and
/// two pipes, and the common soft limit of 1,024 would cap every
/// container's connections together near 170. Returns the new limit.
pub fn raise_descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    Some(hard.max(soft))
}

/// A world-searchable directory (the container's user may not be the agent's).
fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::time::Duration;

    use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
    use smol::net::TcpStream;

    use super::*;

    /// The whole answer to `ask` on a new connection, or "(no answer)".
    async fn answer_to(stream: &mut TcpStream, ask: &[u8]) -> String {
        let _ = stream.write_all(ask).await;
        let mut text = String::new();
        let read = async {
            let _ = stream.read_to_string(&mut text).await;
            true
        };
        let timeout = async {
            smol::Timer::after(Duration::from_secs(10)).await;
            false
        };
        if future::or(read, timeout).await {
            text
        } else {
            "(no answer)".into()
        }
    }

    /// Do what a container's relay does: hand a listener to the gate at
    /// `socket`; the relay's connection (the gate serves while it is open)
    /// and where the listener listens.
    fn hand_over(socket: &Path) -> (StdUnixStream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = StdUnixStream::connect(socket).unwrap();
        relay::hand_over(&relay, &listener).unwrap();
        (relay, listener.local_addr().unwrap())
    }

    #[test]
    fn a_gate_serves_a_handed_listener_and_refuses_off_list_names_and_connections_over_the_cap() {
        let data = std::env::temp_dir().join(format!("crops-egress-unit-{}", std::process::id()));
        let egress = Egress::new(&data);
        let dir = egress.open("c-1", &["pypi.org".to_owned()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(ALLOW)).unwrap(),
            "pypi.org\n"
        );
        let (relay, addr) = hand_over(&dir.join(SOCKET));
        smol::block_on(async {
            let mut held = Vec::new();
            for _ in 0..gate::MAX_CONNECTIONS {
                held.push(TcpStream::connect(addr).await.unwrap());
            }
            let mut extra = TcpStream::connect(addr).await.unwrap();
            let text = answer_to(&mut extra, b"").await;
            assert!(
                text.starts_with("HTTP/1.1 503")
                    && text
                        .contains("crops egress: this container already has 256 connections open"),
                "{text}"
            );
            let text = answer_to(&mut held[0], b"CONNECT github.com:443 HTTP/1.1\r\n\r\n").await;
            assert!(
                text.starts_with("HTTP/1.1 403")
                    && text
                        .contains("crops egress: github.com is not on this container's allow-list"),
                "{text}"
            );
            drop(held);
            // The closed ones are given back: a new connection is heard.
            let text = loop {
                let mut again = TcpStream::connect(addr).await.unwrap();
                let text = answer_to(&mut again, b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n").await;
                if !text.starts_with("HTTP/1.1 503") {
                    break text;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            };
            assert!(
                text.starts_with("HTTP/1.1 403") && text.contains("is an IP address"),
                "{text}"
            );
        });
        // The relay gone (its container stopped), the listener goes too:
        // nothing is left listening in the container's namespace.
        drop(relay);
        let refused = (0..500).any(|_| {
            let gone = std::net::TcpStream::connect(addr).is_err();
            if !gone {
                std::thread::sleep(Duration::from_millis(10));
            }
            gone
        });
        assert!(refused, "the gate let the listener go with the relay");
        egress.close("c-1");
        assert!(!dir.exists(), "closing removes the gate's directory");
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn a_relay_hands_its_listener_to_each_gate_and_says_when_the_gate_is_away() {
        let data = std::env::temp_dir().join(format!("crops-egress-relay-{}", std::process::id()));
        let egress = Egress::new(&data);
        let socket = egress.dir("c-3").join(SOCKET);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let path = socket.to_string_lossy().into_owned();
        std::thread::spawn(move || relay::keep_handed(&listener, &path));
        let ask = || {
            smol::block_on(async {
                let mut client = TcpStream::connect(addr).await.unwrap();
                answer_to(&mut client, b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n").await
            })
        };
        let served =
            |text: &str| text.starts_with("HTTP/1.1 403") && text.contains("is an IP address");
        let away = |text: &str| {
            text.starts_with("HTTP/1.1 503")
                && text.contains("crops egress: the agent's gate is not reachable")
        };
        // No gate yet (an agent not started): the client is told.
        let text = ask();
        assert!(away(&text), "{text}");
        // The gate comes: the very next client is served by it.
        egress.open("c-3", &[]).unwrap();
        let text = ask();
        assert!(served(&text), "{text}");
        // The agent stops, and starts again (restoring its gates).
        egress.close("c-3");
        let text = ask();
        assert!(away(&text), "{text}");
        let again = Egress::new(&data);
        again.open("c-3", &[]).unwrap();
        let text = ask();
        assert!(served(&text), "{text}");
        again.close("c-3");
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn a_client_waiting_on_a_gate_that_refuses_the_listener_is_told_and_the_relay_does_not_spin() {
        let dir = std::env::temp_dir().join(format!("crops-egress-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SOCKET);
        // A gate that closes every hand-over at once, as one does for a
        // container already holding its share of them; counting them.
        let gate = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = tries.clone();
        std::thread::spawn(move || {
            for relay in gate.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Heard (the descriptor with it is closed), then refused.
                let _ = std::io::Read::read(&mut &relay, &mut [0u8; 64]);
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = path.to_string_lossy().into_owned();
        let started = std::time::Instant::now();
        std::thread::spawn(move || relay::keep_handed(&listener, &socket));
        let text = smol::block_on(async {
            let mut client = TcpStream::connect(addr).await.unwrap();
            answer_to(&mut client, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").await
        });
        assert!(
            text.starts_with("HTTP/1.1 503")
                && text.contains("the gate refused this container's listener"),
            "{text}"
        );
        // One try, one more for the waiting client, then one per RETRY.
        let tries = tries.load(std::sync::atomic::Ordering::SeqCst);
        let paced = 3 + (started.elapsed().as_millis() / relay::RETRY.as_millis()) as usize;
        assert!(
            tries <= paced,
            "{tries} hand-overs, at most {paced} expected"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_is_not_a_listening_tcp_socket_is_refused_at_the_hand_over() {
        let data = std::env::temp_dir().join(format!("crops-egress-hand-{}", std::process::id()));
        let egress = Egress::new(&data);
        let socket = egress.open("c-2", &[]).unwrap().join(SOCKET);
        let unbound = std::net::TcpStream::connect(
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap(),
        )
        .unwrap();
        let not_listening = std::os::fd::AsRawFd::as_raw_fd(&unbound);
        let (a, _b) = StdUnixStream::pair().unwrap();
        let unix = std::os::fd::AsRawFd::as_raw_fd(&a);
        for (what, fds, hello) in [
            ("a connected socket", vec![not_listening], relay::HELLO),
            ("a Unix socket", vec![unix], relay::HELLO),
            ("no descriptor", vec![], relay::HELLO),
            ("two descriptors", vec![unix, unix], relay::HELLO),
            ("another greeting", vec![unix], &b"hello"[..]),
        ] {
            let mut relay = StdUnixStream::connect(&socket).unwrap();
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let cmsgs: &[_] = if fds.is_empty() { &[] } else { &rights };
            nix::sys::socket::sendmsg::<()>(
                std::os::fd::AsRawFd::as_raw_fd(&relay),
                &[std::io::IoSlice::new(hello)],
                cmsgs,
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .unwrap();
            // The gate closes the connection: the relay reads its end.
            let mut buf = [0u8; 8];
            assert_eq!(
                std::io::Read::read(&mut relay, &mut buf).unwrap(),
                0,
                "{what} is refused"
            );
        }
        egress.close("c-2");
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn gates_of_containers_gone_are_closed_and_the_rest_restored() {
        let data = std::env::temp_dir().join(format!("crops-egress-retain-{}", std::process::id()));
        let before = Egress::new(&data);
        let kept = before.open("kept", &["pypi.org".to_owned()]).unwrap();
        let gone = before.open("gone", &[]).unwrap();
        drop(before);
        // A restarted agent serves both again, then learns one is gone.
        let after = Egress::new(&data);
        assert_eq!(after.restore(), 2);
        assert_eq!(after.retain(|id| id == "kept"), 1);
        assert!(kept.join(SOCKET).exists() && !gone.exists());
        assert!(std::os::unix::net::UnixStream::connect(kept.join(SOCKET)).is_ok());
        let _ = std::fs::remove_dir_all(&data);
    }
}
