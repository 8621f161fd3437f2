//! The agent socket: credential checks, registration, heartbeats and every
//! kind of bad input; after each, the server still serves.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use serde_json::json;

use crate::harness::*;

/// The upgrade request an agent sends, by hand, to see a refusal's body.
async fn raw_upgrade(server: &Server, credential: Option<&str>) -> (u16, serde_json::Value) {
    let bearer = credential.map(|c| format!("Bearer {c}"));
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    http(server.addr, "GET", "/v1/agent", &headers, None).await
}

#[test]
fn enrol_connect_register_heartbeat_shows_online() {
    smol::block_on(async {
        let server = Server::start("happy").await;
        let (id, credential) = server.enrolled("nas").await;
        let before = server.worker(&id).await;
        assert_eq!(before["status"], "offline");
        assert_eq!(before["cpuCount"], serde_json::Value::Null);
        assert_eq!(before["heartbeat"], serde_json::Value::Null);

        let mut agent = Agent::connect(server.addr, &credential).await;
        let accepted = agent.register("reg-1").await;
        assert_eq!(
            accepted,
            json!({
                "type": "worker.accepted",
                "requestId": "reg-1",
                "data": { "workerId": id, "protocolVersion": 1, "heartbeatIntervalSecs": 10 }
            })
        );
        agent.send_json(&heartbeat(12.5)).await;
        let w = server
            .wait_worker(&id, "the heartbeat", |w| !w["heartbeat"].is_null())
            .await;
        assert_eq!(w["status"], "online", "{w}");
        assert_eq!(w["revoked"], false);
        assert_eq!(w["name"], "nas");
        assert_eq!(w["hostname"], "nas.local");
        assert_eq!(w["platform"], "linux");
        assert_eq!(w["arch"], "x86_64");
        assert_eq!(w["cpuCount"], 4);
        assert_eq!(w["memoryTotal"], 8u64 << 30);
        assert_eq!(w["containerEngines"], json!(["podman"]));
        assert_eq!(w["agentVersion"], "0.1.0");
        assert_eq!(w["mode"], "byom");
        assert!(w["connectedAt"].as_u64().unwrap() >= w["enrolledAt"].as_u64().unwrap());
        assert!(w["lastHeartbeatAt"].as_u64().unwrap() >= w["connectedAt"].as_u64().unwrap());
        assert_eq!(
            w["heartbeat"],
            json!({
                "cpuUsage": 12.5,
                "memoryFree": 1u64 << 30,
                "diskTotal": 100u64 << 30,
                "diskFree": 40u64 << 30,
                "containersRunning": 2,
                "gatewayStatus": "ok",
                "gatewayStatusDetail": null
            })
        );
        // An inventory is taken without reply or harm.
        agent
            .send_json(&json!({ "type": "worker.inventory", "data": { "containers": [] } }))
            .await;
        agent.close().await;
        server
            .wait_worker(&id, "offline after disconnect", |w| {
                w["status"] == "offline"
            })
            .await;
        server.stop().await;
    });
}

#[test]
fn missing_unknown_or_revoked_credentials_get_401_with_a_reason() {
    smol::block_on(async {
        let server = Server::start("cred-401").await;
        let (status, body) = raw_upgrade(&server, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        assert_eq!(body["error"]["message"], "missing credential");

        let (status, body) = raw_upgrade(&server, Some("crops_wkr_nope")).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["message"], "unknown credential");

        let (id, credential) = server.enrolled("nas").await;
        let (status, reply) = server
            .admin("POST", &format!("/v1/workers/{id}/revoke"), None)
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["revoked"], true);
        let (status, body) = raw_upgrade(&server, Some(&credential)).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["message"], "credential revoked");

        // A good credential without the upgrade headers is a bad request.
        let (_, other) = server.enrolled("other").await;
        let bearer = format!("Bearer {other}");
        let (status, body) = http(
            server.addr,
            "GET",
            "/v1/agent",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request"))
        );
        server.stop().await;
    });
}

#[test]
fn revoke_closes_the_live_socket_with_4001() {
    smol::block_on(async {
        let server = Server::start("revoke").await;
        let (mut agent, id, credential) = server.registered("nas").await;
        let (status, w) = server
            .admin("POST", &format!("/v1/workers/{id}/revoke"), None)
            .await;
        assert_eq!(status, 200, "{w}");
        assert_eq!(w["revoked"], true);
        let (code, reason) = agent.expect_close(Duration::from_secs(1)).await;
        assert_eq!((code, reason.as_str()), (4001, "credential revoked"));
        let w = server.worker(&id).await;
        assert_eq!(
            (w["status"].as_str(), w["revoked"].as_bool()),
            (Some("offline"), Some(true))
        );
        let (status, _) = raw_upgrade(&server, Some(&credential)).await;
        assert_eq!(status, 401);
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn malformed_json_is_answered_and_the_connection_stays() {
    smol::block_on(async {
        let server = Server::start("malformed").await;
        let (mut agent, id, _) = server.registered("nas").await;
        agent.send_text("{not json").await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["data"]["code"], "malformed_message", "{reply}");
        // Bad data for a known type keeps its requestId.
        agent.send_json(&json!({ "type": "worker.heartbeat", "requestId": "hb-9", "data": { "cpuUsage": "hot" } })).await;
        let reply = agent.recv_json().await;
        assert_eq!(
            (reply["requestId"].as_str(), reply["data"]["code"].as_str()),
            (Some("hb-9"), Some("malformed_message"))
        );
        // Still open: a heartbeat is stored.
        agent.send_json(&heartbeat(33.0)).await;
        server
            .wait_worker(&id, "heartbeat after bad input", |w| {
                w["heartbeat"]["cpuUsage"] == 33.0
            })
            .await;
        agent.close().await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn unknown_type_is_answered_with_its_request_id() {
    smol::block_on(async {
        let server = Server::start("unknown-type").await;
        let (mut agent, _, _) = server.registered("nas").await;
        agent
            .send_json(&json!({ "type": "worker.dance", "requestId": "dance-1", "data": {} }))
            .await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["requestId"], "dance-1");
        assert_eq!(reply["data"]["code"], "unknown_type");
        // A command type is not something an agent sends.
        agent
            .send_json(&json!({ "type": "images.list", "requestId": "x-2" }))
            .await;
        let reply = agent.recv_json().await;
        assert_eq!(
            (reply["requestId"].as_str(), reply["data"]["code"].as_str()),
            (Some("x-2"), Some("unsupported"))
        );
        // A binary message that is not a frame.
        agent.send(Message::binary(vec![9u8; 3])).await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["data"]["code"], "malformed_message", "{reply}");
        // The connection is still usable.
        agent
            .send_json(&json!({ "type": "worker.dance", "requestId": "dance-2" }))
            .await;
        assert_eq!(agent.recv_json().await["requestId"], "dance-2");
        agent.close().await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn an_oversized_message_closes_with_1009() {
    smol::block_on(async {
        let server = Server::start("oversized").await;
        let (mut agent, id, _) = server.registered("nas").await;
        agent.send_json(&heartbeat(5.0)).await;
        server
            .wait_worker(&id, "first heartbeat", |w| {
                w["heartbeat"]["cpuUsage"] == 5.0
            })
            .await;
        let big = format!(
            r#"{{"type":"worker.heartbeat","data":{{"pad":"{}"}}}}"#,
            "x".repeat(protocol::MAX_TEXT_FRAME)
        );
        agent.send_text(&big).await;
        let (code, reason) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1009, "{reason}");
        drop(agent);
        let w = server.worker(&id).await;
        assert_eq!(w["heartbeat"]["cpuUsage"], 5.0);
        server.assert_still_serves().await;
        server.stop().await;
    });
}

/// PROTOCOL.md section 2's size rule for binary messages: a payload over
/// 64 KiB is an error only; over 4 MiB, the connection closes with 1009.
#[test]
fn oversized_binary_messages_get_too_large_then_1009() {
    smol::block_on(async {
        let server = Server::start("oversized-binary").await;
        let (mut agent, _, _) = server.registered("nas").await;
        let mut frame = vec![0u8; 17 + protocol::MAX_BINARY_PAYLOAD + 1];
        frame[0] = 1;
        agent.send(Message::binary(frame)).await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["data"]["code"], "too_large", "{reply}");
        assert!(reply.get("requestId").is_none(), "{reply}");
        agent
            .send_json(&json!({ "type": "worker.dance", "requestId": "still" }))
            .await;
        assert_eq!(agent.recv_json().await["requestId"], "still");
        let mut big = vec![0u8; protocol::MAX_TEXT_FRAME + 1];
        big[0] = 1;
        agent.send(Message::binary(big)).await;
        let (code, reason) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1009, "{reason}");
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn a_message_before_register_is_refused_with_4000() {
    smol::block_on(async {
        let server = Server::start("before-register").await;
        let (id, credential) = server.enrolled("nas").await;
        let mut agent = Agent::connect(server.addr, &credential).await;
        agent.send_json(&heartbeat(1.0)).await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["data"]["code"], "not_registered", "{reply}");
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4000);
        let w = server.worker(&id).await;
        assert!(w["heartbeat"].is_null() && w["cpuCount"].is_null(), "{w}");
        // The same credential can still connect and register.
        let mut agent = Agent::connect(server.addr, &credential).await;
        assert_eq!(agent.register("r").await["type"], "worker.accepted");
        agent.close().await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn registering_twice_is_an_error_but_the_connection_stays() {
    smol::block_on(async {
        let server = Server::start("register-twice").await;
        let (mut agent, id, _) = server.registered("nas").await;
        let reply = agent.register("again").await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["requestId"], "again");
        assert_eq!(reply["data"]["code"], "already_registered");
        agent.send_json(&heartbeat(7.0)).await;
        server
            .wait_worker(&id, "heartbeat", |w| w["heartbeat"]["cpuUsage"] == 7.0)
            .await;
        agent.close().await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn an_absurd_heartbeat_is_refused_and_not_stored() {
    smol::block_on(async {
        let server = Server::start("absurd").await;
        let (mut agent, id, _) = server.registered("nas").await;
        agent.send_json(&heartbeat(20.0)).await;
        let good = server
            .wait_worker(&id, "good heartbeat", |w| {
                w["heartbeat"]["cpuUsage"] == 20.0
            })
            .await;
        let mut bad = heartbeat(500.0);
        bad["requestId"] = json!("hb-bad");
        agent.send_json(&bad).await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["data"]["code"], "invalid_argument", "{reply}");
        assert_eq!(reply["requestId"], "hb-bad");
        let mut bad = heartbeat(1.0);
        bad["data"]["memoryFree"] = json!(1u64 << 60);
        agent.send_json(&bad).await;
        assert_eq!(agent.recv_json().await["data"]["code"], "invalid_argument");
        // A later message on the same socket is handled, so the bad ones were too.
        agent
            .send_json(&json!({ "type": "worker.dance", "requestId": "sync" }))
            .await;
        assert_eq!(agent.recv_json().await["requestId"], "sync");
        let w = server.worker(&id).await;
        assert_eq!(w["heartbeat"], good["heartbeat"]);
        assert_eq!(w["lastHeartbeatAt"], good["lastHeartbeatAt"]);
        agent.close().await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn a_flood_closes_with_4008() {
    smol::block_on(async {
        let server = Server::start("flood").await;
        let (mut agent, id, _) = server.registered("nas").await;
        let beat = heartbeat(9.0).to_string();
        let flood = async {
            for _ in 0..2000 {
                if agent.try_send_text(&beat).await.is_err() {
                    break;
                }
            }
        };
        within(Duration::from_secs(20), "the flood", flood).await;
        let (code, reason) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!((code, reason.as_str()), (4008, "rate limit exceeded"));
        // Heartbeats are stored in batches: the flood's lands with the next.
        server
            .wait_worker(&id, "the flood's heartbeat stored", |w| {
                w["heartbeat"]["cpuUsage"] == 9.0
            })
            .await;
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn protocol_version_999_is_refused_with_4002() {
    smol::block_on(async {
        let server = Server::start("version").await;
        let (id, credential) = server.enrolled("nas").await;
        let mut agent = Agent::connect(server.addr, &credential).await;
        agent.send_json(&register_msg("v-999", 999)).await;
        let reply = agent.recv_json().await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["requestId"], "v-999");
        assert_eq!(reply["data"]["code"], "unsupported_version");
        let message = reply["data"]["message"].as_str().unwrap();
        assert!(
            message.contains("999") && message.contains('1'),
            "{message}"
        );
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4002);
        assert!(server.worker(&id).await["cpuCount"].is_null());
        server.assert_still_serves().await;
        server.stop().await;
    });
}

#[test]
fn a_second_connection_replaces_the_first_with_4009() {
    smol::block_on(async {
        let server = Server::start("replace").await;
        let (mut first, id, credential) = server.registered("nas").await;
        let mut second = Agent::connect(server.addr, &credential).await;
        assert_eq!(second.register("r-2").await["type"], "worker.accepted");
        let (code, _) = first.expect_close(Duration::from_secs(2)).await;
        assert_eq!(code, 4009);
        second.send_json(&heartbeat(42.0)).await;
        let w = server
            .wait_worker(&id, "heartbeat on the new socket", |w| {
                w["heartbeat"]["cpuUsage"] == 42.0
            })
            .await;
        assert_eq!(w["status"], "online");
        drop(first);
        second.close().await;
        server.stop().await;
    });
}

#[test]
fn no_register_within_the_deadline_closes_with_4003() {
    smol::block_on(async {
        let opts = Options {
            register_timeout: Duration::from_millis(300),
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("register-timeout"), opts).await;
        let (_, credential) = server.enrolled("nas").await;
        let mut agent = Agent::connect(server.addr, &credential).await;
        let (code, _) = agent.expect_close(Duration::from_secs(3)).await;
        assert_eq!(code, 4003);
        server.stop().await;
    });
}

#[test]
fn shutdown_closes_agent_sockets_with_1001() {
    smol::block_on(async {
        let server = Server::start("shutdown").await;
        let (mut agent, _, _) = server.registered("nas").await;
        let stopping = smol::spawn(server.stop());
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1001);
        drop(agent);
        stopping.await;
    });
}
