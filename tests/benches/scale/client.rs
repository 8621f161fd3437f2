//! The scale bench's plumbing: a throw-away CA and server certificate, the
//! orchestrator as a child process, a minimal keep-alive HTTPS/1.1 client
//! for the API, and what `/proc` says about a process (RSS, CPU time).
//!
//! The client is deliberately small: one request at a time per connection,
//! `Content-Length` bodies only (what the orchestrator sends), JSON in and
//! out. Each bench worker task owns one connection, so N tasks are N
//! concurrent clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use smol::net::TcpStream;

/// What can fail while driving the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O on the API connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("{method} {path} answered {status}: {body}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        body: String,
    },
    #[error("cannot start the orchestrator {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the orchestrator exited before it listened")]
    NoListen,
}

/// A CA and a server certificate for 127.0.0.1: the certificate file is
/// the chain (leaf, then CA), since replicas verify each other against
/// their own certificate file; the CA alone, DER, for the fleet's children.
pub struct Certs {
    pub ca_der: CertificateDer<'static>,
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let certs = Self {
            ca_der: ca.der().clone(),
            ca_file: dir.join("ca.der"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&certs.ca_file, ca.der()).expect("write CA");
        std::fs::write(&certs.cert, leaf.pem() + &ca.pem()).expect("write cert");
        std::fs::write(&certs.key, leaf_key.serialize_pem()).expect("write key");
        certs
    }

    /// The connector of a process that has only the CA's file.
    pub fn connector_from(ca_file: &Path) -> std::io::Result<TlsConnector> {
        let ca = CertificateDer::from(std::fs::read(ca_file)?);
        Ok(connector(ca))
    }

    /// A rustls connector trusting only this CA.
    pub fn connector(&self) -> TlsConnector {
        connector(self.ca_der.clone())
    }
}

/// A rustls connector trusting only `ca`.
fn connector(ca: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA is valid");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// `CROPS_SCALE_SERVE_ARGS`: options added to every `serve` of the run.
fn serve_args() -> String {
    std::env::var("CROPS_SCALE_SERVE_ARGS").unwrap_or_default()
}

/// The orchestrator child process; killed when dropped.
pub struct Orchestrator {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Orchestrator {
    /// `serve` with TLS on 127.0.0.1:0 and 10 s heartbeats, its state where
    /// `store` says (`--data DIR`, or `--database URL --replica-id rN`
    /// and a `--data` for local caches); returns once it listens.
    pub fn start(
        bin: &Path,
        store: &[std::ffi::OsString],
        certs: &Certs,
        admin: &str,
    ) -> Result<Self, ClientError> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--heartbeat-secs", "10"])
            .args(store)
            .arg("--tls-cert")
            .arg(&certs.cert)
            .arg("--tls-key")
            .arg(&certs.key)
            .args(["--admin-token", admin])
            // More `serve` options for every orchestrator of the run, e.g.
            // `--max-unauthenticated-per-source 4096` (the simulated fleet
            // comes from one address, as agents behind a balancer do).
            .args(serve_args().split_whitespace())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| ClientError::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        let stdout = child.stdout.take().ok_or(ClientError::NoListen)?;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(url) = line.strip_prefix("listening on https://") {
                let addr = url
                    .trim()
                    .parse()
                    .map_err(|_| ClientError::Malformed(line.clone()))?;
                return Ok(Self { child, addr });
            }
        }
        Err(ClientError::NoListen)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTPS connection to the API.
pub struct Api {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    bearer: String,
}

impl Api {
    pub async fn connect(
        addr: SocketAddr,
        connector: &TlsConnector,
        token: &str,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = connector.connect(name, tcp).await?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
            bearer: format!("Bearer {token}"),
        })
    }

    /// One request; the JSON body of a 2xx answer.
    pub async fn call(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: crops\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.bearer,
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        self.stream.flush().await?;
        let (status, reply) = self.read_response().await?;
        if !(200..300).contains(&status) {
            return Err(ClientError::Status {
                method,
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
        if reply.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&reply).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// `GET path`, the body as text whatever its type (for `/metrics`).
    pub async fn call_text(&mut self, path: &str) -> Result<String, ClientError> {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: crops\r\nAuthorization: {}\r\n\r\n",
            self.bearer
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.flush().await?;
        let (_, body) = self.read_response().await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Read one response head and its `Content-Length` body.
    async fn read_response(&mut self) -> Result<(u16, Vec<u8>), ClientError> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Malformed(head.clone()))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ClientError::Malformed("connection closed".into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// `Pss` of a process (its private memory plus its share of what it
/// shares, so a sum over processes counts shared memory once), in KiB.
pub fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Threads of a process.
pub fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The number in environment variable `name`, else `default`.
pub fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release orchestrator a bench runs: `CROPS_ORCHESTRATOR_BIN`, else
/// the workspace's `target/release`; a missing one stops the bench with
/// what to build.
pub fn orchestrator_bin() -> PathBuf {
    let bin = std::env::var_os("CROPS_ORCHESTRATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/crops-orchestrator")
        });
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --release -p crops-orchestrator` or set CROPS_ORCHESTRATOR_BIN",
        bin.display()
    );
    bin
}
