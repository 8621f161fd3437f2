//! Live terminals over the agent's socket, against the real Podman: an
//! interactive busybox shell (typing, resizing, exit codes), twenty sessions
//! at once, and hanging one up.

use std::time::Duration;

use protocol::container::Profile;
use protocol::{Body, ErrorCode};

use crate::support::{self, Rig};
use crate::term_peer::{echo_split, need_podman, Agent};
use crate::within;

const GRACE: Duration = Duration::from_secs(60);

/// Type into `/bin/sh`, see it answer; `stty size` follows a resize; an
/// explicit command's output all arrives before its `terminal.exited`,
/// which carries its exit code; refusals for unknown and stopped containers.
#[test]
fn an_interactive_shell_echoes_follows_resizes_and_reports_exit_codes() {
    need_podman();
    smol::block_on(within(120, "an interactive shell", async {
        let rig = Rig::new("term-sh");
        let id = support::unique("sh");
        rig.running(&id, Profile::Standard).await;
        let (agent, mut peer) = Agent::start(GRACE).await;

        let sid = peer.open(&id, 80, 24).await;
        peer.type_text(sid, "echo hel''lo\r").await;
        peer.wait_output(sid, "hello\r\n").await;
        peer.type_text(sid, "stty size\r").await;
        peer.wait_output(sid, "24 80\r\n").await;

        let resize = format!(r#"{{"sessionId":{sid},"cols":132,"rows":43}}"#);
        let reply = peer.request("terminal.resize", &resize).await;
        assert!(matches!(reply, Body::TerminalResized(_)), "{reply:?}");
        // The PTY has the size now; podman passes it into the container on
        // the SIGWINCH, a moment later: ask until the shell sees it.
        loop {
            let old = peer.text(sid).matches("\r\n24 80\r\n").count();
            peer.type_text(sid, "stty size\r").await;
            while !peer.text(sid).contains("\r\n43 132\r\n")
                && peer.text(sid).matches("\r\n24 80\r\n").count() == old
            {
                peer.pump().await;
            }
            if peer.text(sid).contains("\r\n43 132\r\n") {
                break;
            }
        }

        peer.type_text(sid, "exit 7\r").await;
        let exited = peer.exited(sid).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (Some(7), "exited")
        );

        // A command of our own: all of its output comes before its end.
        let data = format!(
            r#"{{"containerId":"{id}","cols":80,"rows":24,"command":["sh","-c","seq 1 20000; echo done-$((6*7)); exit 3"]}}"#
        );
        let Body::TerminalOpened(o) = peer.request("terminal.open", &data).await else {
            panic!("open with a command")
        };
        let exited = peer.exited(o.session_id).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (Some(3), "exited")
        );
        let text = peer.text(o.session_id);
        assert!(
            text.starts_with("1\r\n2\r\n"),
            "{:?}",
            &text[..20.min(text.len())]
        );
        assert!(
            text.ends_with("20000\r\ndone-42\r\n"),
            "all output first: {:?}",
            &text[text.len().saturating_sub(40)..]
        );

        // Refusals: no such container, a stopped one, a bad size.
        let missing = r#"{"containerId":"no-such-container","cols":80,"rows":24}"#;
        let reply = peer.request("terminal.open", missing).await;
        assert_eq!(support::error_of(&reply).0, ErrorCode::NotFound);
        support::podman(
            &["stop", "-t", "0", &support::engine_ids_labelled(&id)[0]],
            true,
        );
        let data = format!(r#"{{"containerId":"{id}","cols":80,"rows":24}}"#);
        let reply = peer.request("terminal.open", &data).await;
        let (code, message) = support::error_of(&reply);
        assert_eq!(code, ErrorCode::Conflict, "{message}");
        let data = format!(r#"{{"containerId":"{id}","cols":0,"rows":24}}"#);
        let reply = peer.request("terminal.open", &data).await;
        assert_eq!(support::error_of(&reply).0, ErrorCode::InvalidArgument);
        agent.stop().await;
    }));
}

/// Twenty shells at once in one container: each sees only its own marker,
/// and each ends with its own exit code.
#[test]
fn twenty_sessions_at_once_each_see_only_their_own_output() {
    need_podman();
    smol::block_on(within(180, "twenty sessions", async {
        let rig = Rig::new("term-20");
        let id = support::unique("twenty");
        rig.running(&id, Profile::Open).await;
        let (agent, mut peer) = Agent::start(GRACE).await;

        let data = format!(r#"{{"containerId":"{id}","cols":80,"rows":24}}"#);
        let mut requests = Vec::new();
        for _ in 0..20 {
            requests.push(peer.send_command("terminal.open", &data).await);
        }
        let mut sessions = Vec::new();
        for rid in &requests {
            match peer.reply(rid).await {
                Body::TerminalOpened(o) => sessions.push(o.session_id),
                other => panic!("open {rid}: {other:?}"),
            }
        }
        let mut unique = sessions.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 20, "distinct session ids");

        for (i, sid) in sessions.iter().enumerate() {
            peer.type_text(*sid, &echo_split(&format!("marker-{i}-end")))
                .await;
        }
        for (i, sid) in sessions.iter().enumerate() {
            peer.wait_output(*sid, &format!("marker-{i}-end\r\n")).await;
        }
        for (i, sid) in sessions.iter().enumerate() {
            peer.type_text(*sid, &format!("exit {i}\r")).await;
        }
        for (i, sid) in sessions.iter().enumerate() {
            let exited = peer.exited(*sid).await;
            assert_eq!(exited.exit_code, Some(i as i32), "session {i}");
            let text = peer.text(*sid);
            for j in (0..20).filter(|j| *j != i) {
                assert!(
                    !text.contains(&format!("marker-{j}-end")),
                    "session {i} saw session {j}'s output"
                );
            }
        }
        agent.stop().await;
    }));
}

/// `terminal.close` hangs the session up: `terminal.exited` says `closed`,
/// and the shell and what it ran are gone from the container too.
#[test]
fn close_hangs_up_the_shell_and_what_it_runs() {
    need_podman();
    smol::block_on(within(120, "terminal.close", async {
        let rig = Rig::new("term-close");
        let id = support::unique("close");
        rig.running(&id, Profile::Open).await;
        let (agent, mut peer) = Agent::start(GRACE).await;

        let sid = peer.open(&id, 80, 24).await;
        peer.type_text(sid, "sleep 4321\r").await;
        wait_ps(&rig, &id, |ps| ps.contains("sleep 4321")).await;

        let reply = peer
            .request("terminal.close", &format!(r#"{{"sessionId":{sid}}}"#))
            .await;
        assert!(matches!(reply, Body::TerminalClosed(_)), "{reply:?}");
        let exited = peer.exited(sid).await;
        assert_eq!(exited.reason, "closed");
        wait_ps(&rig, &id, |ps| {
            !ps.contains("sleep 4321") && !ps.contains("/bin/sh")
        })
        .await;

        let again = peer
            .request("terminal.close", &format!(r#"{{"sessionId":{sid}}}"#))
            .await;
        assert_eq!(support::error_of(&again).0, ErrorCode::NotFound);
        agent.stop().await;
    }));
}

/// Poll `ps` in the container until `want` holds for its output.
pub async fn wait_ps(rig: &Rig, id: &str, want: impl Fn(&str) -> bool) {
    loop {
        let ps = rig.exec(id, &["ps"]).await.stdout;
        if want(&ps) {
            return;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}
