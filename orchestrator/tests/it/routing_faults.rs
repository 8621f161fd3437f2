//! Calls across replicas that go wrong on the way (`peer`), each read as
//! what it is rather than as the worker being offline: the worker's
//! replica cannot be read from the store (the store's error), and a
//! "replica" that answers with more than a replica of this store ever
//! does (502 `replica_error`, not read on). Two orchestrators on one
//! PostgreSQL database (a real server), the agent connected to B, every
//! call made on A.

use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::json;
use smol::net::TcpListener;

use crate::fake::*;
use crate::harness::*;
use crate::postgres;

fn on(url: &str) -> Options {
    Options {
        database: Some(url.to_owned()),
        // No beat of B rewrites its record during a test.
        heartbeat_secs: 60,
        ..Options::default()
    }
}

/// A, and B holding a registered worker's agent, seen online from A.
async fn two_replicas(name: &str, url: &str, b: Options) -> (Server, Fixture) {
    let a = Server::start_in(temp_dir(&format!("{name}-a")), on(url)).await;
    let b = Server::start_in(temp_dir(&format!("{name}-b")), b).await;
    let fx = Fixture::on(b, name).await;
    a.wait_worker(&fx.worker_id, "the worker online, seen from a", |w| {
        w["status"] == "online"
    })
    .await;
    (a, fx)
}

#[test]
fn an_unreadable_owner_is_the_stores_error_not_an_offline_worker() {
    smol::block_on(async {
        let url = postgres::database();
        let b = Options {
            replica_id: Some("b".into()),
            ..on(&url)
        };
        let (a, fx) = two_replicas("route-store", &url, b).await;
        // B's replica record no longer decodes: the route to the worker
        // cannot be read (as when the database fails under the read).
        postgres::server().psql(
            postgres::name_of(&url),
            "UPDATE crops_kv SET value = 'not json' WHERE tbl = 'replicas' AND key = 'b'",
        );
        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let (status, body) = a.admin("GET", &path, None).await;
        assert_error(status, &body, 500, "internal");
        a.stop().await;
        fx.server.stop().await;
    });
}

#[test]
fn an_answer_over_the_bound_is_a_replica_error_not_read_on() {
    smol::block_on(async {
        let url = postgres::database();
        // B advertises a listener of the test's: what answers there is
        // not B, and says the worker is offline at great length.
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let advertised = format!("http://{}", fake.local_addr().unwrap());
        let b = Options {
            advertise: Some(advertised),
            ..on(&url)
        };
        let (a, fx) = two_replicas("route-big", &url, b).await;
        let answering = smol::spawn(async move {
            let (mut conn, _) = fake.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let detail = "x".repeat(16 << 20);
            let body = json!({ "outcome": "failed", "kind": "offline", "detail": detail });
            let body = body.to_string();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            // A stops reading past its bound and hangs up: a write fails.
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            String::from_utf8_lossy(&head).into_owned()
        });
        let path = format!("/v1/workers/{}/images", fx.worker_id);
        let (status, body) = a.admin("GET", &path, None).await;
        assert_error(status, &body, 502, "replica_error");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("more than"), "{message}");
        let head = within(Duration::from_secs(10), "the fake replica", answering).await;
        assert!(head.starts_with("POST /internal/v1/relay"), "{head}");
        a.stop().await;
        fx.server.stop().await;
    });
}
