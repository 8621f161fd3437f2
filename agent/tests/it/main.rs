//! Integration tests of the agent library and binary against tiny in-test
//! servers on 127.0.0.1:0: the enrolment client over HTTP and HTTPS
//! (`enroll`), and whole sessions over plain WebSocket (register, heartbeat, commands, refusal and
//! backoff, half-open detection, close frames, SIGTERM), and `service`
//! with fakes of systemctl and loginctl. Uses the real
//! Podman, and fails (does not skip) without it.

mod concurrency;
mod containers;
mod enroll;
mod gateway;
mod helper_host;
mod liveness;
mod oversized;
mod profiles;
mod rotation;
mod service;
mod session_containers;
mod support;
mod tenant_env;
mod term_peer;
mod terminal_helper;
mod terminal_links;
mod terminals;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::{BackoffPolicy, RunSettings, Shutdown};
use async_tungstenite::tungstenite::handshake::server::{Request, Response};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use protocol::worker::{Accepted, Mode};
use protocol::{Body, Envelope, ErrorCode};
use smol::net::{TcpListener, TcpStream};

/// Fail the test if `fut` takes longer than `secs`. A bound, not a synchronisation.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    fut.or(async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("timed out after {secs}s waiting for {what}")
    })
    .await
}

async fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "crops-agent-it-{tag}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Read one HTTP request (head plus Content-Length body) off `stream`.
async fn read_request(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "client closed mid-request");
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if raw.len() >= end + 4 + len {
            return (head, raw[end + 4..end + 4 + len].to_vec());
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}

// ---- WebSocket sessions ----

type Ws = WebSocketStream<TcpStream>;

fn fast_settings(port: u16) -> RunSettings {
    let mut s = RunSettings::new(
        format!("ws://127.0.0.1:{port}/v1/agent"),
        "crops_wkr_test",
        "it-worker",
    );
    s.backoff = BackoffPolicy {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
        jitter: 0.2,
        reset_after: Duration::from_secs(30),
    };
    s
}

/// Accept one WebSocket, returning it and the Authorization header it carried.
// The callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn accept_ws(listener: &TcpListener) -> (Ws, Option<String>) {
    let (stream, _) = listener.accept().await.unwrap();
    let auth = Arc::new(Mutex::new(None));
    let seen = auth.clone();
    let ws = async_tungstenite::accept_hdr_async(stream, move |req: &Request, resp: Response| {
        let value = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *seen.lock().unwrap() = value;
        Ok(resp)
    })
    .await
    .unwrap();
    let auth = auth.lock().unwrap().clone();
    (ws, auth)
}

/// The next text message, decoded; fails on anything else but pings/pongs.
async fn next_envelope(ws: &mut Ws) -> Envelope {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Envelope::decode(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Skip messages until one satisfies `want`.
async fn wait_for(ws: &mut Ws, want: impl Fn(&Envelope) -> bool) -> Envelope {
    loop {
        let env = next_envelope(ws).await;
        if want(&env) {
            return env;
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// Read the register, check it, accept it.
async fn register_and_accept(ws: &mut Ws, heartbeat_secs: u32) -> protocol::worker::Register {
    let env = next_envelope(ws).await;
    let Body::Register(reg) = env.body else {
        panic!("first message was {env:?}")
    };
    let accepted = Envelope::request(
        env.request_id.expect("register carries a requestId"),
        Body::Accepted(Accepted {
            worker_id: "w-1".into(),
            protocol_version: protocol::PROTOCOL_VERSION,
            heartbeat_interval_secs: heartbeat_secs,
            certificate_sha256: None,
        }),
    );
    send(ws, &accepted.encode()).await;
    reg
}

#[test]
fn a_session_registers_heartbeats_and_answers_commands() {
    smol::block_on(within(30, "the session", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let agent = smol::spawn(agent::run(fast_settings(port), shutdown));
        let (mut ws, auth) = accept_ws(&listener).await;
        assert_eq!(auth.as_deref(), Some("Bearer crops_wkr_test"));

        let reg = register_and_accept(&mut ws, 1).await;
        reg.validate().unwrap();
        assert_eq!(reg.protocol_version, protocol::PROTOCOL_VERSION);
        assert_eq!(reg.name, "it-worker");
        assert_eq!(reg.hostname, agent::sysinfo::hostname().unwrap());
        assert_eq!(reg.cpu_count, agent::sysinfo::cpu_count());
        assert_eq!(reg.memory_total, agent::sysinfo::memory().unwrap().total);
        assert_eq!(
            reg.container_engines,
            vec!["podman".to_owned()],
            "podman must be installed"
        );
        assert_eq!(reg.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(reg.mode, Mode::Byom);

        let inv = next_envelope(&mut ws).await;
        assert!(
            matches!(inv.body, Body::Inventory(_)),
            "after accept: {inv:?}"
        );
        assert_eq!(inv.request_id, None);
        let hb = next_envelope(&mut ws).await;
        let Body::Heartbeat(hb) = hb.body else {
            panic!("then: {hb:?}")
        };
        hb.validate(reg.memory_total).unwrap();
        assert!(
            hb.disk_total.is_some(),
            "disk figures from podman's graphRoot"
        );
        // And the next one, a heartbeat interval later.
        wait_for(&mut ws, |e| matches!(e.body, Body::Heartbeat(_))).await;

        send(
            &mut ws,
            r#"{"type":"container.frobnicate","requestId":"u-1","data":{}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("u-1")).await;
        let Body::Error(err) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(err.code, ErrorCode::UnknownType);

        send(
            &mut ws,
            r#"{"type":"container.start","requestId":"s-1","data":{"containerId":"c"}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("s-1")).await;
        let Body::Error(err) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(err.code, ErrorCode::NotFound, "{}", err.message);

        send(
            &mut ws,
            r#"{"type":"container.start","requestId":"b-1","data":{"wrong":1}}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("b-1")).await;
        let Body::Error(err) = reply.body else {
            panic!("{reply:?}")
        };
        assert_eq!(err.code, ErrorCode::MalformedMessage);

        send(&mut ws, r#"{"type":"images.list","requestId":"i-1"}"#).await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("i-1")).await;
        assert!(matches!(reply.body, Body::ImagesListed(_)), "{reply:?}");

        send(
            &mut ws,
            r#"{"type":"container.list-all","requestId":"l-1"}"#,
        )
        .await;
        let reply = wait_for(&mut ws, |e| e.request_id.as_deref() == Some("l-1")).await;
        assert!(
            matches!(reply.body, Body::ContainerListedAll(_)),
            "{reply:?}"
        );

        // Shutdown: a close frame 1000, then run returns Ok.
        trigger.trigger();
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let close = close.expect("a close frame with a code");
        assert_eq!(u16::from(close.code), 1000);
        assert_eq!(close.reason.as_str(), "agent shutting down");
        agent.await.unwrap();
    }));
}

/// A writer that keeps everything the subscriber prints.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this test binary from the first call on. Global,
/// because a thread-scoped subscriber races with other tests' callsites.
fn captured_logs() -> &'static Capture {
    static LOGS: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        capture
    })
}

#[test]
fn a_refused_upgrade_is_logged_and_retried_with_backoff() {
    let capture = captured_logs();
    let port = smol::block_on(within(20, "three refused attempts", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let server = smol::spawn(async move {
            for _ in 0..3 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (head, _) = read_request(&mut stream).await;
                assert!(head.contains("Bearer crops_wkr_test"), "{head}");
                let body = r#"{"error":{"code":"unauthorized","message":"credential revoked"}}"#;
                respond(&mut stream, "401 Unauthorized", body).await;
            }
            // The fourth try comes after the third refusal is logged: stop
            // the agent only then (stopped at once, it could exit before
            // logging it).
            let (fourth, _) = listener.accept().await.unwrap();
            trigger.trigger();
            drop(fourth);
        });
        agent::run(fast_settings(port), shutdown).await.unwrap();
        server.await;
        port
    }));
    let all = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // Only this test's lines: they name its port.
    let url = format!("url=ws://127.0.0.1:{port}/v1/agent");
    let logs: Vec<&str> = all.lines().filter(|l| l.contains(&url)).collect();
    let logs = logs.join("\n");
    let refused =
        "WARN agent: orchestrator refused the connection: 401 Unauthorized: credential revoked";
    assert_eq!(logs.matches(refused).count(), 3, "logs:\n{logs}");
    for n in 1..=3 {
        let line = format!("INFO agent: connecting to orchestrator attempt={n} {url}");
        assert!(logs.contains(&line), "no {line:?} in logs:\n{logs}");
    }
    assert!(all.contains("retrying in 0.0"), "logs:\n{all}");
}

/// The binary, end to end: SIGTERM closes the socket with 1000 and exits 0.
#[test]
fn sigterm_closes_the_socket_and_exits_zero() {
    smol::block_on(within(30, "SIGTERM shutdown", async {
        let (listener, port) = listen().await;
        let child = smol::process::Command::new(env!("CARGO_BIN_EXE_crops-agent"))
            .args([
                "run",
                "--url",
                &format!("ws://127.0.0.1:{port}/v1/agent"),
                "--credential",
                "crops_wkr_test",
            ])
            .args(["--name", "bin-worker", "--mode", "fleet"])
            .args(["--label", "gpu=a100", "--security-floor", "strict"])
            .env("CROPS_CONFIG", "/nonexistent/crops/worker.json")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (mut ws, _) = accept_ws(&listener).await;
        let reg = register_and_accept(&mut ws, 10).await;
        assert_eq!((reg.name.as_str(), reg.mode), ("bin-worker", Mode::Fleet));
        let labels: Vec<_> = reg.labels.iter().collect();
        assert_eq!(labels, [(&"gpu".to_owned(), &"a100".to_owned())]);
        assert_eq!(
            reg.security_floor,
            Some(protocol::container::Profile::Strict)
        );
        wait_for(&mut ws, |e| matches!(e.body, Body::Heartbeat(_))).await;

        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.map(|f| u16::from(f.code)), Some(1000));
        drop(ws);
        let out = child.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "exit {:?}; stderr:\n{stderr}",
            out.status
        );
        assert!(stderr.contains("crops-agent stopped"), "stderr:\n{stderr}");
    }));
}

#[test]
fn a_rejected_registration_backs_off_and_retries() {
    smol::block_on(within(20, "a retry after rejection", async {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let agent = smol::spawn(agent::run(fast_settings(port), shutdown));
        let (mut first, _) = accept_ws(&listener).await;
        let env = next_envelope(&mut first).await;
        assert!(matches!(env.body, Body::Register(_)), "{env:?}");
        let refusal = Envelope::error(
            env.request_id,
            protocol::ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                "this orchestrator speaks 2..=3",
            ),
        );
        send(&mut first, &refusal.encode()).await;
        // The agent gives up on this connection and, after its backoff, registers again.
        let (mut second, _) = accept_ws(&listener).await;
        let env = next_envelope(&mut second).await;
        assert!(matches!(env.body, Body::Register(_)), "{env:?}");
        trigger.trigger();
        drop(second);
        agent.await.unwrap();
    }));
}

/// A CA (as a PEM file), a server config for 127.0.0.1 signed by it, and
/// the SHA-256 (hex) of that server's certificate.
fn test_ca(dir: &std::path::Path) -> (PathBuf, Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agent test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.der().as_ref());
    let sha: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (ca_path, Arc::new(server), sha)
}
