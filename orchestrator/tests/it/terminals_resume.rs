//! Terminals that outlive their sockets: a viewer reattaching by offset
//! gets exactly the bytes it missed; an agent reconnecting (or an
//! orchestrator restarting) is answered with `terminal.attach` from the
//! lowest byte still needed, the viewers told offline then online and
//! given nothing twice; sessions the agent no longer lists end; a session
//! nobody watches for the grace period is closed.

use std::time::Duration;

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

#[test]
fn reattaching_with_an_offset_gets_exactly_the_missed_bytes() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-reattach").await;
        let mut a = fx.open(31).await;
        fx.agent.output(31, 0, b"abcdef").await;
        assert_eq!(a.expect_output(0, 6).await, b"abcdef");
        a.ack(6).await;
        assert_eq!(fx.agent.expect_frame(3).await, (31, 6, Vec::new()));
        // The browser closes its tab; output goes on, acked as it arrives.
        a.close().await;
        fx.agent.output(31, 6, b"ghij").await;
        assert_eq!(fx.agent.expect_frame(3).await, (31, 10, Vec::new()));
        // It comes back from the byte after the last it had.
        let (mut b, first) = fx.attach(31, 6).await;
        assert_eq!(
            first,
            json!({"type":"session","sessionId":31,"offset":6,"end":10})
        );
        assert_eq!(b.expect_output(6, 4).await, b"ghij");
        fx.agent.output(31, 10, b"k").await;
        assert_eq!(b.expect_output(10, 1).await, b"k");
        // A reload asks from 0 and gets the whole scrollback.
        let (mut c, first) = fx.attach(31, 0).await;
        assert_eq!(
            (first["offset"].as_u64(), first["end"].as_u64()),
            (Some(0), Some(11))
        );
        assert_eq!(c.expect_output(0, 11).await, b"abcdefghijk");
        fx.stop().await;
    });
}

#[test]
fn an_agent_reconnecting_is_attached_from_what_the_orchestrator_has() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-reconnect").await;
        let mut a = fx.open(51).await;
        let mut gone = fx.open(52).await;
        fx.agent.output(51, 0, b"12345").await;
        assert_eq!(a.expect_output(0, 5).await, b"12345");
        a.ack(5).await;
        assert_eq!(fx.agent.next_frame(3).await, (51, 5, Vec::new()));
        a.input(b"ab").await;
        assert_eq!(fx.agent.next_frame(2).await, (51, 0, b"ab".to_vec()));
        // The link drops: the viewers stay, told the worker is offline.
        fx.agent.hang_up().await;
        for viewer in [&mut a, &mut gone] {
            assert_eq!(viewer.expect_json("status").await["worker"], "offline");
        }
        // Typed meanwhile: held for the worker's return.
        a.input(b"cd").await;
        // Back, listing 51 (not 52): 51 is attached from byte 5.
        let (addr, credential) = (fx.server.addr, fx.credential.clone());
        fx.agent.reconnect(addr, &credential).await;
        let running = info(CONTAINER, &fx.tenant_id, CONTAINER, "running");
        fx.agent
            .inventory(vec![running], vec![listed(51, 9, 2)])
            .await;
        let exited = gone.expect_json("exited").await;
        assert_eq!(
            exited,
            json!({"type":"exited","exitCode":null,"reason":"lost: agent restarted"})
        );
        assert_eq!(gone.expect_close().await.0, 1000);
        let cmd = fx.agent.expect_cmd("terminal.attach", false).await;
        assert_eq!(cmd.data, json!({"sessionId":51,"offset":5}));
        fx.agent
            .answer(&cmd, json!({"sessionId":51,"offset":5,"end":9}))
            .await;
        assert_eq!(a.expect_json("status").await["worker"], "online");
        // The ack is given again on the new link.
        assert_eq!(fx.agent.next_frame(3).await, (51, 5, Vec::new()));
        // The replay, then an overlapping one: each byte once.
        fx.agent.output(51, 5, b"6789").await;
        fx.agent.output(51, 3, b"456789").await;
        fx.agent.output(51, 9, b"!").await;
        assert_eq!(a.expect_output(5, 5).await, b"6789!");
        // Input goes on from what the agent had received: what was typed
        // while it was away first.
        a.input(b"z").await;
        let (_, offset, mut typed) = fx.agent.next_frame(2).await;
        assert_eq!(offset, 2);
        if typed == b"cd" {
            typed.extend(fx.agent.next_frame(2).await.2);
        }
        assert_eq!(typed, b"cdz");
        let audit = fx.wait_audit("terminal.end").await;
        let end = audit
            .iter()
            .find(|e| e["action"] == "terminal.end")
            .unwrap();
        assert!(
            end["target"].as_str().unwrap().ends_with("session:52"),
            "{end}"
        );
        let outcome = end["outcome"].as_str().unwrap();
        assert!(outcome.starts_with("lost: agent restarted"), "{outcome}");
        fx.stop().await;
    });
}

#[test]
fn after_a_restart_sessions_come_back_and_viewers_resume_where_they_were() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-restart").await;
        let mut a = fx.open(61).await;
        fx.agent.output(61, 0, b"before").await;
        assert_eq!(a.expect_output(0, 6).await, b"before");
        drop(a);
        let (credential, tenant_id) = (fx.credential.clone(), fx.tenant_id.clone());
        let data = fx.stop().await;
        let server = Server::start_in(data, Options::default()).await;
        // The browser is back first: from its offset, offline for now.
        let path = TermFixture::path(CONTAINER, "session=61&offset=3");
        let mut b = Browser::admin(server.addr, &path).await;
        let first = b.expect_json("session").await;
        assert_eq!(
            first,
            json!({"type":"session","sessionId":61,"offset":3,"end":0})
        );
        assert_eq!(b.expect_json("status").await["worker"], "offline");
        // The agent is back: with nothing mirrored, it attaches from 0.
        let mut agent = TermAgent::connect(server.addr, &credential).await;
        let running = info(CONTAINER, &tenant_id, CONTAINER, "running");
        agent
            .inventory(vec![running], vec![listed(61, 10, 4)])
            .await;
        let cmd = agent.expect_cmd("terminal.attach", false).await;
        assert_eq!(cmd.data, json!({"sessionId":61,"offset":0}));
        agent
            .answer(&cmd, json!({"sessionId":61,"offset":0,"end":10}))
            .await;
        assert_eq!(b.expect_json("status").await["worker"], "online");
        agent.output(61, 0, b"before now").await;
        assert_eq!(b.expect_output(3, 7).await, b"ore now");
        b.input(b"q").await;
        assert_eq!(agent.next_frame(2).await, (61, 4, b"q".to_vec()));
        agent.hang_up().await;
        server.stop().await;
    });
}

#[test]
fn a_session_nobody_watches_for_the_grace_period_is_closed() {
    smol::block_on(async {
        let opts = Options {
            terminal_grace: Duration::from_millis(300),
            ..Options::default()
        };
        let mut fx = TermFixture::start_with("term-grace", opts).await;
        let watched = fx.open(72).await;
        let unwatched = fx.open(71).await;
        drop(unwatched);
        let cmd = fx.agent.expect_cmd("terminal.close", true).await;
        assert_eq!(cmd.data, json!({"sessionId":71}));
        fx.agent.answer(&cmd, json!({})).await;
        fx.agent.exited(71, None, "closed").await;
        let audit = fx.wait_audit("terminal.end").await;
        let end = audit
            .iter()
            .find(|e| e["action"] == "terminal.end")
            .unwrap();
        assert!(
            end["target"].as_str().unwrap().ends_with("session:71"),
            "{end}"
        );
        // The watched one was left alone: the next command is a probe's.
        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let probe = crate::fake::spawn_admin(fx.server.addr, "GET", path, None);
        let cmd = fx.agent.expect_cmd("images.list", true).await;
        fx.agent.answer(&cmd, json!({ "images": [] })).await;
        assert_eq!(probe.await.0, 200);
        // With the worker away, nobody can tell the agent: the session
        // ends here, and is closed as unknown once the agent is back.
        fx.agent.hang_up().await;
        drop(watched);
        let audit = fx.wait_audit_count("terminal.end", 2).await;
        let end = audit
            .iter()
            .rfind(|e| e["action"] == "terminal.end")
            .unwrap();
        assert!(
            end["target"].as_str().unwrap().ends_with("session:72"),
            "{end}"
        );
        let outcome = end["outcome"].as_str().unwrap();
        assert!(
            outcome.starts_with("closed: no viewer while the worker was offline"),
            "{outcome}"
        );
        let (addr, credential) = (fx.server.addr, fx.credential.clone());
        fx.agent.reconnect(addr, &credential).await;
        let running = info(CONTAINER, &fx.tenant_id, CONTAINER, "running");
        fx.agent
            .inventory(vec![running], vec![listed(72, 0, 0)])
            .await;
        let cmd = fx.agent.expect_cmd("terminal.close", true).await;
        assert_eq!(cmd.data, json!({"sessionId":72}));
        fx.agent.answer(&cmd, json!({})).await;
        fx.stop().await;
    });
}
