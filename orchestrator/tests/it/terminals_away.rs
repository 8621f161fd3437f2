//! Terminals while their worker or their viewers are away: nothing lost
//! without a sign. Keys typed while the worker is away reach the shell once
//! it is back, once each (what a dropped link lost in flight is sent again
//! from the agent's `inputEnd`), or the viewers are told, quoting them, what
//! was not delivered. Output is not acknowledged past what a viewer expected
//! back had consumed (one whose socket dropped; after a restart, all of
//! them), so a page reconnecting a few seconds later misses nothing. The
//! viewers are told how many they are.

use serde_json::{json, Value};

use crate::fake::info;
use crate::fake_terminal::*;
use crate::harness::*;

fn listed(session_id: u64, output_end: u64, input_end: u64) -> Value {
    json!({
        "sessionId": session_id,
        "containerId": CONTAINER,
        "outputEnd": output_end,
        "inputEnd": input_end
    })
}

/// Every ack the orchestrator sends the agent until it has read all the
/// agent sent before: an agent-to-orchestrator ack frame (not one an agent
/// sends) is answered with an error after everything before it.
async fn acks_so_far(agent: &mut TermAgent, session_id: u64) -> Vec<u64> {
    agent.send_binary(frame(3, session_id, 0, &[])).await;
    let mut acks = Vec::new();
    loop {
        match agent.recv().await {
            ToAgent::Frame {
                kind: 3, offset, ..
            } => acks.push(offset),
            ToAgent::Text(v) if v["type"] == "error" => return acks,
            other => panic!("expected acks then an error, got {other:?}"),
        }
    }
}

/// Reconnect the agent listing `listed`, answer the attach of `session_id`
/// (which must ask for `offset`) with the agent's `input_end`.
async fn come_back(fx: &mut TermFixture, listed: Value, offset: u64, input_end: u64) {
    let (addr, credential) = (fx.server.addr, fx.credential.clone());
    fx.agent.reconnect(addr, &credential).await;
    let running = info(CONTAINER, &fx.tenant_id, CONTAINER, "running");
    let session_id = listed["sessionId"].as_u64().unwrap();
    let end = listed["outputEnd"].clone();
    fx.agent.inventory(vec![running], vec![listed]).await;
    let cmd = fx.agent.expect_cmd("terminal.attach", true).await;
    assert_eq!(cmd.data, json!({"sessionId":session_id,"offset":offset}));
    let reply = json!({"sessionId":session_id,"offset":offset,"end":end,"inputEnd":input_end});
    fx.agent.answer(&cmd, reply).await;
}

#[test]
fn keys_typed_while_the_worker_is_away_reach_the_shell_once_it_is_back() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-away-keys").await;
        let mut a = fx.open(81).await;
        a.input(b"ab").await;
        assert_eq!(fx.agent.next_frame(2).await, (81, 0, b"ab".to_vec()));
        fx.agent.hang_up().await;
        assert_eq!(a.expect_json("status").await["worker"], "offline");
        // Typed while the worker is away: no refusal, held.
        a.input(b"echo hi\r").await;
        // The agent had written only "a": "b" was lost in flight with the
        // link, and goes again before what was typed meanwhile.
        come_back(&mut fx, listed(81, 0, 1), 0, 1).await;
        assert_eq!(a.expect_json("status").await["worker"], "online");
        let (_, offset, mut typed) = fx.agent.next_frame(2).await;
        assert_eq!(offset, 1);
        while typed.len() < b"becho hi\r".len() {
            let (_, at, more) = fx.agent.next_frame(2).await;
            assert_eq!(at, 1 + typed.len() as u64, "input in order");
            typed.extend(more);
        }
        assert_eq!(typed, b"becho hi\r", "each byte once, in order");
        a.input(b"!").await;
        assert_eq!(fx.agent.next_frame(2).await, (81, 10, b"!".to_vec()));
        fx.stop().await;
    });
}

#[test]
fn typing_beyond_what_waits_for_the_worker_is_reported_quoted() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-away-full").await;
        let mut a = fx.open(82).await;
        fx.agent.hang_up().await;
        assert_eq!(a.expect_json("status").await["worker"], "offline");
        a.input(&vec![b'y'; 64 * 1024]).await;
        a.input(b"rm -rf build\r").await;
        let error = a.expect_json("error").await;
        let text = error["message"].as_str().unwrap();
        assert!(text.contains("not delivered"), "{text}");
        assert!(text.contains("\"rm -rf build\\r\""), "which keys: {text}");
        // The agent is back without the session: what was held is reported.
        let (addr, credential) = (fx.server.addr, fx.credential.clone());
        fx.agent.reconnect(addr, &credential).await;
        let running = info(CONTAINER, &fx.tenant_id, CONTAINER, "running");
        fx.agent.inventory(vec![running], vec![]).await;
        let error = a.expect_json("error").await;
        let text = error["message"].as_str().unwrap();
        assert!(text.contains("session ended"), "{text}");
        assert!(text.contains("65536 bytes dropped"), "{text}");
        assert_eq!(
            a.expect_json("exited").await["reason"],
            "lost: agent restarted"
        );
        fx.stop().await;
    });
}

#[test]
fn after_a_restart_output_waits_for_the_viewers_coming_back() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-away-restart").await;
        let mut a = fx.open(91).await;
        fx.agent.output(91, 0, b"0123456789").await;
        assert_eq!(a.expect_output(0, 10).await, b"0123456789");
        a.ack(10).await;
        assert_eq!(fx.agent.next_frame(3).await, (91, 10, Vec::new()));
        let (credential, tenant_id) = (fx.credential.clone(), fx.tenant_id.clone());
        let data = fx.stop().await;
        let server = Server::start_in(data, Options::default()).await;
        // The agent is back before any page: nothing is mirrored, so it
        // replays from 0, and a fast program prints on.
        let mut agent = TermAgent::connect(server.addr, &credential).await;
        let running = info(CONTAINER, &tenant_id, CONTAINER, "running");
        agent
            .inventory(vec![running], vec![listed(91, 10, 0)])
            .await;
        let cmd = agent.expect_cmd("terminal.attach", false).await;
        assert_eq!(cmd.data, json!({"sessionId":91,"offset":0}));
        let reply = json!({"sessionId":91,"offset":0,"end":10,"inputEnd":0});
        agent.answer(&cmd, reply).await;
        agent.output(91, 0, b"0123456789").await;
        agent.output(91, 10, b"abcdef").await;
        let acks = acks_so_far(&mut agent, 91).await;
        assert!(
            acks.iter().all(|&ack| ack <= 10),
            "with no viewer back yet, nothing past what the viewers had is acked: {acks:?}"
        );
        // The page comes back from where it was: nothing skipped.
        let path = TermFixture::path(CONTAINER, "session=91&offset=10");
        let mut b = Browser::admin(server.addr, &path).await;
        let first = b.expect_json("session").await;
        assert_eq!(first["offset"], 10, "{first}");
        assert_eq!(b.expect_output(10, 6).await, b"abcdef");
        // Others may be on their way (nothing says how many there were):
        // the ack still waits for the rejoin grace.
        b.ack(16).await;
        let acks = acks_so_far(&mut agent, 91).await;
        assert!(acks.iter().all(|&ack| ack <= 10), "{acks:?}");
        agent.hang_up().await;
        server.stop().await;
    });
}

#[test]
fn a_viewer_whose_socket_dropped_is_waited_for_and_is_the_floor_again_once_back() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-away-viewer").await;
        let mut a = fx.open(95).await;
        let (mut b, _) = fx.attach(95, 0).await;
        fx.agent.output(95, 0, b"abcdefgh").await;
        assert_eq!(a.expect_output(0, 8).await, b"abcdefgh");
        assert_eq!(b.expect_output(0, 8).await, b"abcdefgh");
        a.ack(8).await;
        b.ack(2).await;
        assert_eq!(fx.agent.next_frame(3).await, (95, 2, Vec::new()));
        // b's network drops (no close frame): it is expected back, so the
        // agent is not told more than b had, however far a reads.
        drop(b);
        a.expect_viewers(1).await;
        fx.agent.output(95, 8, b"ijkl").await;
        assert_eq!(a.expect_output(8, 4).await, b"ijkl");
        a.ack(12).await;
        let acks = acks_so_far(&mut fx.agent, 95).await;
        assert!(acks.iter().all(|&ack| ack <= 2), "{acks:?}");
        // b is back from the byte after its last: it is the floor again.
        let (mut b, first) = fx.attach(95, 8).await;
        assert_eq!(first["offset"], 8, "{first}");
        assert_eq!(b.expect_output(8, 4).await, b"ijkl");
        b.ack(12).await;
        assert_eq!(fx.agent.next_frame(3).await, (95, 12, Vec::new()));
        fx.stop().await;
    });
}

#[test]
fn the_viewers_of_a_session_are_told_how_many_they_are() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-away-count").await;
        let mut a = fx.open(97).await;
        a.expect_viewers(1).await;
        let (mut b, _) = fx.attach(97, 0).await;
        b.expect_viewers(2).await;
        a.expect_viewers(2).await;
        b.close().await;
        a.expect_viewers(1).await;
        fx.stop().await;
    });
}
