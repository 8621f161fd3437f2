//! A git repository served over HTTPS ("dumb" protocol: static files after
//! `git update-server-info`), demanding a token, for container.setup tests.
//! It records every Authorization header it saw, so a test can check the
//! token travelled and check where else it did not.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::{run_ok, Tls};

pub struct GitServer {
    pub url: String,
    /// The commit at the tip of `main`.
    pub head: String,
    pub seen_auth: Arc<Mutex<Vec<String>>>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com");
    run_ok(c)
}

impl GitServer {
    /// A repository holding `README.md`, served at `https://127.0.0.1:PORT/app.git`,
    /// answering 401 unless the request carries Basic credentials with `token`.
    pub fn start(dir: &Path, tls: &Tls, token: &str) -> Self {
        let work = dir.join("src-repo");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README.md"), "hello from the repo\n").unwrap();
        git(&work, &["add", "README.md"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let head = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
        let bare = dir.join("www/app.git");
        git(
            dir,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        git(&bare, &["update-server-info"]);

        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&tls.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = dir.join("www");
        let want = format!(
            "Basic {}",
            STANDARD.encode(format!("x-access-token:{token}"))
        );
        let seen_auth = Arc::new(Mutex::new(Vec::new()));
        let seen = seen_auth.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let (config, root, want, seen) =
                    (config.clone(), root.clone(), want.clone(), seen.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let _ = serve_one(&mut tls, &root, &want, &seen);
                });
            }
        });
        GitServer {
            url: format!("https://127.0.0.1:{port}/app.git"),
            head,
            seen_auth,
        }
    }
}

fn serve_one<S: std::io::Read + Write>(
    stream: &mut S,
    root: &Path,
    want: &str,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    drop(reader);
    if let Some(a) = &auth {
        seen.lock().unwrap().push(a.clone());
    }
    let path = path.split('?').next().unwrap_or("/");
    let file: PathBuf = root.join(path.trim_start_matches('/'));
    let (status, body) = if auth.as_deref() != Some(want) {
        (
            "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"",
            Vec::new(),
        )
    } else if path.contains("..") || !file.is_file() {
        ("404 Not Found", Vec::new())
    } else {
        ("200 OK", std::fs::read(&file)?)
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}
