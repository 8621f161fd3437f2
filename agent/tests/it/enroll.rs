//! Enrolment (`agent::enroll`, `crops-agent enroll`) against tiny in-test
//! HTTP and HTTPS servers: the request it sends, the answers it reads
//! (whole, in pieces, chunked), a refusal's message, and the CA it trusts.

use std::os::unix::fs::PermissionsExt;

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::{listen, read_request, respond, scratch_dir, test_ca, within};

const ENROLLED: &str = r#"{"workerId":"8e0c6a8e-0000-4000-8000-000000000001","tenantId":"t-1","tenantName":"acme","credential":"crops_wkr_test"}"#;

#[test]
fn enroll_posts_the_join_token_and_writes_a_private_config() {
    smol::block_on(within(20, "enrolment", async {
        let (listener, port) = listen().await;
        let server = smol::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (head, body) = read_request(&mut stream).await;
            respond(&mut stream, "201 Created", ENROLLED).await;
            (head, body)
        });
        let dir = scratch_dir("enroll");
        let opts = agent::EnrollOptions {
            url: format!("http://127.0.0.1:{port}"),
            join_token: "crops_join_abc".into(),
            name: Some("nas-1".into()),
            config_path: dir.join("sub").join("worker.json"),
            ca_file: None,
            proxy: None,
        };
        let config = agent::enroll(&opts).await.unwrap();
        let (head, body) = server.await;
        assert!(head.starts_with("POST /v1/enroll HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("Host: 127.0.0.1:{port}")), "{head}");
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["joinToken"], "crops_join_abc");
        assert_eq!(sent["name"], "nas-1");
        assert_eq!(sent["hostname"], agent::sysinfo::hostname().unwrap());

        assert_eq!(config.url, format!("ws://127.0.0.1:{port}/v1/agent"));
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&opts.config_path).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "workerId": "8e0c6a8e-0000-4000-8000-000000000001", "tenantId": "t-1",
                "tenantName": "acme", "url": format!("ws://127.0.0.1:{port}/v1/agent"),
                "credential": "crops_wkr_test", "name": "nas-1"
            })
        );
        let mode = std::fs::metadata(&opts.config_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }));
}

/// An answer written in small pieces, chunked, with header names in odd case
/// and a byte that is not UTF-8 in an unrelated header, enrols all the same.
#[test]
fn enroll_reads_an_answer_in_pieces_chunked_and_oddly_cased() {
    smol::block_on(within(20, "enrolment", async {
        let (listener, port) = listen().await;
        let server = smol::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            read_request(&mut stream).await;
            let mut reply = b"HTTP/1.1 201 Created\r\nserver: caf\xe9\r\n\
                CONTENT-TYPE: application/json\r\ntransfer-encoding: Chunked\r\n\
                connection: close\r\n\r\n"
                .to_vec();
            let (a, b) = ENROLLED.split_at(40);
            for part in [a, b] {
                reply.extend_from_slice(format!("{:X}\r\n{part}\r\n", part.len()).as_bytes());
            }
            reply.extend_from_slice(b"0\r\n\r\n");
            for piece in reply.chunks(7) {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
            }
        });
        let dir = scratch_dir("enroll-pieces");
        let opts = agent::EnrollOptions {
            url: format!("http://127.0.0.1:{port}"),
            join_token: "crops_join_abc".into(),
            name: Some("nas-2".into()),
            config_path: dir.join("worker.json"),
            ca_file: None,
            proxy: None,
        };
        let config = agent::enroll(&opts).await.unwrap();
        server.await;
        assert_eq!(config.worker_id, "8e0c6a8e-0000-4000-8000-000000000001");
        assert_eq!(config.credential, "crops_wkr_test");
        assert_eq!(config.tenant_name, "acme");
        std::fs::remove_dir_all(&dir).unwrap();
    }));
}

/// The binary, end to end: a refused enrolment prints the server's message
/// and exits non-zero.
#[test]
fn the_binary_shows_the_servers_refusal() {
    smol::block_on(within(30, "refused enrolment", async {
        let (listener, port) = listen().await;
        let server = smol::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            let body = r#"{"error":{"code":"unauthorized","message":"join token expired or already used"}}"#;
            respond(&mut stream, "401 Unauthorized", body).await;
        });
        let dir = scratch_dir("enroll-bin");
        let out = smol::process::Command::new(env!("CARGO_BIN_EXE_crops-agent"))
            .args([
                "enroll",
                "--url",
                &format!("http://127.0.0.1:{port}"),
                "--token",
                "crops_join_x",
            ])
            .arg("--config")
            .arg(dir.join("worker.json"))
            .output()
            .await
            .unwrap();
        server.await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "exit {:?}; stderr:\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains("join token expired or already used"),
            "stderr:\n{stderr}"
        );
        assert!(!dir.join("worker.json").exists());
    }));
}

#[test]
fn enroll_over_tls_trusts_the_ca_file_and_only_it() {
    smol::block_on(within(30, "TLS enrolment", async {
        let dir = scratch_dir("tls");
        let (ca_path, server_config, _) = test_ca(&dir);
        let (listener, port) = listen().await;
        let acceptor = futures_rustls::TlsAcceptor::from(server_config);
        let server = smol::spawn(async move {
            // First client: without the CA, its handshake must fail.
            let (stream, _) = listener.accept().await.unwrap();
            assert!(
                acceptor.accept(stream).await.is_err(),
                "an untrusting client completed TLS"
            );
            // Second client: with the CA.
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") || !raw.ends_with(b"}") {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0);
                raw.extend_from_slice(&buf[..n]);
            }
            let reply = format!(
                "HTTP/1.1 201 Created\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ENROLLED}",
                ENROLLED.len()
            );
            tls.write_all(reply.as_bytes()).await.unwrap();
            tls.close().await.unwrap();
        });
        let mut opts = agent::EnrollOptions {
            url: format!("https://127.0.0.1:{port}"),
            join_token: "crops_join_abc".into(),
            name: None,
            config_path: dir.join("worker.json"),
            ca_file: None,
            proxy: None,
        };
        let err = agent::enroll(&opts).await.unwrap_err();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
        opts.ca_file = Some(ca_path.clone());
        let config = agent::enroll(&opts).await.unwrap();
        server.await;
        assert_eq!(config.url, format!("wss://127.0.0.1:{port}/v1/agent"));
        assert_eq!(config.ca_file, Some(ca_path));
        assert_eq!(config.name, Some(agent::sysinfo::hostname().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }));
}
