//! Credential rotation over the live connection: the agent stores the new
//! credential in its config file (atomically, mode 0600) before answering,
//! keeps the connection, and presents the new credential on the next one.

use std::os::unix::fs::PermissionsExt;

use agent::config::Config;
use agent::Shutdown;
use protocol::{Body, Envelope};

use crate::{
    accept_ws, fast_settings, listen, register_and_accept, scratch_dir, send, wait_for, within,
};

#[test]
fn a_rotated_credential_is_stored_then_used_by_the_next_connection() {
    smol::block_on(within(30, "a rotation and a reconnect", async {
        let (listener, port) = listen().await;
        let dir = scratch_dir("rotate");
        let path = dir.join("worker.json");
        let config = Config {
            worker_id: "w-1".into(),
            tenant_id: "t-1".into(),
            tenant_name: "acme".into(),
            url: format!("ws://127.0.0.1:{port}/v1/agent"),
            credential: "crops_wkr_old".into(),
            name: Some("it-worker".into()),
            ca_file: None,
            mode: None,
        };
        config.save(&path).unwrap();
        let mut settings = fast_settings(port);
        settings.credential = "crops_wkr_old".into();
        settings.credential_file = Some(path.clone());
        let (trigger, shutdown) = Shutdown::new();
        let agent = smol::spawn(agent::run(settings, shutdown));

        let (mut ws, auth) = accept_ws(&listener).await;
        assert_eq!(auth.as_deref(), Some("Bearer crops_wkr_old"));
        register_and_accept(&mut ws, 1).await;
        send(
            &mut ws,
            r#"{"type":"worker.rotate-credential","requestId":"rot-1","data":{"credential":"crops_wkr_new"}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("rot-1")).await;
        assert!(
            matches!(reply.body, Body::CredentialRotated(_)),
            "{reply:?}"
        );
        // Stored before the reply: the file already holds it, privately.
        let stored = Config::load(&path).unwrap();
        assert_eq!(stored.credential, "crops_wkr_new");
        assert_eq!(
            Config {
                credential: "crops_wkr_old".into(),
                ..stored
            },
            config
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // The connection stays: heartbeats keep coming on it.
        wait_for(&mut ws, |e| matches!(e.body, Body::Heartbeat(_))).await;

        // A bad credential is refused and changes nothing.
        send(
            &mut ws,
            r#"{"type":"worker.rotate-credential","requestId":"rot-2","data":{"credential":"bad one"}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("rot-2")).await;
        let Body::Error(error) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(error.code, protocol::ErrorCode::InvalidArgument);
        assert_eq!(Config::load(&path).unwrap().credential, "crops_wkr_new");

        // The next connection presents the new credential.
        drop(ws);
        let (mut ws, auth) = accept_ws(&listener).await;
        assert_eq!(auth.as_deref(), Some("Bearer crops_wkr_new"));
        let env: Envelope = crate::next_envelope(&mut ws).await;
        assert!(matches!(env.body, Body::Register(_)), "{env:?}");
        trigger.trigger();
        drop(ws);
        agent.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }));
}
