//! Which way a terminal reaches its container, against the real Podman: a
//! container created by the agent carries the PTY helper and its sessions
//! run their PTY inside it (under Strict's read-only root too), with a
//! large output arriving whole and in order; a container without the helper
//! (created before it existed) or with an older helper still gets a working
//! terminal over `podman exec -it` on a host PTY; one whose helper is
//! missing gets a clear error and the agent keeps serving.

use std::time::Duration;

use protocol::container::Profile;
use protocol::Body;

use crate::support::{self, Rig};
use crate::term_peer::{need_podman, Agent, Peer};
use crate::within;

const GRACE: Duration = Duration::from_secs(60);

/// What the shell says about its terminal and its parent, ended by a marker
/// the typed line cannot contain.
const WHO: &str = "tty; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; echo who-$((6*7))\r";

async fn who(peer: &mut Peer, sid: u64) -> String {
    peer.type_text(sid, WHO).await;
    peer.wait_output(sid, "who-42\r\n").await;
    peer.text(sid)
}

/// Open a session on `command`, wait for its end; its output and exit code.
async fn run(peer: &mut Peer, id: &str, command: &[&str]) -> (String, Option<i32>) {
    let command = serde_json::to_string(command).unwrap();
    let data = format!(r#"{{"containerId":"{id}","cols":80,"rows":24,"command":{command}}}"#);
    let Body::TerminalOpened(o) = peer.request("terminal.open", &data).await else {
        panic!("open {command}")
    };
    let exited = peer.exited(o.session_id).await;
    assert_eq!(exited.reason, "exited", "{exited:?}");
    (peer.text(o.session_id), exited.exit_code)
}

/// Under Open and Strict: the container is labelled and has the helper;
/// the shell's terminal is a PTY of the container's own, its parent is
/// `crops-pty`; resizes reach it; several MB arrive whole and in order.
#[test]
fn sessions_on_agent_created_containers_run_their_pty_inside() {
    need_podman();
    smol::block_on(within(240, "the helper path", async {
        let rig = Rig::new("term-helper");
        let (agent, mut peer) = Agent::start(GRACE).await;
        for profile in [Profile::Strict, Profile::Open] {
            let id = support::unique("helper");
            let engine = rig.running(&id, profile).await;
            let labels = &rig.inspect(&engine)["Config"]["Labels"];
            assert_eq!(labels["crops.pty"], "2", "{profile:?}");

            let sid = peer.open(&id, 80, 24).await;
            let text = who(&mut peer, sid).await;
            assert!(text.contains("\r\n/dev/pts/"), "{profile:?}: {text:?}");
            assert!(
                text.contains("/.crops/crops-pty 80 24 -- /bin/sh"),
                "{profile:?}: the shell's parent is the helper: {text:?}"
            );
            let resize = format!(r#"{{"sessionId":{sid},"cols":100,"rows":30}}"#);
            let reply = peer.request("terminal.resize", &resize).await;
            assert!(matches!(reply, Body::TerminalResized(_)), "{reply:?}");
            // The size is set on the master before the reply, so the next
            // line typed runs at the new size.
            peer.type_text(sid, "stty size\r").await;
            peer.wait_output(sid, "\r\n30 100\r\n").await;
            peer.type_text(sid, "exit 4\r").await;
            assert_eq!(peer.exited(sid).await.exit_code, Some(4), "{profile:?}");

            const N: u32 = 600_000;
            let (text, code) = run(&mut peer, &id, &["seq", "1", &N.to_string()]).await;
            assert_eq!(code, Some(0));
            let expected: String = (1..=N).map(|i| format!("{i}\r\n")).collect();
            assert_eq!(text.len(), expected.len(), "{profile:?}: every byte");
            assert!(text == expected, "{profile:?}: in order");

            // A background job holding the terminal does not hold the
            // session: it ends with its command.
            let bg = ["sh", "-c", "sleep 600 & echo bg-started; exit 7"];
            let (text, code) = run(&mut peer, &id, &bg).await;
            assert_eq!(code, Some(7), "{profile:?}: {text:?}");
            assert!(text.contains("bg-started"), "{profile:?}: {text:?}");
        }
        agent.stop().await;
    }));
}

/// Run a managed container of the rig's tenant, labelled `extra`, made
/// directly with Podman (as an older agent made it).
fn managed_container(rig: &Rig, id: &str, extra: &[&str]) {
    let tenant = format!("crops.tenant={}", rig.tenant);
    let container_id = format!("crops.container-id={id}");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        id,
        "--label",
        "crops.managed=true",
        "--label",
        &tenant,
        "--label",
        &container_id,
    ];
    for label in extra {
        args.extend(["--label", label]);
    }
    args.extend(["--", support::IMAGE, "sleep", "3600"]);
    support::podman(&args, true);
}

/// Managed containers made without the helper (as before it existed) or
/// with the older pipe-relaying helper (`crops.pty=1`) still get a
/// terminal: a host PTY and `podman exec -it`. One that claims the helper
/// without having it gets Podman's own words in an error, and the agent
/// keeps serving.
#[test]
fn a_container_without_the_helper_gets_a_host_pty_terminal() {
    need_podman();
    smol::block_on(within(180, "the host PTY path", async {
        let rig = Rig::new("term-nohelper");
        let (none, old, broken) = (
            support::unique("nohelper"),
            support::unique("oldhelper"),
            support::unique("nomount"),
        );
        managed_container(&rig, &none, &[]);
        managed_container(&rig, &old, &["crops.pty=1"]);
        managed_container(&rig, &broken, &["crops.pty=2"]);
        let (agent, mut peer) = Agent::start(GRACE).await;

        let data = format!(r#"{{"containerId":"{broken}","cols":80,"rows":24}}"#);
        let Body::Error(err) = peer.request("terminal.open", &data).await else {
            panic!("a container without its helper cannot open a terminal")
        };
        assert_eq!(err.code, protocol::ErrorCode::EngineFailed, "{err:?}");
        assert!(
            err.message.contains("before the terminal was handed over")
                && err.message.contains("crops-pty"),
            "Podman's words about the missing helper: {err:?}"
        );

        for id in [&none, &old] {
            let sid = peer.open(id, 80, 24).await;
            let text = who(&mut peer, sid).await;
            assert!(text.contains("\r\n/dev/pts/"), "{text:?}");
            assert!(!text.contains("crops-pty"), "no helper here: {text:?}");
            peer.type_text(sid, "stty size\r").await;
            peer.wait_output(sid, "\r\n24 80\r\n").await;
            peer.type_text(sid, "exit 3\r").await;
            let exited = peer.exited(sid).await;
            assert_eq!(
                (exited.exit_code, exited.reason.as_str()),
                (Some(3), "exited")
            );
        }
        agent.stop().await;
    }));
}
