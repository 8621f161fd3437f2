//! One connection through the gate ([`super::gate`]): its request head
//! is read, decided by the host name alone, and then only bytes are piped:
//!
//! * `CONNECT host:port` → `200 Connection established` and a tunnel (TLS
//!   end to end, the gate never sees inside);
//! * `METHOD http://host[:port]/path` → the request sent on in origin form
//!   with `Connection: close` (one request a connection, so a client cannot
//!   reuse an allowed connection for a request naming another host) and
//!   the answer piped back;
//! * anything else → `400`; a name not on the list or an IP address →
//!   `403`; a name that resolves only to addresses a container may not
//!   reach → `403`; a name that does not resolve or a host that does not
//!   answer → `502`. Every refusal's body starts `crops egress:` and says
//!   why, and is logged with the container's id.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::Async;

use super::splice::{self, SpliceError};

/// The longest request head the gate reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How long a client may take to send its head, and a host to answer a connect.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a refused client's remaining input is read before closing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// A refusal: the status line and the reason (the body after `crops egress: `).
#[derive(Debug)]
pub struct Refusal {
    status: &'static str,
    reason: String,
}

pub fn refuse(status: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    host: String,
    port: u16,
    /// `None` for CONNECT; the head to send on for plain HTTP.
    forward: Option<Vec<u8>>,
}

pub async fn handle(mut client: Async<TcpStream>, container_id: &str, list: &[String]) {
    let read = future::or(read_head(&mut client), async {
        smol::Timer::after(HEAD_TIMEOUT).await;
        Err(refuse("408 Request Timeout", "no request head in time"))
    });
    let outcome = async {
        let (head, rest) = read.await?;
        let ask = check(parse(&head)?, list)?;
        let upstream = open(&ask).await?;
        Ok((ask, upstream, rest))
    };
    let (ask, mut upstream, rest) = match outcome.await {
        Ok(found) => found,
        Err(r) => return refused(&mut client, container_id, &r).await,
    };
    tracing::debug!(container_id, host = %ask.host, port = ask.port, "egress allowed");
    let first = match &ask.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
        }
        Some(head) => upstream.write_all(head).await,
    };
    if first.is_err() || upstream.write_all(&rest).await.is_err() {
        return;
    }
    pipe(client, upstream).await;
}

/// Log a refusal with the container's id and tell the client why:
/// `crops egress: REASON`.
pub async fn refused(client: &mut Async<TcpStream>, container_id: &str, r: &Refusal) {
    tracing::info!(container_id, status = r.status, reason = %r.reason, "egress refused");
    let body = format!("crops egress: {}\n", r.reason);
    let reply = format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        r.status,
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    // Closed with unread input, a socket resets the connection, and the
    // client may lose the answer: end the write side, then drain a while.
    let _ = client.get_ref().shutdown(std::net::Shutdown::Write);
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(1..) = client.read(&mut buf).await {}
    };
    let timeout = async {
        smol::Timer::after(DRAIN_TIMEOUT).await;
    };
    future::or(drain, timeout).await;
}

/// Copy both ways until both sides are done, closing each write side as
/// its reader ends: spliced ([`super::splice`]), through a buffer where
/// splice is refused.
async fn pipe(client: Async<TcpStream>, upstream: Async<TcpStream>) {
    let up = async {
        if splice::nonblocking(&client, &upstream).await == Err(SpliceError::Unsupported) {
            let _ = splice::copy_nonblocking(&client, &upstream).await;
        }
        let _ = upstream.get_ref().shutdown(std::net::Shutdown::Write);
    };
    let down = async {
        if splice::nonblocking(&upstream, &client).await == Err(SpliceError::Unsupported) {
            let _ = splice::copy_nonblocking(&upstream, &client).await;
        }
        let _ = client.get_ref().shutdown(std::net::Shutdown::Write);
    };
    future::zip(up, down).await;
}

/// The request head (through its blank line) and whatever followed it.
async fn read_head(client: &mut Async<TcpStream>) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| refuse("400 Bad Request", format!("reading the request: {e}")))?;
        if n == 0 {
            return Err(refuse(
                "400 Bad Request",
                "the request ended before its head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(refuse(
                "431 Request Header Fields Too Large",
                "the request head is over 16 KiB",
            ));
        }
    }
}

/// Parse a proxy request head (see the module docs).
fn parse(head: &[u8]) -> Result<Ask, Refusal> {
    let bad = |why: &str| refuse("400 Bad Request", why.to_owned());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad("not an HTTP/1.x request")),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(bad("not an HTTP/1.x request"));
    };
    if method == "CONNECT" {
        let (host, port) =
            split_host_port(target, None).ok_or_else(|| bad("CONNECT needs host:port"))?;
        return Ok(Ask {
            host,
            port,
            forward: None,
        });
    }
    let Some(after) = target.strip_prefix("http://") else {
        return Err(bad(
            "this is an HTTP proxy: send CONNECT host:port, or an absolute http:// URL",
        ));
    };
    let (authority, path) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) =
        split_host_port(authority, Some(80)).ok_or_else(|| bad("a URL without a host"))?;
    let version = if req.version == Some(0) { "1.0" } else { "1.1" };
    let mut out = format!("{method} {path} HTTP/{version}\r\n").into_bytes();
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "connection" | "keep-alive" | "proxy-connection" | "proxy-authorization"
        ) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Ask {
        host,
        port,
        forward: Some(out),
    })
}

/// `host[:port]` or `[v6]:port`; `default` when the port is absent.
fn split_host_port(s: &str, default: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (h, tail) = v6.split_once(']')?;
        (h, tail.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        None => default?,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// The allow-list's verdict on `ask`.
fn check(ask: Ask, list: &[String]) -> Result<Ask, Refusal> {
    if ask.host.parse::<IpAddr>().is_ok() || ask.host.contains(':') {
        return Err(refuse(
            "403 Forbidden",
            format!(
                "{} is an IP address; this container reaches only the domains on its allow-list",
                ask.host
            ),
        ));
    }
    if !protocol::domains::allows(list, &ask.host) {
        return Err(refuse(
            "403 Forbidden",
            format!("{} is not on this container's allow-list", ask.host),
        ));
    }
    Ok(ask)
}

/// Resolve an allowed name and connect to the first address a container
/// may reach.
async fn open(ask: &Ask) -> Result<Async<TcpStream>, Refusal> {
    let addrs = smol::net::resolve((ask.host.as_str(), ask.port))
        .await
        .map_err(|e| {
            refuse(
                "502 Bad Gateway",
                format!("cannot resolve {}: {e}", ask.host),
            )
        })?;
    let usable: Vec<SocketAddr> = addrs.into_iter().filter(|a| reachable(a.ip())).collect();
    if usable.is_empty() {
        return Err(refuse(
            "403 Forbidden",
            format!("{} resolves only to loopback, link-local or other addresses a container may not reach", ask.host),
        ));
    }
    let mut last = String::new();
    for addr in usable {
        let attempt = future::or(
            async {
                Async::<TcpStream>::connect(addr)
                    .await
                    .map_err(|e| e.to_string())
            },
            async {
                smol::Timer::after(CONNECT_TIMEOUT).await;
                Err("timed out".to_owned())
            },
        );
        match attempt.await {
            Ok(stream) => {
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(refuse(
        "502 Bad Gateway",
        format!("cannot connect to {}:{} ({last})", ask.host, ask.port),
    ))
}

/// Whether a container may be connected to `ip`: not the host's loopback,
/// not link-local (cloud metadata lives there), not multicast, broadcast
/// or unspecified.
fn reachable(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<String> {
        vec!["pypi.org".into(), "*.example.com".into()]
    }

    #[test]
    fn connect_asks_for_a_tunnel_and_plain_http_is_sent_on_in_origin_form() {
        let ask = parse(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!(
            (ask.host.as_str(), ask.port, ask.forward.is_none()),
            ("pypi.org", 443, true)
        );
        let ask = parse(
            b"GET http://a.example.com/simple/?q=1 HTTP/1.1\r\nHost: a.example.com\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!((ask.host.as_str(), ask.port), ("a.example.com", 80));
        let sent = String::from_utf8(ask.forward.unwrap()).unwrap();
        assert_eq!(
            sent,
            "GET /simple/?q=1 HTTP/1.1\r\nHost: a.example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn names_off_the_list_and_addresses_are_refused_with_a_reason() {
        let ask = |head: &str| parse(head.as_bytes()).and_then(|a| check(a, &list()));
        assert!(ask("CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").is_ok());
        assert!(ask("CONNECT x.example.com:8443 HTTP/1.1\r\n\r\n").is_ok());
        let no = ask("CONNECT github.com:443 HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(no.status, "403 Forbidden");
        assert!(no
            .reason
            .contains("github.com is not on this container's allow-list"));
        for ip in [
            "CONNECT 1.2.3.4:443 HTTP/1.1\r\n\r\n",
            "CONNECT [::1]:443 HTTP/1.1\r\n\r\n",
            "GET http://10.0.0.1/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                ask(ip).unwrap_err().reason.contains("is an IP address"),
                "{ip}"
            );
        }
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET https://pypi.org/ HTTP/1.1\r\n\r\n",
            "CONNECT pypi.org HTTP/1.1\r\n\r\n",
            "hello\r\n\r\n",
        ] {
            assert_eq!(ask(bad).unwrap_err().status, "400 Bad Request", "{bad}");
        }
    }

    #[test]
    fn loopback_and_link_local_addresses_are_never_reached() {
        for no in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!reachable(no.parse().unwrap()), "{no}");
        }
        for yes in ["192.0.2.2", "10.1.2.3", "2001:db8::1"] {
            assert!(reachable(yes.parse().unwrap()), "{yes}");
        }
    }
}
