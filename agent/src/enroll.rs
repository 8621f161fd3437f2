//! Enrolment: exchange a join token for the worker's credential with one
//! `POST /v1/enroll`, over a minimal HTTP/1.1 client (TCP or TLS, one request
//! per connection, `Connection: close`, answers capped at 64 KiB).

use std::path::PathBuf;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::net::{Endpoint, NetError};
use crate::tls::TlsError;

/// Largest HTTP response the client reads, head and body together.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Bound on the whole exchange: connect, send, read.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("talking to {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} did not answer within {}s", .timeout.as_secs())]
    Timeout { url: String, timeout: Duration },
    #[error("the answer from {url} exceeds {MAX_RESPONSE} bytes")]
    TooLarge { url: String },
    #[error("the answer from {url} is not HTTP: {reason}")]
    BadResponse { url: String, reason: &'static str },
    /// The orchestrator said no; `message` is its own explanation.
    #[error("enrolment refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from {url} ({status}): {source}")]
    BadBody {
        url: String,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the enrolment request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What `crops-agent enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The orchestrator's base URL, `https://host:port` (or `http://` on loopback).
    pub url: String,
    /// The single-use join token (`crops_join_…`). Never logged.
    pub join_token: String,
    /// The worker name to register; the hostname when `None`.
    pub name: Option<String>,
    /// Where to write `worker.json`.
    pub config_path: PathBuf,
    /// Extra trusted CA certificates (PEM); also recorded in the config.
    pub ca_file: Option<PathBuf>,
    /// The HTTP proxy to the orchestrator; `None`: direct.
    pub proxy: Option<crate::proxy::Proxy>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnrollRequest<'a> {
    join_token: &'a str,
    name: &'a str,
    hostname: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnrollResponse {
    worker_id: String,
    /// Absent or `null` for a fleet worker.
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    tenant_name: Option<String>,
    credential: String,
    /// What the orchestrator made this worker; older orchestrators omit it.
    #[serde(default)]
    mode: Option<protocol::worker::Mode>,
}

#[derive(Deserialize)]
struct ApiError {
    error: ApiErrorBody,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    code: String,
    message: String,
}

/// Enrol this machine and write its config. Returns the config written.
pub async fn enroll(opts: &EnrollOptions) -> Result<Config, EnrollError> {
    let endpoint = Endpoint::parse(&opts.url)?.through(opts.proxy.clone());
    let hostname = crate::sysinfo::hostname().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the hostname");
        "unknown".into()
    });
    let name = opts.name.clone().unwrap_or_else(|| hostname.clone());
    let body = serde_json::to_vec(&EnrollRequest {
        join_token: &opts.join_token,
        name: &name,
        hostname: &hostname,
    })
    .map_err(EnrollError::Encode)?;
    let tls = crate::tls::client_config(opts.ca_file.as_deref())?;
    let url = endpoint.http_url("/v1/enroll");
    tracing::info!(%url, %name, "enrolling with orchestrator");
    let response = post_json(&endpoint, &tls, "/v1/enroll", &body).await?;
    if response.status != 201 {
        return Err(refusal(response.status, &response.body));
    }
    let answer: EnrollResponse =
        serde_json::from_slice(&response.body).map_err(|source| EnrollError::BadBody {
            url: url.clone(),
            status: response.status,
            source,
        })?;
    let config = Config {
        worker_id: answer.worker_id,
        tenant_id: answer.tenant_id.unwrap_or_default(),
        tenant_name: answer.tenant_name.unwrap_or_default(),
        mode: answer.mode,
        url: endpoint.agent_url(),
        credential: answer.credential,
        name: Some(name),
        // Absolute, so `run` finds it from any working directory.
        ca_file: opts
            .ca_file
            .as_ref()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
    };
    config.save(&opts.config_path)?;
    tracing::info!(
        worker_id = %config.worker_id,
        tenant = %config.tenant_name,
        path = %opts.config_path.display(),
        "enrolled; config written"
    );
    Ok(config)
}

/// The orchestrator's `{"error":{"code","message"}}`, or the raw body text.
fn refusal(status: u16, body: &[u8]) -> EnrollError {
    let message = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => format!("{} ({})", e.error.message, e.error.code),
        Err(_) => body_text(body),
    };
    EnrollError::Refused { status, message }
}

/// A body as a short printable line, for humans.
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no explanation given)".into();
    }
    let mut s: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `POST path` with a JSON body; reads the whole answer (until the server
/// closes) and parses it.
pub async fn post_json(
    endpoint: &Endpoint,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<Response, EnrollError> {
    let url = endpoint.http_url(path);
    let timed_out = {
        let url = url.clone();
        async move {
            smol::Timer::after(TIMEOUT).await;
            Err(EnrollError::Timeout {
                url,
                timeout: TIMEOUT,
            })
        }
    };
    async {
        let mut stream = endpoint.dial(tls, TIMEOUT).await?;
        let io_err = |source| EnrollError::Io {
            url: url.clone(),
            source,
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: crops-agent/{}\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.authority(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(io_err)?;
        stream.write_all(body).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        let raw = read_capped(&mut stream).await.map_err(|e| match e {
            ReadError::TooLarge => EnrollError::TooLarge { url: url.clone() },
            ReadError::Io(source) => io_err(source),
        })?;
        parse_response(&raw).map_err(|reason| EnrollError::BadResponse {
            url: url.clone(),
            reason,
        })
    }
    .or(timed_out)
    .await
}

enum ReadError {
    TooLarge,
    Io(std::io::Error),
}

async fn read_capped(stream: &mut crate::net::Stream) -> Result<Vec<u8>, ReadError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: what we have is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            return Ok(raw);
        }
        if raw.len() + n > MAX_RESPONSE {
            return Err(ReadError::TooLarge);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Most header lines a response may carry: the orchestrator sends a handful,
/// a proxy in front of it may add a few dozen.
const MAX_HEADERS: usize = 64;

/// Parse a complete HTTP/1.x response: status line and headers by
/// `httparse` (the parser tungstenite already links), then a body bounded by
/// `Content-Length`, decoded from `chunked`, or up to the end.
pub fn parse_response(raw: &[u8]) -> Result<Response, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("no end of headers"),
        Err(httparse::Error::Version) => return Err("status line is not HTTP/1.x"),
        Err(httparse::Error::Status) => return Err("bad status code"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed header line"),
    };
    let status = head
        .code
        .filter(|s| (100..=999).contains(s))
        .ok_or("bad status code")?;
    let mut content_length = None;
    let mut chunked = false;
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            content_length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .to_ascii_lowercase()
                .windows(7)
                .any(|w| w == b"chunked");
        }
    }
    let rest = &raw[head_len..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or("body shorter than Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// A `chunked` body, its chunk-size lines read by `httparse`; trailers ignored.
fn decode_chunked(mut data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut body = Vec::new();
    loop {
        let (line, size) = match httparse::parse_chunk_size(data) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Err("truncated chunk size"),
            Err(httparse::InvalidChunkSize) => return Err("bad chunk size"),
        };
        data = &data[line..];
        if size == 0 {
            return Ok(body);
        }
        let size = usize::try_from(size).map_err(|_| "truncated chunk")?;
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        data = data
            .get(size..)
            .and_then(|d| d.strip_prefix(b"\r\n"))
            .ok_or("chunk without CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_content_length() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}trailing";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"{\"a\":1}");
    }

    #[test]
    fn reads_to_the_end_without_length() {
        let raw = b"HTTP/1.0 400 Bad Request\r\n\r\nnope";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"nope"[..]));
    }

    #[test]
    fn header_names_in_any_case_and_values_in_any_bytes() {
        // A Latin-1 byte in an unrelated header (obs-text) spoils nothing.
        let raw = b"HTTP/1.1 201 Created\r\nServer: caf\xe9\r\nCONTENT-length:7\r\n\r\n{\"a\":1}";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"{\"a\":1}"[..]));
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-ENCODING: Chunked\r\n\r\nA\r\n{\"a\":1234}\r\n0\r\nX-Trailer: t\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"{\"a\":1234}");
    }

    #[test]
    fn rejects_what_is_not_http() {
        for raw in [
            &b"garbage"[..],
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 099 Early\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
            [
                b"HTTP/1.1 200 OK\r\n".as_slice(),
                &b"X: y\r\n".repeat(MAX_HEADERS + 1),
                b"\r\n",
            ]
            .concat()
            .as_slice(),
        ] {
            assert!(
                parse_response(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_refusal_shows_the_servers_message() {
        let e = refusal(
            401,
            br#"{"error":{"code":"unauthorized","message":"join token expired"}}"#,
        );
        assert_eq!(
            e.to_string(),
            "enrolment refused (401): join token expired (unauthorized)"
        );
        let e = refusal(502, b"Bad Gateway\n");
        assert_eq!(e.to_string(), "enrolment refused (502): Bad Gateway");
        let e = refusal(500, b"");
        assert_eq!(
            e.to_string(),
            "enrolment refused (500): (no explanation given)"
        );
    }
}
