//! A restart on the same data directory keeps what was committed.

use std::time::Duration;

use crate::harness::*;

#[test]
fn a_restart_keeps_tenants_workers_credentials_and_last_heartbeat() {
    smol::block_on(async {
        let opts = || Options {
            heartbeat_secs: 1,
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("restart"), opts()).await;
        let (mut agent, id, credential) = server.registered("nas").await;
        agent.send_json(&heartbeat(61.5)).await;
        let before = server
            .wait_worker(&id, "heartbeat", |w| w["heartbeat"]["cpuUsage"] == 61.5)
            .await;
        assert_eq!(before["status"], "online");
        let (_, tenants_before) = server.admin("GET", "/v1/tenants", None).await;

        let stopping = smol::spawn(server.stop());
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1001);
        drop(agent);
        let data = stopping.await;

        let server = Server::start_in(data, opts()).await;
        let (_, tenants_after) = server.admin("GET", "/v1/tenants", None).await;
        assert_eq!(tenants_after, tenants_before);
        let after = server.worker(&id).await;
        // Within the offline grace a worker known before the restart is
        // reconnecting, not offline: the outage was the orchestrator's.
        assert_eq!(after["status"], "reconnecting", "{after}");
        for field in [
            "tenantId",
            "name",
            "cpuCount",
            "memoryTotal",
            "containerEngines",
            "enrolledAt",
            "connectedAt",
            "lastHeartbeatAt",
            "heartbeat",
        ] {
            assert_eq!(after[field], before[field], "{field}");
        }

        // The credential still works; the worker is online again once registered.
        let mut agent = Agent::connect(server.addr, &credential).await;
        let accepted = agent.register("again").await;
        assert_eq!(accepted["data"]["heartbeatIntervalSecs"], 1);
        server
            .wait_worker(&id, "online after reconnect", |w| w["status"] == "online")
            .await;
        agent.send_json(&heartbeat(3.0)).await;
        server
            .wait_worker(&id, "new heartbeat", |w| w["heartbeat"]["cpuUsage"] == 3.0)
            .await;
        agent.close().await;
        server.stop().await;
    });
}

#[test]
fn a_silent_worker_goes_offline_and_is_closed_with_4010() {
    smol::block_on(async {
        let opts = Options {
            heartbeat_secs: 1,
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("silent"), opts).await;
        let (mut agent, id, _) = server.registered("nas").await;
        server
            .wait_worker(&id, "online", |w| w["status"] == "online")
            .await;
        // Not reading means not answering pings: the agent is silent.
        let w = server
            .wait_worker(&id, "offline", |w| w["status"] == "offline")
            .await;
        assert_eq!(w["revoked"], false);
        // Reading before the server has decided would answer its queued
        // pings, and a pong is a sign of life: wait for the decision first.
        server.wait_no_agent_connected().await;
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4010);
        server.stop().await;
    });
}

#[test]
fn after_a_restart_workers_are_reconnecting_until_the_grace_passes_then_offline() {
    smol::block_on(async {
        let server = Server::start("grace").await;
        let (mut agent, id, _) = server.registered("nas").await;
        let (never, _) = server.enrolled("never-connected").await;
        let stopping = smol::spawn(server.stop());
        let (code, _) = agent.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 1001);
        drop(agent);
        let data = stopping.await;

        let opts = Options {
            offline_grace: Duration::from_millis(400),
            ..Options::default()
        };
        let server = Server::start_in(data, opts).await;
        let w = server.worker(&id).await;
        assert_eq!(w["status"], "reconnecting", "{w}");
        // Never registered: nothing to wait for.
        assert_eq!(server.worker(&never).await["status"], "offline");
        server
            .wait_worker(&id, "offline once the grace has passed", |w| {
                w["status"] == "offline"
            })
            .await;
        server.stop().await;
    });
}
