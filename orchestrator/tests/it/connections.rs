//! Connections that have not authenticated are bounded (`orchestrator::
//! connections`): a flood of idle sockets from one address, or from many,
//! never keeps an authenticated caller or an agent out, and one address's
//! flood never closes another address's connections.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::{json, Value};
use smol::net::TcpStream;

use crate::harness::*;

/// A TCP connection to `to` from the local address `from` (any address of
/// 127.0.0.0/8 is this host's on Linux), connected without blocking.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let SocketAddr::V4(to) = to else {
        panic!("an IPv4 listener")
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let fd = socket(AddressFamily::Inet, SockType::Stream, flags, None).unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )
    .unwrap();
    match connect(fd.as_raw_fd(), &SockaddrIn::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => panic!("connect from {from}: {e}"),
    }
    let stream = smol::Async::new(std::net::TcpStream::from(fd)).unwrap();
    within(Duration::from_secs(10), "a TCP connect", stream.writable())
        .await
        .unwrap();
    if let Some(e) = stream.get_ref().take_error().unwrap() {
        panic!("connect from {from}: {e}");
    }
    TcpStream::from(stream)
}

/// One keep-alive request on `stream`: the status and JSON body.
async fn request_on(stream: &mut TcpStream, method: &str, path: &str, auth: bool) -> (u16, Value) {
    within(
        Duration::from_secs(10),
        "an answer on an open connection",
        async {
            let bearer = if auth {
                format!("Authorization: Bearer {ADMIN}\r\n")
            } else {
                String::new()
            };
            let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{bearer}\r\n");
            stream.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            let mut byte = [0u8; 1];
            while !raw.ends_with(b"\r\n\r\n") {
                assert_eq!(
                    stream.read(&mut byte).await.unwrap(),
                    1,
                    "connection closed"
                );
                raw.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&raw).to_lowercase();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.unwrap();
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        },
    )
    .await
}

/// Wait until the server closes `stream` (end of file or a reset).
async fn closed_by_server(stream: &mut TcpStream, what: &str) {
    within(Duration::from_secs(20), what, async {
        let mut buf = [0u8; 256];
        // End of file, or an error (a reset): closed either way.
        if let Ok(n @ 1..) = stream.read(&mut buf).await {
            panic!("unexpected {n} bytes from the server");
        }
    })
    .await;
}

/// The orchestrator binary, run with an open-files limit of 256 (so its
/// default caps are 64 unauthenticated connections, 16 per address); killed
/// when dropped.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Binary {
    fn start(data: &Path) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 256 && exec "$0" serve --listen 127.0.0.1:0 --data "$1""#)
            .arg(env!("CARGO_BIN_EXE_crops-orchestrator"))
            .arg(data)
            .env("CROPS_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = std::io::BufRead::lines(stdout)
            .map(Result::unwrap)
            .find_map(|l| l.strip_prefix("listening on http://").map(str::to_owned))
            .expect("the orchestrator says where it listens");
        let addr = line.parse().unwrap();
        Self { child, addr }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn idle_floods_never_keep_out_the_api_an_agent_or_another_address() {
    smol::block_on(async {
        let data = temp_dir("flood");
        let bin = Binary::start(&data);
        let addr = bin.addr;
        let here = Ipv4Addr::new(127, 0, 0, 1);

        // Another address's connections, each past its first request (a
        // public one: still unauthenticated).
        let mut theirs = Vec::new();
        for _ in 0..8 {
            let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
            assert_eq!(request_on(&mut s, "GET", "/healthz", false).await.0, 200);
            theirs.push(s);
        }
        // 300 idle sockets from this address: more than the server's
        // 256 descriptors.
        let mut idle = Vec::new();
        for _ in 0..300 {
            idle.push(connect_from(here, addr).await);
        }

        // An authenticated call from the flooding address answers...
        let tenant = json!({ "name": "after-the-flood" });
        let auth = format!("Bearer {ADMIN}");
        let (status, body) = http(
            addr,
            "POST",
            "/v1/tenants",
            &[("Authorization", auth.as_str())],
            Some(tenant.to_string()),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let tenant = body["id"].as_str().unwrap().to_owned();
        // ... and an agent enrols, connects and registers.
        let path = format!("/v1/tenants/{tenant}/join-tokens");
        let (status, token) = http(
            addr,
            "POST",
            &path,
            &[("Authorization", auth.as_str())],
            Some("{}".into()),
        )
        .await;
        assert_eq!(status, 201, "{token}");
        let enroll = json!({ "joinToken": token["token"], "name": "flooded", "hostname": "h" });
        let (status, enrolled) =
            http(addr, "POST", "/v1/enroll", &[], Some(enroll.to_string())).await;
        assert_eq!(status, 201, "{enrolled}");
        let mut agent = Agent::connect(addr, enrolled["credential"].as_str().unwrap()).await;
        let accepted = agent.register("r-1").await;
        assert_eq!(accepted["type"], "worker.accepted", "{accepted}");

        // The oldest idle socket was closed to make room; the other
        // address's connections were not touched.
        closed_by_server(&mut idle[0], "the oldest idle socket closed").await;
        for s in &mut theirs {
            assert_eq!(request_on(s, "GET", "/healthz", false).await.0, 200);
        }

        // Idle sockets from many addresses (6 x 16 > 64 in all): the
        // oldest of all go, and the API still answers.
        let mut many = Vec::new();
        for last in 3..9 {
            for _ in 0..16 {
                many.push(connect_from(Ipv4Addr::new(127, 0, 0, last), addr).await);
            }
        }
        let mut api = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr).await;
        let (status, body) = request_on(&mut api, "GET", "/v1/tenants", true).await;
        assert_eq!(status, 200, "{body}");
        // Authenticated: no longer counted, so never evicted.
        for _ in 0..80 {
            many.push(connect_from(Ipv4Addr::new(127, 0, 0, 10), addr).await);
        }
        let (status, _) = request_on(&mut api, "GET", "/v1/tenants", true).await;
        assert_eq!(status, 200);
        let (_, metrics) = http_raw(addr, "GET", "/metrics", &[], None).await;
        let metrics = String::from_utf8(metrics).unwrap();
        assert!(
            metric(
                &metrics,
                "crops_connections_shed_total{reason=\"per_source\"}"
            ) > 0
        );
        assert!(metric(&metrics, "crops_connections_shed_total{reason=\"total\"}") > 0);
        assert!(metric(&metrics, "crops_connections_unauthenticated") <= 64);
        agent.close().await;
    });
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_first_request_deadline() {
    smol::block_on(async {
        let opts = Options {
            connections: Some(orchestrator::ConnectionLimits {
                unauthenticated: 1000,
                unauthenticated_per_source: 1000,
                first_request: Duration::from_secs(1),
            }),
            ..Options::default()
        };
        let server = Server::start_in(temp_dir("first-request"), opts).await;
        let here = Ipv4Addr::new(127, 0, 0, 1);
        let mut talker = connect_from(here, server.addr).await;
        assert_eq!(
            request_on(&mut talker, "GET", "/healthz", false).await.0,
            200
        );
        let mut silent = connect_from(here, server.addr).await;
        closed_by_server(&mut silent, "the silent connection closed").await;
        // Opened before the silent one, so past its deadline too, but it
        // sent a request in time: it stays.
        assert_eq!(
            request_on(&mut talker, "GET", "/healthz", false).await.0,
            200
        );
        server.stop().await;
    });
}
