//! Live terminals through the orchestrator: the browser's socket is
//! authorised like the API, relays output and input between browsers and
//! the (fake) agent's session, fans output out to every viewer, acks the
//! agent as its slowest viewer, relays resizes and closes, survives
//! malformed messages, and ends every viewer and the record on `exited`.

use async_tungstenite::tungstenite::Message;
use serde_json::json;

use crate::fake::assert_error;
use crate::fake_terminal::*;
use crate::people::*;

#[test]
fn the_terminal_socket_is_authorised_like_the_api() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-auth").await;
        let addr = fx.server.addr;
        let path = TermFixture::path(CONTAINER, "");
        let proto = |token: &str| format!("crops.terminal.v1, bearer.{token}");
        // No token, or a bad one: 401 with a reason, before any upgrade.
        let (status, body) = Browser::connect(addr, &path, &[]).await.err().unwrap();
        assert_error(status, &body, 401, "unauthorized");
        let bad = proto("crops_tok_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let headers = [("Sec-WebSocket-Protocol", bad.as_str())];
        let (status, body) = Browser::connect(addr, &path, &headers).await.err().unwrap();
        assert_error(status, &body, 401, "unauthorized");
        // Members of another organisation, or of another tenant: 404, as
        // if the container did not exist.
        let own_org = default_org(&fx.server).await;
        let acme = org(&fx.server, "acme").await;
        let tenant_a = tenant_in(&fx.server, "tenant-a", &acme).await;
        let other = tenant_in(&fx.server, "tenant-b2", &own_org).await;
        let ana = person(&fx.server, &acme, "ana", "member", &[&tenant_a]).await;
        let bob = person(&fx.server, &own_org, "bob", "member", &[&other]).await;
        for who in [&ana, &bob] {
            let offer = proto(&who.token);
            let headers = [("Sec-WebSocket-Protocol", offer.as_str())];
            let (status, body) = Browser::connect(addr, &path, &headers).await.err().unwrap();
            assert_error(status, &body, 404, "not_found");
            assert!(!body.to_string().contains(&fx.tenant_id), "{body}");
        }
        // A member of the tenant: a stopped container is 409, an offer
        // without our subprotocol 400, a session of nothing 404.
        let mo = person(&fx.server, &own_org, "mo", "member", &[&fx.tenant_id]).await;
        let offer = proto(&mo.token);
        let headers = [("Sec-WebSocket-Protocol", offer.as_str())];
        fx.create("c-stopped", "exited").await;
        let stopped = TermFixture::path("c-stopped", "");
        let (status, body) = Browser::connect(addr, &stopped, &headers)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 409, "conflict");
        let bearer = format!("Bearer {}", mo.token);
        let only_other = [
            ("Authorization", bearer.as_str()),
            ("Sec-WebSocket-Protocol", "chat"),
        ];
        let (status, body) = Browser::connect(addr, &path, &only_other)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 400, "bad_request");
        let nothing = TermFixture::path(CONTAINER, "session=12345");
        let (status, body) = Browser::connect(addr, &nothing, &headers)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 404, "not_found");
        let (status, body) =
            Browser::connect(addr, &TermFixture::path(CONTAINER, "cols=0"), &headers)
                .await
                .err()
                .unwrap();
        assert_error(status, &body, 400, "bad_request");
        // Let in by the subprotocol token, which the server answers with ours.
        let open = {
            let path = path.clone();
            let offer = offer.clone();
            smol::spawn(async move {
                Browser::connect(addr, &path, &[("Sec-WebSocket-Protocol", &offer)]).await
            })
        };
        let cmd = fx.agent.expect_cmd("terminal.open", false).await;
        assert_eq!(
            (cmd.data["cols"].as_u64(), cmd.data["rows"].as_u64()),
            (Some(80), Some(24))
        );
        fx.agent.answer(&cmd, json!({ "sessionId": 5 })).await;
        let mut browser = open.await.unwrap_or_else(|e| panic!("refused: {e:?}"));
        assert_eq!(browser.protocol.as_deref(), Some("crops.terminal.v1"));
        browser.expect_json("session").await;
        let audit = fx.wait_audit("terminal.open").await;
        let opened = audit
            .iter()
            .find(|e| e["action"] == "terminal.open")
            .unwrap();
        assert_eq!(opened["principal"], format!("member:{}", mo.id), "{opened}");
        assert_eq!(opened["outcome"], "ok", "{opened}");
        let target = opened["target"].as_str().unwrap();
        assert!(
            target.contains(&format!("container:{CONTAINER}/session:5")),
            "{target}"
        );
        // The worker offline: a new session is 503, with its reason.
        fx.agent.hang_up().await;
        let (status, body) = Browser::connect(addr, &path, &headers).await.err().unwrap();
        assert_error(status, &body, 503, "worker_offline");
        fx.server.stop().await;
    });
}

#[test]
fn output_and_input_flow_between_browser_and_agent() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-relay").await;
        let mut b = fx.open(41).await;
        fx.agent.output(41, 0, b"$ ").await;
        assert_eq!(b.expect_output(0, 2).await, b"$ ");
        b.input(b"echo hi\r").await;
        assert_eq!(
            fx.agent.expect_frame(2).await,
            (41, 0, b"echo hi\r".to_vec())
        );
        fx.agent.output(41, 2, b"echo hi\r\nhi\r\n$ ").await;
        assert_eq!(b.expect_output(2, 15).await, b"echo hi\r\nhi\r\n$ ");
        b.input(b"\x03").await;
        assert_eq!(fx.agent.expect_frame(2).await, (41, 8, b"\x03".to_vec()));
        // What the browser consumed is what the agent is acked.
        b.ack(17).await;
        assert_eq!(fx.agent.expect_frame(3).await, (41, 17, Vec::new()));
        // Frames an agent must not send are refused; the link stays.
        fx.agent.send_binary(frame(2, 41, 0, b"x")).await;
        match fx.agent.recv().await {
            ToAgent::Text(v) => assert_eq!(v["data"]["code"], "malformed_message", "{v}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // Output for a session nobody has is dropped without harm.
        fx.agent.output(999, 0, b"stray").await;
        fx.agent.output(41, 17, b"ok").await;
        assert_eq!(b.expect_output(17, 2).await, b"ok");
        fx.stop().await;
    });
}

#[test]
fn every_viewer_gets_every_byte_and_the_agent_is_acked_as_the_slowest() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-viewers").await;
        let mut a = fx.open(7).await;
        let (mut b, first) = fx.attach(7, 0).await;
        assert_eq!(
            first,
            json!({"type":"session","sessionId":7,"offset":0,"end":0})
        );
        for (offset, chunk) in [(0, &b"one "[..]), (4, b"two "), (8, b"three")] {
            fx.agent.output(7, offset, chunk).await;
        }
        assert_eq!(a.expect_output(0, 13).await, b"one two three");
        assert_eq!(b.expect_output(0, 13).await, b"one two three");
        // a has read everything, b only 5 bytes: the agent hears 5.
        a.ack(13).await;
        b.ack(5).await;
        assert_eq!(fx.agent.expect_frame(3).await, (7, 5, Vec::new()));
        b.ack(13).await;
        assert_eq!(fx.agent.expect_frame(3).await, (7, 13, Vec::new()));
        // Input from either viewer continues one input stream.
        a.input(b"x").await;
        assert_eq!(fx.agent.expect_frame(2).await, (7, 0, b"x".to_vec()));
        b.input(b"yz").await;
        assert_eq!(fx.agent.expect_frame(2).await, (7, 1, b"yz".to_vec()));
        // Without b (its tab closed), a alone is the floor.
        b.close().await;
        fx.agent.output(7, 13, b" four").await;
        assert_eq!(a.expect_output(13, 5).await, b" four");
        a.ack(18).await;
        assert_eq!(fx.agent.expect_frame(3).await, (7, 18, Vec::new()));
        let audit = fx.wait_audit("terminal.attach").await;
        let actions: Vec<_> = audit
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["terminal.open", "terminal.attach"], "{audit:?}");
        fx.stop().await;
    });
}

#[test]
fn resize_and_close_reach_the_agent_and_bad_messages_get_reasons() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-control").await;
        let mut a = fx.open(9).await;
        a.send_json(json!({"type":"resize","cols":120,"rows":40}))
            .await;
        let cmd = fx.agent.expect_cmd("terminal.resize", false).await;
        assert_eq!(cmd.data, json!({"sessionId":9,"cols":120,"rows":40}));
        fx.agent.answer(&cmd, json!({})).await;
        // An agent's refusal is reported; the socket stays.
        a.send_json(json!({"type":"resize","cols":2,"rows":2}))
            .await;
        let cmd = fx.agent.expect_cmd("terminal.resize", false).await;
        fx.agent
            .answer_error(&cmd, "invalid_argument", "too small")
            .await;
        let error = a.expect_json("error").await;
        assert!(
            error["message"].as_str().unwrap().contains("too small"),
            "{error}"
        );
        for (text, word) in [
            ("not json", "JSON"),
            (r#"{"type":"resize","cols":0,"rows":5}"#, "cols"),
            (r#"{"type":"warp"}"#, "unknown message type"),
            (r#"{"type":"ack","offset":"x"}"#, "offset"),
        ] {
            a.send_text(text).await;
            let error = a.expect_json("error").await;
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(word), "{text}: {message}");
        }
        a.input(b"still here").await;
        assert_eq!(
            fx.agent.expect_frame(2).await,
            (9, 0, b"still here".to_vec())
        );
        // Close hangs the session up for everyone.
        let (mut b, _) = fx.attach(9, 0).await;
        a.send_json(json!({"type":"close"})).await;
        let cmd = fx.agent.expect_cmd("terminal.close", false).await;
        assert_eq!(cmd.data, json!({"sessionId":9}));
        fx.agent.answer(&cmd, json!({})).await;
        fx.agent.exited(9, None, "closed").await;
        for viewer in [&mut a, &mut b] {
            let exited = viewer.expect_json("exited").await;
            assert_eq!(
                exited,
                json!({"type":"exited","exitCode":null,"reason":"closed"})
            );
            assert_eq!(viewer.expect_close().await.0, 1000);
        }
        fx.stop().await;
    });
}

#[test]
fn hostile_messages_close_only_their_own_socket_with_a_reason() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-hostile").await;
        let mut a = fx.open(11).await;
        let _ = a.try_send(Message::binary(vec![0u8; 64 * 1024 + 1])).await;
        let (code, reason) = a.expect_close().await;
        assert_eq!(code, 1009, "{reason}");
        assert!(reason.contains("65536"), "{reason}");
        let (mut b, _) = fx.attach(11, 0).await;
        for _ in 0..20 {
            if b.try_send(Message::text("{")).await.is_err() {
                break;
            }
        }
        let (code, reason) = b.expect_close().await;
        assert_eq!(code, 4000, "{reason}");
        // The session is untouched: another viewer works.
        let (mut c, _) = fx.attach(11, 0).await;
        fx.agent.output(11, 0, b"fine").await;
        assert_eq!(c.expect_output(0, 4).await, b"fine");
        c.input(b"y").await;
        assert_eq!(fx.agent.next_frame(2).await, (11, 0, b"y".to_vec()));
        fx.stop().await;
    });
}

#[test]
fn exited_reaches_every_viewer_the_record_and_the_audit() {
    smol::block_on(async {
        let mut fx = TermFixture::start("term-exited").await;
        let mut a = fx.open(21).await;
        let (mut b, _) = fx.attach(21, 0).await;
        fx.agent.output(21, 0, b"bye\r\n").await;
        fx.agent.exited(21, Some(3), "exited").await;
        for viewer in [&mut a, &mut b] {
            assert_eq!(viewer.expect_output(0, 5).await, b"bye\r\n");
            let exited = viewer.expect_json("exited").await;
            assert_eq!(
                exited,
                json!({"type":"exited","exitCode":3,"reason":"exited"})
            );
            assert_eq!(
                viewer.expect_close().await,
                (1000, "session ended".to_owned())
            );
        }
        // Attaching to the ended session says so at once.
        let path = TermFixture::path(CONTAINER, "session=21&offset=5");
        let mut late = Browser::admin(fx.server.addr, &path).await;
        assert_eq!(late.expect_json("exited").await["exitCode"], 3);
        assert_eq!(late.expect_close().await.0, 1000);
        let audit = fx.wait_audit("terminal.end").await;
        let actions: Vec<_> = audit
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            ["terminal.open", "terminal.attach", "terminal.end"]
        );
        let end = &audit[2];
        assert_eq!(end["principal"], "operator", "{end}");
        let outcome = end["outcome"].as_str().unwrap();
        assert!(
            outcome.starts_with("exited, exit code 3, after "),
            "{outcome}"
        );
        let worker_id = fx.worker_id.clone();
        let data = fx.stop().await;
        let store = orchestrator::store::Store::open(&data).unwrap();
        let record = store
            .get_terminal(&worker_id, 21)
            .unwrap()
            .expect("a record");
        assert_eq!(record.container_id, CONTAINER);
        assert_eq!(
            (record.exit_code, record.reason.as_deref()),
            (Some(3), Some("exited"))
        );
        assert!(
            record.ended_at.is_some() && record.duration_ms().is_some(),
            "{record:?}"
        );
        assert!(store.live_terminals().unwrap().is_empty());
    });
}

#[test]
fn a_flood_is_paced_by_the_acks_of_its_slowest_viewer() {
    smol::block_on(async {
        const WINDOW: u64 = protocol::frame::OUTPUT_WINDOW;
        const TOTAL: u64 = 4 << 20;
        let mut fx = TermFixture::start("term-flood").await;
        let mut a = fx.open(81).await;
        // The browser reads and acks as it goes, checking every byte.
        let reader = smol::spawn(async move {
            let mut next = 0u64;
            while next < TOTAL {
                match a.recv().await {
                    ToBrowser::Output(offset, bytes) => {
                        assert_eq!(offset, next, "output out of order");
                        for (i, b) in bytes.iter().enumerate() {
                            assert_eq!(*b, ((offset + i as u64) % 251) as u8);
                        }
                        next += bytes.len() as u64;
                        a.ack(next).await;
                    }
                    other => panic!("expected output, got {other:?}"),
                }
            }
            a
        });
        // The agent never has more than its window un-acked.
        let started = std::time::Instant::now();
        let (mut produced, mut acked) = (0u64, 0u64);
        while acked < TOTAL {
            if produced < TOTAL && produced - acked < WINDOW {
                let chunk: Vec<u8> = (produced..produced + 64 * 1024)
                    .map(|i| (i % 251) as u8)
                    .collect();
                fx.agent.output(81, produced, &chunk).await;
                produced += chunk.len() as u64;
                continue;
            }
            let (session, offset, _) = fx.agent.expect_frame(3).await;
            assert_eq!(session, 81);
            assert!(
                offset > acked && offset <= produced,
                "{offset} after {acked}"
            );
            acked = offset;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{TOTAL} bytes relayed in {secs:.3} s ({:.1} MB/s)",
            TOTAL as f64 / secs / 1e6
        );
        let _a = reader.await;
        fx.stop().await;
    });
}
