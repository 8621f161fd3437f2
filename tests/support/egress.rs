//! The far side of the egress tests and bench: an HTTP and an HTTPS server
//! on this host's own (non-loopback) address, known under made-up names
//! below `egress.crops.test` that this machine's `/etc/hosts` maps to it.
//!
//! Every name points at the same address, so what a container reaches is
//! decided by name alone. `loop.egress.crops.test` points at 127.0.0.1,
//! which the gate never connects to. The hosts block is written once per
//! run between marker lines, replacing any earlier one (the address may
//! have changed); nothing else of the file is touched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use crate::fleet::Fleet;
use crate::harness::TestDir;

pub const ALLOWED: &str = "allowed.egress.crops.test";
pub const WILD: &str = "api.wild.egress.crops.test";
pub const OTHER: &str = "other.egress.crops.test";
pub const LOOP: &str = "loop.egress.crops.test";
const BEGIN: &str = "# crops egress tests: begin";
const END: &str = "# crops egress tests: end";

/// This host's first IPv4 address that is up and not loopback.
pub fn host_ip() -> Ipv4Addr {
    static IP: OnceLock<Ipv4Addr> = OnceLock::new();
    *IP.get_or_init(|| {
        nix::ifaddrs::getifaddrs()
            .expect("getifaddrs")
            .filter(|i| i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
            .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
            .find(|ip| !ip.is_loopback())
            .expect("this host has no non-loopback IPv4 address for the egress servers")
    })
}

/// Map the test names in `/etc/hosts` (once per run).
pub fn map_names() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let ip = host_ip();
        let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            match line {
                BEGIN => inside = true,
                END => inside = false,
                _ if !inside => {
                    out.push_str(line);
                    out.push('\n');
                }
                _ => {}
            }
        }
        out.push_str(&format!(
            "{BEGIN}\n{ip} {ALLOWED} {WILD} {OTHER}\n127.0.0.1 {LOOP}\n{END}\n"
        ));
        // In place: /etc/hosts is often a bind mount that cannot be renamed over.
        std::fs::write("/etc/hosts", out)
            .expect("writing /etc/hosts (the egress tests run as root)");
    });
}

/// A server answering every request with `hello <Host header>` (or, for
/// `/bytes/N`, N zero bytes), on [`host_ip`]; plain HTTP, or HTTPS with a
/// certificate for every test name.
pub struct Server {
    pub port: u16,
    /// The CA that signed the HTTPS server's certificate (PEM).
    pub ca_pem: String,
}

impl Server {
    pub fn http() -> Self {
        let listener = TcpListener::bind((host_ip(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                std::thread::spawn(move || {
                    let _ = answer(conn.try_clone().unwrap(), conn);
                });
            }
        });
        Server {
            port,
            ca_pem: String::new(),
        }
    }

    pub fn https(dir: &TestDir) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Crops egress test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names = [ALLOWED, WILD, OTHER, LOOP].map(str::to_owned).to_vec();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let ca_pem = ca.pem();
        let _ = std::fs::write(dir.path("egress-ca.pem"), &ca_pem);
        let certs = vec![leaf.der().clone()];
        let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind((host_ip(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                let config = config.clone();
                std::thread::spawn(move || {
                    let tls = rustls::ServerConnection::new(config).unwrap();
                    let stream = rustls::StreamOwned::new(tls, conn);
                    let shared = Arc::new(std::sync::Mutex::new(stream));
                    let _ = answer(Locked(shared.clone()), Locked(shared));
                });
            }
        });
        Server { port, ca_pem }
    }
}

/// Serve requests on one connection (keep-alive) until it closes.
fn answer(reader: impl Read, mut writer: impl Write) -> std::io::Result<()> {
    let mut reader = BufReader::new(reader);
    loop {
        let mut host = String::new();
        let mut line = String::new();
        let mut size = None;
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if first {
                first = false;
                let path = line.split_whitespace().nth(1).unwrap_or_default();
                size = path
                    .strip_prefix("/bytes/")
                    .and_then(|n| n.parse::<usize>().ok());
                continue;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("host") {
                    host = v.trim().split(':').next().unwrap_or_default().to_owned();
                }
            }
        }
        if let Some(size) = size {
            write!(writer, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n")?;
            let chunk = [0u8; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                writer.write_all(&chunk[..n])?;
                left -= n;
            }
            writer.flush()?;
            continue;
        }
        let body = format!("hello {host}\n");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
    }
}

/// A TLS stream shared by its reading and writing halves.
struct Locked(Arc<std::sync::Mutex<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>);

impl Read for Locked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().read(buf)
    }
}

impl Write for Locked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// The curl test image (`tests/podman/image.sh` builds it).
pub fn curl_image() -> String {
    std::env::var("CROPS_CURL_IMAGE").unwrap_or_else(|_| "localhost/crops-test/curl:latest".into())
}

/// Create and start a container of the curl image (`extra` adds or
/// overrides fields of the create) named `name` in `fleet`'s tenant, with
/// `ca_pem` written to `/workspace/ca.pem`; its id.
pub fn curl_container(fleet: &Fleet, name: &str, extra: Value, ca_pem: &str) -> String {
    let mut body = json!({ "image": curl_image(), "command": ["sleep", "3600"] });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let id = fleet.running(name, body);
    let setup = fleet.api.post(
        &format!("/v1/containers/{id}/setup"),
        json!({ "files": [{ "path": "ca.pem", "content": ca_pem }] }),
    );
    assert_eq!(setup.status, 200, "{setup:?}");
    id
}
