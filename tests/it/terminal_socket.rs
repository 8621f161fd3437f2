//! The browser's terminal socket end to end, driven by the client the
//! page's behaviour is modelled on ([`crate::term::TermSocket`]), with the
//! agent as root and rootless: either way the shell runs on a PTY the
//! in-container helper opened.

use serde_json::json;

use crate::fleet::Fleet;
use crate::harness::AgentKind;
use crate::term::{member_token, SocketError, TermSocket};

#[test]
fn the_socket_speaks_to_a_shell_as_the_page_does() {
    socket_speaks_to_a_shell(AgentKind::Root);
}

#[test]
fn the_socket_speaks_to_a_shell_on_rootless_podman() {
    socket_speaks_to_a_shell(AgentKind::Rootless);
}

fn socket_speaks_to_a_shell(kind: AgentKind) {
    let f = Fleet::start_as("term-socket", kind);
    let id = f.running(
        &format!("e2e-term-socket-{kind:?}-{}", std::process::id()),
        json!({}),
    );
    // The container carries the PTY helper, so the terminal is the
    // helper's PTY inside it, not a host PTY.
    let engine = f.podman_ids(&id);
    let labels = &f.inspect(&engine[0])["Config"]["Labels"];
    assert_eq!(
        labels["crops.pty"], "2",
        "the PTY helper is mounted: {labels}"
    );
    let token = member_token(&f);
    let port = f.orch.port;
    let ca = &f._tls.ca;

    let refused = TermSocket::connect(ca, port, &id, "crops_tok_not_a_real_token", None);
    assert!(
        matches!(refused, Err(SocketError::Refused { status: 401, .. })),
        "a wrong token is refused before the upgrade: {:?}",
        refused.err()
    );

    let mut first = TermSocket::connect(ca, port, &id, &token, None).expect("a new session");
    first.send(b"echo sock-$((3+4))\r").unwrap();
    first.read_until(b"sock-7").expect("the shell's answer");
    // The shell's parent is the helper, which opened its PTY in the container.
    let parent = first
        .run(100, "tr '\\0' ' ' < /proc/$PPID/cmdline")
        .unwrap();
    assert!(
        parent.starts_with("/.crops/crops-pty "),
        "the shell's parent: {parent:?}"
    );

    // A resize reaches the program inside; asked again until it has landed,
    // since the resize and the keystrokes travel as separate messages.
    first.resize(100, 30).unwrap();
    let sizes: Vec<String> = (0..20)
        .map(|n| first.run(n, "stty size").unwrap())
        .take_while(|size| size != "30 100")
        .collect();
    assert!(sizes.len() < 20, "stty size never said 30 100: {sizes:?}");

    // A second viewer of the same session gets the same bytes from offset 0.
    let session = Some((first.session_id, 0));
    let mut second = TermSocket::connect(ca, port, &id, &token, session).expect("attach");
    assert_eq!(second.session_id, first.session_id);
    second.read_until(b"sock-7").expect("the replay");
}
