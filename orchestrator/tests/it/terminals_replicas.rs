//! Live terminals across replicas (`peer/terminal.rs`,
//! `terminal/carried.rs`): two orchestrators on one PostgreSQL database (a
//! real server), the worker's agent connected to replica B, the browser on
//! replica A. A carries the socket to B and copies every message; B holds
//! the session, its mirror and the resume by offset, and audits the open
//! once, in the user's name.

use serde_json::json;

use crate::fake::assert_error;
use crate::fake_browser::Browser;
use crate::fake_terminal::*;
use crate::harness::*;
use crate::postgres;

fn on(url: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        ..Options::default()
    }
}

/// Replica A, and B with the worker's agent and a running container,
/// A seeing the worker online.
async fn two_replicas(name: &str) -> (Server, TermFixture) {
    let url = postgres::database();
    let a = Server::start_in(temp_dir(&format!("{name}-a")), on(&url)).await;
    let fx = TermFixture::start_with(&format!("{name}-b"), on(&url)).await;
    a.wait_worker(&fx.worker_id, "the worker online, seen from a", |w| {
        w["status"] == "online"
    })
    .await;
    (a, fx)
}

#[test]
fn a_browser_on_one_replica_drives_a_terminal_on_the_agent_of_another() {
    smol::block_on(async {
        let (a, mut fx) = two_replicas("term-carried").await;
        let path = TermFixture::path(CONTAINER, "cols=100&rows=30");
        let addr = a.addr;
        let opening = smol::spawn(async move {
            let bearer = format!("bearer.{ADMIN}");
            let offer = format!("crops.terminal.v1, {bearer}");
            Browser::connect(addr, &path, &[("Sec-WebSocket-Protocol", &offer)]).await
        });
        let cmd = fx.agent.expect_cmd("terminal.open", false).await;
        assert_eq!(cmd.data["containerId"], CONTAINER, "{cmd:?}");
        assert_eq!(
            (cmd.data["cols"].as_u64(), cmd.data["rows"].as_u64()),
            (Some(100), Some(30))
        );
        fx.agent.answer(&cmd, json!({ "sessionId": 41 })).await;
        let mut browser = opening
            .await
            .unwrap_or_else(|(status, body)| panic!("refused {status}: {body}"));
        assert_eq!(browser.protocol.as_deref(), Some("crops.terminal.v1"));
        assert_eq!(
            browser.expect_json("session").await,
            json!({"type":"session","sessionId":41,"offset":0,"end":0})
        );

        // Output reaches the browser exactly; input and acks reach the agent.
        fx.agent.output(41, 0, b"hello ").await;
        fx.agent.output(41, 6, b"world\x00\xff").await;
        assert_eq!(browser.expect_output(0, 13).await, b"hello world\x00\xff");
        browser.input(b"ls -l\n").await;
        assert_eq!(fx.agent.next_frame(2).await, (41, 0, b"ls -l\n".to_vec()));
        browser.ack(13).await;
        assert_eq!(fx.agent.expect_frame(3).await, (41, 13, Vec::new()));

        // The browser goes; output goes on, acked as it arrives (no viewer).
        browser.close().await;
        fx.agent.output(41, 13, b"!more").await;
        assert_eq!(fx.agent.expect_frame(3).await, (41, 18, Vec::new()));

        // Back on replica A from byte 6: exactly the bytes after it.
        let resume = TermFixture::path(CONTAINER, "session=41&offset=6");
        let mut again = Browser::admin(a.addr, &resume).await;
        assert_eq!(
            again.expect_json("session").await,
            json!({"type":"session","sessionId":41,"offset":6,"end":18})
        );
        assert_eq!(again.expect_output(6, 12).await, b"world\x00\xff!more");
        again.input(b"x").await;
        assert_eq!(fx.agent.next_frame(2).await, (41, 6, b"x".to_vec()));

        // Audited once each, in the user's name, whichever replica wrote it.
        let audit = fx.wait_audit("terminal.attach").await;
        let of = |action: &str| -> Vec<&serde_json::Value> {
            audit.iter().filter(|e| e["action"] == action).collect()
        };
        let opened = of("terminal.open");
        assert_eq!(opened.len(), 1, "{audit:?}");
        assert_eq!(opened[0]["principal"], "operator", "{audit:?}");
        assert_eq!(opened[0]["outcome"], "ok", "{audit:?}");
        assert!(
            opened[0]["target"]
                .as_str()
                .unwrap()
                .ends_with(&format!("container:{CONTAINER}/session:41")),
            "{audit:?}"
        );
        let attached = of("terminal.attach");
        assert_eq!(attached.len(), 1, "{audit:?}");
        assert_eq!(attached[0]["principal"], "operator", "{audit:?}");

        // The session ends on B: its message and close code reach A's browser.
        fx.agent.exited(41, Some(3), "exited").await;
        let exited = again.expect_json("exited").await;
        assert_eq!(exited["exitCode"], 3, "{exited}");
        assert_eq!(again.expect_close().await.0, 1000);
        fx.wait_audit("terminal.end").await;
        fx.stop().await;
        a.stop().await;
    });
}

#[test]
fn a_carried_terminal_is_refused_as_a_local_one_would_be() {
    smol::block_on(async {
        let (a, mut fx) = two_replicas("term-carried-refused").await;
        let bearer = format!("Bearer {ADMIN}");
        let headers = [("Authorization", bearer.as_str())];
        // B's refusal comes through as it came: no such session here.
        let unknown = TermFixture::path(CONTAINER, "session=999&offset=0");
        let (status, body) = Browser::connect(a.addr, &unknown, &headers)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 404, "not_found");
        // The agent's own error on the open, by its code.
        let path = TermFixture::path(CONTAINER, "cols=80&rows=24");
        let addr = a.addr;
        let opening = {
            let path = path.clone();
            let bearer = bearer.clone();
            smol::spawn(async move {
                Browser::connect(addr, &path, &[("Authorization", bearer.as_str())]).await
            })
        };
        let cmd = fx.agent.expect_cmd("terminal.open", false).await;
        fx.agent
            .answer_error(&cmd, "conflict", "no shell in this image")
            .await;
        let (status, body) = opening.await.err().unwrap();
        assert_error(status, &body, 409, "conflict");
        // B's peer route opens for the replicas' key only, not a user's token.
        let carried = format!("/internal/v1/terminal/{CONTAINER}?cols=80&rows=24");
        let with_principal = [headers[0], ("crops-principal", "operator")];
        let (status, body) = Browser::connect(fx.server.addr, &carried, &with_principal)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 401, "unauthorized");
        // B gone (its beat still fresh): the same answer as a worker offline.
        fx.stop().await;
        let (status, body) = Browser::connect(a.addr, &path, &headers)
            .await
            .err()
            .unwrap();
        assert_error(status, &body, 503, "worker_offline");
        a.stop().await;
    });
}

#[test]
fn a_replica_that_refuses_a_carried_terminal_is_named_not_taken_for_a_bad_token() {
    smol::block_on(async {
        let url = postgres::database();
        // The container is made on A, then the agent moves to B, which was
        // started with another admin token: its peer key differs.
        let mut fx = TermFixture::start_with("term-carried-key-a", on(&url)).await;
        let other = Options {
            admin_token: Some("crops_adm_another_token_for_b".into()),
            ..on(&url)
        };
        let b = Server::start_in(temp_dir("term-carried-key-b"), other).await;
        fx.agent.hang_up().await;
        fx.agent.reconnect(b.addr, &fx.credential).await;
        fx.server.wait_no_agent_connected().await;
        let bearer = format!("Bearer {ADMIN}");
        let path = TermFixture::path(CONTAINER, "cols=80&rows=24");
        let (status, body) = Browser::connect(fx.server.addr, &path, &[("Authorization", &bearer)])
            .await
            .err()
            .unwrap();
        // Not a 401: the browser's token is good; B refused A.
        assert_error(status, &body, 502, "replica_error");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("401"), "{message}");
        b.stop().await;
        fx.stop().await;
    });
}
