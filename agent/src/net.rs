//! Orchestrator addresses and dialing: parse `http(s)://` and `ws(s)://` URLs,
//! derive the agent socket URL, and open TCP, directly or through an HTTP
//! proxy's tunnel (`crate::proxy`), plus TLS for the secure schemes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use smol::net::TcpStream;

use crate::proxy::{Proxy, ProxyError};

/// Why an address could not be parsed or reached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr}: no answer within {}s", .timeout.as_secs())]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("{host:?} is not a valid TLS server name")]
    ServerName { host: String },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

/// The socket URL `run` dials, from the URL the operator gave (flag,
/// `CROPS_URL` or the config): the API's base URL `https://host[:port]`
/// (with or without a trailing `/`; `http://` for loopback development)
/// becomes its [`Endpoint::agent_url`], `wss://host:port/v1/agent`, as
/// `enroll` derives it; a `wss://`/`ws://` URL is the socket itself (with
/// no path, `/v1/agent` is added). Anything else is refused here, at
/// start, rather than retried: an unknown scheme, or an `https://` URL with
/// a path or query other than `/v1/agent` (the agent would not know which
/// part is the base).
pub fn socket_url(url: &str) -> Result<String, NetError> {
    let endpoint = Endpoint::parse(url)?;
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let is_http = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
    match endpoint.path.as_str() {
        "/" => Ok(endpoint.agent_url()),
        path if path == protocol::AGENT_PATH => Ok(endpoint.agent_url()),
        _ if is_http => Err(NetError::BadUrl {
            url: url.to_owned(),
            reason: "an https:// URL must be the orchestrator's base URL, https://host:port \
                     (the agent then dials wss://host:port/v1/agent)",
        }),
        _ => Ok(url.to_owned()),
    }
}

/// A parsed orchestrator URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https`/`wss` (TLS) or `http`/`ws` (plain, for loopback development).
    pub secure: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/` (just `/` when the URL had none).
    pub path: String,
    /// The HTTP proxy to tunnel through (`crate::proxy`); `None`: direct.
    pub via: Option<Proxy>,
}

impl Endpoint {
    /// Parse `scheme://host[:port][/path]` where scheme is http, https, ws or wss.
    pub fn parse(url: &str) -> Result<Self, NetError> {
        let bad = |reason| NetError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(bad("expected scheme://host[:port]"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => true,
            "http" | "ws" => false,
            _ => return Err(bad("scheme must be https, http, wss or ws")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed '[' in host"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or(bad("junk after ']'"))?),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| bad("port must be a number from 1 to 65535"))?,
            None if secure => 443,
            None => 80,
        };
        if port == 0 {
            return Err(bad("port must be a number from 1 to 65535"));
        }
        Ok(Self {
            secure,
            host: host.to_owned(),
            port,
            path,
            via: None,
        })
    }

    /// This endpoint, reached through `proxy` (`None`: directly).
    pub fn through(self, proxy: Option<Proxy>) -> Self {
        Self { via: proxy, ..self }
    }

    /// `host:port` with IPv6 brackets, as it goes in a `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// This endpoint with `path`, as an `https://`/`http://` URL.
    pub fn http_url(&self, path: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.authority())
    }

    /// This endpoint with `path`, as a `wss://`/`ws://` URL.
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.authority())
    }

    /// The agent socket of the orchestrator at this address:
    /// `wss://host:port/v1/agent` (`ws://` for a plain endpoint). What
    /// `enroll` writes in the config, and what `run` derives from a base URL.
    pub fn agent_url(&self) -> String {
        self.ws_url(protocol::AGENT_PATH)
    }

    /// Whether the host is loopback (where plain http/ws is reasonable).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Open TCP to this endpoint, then TLS with `tls` when it is secure.
    /// The whole dial (resolve, connect, handshake) is bounded by `timeout`.
    pub async fn dial(
        &self,
        tls: &Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Stream, NetError> {
        let addr = self.authority();
        let timed_out = {
            let addr = addr.clone();
            async move {
                smol::Timer::after(timeout).await;
                Err(NetError::ConnectTimeout { addr, timeout })
            }
        };
        self.dial_inner(tls, addr).or(timed_out).await
    }

    async fn dial_inner(&self, tls: &Arc<ClientConfig>, addr: String) -> Result<Stream, NetError> {
        if !self.secure && !self.is_loopback() {
            tracing::warn!(%addr, "using an unencrypted connection to a non-loopback orchestrator");
        }
        let tcp = match &self.via {
            Some(proxy) => proxy.tunnel(&addr).await?,
            None => TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|source| NetError::Connect {
                    addr: addr.clone(),
                    source,
                })?,
        };
        let _ = tcp.set_nodelay(true);
        if !self.secure {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|_| NetError::ServerName {
            host: self.host.clone(),
        })?;
        let tls = futures_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|source| NetError::Tls { addr, source })?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// Hex SHA-256 of a DER certificate (`crate::gateway` compares them).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The proxy for the orchestrator at `url` (any URL `run` or `enroll`
/// takes): `given` (`--proxy`), else the environment's, as
/// [`crate::proxy::choose`] says. A URL that does not parse gets none
/// here: `run` and `enroll` refuse it themselves.
pub fn proxy_for(
    given: Option<&str>,
    url: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ProxyError> {
    match Endpoint::parse(url) {
        Ok(endpoint) => crate::proxy::choose(given, endpoint.secure, &endpoint.host, lookup),
        Err(_) => given.map(Proxy::parse).transpose(),
    }
}

/// A connection to the orchestrator: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The SHA-256 of the leaf certificate this connection was shown
    /// (`crate::gateway`); `None` without TLS.
    pub fn certificate_sha256(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| fingerprint(leaf.as_ref())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_the_usual_shapes() {
        let e = ep("https://orch.example:8443");
        assert_eq!(
            (e.secure, e.host.as_str(), e.port, e.path.as_str()),
            (true, "orch.example", 8443, "/")
        );
        let e = ep("http://127.0.0.1:8080/");
        assert_eq!((e.secure, e.port), (false, 8080));
        let e = ep("wss://orch.example/v1/agent");
        assert_eq!((e.port, e.path.as_str()), (443, "/v1/agent"));
        let e = ep("ws://localhost?x=1");
        assert_eq!((e.port, e.path.as_str()), (80, "/?x=1"));
        let e = ep("https://[::1]:9000/base");
        assert_eq!(
            (e.host.as_str(), e.port, e.authority()),
            ("::1", 9000, "[::1]:9000".into())
        );
    }

    #[test]
    fn derives_the_agent_socket_url() {
        assert_eq!(
            ep("https://orch:8443").ws_url("/v1/agent"),
            "wss://orch:8443/v1/agent"
        );
        assert_eq!(
            ep("http://127.0.0.1:80").ws_url("/v1/agent"),
            "ws://127.0.0.1:80/v1/agent"
        );
        assert_eq!(
            ep("https://orch").http_url("/v1/enroll"),
            "https://orch:443/v1/enroll"
        );
    }

    #[test]
    fn rejects_what_it_cannot_dial() {
        for url in [
            "orch:8443",
            "ftp://orch",
            "https://",
            "https://orch:0",
            "https://orch:99999",
            "https://orch:port",
            "https://user:pw@orch",
            "https://[::1",
            "https://[::1]x",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url} parsed");
        }
    }

    #[test]
    fn the_socket_url_comes_from_a_base_url_as_enroll_derives_it() {
        for (given, socket) in [
            ("https://orch:8443", "wss://orch:8443/v1/agent"),
            ("https://orch:8443/", "wss://orch:8443/v1/agent"),
            ("HTTPS://orch", "wss://orch:443/v1/agent"),
            ("https://orch:8443/v1/agent", "wss://orch:8443/v1/agent"),
            ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/agent"),
            ("https://[::1]:9000", "wss://[::1]:9000/v1/agent"),
            ("wss://orch:8443", "wss://orch:8443/v1/agent"),
            ("wss://orch:8443/v1/agent", "wss://orch:8443/v1/agent"),
            ("ws://127.0.0.1:1/v1/agent", "ws://127.0.0.1:1/v1/agent"),
            (
                "wss://proxy.example/crops/v1/agent",
                "wss://proxy.example/crops/v1/agent",
            ),
        ] {
            assert_eq!(socket_url(given).unwrap(), socket, "{given}");
        }
        // The very code enroll writes into the config.
        assert_eq!(
            ep("https://orch:8443/").agent_url(),
            "wss://orch:8443/v1/agent"
        );
    }

    #[test]
    fn a_url_the_agent_cannot_use_is_refused_with_the_reason() {
        for url in [
            "https://orch:8443/api",
            "https://orch:8443/?x=1",
            "ftp://orch",
            "orch:8443",
        ] {
            let err = socket_url(url).unwrap_err().to_string();
            assert!(err.contains(url), "{err}");
        }
        let err = socket_url("https://orch:8443/api").unwrap_err().to_string();
        assert!(err.contains("base URL, https://host:port"), "{err}");
    }

    #[test]
    fn fingerprints_are_hex_sha256() {
        assert_eq!(fingerprint(b"abc").len(), 64);
        assert!(fingerprint(b"abc").starts_with("ba7816bf"));
    }

    #[test]
    fn knows_loopback() {
        assert!(ep("http://localhost:1").is_loopback());
        assert!(ep("http://127.0.0.1:1").is_loopback());
        assert!(ep("http://[::1]:1").is_loopback());
        assert!(!ep("http://10.0.0.2:1").is_loopback());
    }
}
