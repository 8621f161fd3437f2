//! A blocking client of the browser's terminal socket (PROTOCOL.md section
//! 7) that behaves as the page does: the `crops.terminal.v1` and
//! `bearer.<token>` subprotocols over TLS, output frames as an 8-byte offset
//! and bytes with duplicates dropped, an ack after each frame. Used by the
//! socket's end-to-end test and by the terminal benchmark; also the member
//! token the page and this client authenticate with.

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{self, Message, WebSocket};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use crate::fleet::Fleet;

/// A member of the fleet's tenant and an API token of theirs: the terminal
/// is used as the product's user would, not with the operator's token.
pub fn member_token(f: &Fleet) -> String {
    let tenant = f.api.get(&format!("/v1/tenants/{}", f.tenant));
    assert_eq!(tenant.status, 200, "{tenant:?}");
    let org = tenant.body["orgId"].as_str().expect("the tenant's org");
    let member = f.api.post(
        &format!("/v1/orgs/{org}/members"),
        json!({"name": "terminal-user", "role": "member", "tenants": [f.tenant]}),
    );
    assert_eq!(member.status, 201, "{member:?}");
    let id = member.body["id"].as_str().expect("the member's id");
    let token = f.api.post(
        &format!("/v1/members/{id}/tokens"),
        json!({"name": "terminal page"}),
    );
    assert_eq!(token.status, 201, "{token:?}");
    token.body["token"].as_str().expect("a token").to_string()
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Why the socket could not be opened or went away.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("connecting to port {port}: {source}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the upgrade was refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("WebSocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("the session ended: {0}")]
    Exited(Value),
}

/// One viewer of one terminal session.
pub struct TermSocket {
    ws: WebSocket<Tls>,
    pub session_id: u64,
    /// The next output byte expected.
    pub received: u64,
    /// Output frames that brought new bytes.
    pub frames: u64,
}

impl TermSocket {
    /// Open a new session (`session` None) or attach to one from `offset`.
    pub fn connect(
        ca: &Path,
        port: u16,
        container: &str,
        token: &str,
        attach: Option<(u64, u64)>,
    ) -> Result<Self, SocketError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).expect("the test CA") {
            roots.add(cert.expect("a CA certificate"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .map_err(|source| SocketError::Connect { port, source })?;
        tcp.set_nodelay(true)
            .and_then(|()| tcp.set_read_timeout(Some(Duration::from_secs(60))))
            .map_err(|source| SocketError::Connect { port, source })?;
        let name = ServerName::try_from("127.0.0.1").expect("an IP is a name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let stream = rustls::StreamOwned::new(conn, tcp);
        let mut query = "cols=80&rows=24".to_string();
        if let Some((session, offset)) = attach {
            query.push_str(&format!("&session={session}&offset={offset}"));
        }
        let url = format!("wss://127.0.0.1:{port}/v1/containers/{container}/terminal?{query}");
        let mut request = url.into_client_request()?;
        let protocols = format!("crops.terminal.v1, bearer.{token}");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols).map_err(|e| SocketError::Protocol(e.to_string()))?,
        );
        let (ws, _) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                SocketError::Refused {
                    status: resp.status().as_u16(),
                    body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                        .into_owned(),
                }
            }
            tungstenite::HandshakeError::Failure(e) => SocketError::Ws(e),
            tungstenite::HandshakeError::Interrupted(_) => {
                SocketError::Protocol("handshake interrupted".into())
            }
        })?;
        let mut socket = TermSocket {
            ws,
            session_id: 0,
            received: attach.map_or(0, |(_, offset)| offset),
            frames: 0,
        };
        match socket.ws.read()? {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| SocketError::Protocol(format!("{e}: {text}")))?;
                let (Some("session"), Some(id), Some(offset)) = (
                    v["type"].as_str(),
                    v["sessionId"].as_u64(),
                    v["offset"].as_u64(),
                ) else {
                    return Err(SocketError::Protocol(format!("not a session message: {v}")));
                };
                socket.session_id = id;
                socket.received = socket.received.max(offset);
            }
            other => {
                return Err(SocketError::Protocol(format!(
                    "the first message is not text: {other:?}"
                )))
            }
        }
        Ok(socket)
    }

    /// Keystrokes: one binary message.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SocketError> {
        self.ws.send(Message::binary(bytes.to_vec()))?;
        Ok(())
    }

    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<(), SocketError> {
        let msg = json!({"type": "resize", "cols": cols, "rows": rows});
        self.ws.send(Message::text(msg.to_string()))?;
        Ok(())
    }

    /// The next new output bytes, acked as the page acks what xterm consumed.
    /// Control messages are skipped, except `exited`, which is an error.
    pub fn output(&mut self) -> Result<Vec<u8>, SocketError> {
        loop {
            match self.ws.read()? {
                Message::Binary(frame) => {
                    if frame.len() < 8 {
                        return Err(SocketError::Protocol(format!(
                            "an output frame of {} bytes",
                            frame.len()
                        )));
                    }
                    let mut head = [0u8; 8];
                    head.copy_from_slice(&frame[..8]);
                    let start = u64::from_be_bytes(head);
                    let payload = &frame[8..];
                    let end = start + payload.len() as u64;
                    if end <= self.received {
                        continue;
                    }
                    let skip = self.received.saturating_sub(start) as usize;
                    self.received = end;
                    self.frames += 1;
                    let ack = json!({"type": "ack", "offset": end});
                    self.ws.send(Message::text(ack.to_string()))?;
                    return Ok(payload[skip..].to_vec());
                }
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| SocketError::Protocol(format!("{e}: {text}")))?;
                    if v["type"] == "exited" {
                        return Err(SocketError::Exited(v));
                    }
                }
                Message::Close(frame) => {
                    return Err(SocketError::Protocol(format!("closed: {frame:?}")))
                }
                _ => {}
            }
        }
    }

    /// Run `command` in the shell at the other end and return what it
    /// printed, framed by markers `<n+1>` that the typed line cannot contain.
    pub fn run(&mut self, n: u32, command: &str) -> Result<String, SocketError> {
        let line = format!("echo \"<$(({n}+1))>$({command})</$(({n}+1))>\"\r");
        self.send(line.as_bytes())?;
        let (open, close) = (format!("<{}>", n + 1), format!("</{}>", n + 1));
        let mut text = String::new();
        loop {
            text.push_str(&String::from_utf8_lossy(&self.output()?));
            if let Some(a) = text.find(&open) {
                if let Some(b) = text[a..].find(&close) {
                    return Ok(text[a + open.len()..a + b].to_string());
                }
            }
        }
    }

    /// Output until `needle` has been seen: how many bytes that took, and
    /// the last few KiB of them (up to and including the needle's chunk).
    pub fn read_until(&mut self, needle: &[u8]) -> Result<(u64, Vec<u8>), SocketError> {
        const KEEP: usize = 4096;
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0u64;
        loop {
            let chunk = self.output()?;
            total += chunk.len() as u64;
            let from = tail.len().saturating_sub(needle.len());
            tail.extend_from_slice(&chunk);
            if tail[from..].windows(needle.len()).any(|w| w == needle) {
                return Ok((total, tail));
            }
            let drop = tail.len().saturating_sub(KEEP.max(needle.len()));
            tail.drain(..drop);
        }
    }
}
