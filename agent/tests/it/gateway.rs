//! The path to the orchestrator, end to end in the library: over TLS, a
//! session's heartbeats say `direct`; through an HTTP proxy's CONNECT
//! tunnel (a tiny in-test proxy that demands basic authentication), `proxy`,
//! with TLS still end to end; when the certificate shown is not the one the
//! orchestrator says it serves, `intercepted`. A wrong proxy password is
//! refused by the proxy (407) and retried with the backoff, never a crash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_tungstenite::tungstenite::Message;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use protocol::worker::Accepted;
use protocol::{Body, Envelope};
use smol::net::{TcpListener, TcpStream};

use super::{fast_settings, listen, scratch_dir, test_ca, within};

/// What the first heartbeat of a session said: (gatewayStatus, detail).
async fn first_heartbeat(
    listener: &TcpListener,
    acceptor: &futures_rustls::TlsAcceptor,
    served: &str,
) -> (String, String) {
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = acceptor.accept(tcp).await.unwrap();
    let mut ws = async_tungstenite::accept_async(tls).await.unwrap();
    let register = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break Envelope::decode(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    };
    assert!(matches!(register.body, Body::Register(_)), "{register:?}");
    let accepted = Envelope::request(
        register.request_id.unwrap(),
        Body::Accepted(Accepted {
            worker_id: "w-1".into(),
            protocol_version: protocol::PROTOCOL_VERSION,
            heartbeat_interval_secs: 1,
            certificate_sha256: Some(served.to_owned()),
        }),
    );
    ws.send(Message::text(accepted.encode())).await.unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            continue;
        };
        if let Body::Heartbeat(beat) = Envelope::decode(t.as_str()).unwrap().body {
            return (
                beat.gateway_status.unwrap_or_default(),
                beat.gateway_status_detail.unwrap_or_default(),
            );
        }
    }
}

/// An HTTP proxy on 127.0.0.1 that tunnels CONNECT to `target` for
/// `Proxy-Authorization: Basic <basic>` only (407 otherwise); counts the
/// CONNECTs it saw, and whether each named `target`.
async fn proxy(target: u16, basic: &'static str) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (listener, port) = listen().await;
    let (asked, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, r) = (asked.clone(), refused.clone());
    smol::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if client.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            assert!(head.starts_with(&format!("CONNECT 127.0.0.1:{target} HTTP/1.1\r\n")), "{head}");
            a.fetch_add(1, Ordering::SeqCst);
            if !head.contains(&format!("Proxy-Authorization: Basic {basic}\r\n")) {
                r.fetch_add(1, Ordering::SeqCst);
                let no = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n";
                let _ = client.write_all(no.as_bytes()).await;
                continue;
            }
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
            let server = TcpStream::connect(("127.0.0.1", target)).await.unwrap();
            let (mut cr, mut cw) = (client.clone(), client);
            let (mut sr, mut sw) = (server.clone(), server);
            smol::spawn(async move { futures_lite::io::copy(&mut cr, &mut sw).await }).detach();
            smol::spawn(async move { futures_lite::io::copy(&mut sr, &mut cw).await }).detach();
        }
    })
    .detach();
    (port, asked, refused)
}

#[test]
fn heartbeats_say_direct_proxy_or_intercepted_and_a_wrong_proxy_password_is_retried() {
    smol::block_on(within(60, "the gateway cases", async {
        let dir = scratch_dir("gateway");
        let (ca, server_config, served) = test_ca(&dir);
        let acceptor = futures_rustls::TlsAcceptor::from(server_config);
        let (listener, port) = listen().await;
        let settings = |proxy: Option<&str>| {
            let mut s = fast_settings(port);
            s.url = format!("wss://127.0.0.1:{port}/v1/agent");
            s.ca_file = Some(ca.clone());
            s.proxy = proxy.map(|p| agent::proxy::Proxy::parse(p).unwrap());
            s
        };
        let session = |s| {
            let (stop, shutdown) = agent::Shutdown::new();
            (stop, smol::spawn(agent::run(s, shutdown)))
        };

        // Direct, shown the certificate the orchestrator serves.
        let (stop, task) = session(settings(None));
        let (status, detail) = first_heartbeat(&listener, &acceptor, &served).await;
        assert_eq!(status, "direct", "{detail}");
        assert!(detail.contains(&format!("127.0.0.1:{port}")), "{detail}");
        stop.trigger();
        task.await.unwrap();

        // The orchestrator serves another certificate than the one shown.
        let (stop, task) = session(settings(None));
        let other = "0".repeat(64);
        let (status, detail) = first_heartbeat(&listener, &acceptor, &other).await;
        assert_eq!(status, "intercepted", "{detail}");
        stop.trigger();
        task.await.unwrap();

        // Through the proxy, with its password (ann:s@cret, percent-encoded).
        let (proxy_port, asked, refused) = proxy(port, "YW5uOnNAY3JldA==").await;
        let (stop, task) = session(settings(Some(&format!(
            "http://ann:s%40cret@127.0.0.1:{proxy_port}"
        ))));
        let (status, detail) = first_heartbeat(&listener, &acceptor, &served).await;
        assert_eq!(status, "proxy", "{detail}");
        assert!(
            detail.contains(&format!("127.0.0.1:{proxy_port}")),
            "{detail}"
        );
        assert_eq!(
            (asked.load(Ordering::SeqCst), refused.load(Ordering::SeqCst)),
            (1, 0)
        );
        stop.trigger();
        task.await.unwrap();

        // A wrong password: refused by the proxy, tried again, the agent alive.
        let (stop, task) = session(settings(Some(&format!(
            "http://ann:wrong@127.0.0.1:{proxy_port}"
        ))));
        while refused.load(Ordering::SeqCst) < 3 {
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        assert!(!task.is_finished(), "the agent stopped on a refused tunnel");
        stop.trigger();
        task.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }));
}
