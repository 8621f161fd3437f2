//! Several replicas on one PostgreSQL database (a real server, `postgres`):
//! a worker belongs to its newest connection, whichever replica took it,
//! and a replica's identity is held by one live process.

use std::time::Duration;

use crate::harness::*;
use crate::postgres;

fn on(url: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        ..Options::default()
    }
}

#[test]
fn an_agent_that_moves_to_another_replica_fences_its_old_connection() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("replica-a"), on(&url)).await;
        let b = Server::start_in(temp_dir("replica-b"), on(&url)).await;
        let (mut old, id, credential) = a.registered("nas").await;
        old.send_json(&heartbeat(1.0)).await;
        b.wait_worker(&id, "a's heartbeat, seen from b", |w| {
            w["heartbeat"]["cpuUsage"] == 1.0
        })
        .await;
        // The agent comes back through b while a still holds its old socket
        // (a half-open connection a has not noticed yet).
        let mut new = Agent::connect(b.addr, &credential).await;
        new.register("again").await;
        // Whatever the old connection still sends is refused in the store,
        // and a closes it as replaced.
        old.send_json(&heartbeat(2.0)).await;
        let (code, _) = old.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, 4009);
        new.send_json(&heartbeat(3.0)).await;
        let w = a
            .wait_worker(&id, "b's heartbeat, seen from a", |w| {
                w["heartbeat"]["cpuUsage"] == 3.0
            })
            .await;
        assert_ne!(w["heartbeat"]["cpuUsage"], 2.0);
        new.close().await;
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn a_second_process_with_a_live_replicas_identity_is_refused_at_start() {
    smol::block_on(async {
        let url = postgres::database();
        let named = || Options {
            replica_id: Some("eu-1".into()),
            ..on(&url)
        };
        let first = Server::start_in(temp_dir("replica-id-1"), named()).await;
        let refused = Server::try_start_in(temp_dir("replica-id-2"), named()).await;
        let Err(error) = refused else {
            panic!("a second eu-1 started");
        };
        let message = error.to_string();
        assert!(
            message.contains("eu-1") && message.contains("--replica-id"),
            "{message}"
        );
        first.assert_still_serves().await;
        first.stop().await;
    });
}

#[test]
fn a_policy_activated_on_one_replica_takes_effect_on_the_other_and_so_does_its_rollback() {
    smol::block_on(async {
        let url = postgres::database();
        let a = Server::start_in(temp_dir("replica-pol-a"), on(&url)).await;
        let b = Server::start_in(temp_dir("replica-pol-b"), on(&url)).await;
        let t = a.tenant("acme").await;
        let effective = |server: &Server| {
            let path = format!("/v1/policies?tenantId={t}");
            let server_addr = server.addr;
            async move {
                let auth = format!("Bearer {ADMIN}");
                let (_, list) = http(
                    server_addr,
                    "GET",
                    &path,
                    &[("Authorization", auth.as_str())],
                    None,
                )
                .await;
                list["effective"]["placement"].clone()
            }
        };
        assert_eq!(effective(&b).await, "stock:least-loaded");
        let auth = format!("Bearer {ADMIN}");
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/wasm"),
        ];
        let path = format!("/v1/policies?kind=placement&name=bp&tenantId={t}");
        let (status, body) = http_raw(a.addr, "POST", &path, &headers, Some(BINPACK)).await;
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let p: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let id = p["id"].as_str().unwrap().to_owned();
        let (status, reply) = a
            .admin("POST", &format!("/v1/policies/{id}/activate"), None)
            .await;
        assert_eq!(status, 200, "{reply}");
        let label = format!("tenant:{t}:bp@1");
        until(
            Duration::from_secs(3),
            "b to place with binpack",
            || async { effective(&b).await == label.as_str() },
        )
        .await;
        let (status, reply) = a
            .admin("POST", &format!("/v1/policies/{id}/rollback"), None)
            .await;
        assert_eq!(status, 200, "{reply}");
        until(
            Duration::from_secs(3),
            "b back on the stock policy",
            || async { effective(&b).await == "stock:least-loaded" },
        )
        .await;
        a.stop().await;
        b.stop().await;
    });
}

const BINPACK: &[u8] = include_bytes!("../../../policies/dist/binpack.wasm");

/// Poll `done` until it holds, failing after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

#[test]
fn serve_refuses_at_start_without_a_store_or_with_an_unreachable_database() {
    smol::block_on(async {
        let none = cli(&["serve", "--listen", "127.0.0.1:0"])
            .await
            .unwrap_err();
        assert!(
            none.contains("--data DIR") && none.contains("--database"),
            "{none}"
        );
        let nowhere = temp_dir("replica-nowhere");
        std::fs::create_dir_all(&nowhere).unwrap();
        let url = format!(
            "postgres://crops:hunter2@localhost/crops?host={}",
            nowhere.display()
        );
        let refused = cli(&["serve", "--listen", "127.0.0.1:0", "--database", &url])
            .await
            .unwrap_err();
        assert!(refused.contains("cannot reach PostgreSQL"), "{refused}");
        assert!(
            !refused.contains("hunter2"),
            "the password leaked: {refused}"
        );
    });
}
