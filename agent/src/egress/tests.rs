//! Unit tests of the egress gates: hand-overs, the relay, refusals, restore
//! and who may reach a gate.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use super::*;

/// A directory of this test process's own under the temporary directory.
fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("crops-egress-{tag}-{}", std::process::id()))
}

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
    let data = scratch("unit");
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
                && text.contains("crops egress: this container already has 256 connections open"),
            "{text}"
        );
        let text = answer_to(&mut held[0], b"CONNECT github.com:443 HTTP/1.1\r\n\r\n").await;
        assert!(
            text.starts_with("HTTP/1.1 403")
                && text.contains("crops egress: github.com is not on this container's allow-list"),
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
    let data = scratch("relay");
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
    let served = |text: &str| text.starts_with("HTTP/1.1 403") && text.contains("is an IP address");
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
    let dir = scratch("full");
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
fn no_other_user_of_the_host_reaches_a_gate_whatever_the_data_dirs_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let open_to_all =
        |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = scratch("modes");
    let root = data.join("egress");
    // A data dir open to all (`--data-dir /srv/crops`), and a gate an
    // older agent left in a world-searchable directory.
    std::fs::create_dir_all(root.join("c-5")).unwrap();
    std::fs::write(root.join("c-5").join(ALLOW), "pypi.org\n").unwrap();
    open_to_all(&data);
    open_to_all(&root);
    let egress = Egress::new(&data);
    assert_eq!(egress.restore(), 1);
    assert_eq!(
        mode(&root),
        0o700,
        "restored, the gates are the agent's own"
    );
    open_to_all(&root);
    let dir = egress.open("c-6", &[]).unwrap();
    assert_eq!(
        (mode(&root), mode(&dir), mode(&dir.join(SOCKET))),
        (0o700, 0o755, 0o666),
        "closed to other users, open to the container's through its mount"
    );
    egress.close("c-5");
    egress.close("c-6");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn what_is_not_a_listening_tcp_socket_is_refused_at_the_hand_over() {
    let data = scratch("hand");
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
    let data = scratch("retain");
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
