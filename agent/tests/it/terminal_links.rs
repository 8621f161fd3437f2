//! Terminals and the link to the orchestrator, against the real Podman: a
//! session survives the link dropping and replays exactly what was missed;
//! one left without a link is hung up after the grace period; one whose
//! container stops ends with that reason; a flood stops at the window and
//! never starves heartbeats, commands or other sessions.

use std::time::{Duration, Instant};

use protocol::container::Profile;
use protocol::frame::OUTPUT_WINDOW;
use protocol::terminal::TerminalInfo;
use protocol::Body;

use crate::support::{self, Rig};
use crate::term_peer::{echo_split, need_podman, Agent, Peer};
use crate::terminals::wait_ps;
use crate::within;

const GRACE: Duration = Duration::from_secs(60);

/// The shell's `$$` as printed by `echo PID=$$` (not the typed echo).
fn pids(text: &str) -> Vec<String> {
    text.split("PID=")
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

async fn wait_pids(peer: &mut Peer, sid: u64, n: usize) -> Vec<String> {
    while pids(&peer.text(sid)).len() < n {
        peer.pump().await;
    }
    pids(&peer.text(sid))
}

/// The terminals of the next `worker.inventory`.
async fn inventory(peer: &mut Peer) -> Vec<TerminalInfo> {
    let env = peer
        .wait_for(|e| matches!(e.body, Body::Inventory(_)))
        .await;
    let Body::Inventory(inv) = env.body else {
        unreachable!()
    };
    inv.terminals
}

/// The link drops while the shell is about to print; the agent reconnects
/// and lists the session; attaching from the last byte seen replays what
/// was printed meanwhile, exactly once, from the same shell. Input offsets
/// carry on, and a retried old input frame is dropped.
#[test]
fn a_session_survives_a_reconnect_and_replays_exactly_what_was_missed() {
    need_podman();
    smol::block_on(within(120, "a session across a reconnect", async {
        let rig = Rig::new("term-link");
        let id = support::unique("link");
        rig.running(&id, Profile::Open).await;
        let (agent, mut peer) = Agent::start(GRACE).await;

        let sid = peer.open(&id, 80, 24).await;
        peer.type_text(sid, "echo PID=$$\r").await;
        let first = wait_pids(&mut peer, sid, 1).await;
        peer.type_text(sid, "sleep 1; echo late''-line; touch /tmp/late-done\r")
            .await;
        let seen = peer.out[&sid].clone();
        let typed = peer.input_at.clone();
        drop(peer);
        // The output is produced while no link is up.
        loop {
            let test = rig.exec(&id, &["test", "-e", "/tmp/late-done"]).await;
            if test.exit_code == Some(0) {
                break;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        }

        // Nothing is streamed for the session before the attach's reply
        // (the peer fails on output of a session it has not been told of).
        let mut peer = agent.accept().await;
        let listed = inventory(&mut peer).await;
        let info = listed
            .iter()
            .find(|t| t.session_id == sid)
            .expect("the session is in the inventory");
        assert_eq!(info.container_id, id);
        assert_eq!(info.input_end, typed[&sid], "all input was received");
        assert!(
            info.output_end > seen.end(),
            "output was produced meanwhile"
        );
        peer.out.insert(sid, seen.clone());
        peer.input_at = typed;

        let attach = format!(r#"{{"sessionId":{sid},"offset":{}}}"#, seen.end());
        let Body::TerminalAttached(at) = peer.request("terminal.attach", &attach).await else {
            panic!("attach")
        };
        assert_eq!((at.session_id, at.offset), (sid, seen.end()));
        assert!(at.end >= info.output_end);
        // The pump checks every frame continues the stream: nothing lost or doubled.
        peer.wait_output(sid, "late-line\r\n").await;
        assert_eq!(peer.text(sid).matches("late-line\r\n").count(), 1);

        peer.input_frame(sid, 0, b"echo dup''licate\r").await;
        peer.type_text(sid, "echo PID=$$\r").await;
        let both = wait_pids(&mut peer, sid, 2).await;
        assert_eq!(
            both,
            vec![first[0].clone(), first[0].clone()],
            "the same shell"
        );
        assert!(
            !peer.text(sid).contains("duplicate"),
            "a retried input frame is dropped"
        );
        peer.type_text(sid, "exit\r").await;
        let exited = peer.exited(sid).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (Some(0), "exited")
        );
        agent.stop().await;
    }));
}

/// A session nobody attaches again is hung up once the grace period has
/// passed, processes inside the container included, and is no longer listed.
#[test]
fn a_session_left_without_a_link_past_the_grace_period_is_hung_up() {
    need_podman();
    smol::block_on(within(120, "an orphaned session", async {
        let rig = Rig::new("term-orphan");
        let id = support::unique("orphan");
        rig.running(&id, Profile::Open).await;
        let (agent, mut peer) = Agent::start(Duration::from_secs(2)).await;

        let sid = peer.open(&id, 80, 24).await;
        peer.type_text(sid, "sleep 4322\r").await;
        wait_ps(&rig, &id, |ps| ps.contains("sleep 4322")).await;
        drop(peer);
        // Reconnected, but the orchestrator never attaches.
        let mut peer = agent.accept().await;
        wait_ps(&rig, &id, |ps| {
            !ps.contains("sleep 4322") && !ps.contains("/bin/sh")
        })
        .await;
        loop {
            drop(peer);
            peer = agent.accept().await;
            if !inventory(&mut peer)
                .await
                .iter()
                .any(|t| t.session_id == sid)
            {
                break;
            }
        }
        agent.stop().await;
    }));
}

/// Stopping the container ends its sessions with "container stopped",
/// whether this agent stopped it (container.stop) or someone else did.
#[test]
fn a_session_whose_container_stops_ends_with_container_stopped() {
    need_podman();
    smol::block_on(within(120, "sessions on stopped containers", async {
        let rig = Rig::new("term-stop");
        let (a, b) = (support::unique("stop-a"), support::unique("stop-b"));
        rig.running(&a, Profile::Open).await;
        let engine_b = rig.running(&b, Profile::Open).await;
        let (agent, mut peer) = Agent::start(GRACE).await;
        let sa = peer.open(&a, 80, 24).await;
        let sb = peer.open(&b, 80, 24).await;
        for sid in [sa, sb] {
            peer.type_text(sid, &echo_split("shell-up")).await;
            peer.wait_output(sid, "shell-up\r\n").await;
        }

        let stop = format!(r#"{{"containerId":"{a}","timeoutSecs":0}}"#);
        let reply = peer.request("container.stop", &stop).await;
        assert!(matches!(reply, Body::ContainerStopped(_)), "{reply:?}");
        let exited = peer.exited(sa).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (None, "container stopped")
        );

        support::podman(&["stop", "-t", "0", &engine_b], true);
        let exited = peer.exited(sb).await;
        assert_eq!(
            (exited.exit_code, exited.reason.as_str()),
            (None, "container stopped")
        );
        agent.stop().await;
    }));
}

/// `yes` with no acks: output stops at exactly the window while heartbeats
/// and a command are still answered; an ack lets it go on. Then, flooding
/// with acks, another session and commands still answer promptly.
#[test]
fn a_flood_stops_at_the_window_and_never_starves_control_or_other_sessions() {
    need_podman();
    smol::block_on(within(180, "a flood", async {
        let rig = Rig::new("term-flood");
        let id = support::unique("flood");
        rig.running(&id, Profile::Open).await;
        let (agent, mut peer) = Agent::start(GRACE).await;
        let list = format!(r#"{{"tenantId":"{}"}}"#, rig.tenant);

        let flood = peer.open(&id, 80, 24).await;
        peer.auto_ack = false;
        peer.type_text(flood, "yes\r").await;
        while peer.received(flood) < OUTPUT_WINDOW {
            peer.pump().await;
        }
        assert_eq!(
            peer.received(flood),
            OUTPUT_WINDOW,
            "not a byte past the window"
        );

        let asked = Instant::now();
        let reply = peer.request("container.list", &list).await;
        assert!(matches!(reply, Body::ContainerListed(_)), "{reply:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        peer.inbox.clear();
        for _ in 0..2 {
            peer.wait_for(|e| matches!(e.body, Body::Heartbeat(_)))
                .await;
        }
        assert_eq!(peer.received(flood), OUTPUT_WINDOW, "stalled without acks");

        peer.ack(flood, OUTPUT_WINDOW).await;
        while peer.received(flood) <= OUTPUT_WINDOW {
            peer.pump().await;
        }

        // Now a real flood: every frame acked as it arrives.
        peer.auto_ack = true;
        let received = peer.received(flood);
        peer.ack(flood, received).await;
        let other = peer.open(&id, 80, 24).await;
        let asked = Instant::now();
        peer.type_text(other, &echo_split("second-session")).await;
        peer.wait_output(other, "second-session\r\n").await;
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{:?}",
            asked.elapsed()
        );
        let asked = Instant::now();
        let reply = peer.request("container.list", &list).await;
        assert!(matches!(reply, Body::ContainerListed(_)), "{reply:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
        peer.inbox.retain(|e| !matches!(e.body, Body::Heartbeat(_)));
        peer.wait_for(|e| matches!(e.body, Body::Heartbeat(_)))
            .await;
        // And the flood really flows, window after window, on its acks.
        while peer.received(flood) < received + 2 * OUTPUT_WINDOW {
            peer.pump().await;
        }

        for sid in [flood, other] {
            let close = format!(r#"{{"sessionId":{sid}}}"#);
            let reply = peer.request("terminal.close", &close).await;
            assert!(matches!(reply, Body::TerminalClosed(_)), "{reply:?}");
            assert_eq!(peer.exited(sid).await.reason, "closed");
        }
        agent.stop().await;
    }));
}
