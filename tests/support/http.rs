//! A blocking HTTPS client for the tests: one request per connection over
//! rustls (ring), trusting only the test's CA; answers status and JSON body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// The status and parsed JSON body (Null when empty) of one exchange.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The machine-readable error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub struct Https {
    config: Arc<rustls::ClientConfig>,
    port: u16,
    token: String,
}

impl Https {
    pub fn new(ca: &Path, port: u16, token: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            config: Arc::new(config),
            port,
            token: token.to_string(),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Answer {
        self.request("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None)
    }

    /// One request with `Connection: close`; the body is read to EOF.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`Https::request`], but a connection cut before an answer (a
    /// server killed mid-call) is an `Err`, not a panic: the call was not
    /// acknowledged.
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> std::io::Result<Answer> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(600)))?;
        let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
        let conn = rustls::ClientConnection::new(self.config.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            self.token,
            body.len()
        );
        tls.write_all(head.as_bytes())?;
        tls.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        // A peer that closes without close_notify is fine once we have the bytes.
        if let Err(e) = tls.read_to_end(&mut raw) {
            if raw.is_empty() {
                return Err(e);
            }
        }
        if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            return Err(std::io::Error::other("closed before a whole answer"));
        }
        Ok(parse(method, path, &raw))
    }
}

/// One kept-alive connection, for measurements where a TLS handshake per
/// request would swamp what is measured. Not shareable between threads.
pub struct Conn<'a> {
    https: &'a Https,
    stream: Option<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl Https {
    pub fn conn(&self) -> Conn<'_> {
        Conn {
            https: self,
            stream: None,
        }
    }
}

impl Conn<'_> {
    /// One request on the kept connection (opened on first use); the answer
    /// must carry a Content-Length, as hyper's do for full bodies.
    pub fn request(&mut self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let https = self.https;
        let stream = self.stream.get_or_insert_with(|| {
            let tcp = TcpStream::connect(("127.0.0.1", https.port)).expect("connect");
            tcp.set_nodelay(true).unwrap();
            let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
            let conn = rustls::ClientConnection::new(https.config.clone(), name).unwrap();
            rustls::StreamOwned::new(conn, tcp)
        });
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            https.port,
            https.token,
            body.len()
        );
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .unwrap();
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            stream
                .read_exact(&mut byte)
                .expect("reading the answer's head");
            raw.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        let start = raw.len();
        raw.resize(start + len, 0);
        stream.read_exact(&mut raw[start..]).unwrap();
        parse(method, path, &raw)
    }
}

fn parse(method: &str, path: &str, raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP head in {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line in {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let body = if body.trim().is_empty() {
        Value::Null
    } else if path == "/metrics" {
        // The one text answer: Prometheus exposition format.
        Value::String(body)
    } else {
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: answer is not JSON ({e}): {body}"))
    };
    Answer { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
