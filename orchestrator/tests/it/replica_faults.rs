//! Faults of one replica of several on PostgreSQL (a real server):
//! * cut off from the database while another keeps it: the cut one
//!   answers 503 `store_unavailable` on writes, fences itself (its agents
//!   are sent to other replicas with 1013), and serves again by itself
//!   once the database is back. The cut is a forwarder on a Unix socket
//!   between the replica and the server, which the test opens and closes;
//! * stopped while holding a worker: the others show the worker
//!   `reconnecting`, never `offline`, for the offline grace;
//! * PostgreSQL restarted under two replicas: calls during it fail with
//!   503 `store_unavailable`, nothing acknowledged is lost, and both serve
//!   again by themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{io, FutureExt};
use smol::net::unix::{UnixListener, UnixStream};

use crate::harness::*;
use crate::postgres;

/// The name PostgreSQL's clients look for in a socket directory.
const SOCKET: &str = ".s.PGSQL.5432";

/// A forwarder from `dir/SOCKET` to the server's socket that can be cut.
struct Cuttable {
    dir: PathBuf,
    open: Arc<AtomicBool>,
    /// Every forwarded connection (both ends), to shut down on a cut.
    live: Arc<Mutex<Vec<UnixStream>>>,
    _task: smol::Task<()>,
}

impl Cuttable {
    fn start(server_dir: &Path, name: &str) -> Self {
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(SOCKET)).unwrap();
        let target = server_dir.join(SOCKET);
        let open = Arc::new(AtomicBool::new(true));
        let live = Arc::new(Mutex::new(Vec::new()));
        let (o, l) = (Arc::clone(&open), Arc::clone(&live));
        let task = smol::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the database is unreachable
                }
                let Ok(server) = UnixStream::connect(&target).await else {
                    continue;
                };
                l.lock().unwrap().extend([client.clone(), server.clone()]);
                smol::spawn(async move {
                    let up = io::copy(client.clone(), server.clone());
                    let down = io::copy(server, client);
                    let _ = up.or(down).await;
                })
                .detach();
            }
        });
        Self {
            dir,
            open,
            live,
            _task: task,
        }
    }

    /// `url` (a database on the test server) through this forwarder.
    fn url(&self, url: &str) -> String {
        let (base, _) = url.split_once("?host=").expect("a socket URL");
        format!("{base}?host={}", self.dir.display())
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn socket_dir(url: &str) -> PathBuf {
    PathBuf::from(url.split_once("?host=").expect("a socket URL").1)
}

#[test]
fn a_replica_cut_off_from_the_database_answers_503_fences_itself_and_recovers() {
    smol::block_on(async {
        let url = postgres::database();
        let cut = Cuttable::start(&socket_dir(&url), "faults-cut");
        let opts = |database: String| Options {
            database: Some(database),
            heartbeat_secs: 1,
            ..Options::default()
        };
        let a = Server::start_in(temp_dir("faults-a"), opts(cut.url(&url))).await;
        let b = Server::start_in(temp_dir("faults-b"), opts(url.clone())).await;
        let (mut agent, _worker, credential) = a.registered("cut-off").await;

        cut.cut();
        // A write on a: a clear 503, nothing else.
        let (status, body) = a
            .admin(
                "POST",
                "/v1/tenants",
                Some(serde_json::json!({ "name": "during" })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "{body}"
        );
        // a fences itself: its agent is sent elsewhere (two heartbeats).
        let (code, reason) = agent.expect_close(Duration::from_secs(10)).await;
        assert_eq!(code, 1013, "{reason}");
        // b never noticed.
        let (status, _) = b
            .admin(
                "POST",
                "/v1/tenants",
                Some(serde_json::json!({ "name": "on-b" })),
            )
            .await;
        assert_eq!(status, 201);

        cut.restore();
        // a serves again by itself, and takes agents again.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (status, body) = a
                .admin(
                    "POST",
                    "/v1/tenants",
                    Some(serde_json::json!({ "name": "after" })),
                )
                .await;
            if status == 201 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a never recovered: {status} {body}"
            );
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        let (_, tenants) = b.admin("GET", "/v1/tenants", None).await;
        let names: Vec<&str> = tenants["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(
            !names.contains(&"during"),
            "a 503 wrote something: {names:?}"
        );
        assert!(names.contains(&"after"), "{names:?}");
        let mut back = Agent::connect(a.addr, &credential).await;
        let accepted = back.register("back").await;
        assert_eq!(accepted["type"], "worker.accepted", "{accepted}");
        back.close().await;
        a.stop().await;
        b.stop().await;
    });
}

#[test]
fn a_worker_whose_replica_stops_is_reconnecting_on_the_others_never_offline_within_the_grace() {
    smol::block_on(async {
        let url = postgres::database();
        let opts = || Options {
            database: Some(url.clone()),
            heartbeat_secs: 1,
            offline_grace: Duration::from_secs(6),
            ..Options::default()
        };
        let a = Server::start_in(temp_dir("faults-stop-a"), opts()).await;
        let b = Server::start_in(temp_dir("faults-stop-b"), opts()).await;
        let (mut agent, worker, _) = b.registered("on-b").await;
        agent.send_json(&heartbeat(7.0)).await;
        a.wait_worker(&worker, "b's worker online on a", |w| {
            w["status"] == "online" && w["heartbeat"]["cpuUsage"] == 7.0
        })
        .await;
        // b goes; its agent does not come back in this test.
        let stopping = smol::spawn(b.stop());
        let _ = agent.expect_close(Duration::from_secs(5)).await;
        stopping.await;
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = a.worker(&worker).await["status"]
                .as_str()
                .unwrap()
                .to_owned();
            if seen.last() != Some(&status) {
                seen.push(status.clone());
            }
            if status == "offline" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never offline: {seen:?}"
            );
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        // Online while b's last beats were fresh, reconnecting for the
        // grace after b stopped, offline only then.
        assert_eq!(seen, ["online", "reconnecting", "offline"], "{seen:?}");
        a.stop().await;
    });
}

/// Create tenant `name` on `server`: the status.
async fn tenant_status(server: &Server, name: &str) -> u16 {
    let body = serde_json::json!({ "name": name });
    server.admin("POST", "/v1/tenants", Some(body)).await.0
}

#[test]
fn a_postgresql_restart_fails_calls_with_503_loses_nothing_and_every_replica_recovers() {
    smol::block_on(async {
        let pg = postgres::Own::start("restart");
        let url = pg.database();
        let on = || Options {
            database: Some(url.clone()),
            ..Options::default()
        };
        let a = Server::start_in(temp_dir("faults-pg-a"), on()).await;
        let b = Server::start_in(temp_dir("faults-pg-b"), on()).await;
        assert_eq!(tenant_status(&a, "before-a").await, 201);
        assert_eq!(tenant_status(&b, "before-b").await, 201);

        pg.pg_stop();
        let (status, body) = a
            .admin(
                "POST",
                "/v1/tenants",
                Some(serde_json::json!({ "name": "down" })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("store_unavailable")),
            "{body}"
        );
        pg.pg_start();

        for (server, name) in [(&a, "after-a"), (&b, "after-b")] {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while tenant_status(server, name).await != 201 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name}: never recovered"
                );
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        }
        let (_, tenants) = b.admin("GET", "/v1/tenants", None).await;
        let mut names: Vec<&str> = tenants["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["after-a", "after-b", "before-a", "before-b"]);
        a.stop().await;
        b.stop().await;
    });
}
