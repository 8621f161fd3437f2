//! Container commands over the WebSocket, through `agent::run` and the
//! in-test server of `main.rs`, against the real Podman.

use protocol::Body;

use crate::support;
use crate::{
    accept_ws, fast_settings, listen, register_and_accept, scratch_dir, send, wait_for, within,
};
use agent::Shutdown;

/// Container commands over the socket, through `agent::run`: create (twice,
/// the second answered `created: false`), start, exec, remove, each answered
/// once with its requestId; the inventory after a reconnect carries the
/// container with its labels. The agent's podman reads CONTAINERS_CONF from
/// this process's environment.
#[test]
fn container_commands_over_the_socket_and_the_inventory_after_a_reconnect() {
    assert!(
        std::env::var_os("CONTAINERS_CONF").is_some(),
        "export CONTAINERS_CONF={} (as the Makefile does)",
        support::containers_conf()
    );
    support::ensure_image();
    smol::block_on(within(120, "container commands over the socket", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let data = scratch_dir("ws-data");
        let mut settings = fast_settings(port);
        settings.data_dir = data.clone();
        let agent = smol::spawn(agent::run(settings, shutdown));
        let (mut ws, _) = accept_ws(&listener).await;
        register_and_accept(&mut ws, 10).await;

        let id = support::unique("ws");
        let tenant = support::unique("ws-tenant");
        let create = format!(
            r#"{{"type":"container.create","requestId":"c-1","data":{{"containerId":"{id}","tenantId":"{tenant}","name":"{id}","image":"{}","command":["sleep","600"],"profile":"strict"}}}}"#,
            support::IMAGE
        );
        let _cleanup = Cleanup(id.clone());
        send(&mut ws, &create).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("c-1")).await;
        assert!(
            matches!(reply.body, Body::ContainerCreated(ref c) if c.created),
            "{reply:?}"
        );
        send(&mut ws, &create.replace("c-1", "c-2")).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("c-2")).await;
        assert!(
            matches!(reply.body, Body::ContainerCreated(ref c) if !c.created),
            "{reply:?}"
        );

        let start = format!(
            r#"{{"type":"container.start","requestId":"s-1","data":{{"containerId":"{id}"}}}}"#
        );
        send(&mut ws, &start).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("s-1")).await;
        assert!(matches!(reply.body, Body::ContainerStarted(_)), "{reply:?}");
        let exec = format!(
            r#"{{"type":"container.exec","requestId":"e-1","data":{{"containerId":"{id}","command":["echo","$(id)"]}}}}"#
        );
        send(&mut ws, &exec).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("e-1")).await;
        assert!(
            matches!(reply.body, Body::ExecDone(ref r) if r.stdout == "$(id)\n"),
            "{reply:?}"
        );

        // Drop the connection: the agent reconnects and reports the container.
        drop(ws);
        let (mut ws, _) = accept_ws(&listener).await;
        register_and_accept(&mut ws, 10).await;
        let inv = wait_for(&mut ws, |e| matches!(e.body, Body::Inventory(_))).await;
        let Body::Inventory(inv) = inv.body else {
            unreachable!()
        };
        let mine = inv
            .containers
            .iter()
            .find(|c| c.container_id == id)
            .expect("in the inventory");
        assert_eq!(mine.tenant_id, tenant);
        assert_eq!(mine.profile, Some(protocol::container::Profile::Strict));
        assert_eq!(
            mine.state,
            protocol::container::ContainerState::Running,
            "still running"
        );

        let remove = format!(
            r#"{{"type":"container.remove","requestId":"r-1","data":{{"containerId":"{id}","force":true}}}}"#
        );
        send(&mut ws, &remove).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("r-1")).await;
        assert!(matches!(reply.body, Body::ContainerRemoved(_)), "{reply:?}");
        trigger.trigger();
        agent.await.unwrap();
        let _ = std::fs::remove_dir_all(data);
    }));
}

/// Removes a test's container by its crops.container-id label, even on failure.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in support::engine_ids_labelled(&self.0) {
            support::podman(&["rm", "--force", "-t", "0", "--", &id], false);
        }
    }
}
