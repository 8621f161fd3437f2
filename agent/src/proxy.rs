//! Reaching the orchestrator through an HTTP proxy: `CONNECT host:port`
//! (RFC 9110 §9.3.6), with basic proxy authentication, then TLS end to end
//! to the orchestrator inside the tunnel. The proxy sees the host name and
//! port, never the traffic.
//!
//! Which proxy: `--proxy URL`, else `HTTPS_PROXY`/`https_proxy` for a
//! secure orchestrator URL (`HTTP_PROXY`/`http_proxy` for a plain one), minus
//! the hosts `NO_PROXY`/`no_proxy` lists (`*`, exact names or addresses,
//! `.example.com` or `example.com` for the domain and its subdomains; a
//! `:port` suffix is ignored). The proxy URL is `http://[user:password@]
//! host[:port]` (port 3128 by default; user and password percent-encoded);
//! another scheme (`https://`, `socks5://`) is refused at start, clearly.
//! The credentials go only in `Proxy-Authorization`, never in a log line.

use std::io;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

/// Why a proxy setting is unusable or the tunnel was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy URL {shown:?}: {reason}")]
    BadUrl { shown: String, reason: &'static str },
    #[error("connecting to the proxy {proxy}: {source}")]
    Connect {
        proxy: String,
        #[source]
        source: io::Error,
    },
    #[error("the proxy {proxy} refused the credentials (HTTP {code}): check the user and password in the proxy URL")]
    Auth { proxy: String, code: u16 },
    #[error("the proxy {proxy} refused the tunnel to {target}: {status}")]
    Refused {
        proxy: String,
        target: String,
        status: String,
    },
    #[error("the proxy {proxy} answered something that is not HTTP: {reason}")]
    Garbled { proxy: String, reason: &'static str },
}

/// A proxy to tunnel through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `user:password`, base64, for `Proxy-Authorization: Basic`.
    basic: Option<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("authenticated", &self.basic.is_some())
            .finish()
    }
}

/// The most a proxy's answer to CONNECT may take, headers included.
const MAX_ANSWER: usize = 16 * 1024;

impl Proxy {
    /// Parse `http://[user:password@]host[:port][/]`.
    pub fn parse(url: &str) -> Result<Self, ProxyError> {
        // Never echo a password back: show the URL without its credentials.
        let shown = match url.split_once('@') {
            Some((before, after)) => match before.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://…@{after}"),
                None => format!("…@{after}"),
            },
            None => url.to_owned(),
        };
        let bad = |reason| ProxyError::BadUrl {
            shown: shown.clone(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or(bad("expected http://[user:password@]host[:port]"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// proxies are supported (CONNECT; TLS stays end to end to the orchestrator)"));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let basic = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user).ok_or(bad("bad %-escape in the user"))?;
                let password =
                    percent_decode(password).ok_or(bad("bad %-escape in the password"))?;
                Some(STANDARD.encode(format!("{user}:{password}")))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(bad("unclosed '[' in host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            None => 3128,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(bad("port must be a number from 1 to 65535"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            basic,
        })
    }

    /// `host:port` with IPv6 brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// A TCP stream to `target` (`host:port`) through this proxy: CONNECT,
    /// and the proxy's `2xx`. Whatever the proxy answers otherwise is the error.
    pub async fn tunnel(&self, target: &str) -> Result<TcpStream, ProxyError> {
        let proxy = self.authority();
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ProxyError::Connect {
                proxy: proxy.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut ask = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(basic) = &self.basic {
            ask.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        ask.push_str("\r\n");
        let io = |source| ProxyError::Connect {
            proxy: proxy.clone(),
            source,
        };
        tcp.write_all(ask.as_bytes()).await.map_err(io)?;
        // Read the answer's head byte by byte: nothing of the tunnel is read ahead.
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_ANSWER {
                return Err(ProxyError::Garbled {
                    proxy,
                    reason: "an answer longer than 16 KiB",
                });
            }
            let n = tcp.read(&mut byte).await.map_err(io)?;
            if n == 0 {
                return Err(ProxyError::Garbled {
                    proxy,
                    reason: "it closed the connection before answering",
                });
            }
            head.push(byte[0]);
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut answer = httparse::Response::new(&mut headers);
        let parsed = answer.parse(&head).ok();
        let code = parsed.and(answer.code).ok_or_else(|| ProxyError::Garbled {
            proxy: proxy.clone(),
            reason: "no HTTP status line",
        })?;
        let status_line = format!("{code} {}", answer.reason.unwrap_or_default());
        match code {
            200..=299 => Ok(tcp),
            // 407 is the standard answer; tinyproxy answers 401.
            401 | 407 => Err(ProxyError::Auth { proxy, code }),
            _ => Err(ProxyError::Refused {
                proxy,
                target: target.to_owned(),
                status: status_line,
            }),
        }
    }
}

/// The proxy for an orchestrator at `host`: `given` (`--proxy`), else the
/// environment's (`lookup` reads a variable), unless `NO_PROXY` names the host.
pub fn choose(
    given: Option<&str>,
    secure: bool,
    host: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ProxyError> {
    let var = |upper: &str| {
        lookup(upper)
            .or_else(|| lookup(&upper.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let url = match given {
        Some(url) => url.to_owned(),
        None => {
            let from_env = if secure {
                var("HTTPS_PROXY")
            } else {
                var("HTTP_PROXY")
            };
            let Some(url) = from_env else {
                return Ok(None);
            };
            if var("NO_PROXY").is_some_and(|list| bypassed(&list, host)) {
                return Ok(None);
            }
            url
        }
    };
    Proxy::parse(url.trim()).map(Some)
}

/// Whether the `NO_PROXY` list names `host`.
pub fn bypassed(list: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    list.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        // An entry's port (`example.com:443`) is ignored; IPv6 stays whole.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => entry,
        };
        let entry = entry.trim_start_matches('[').trim_end_matches(']');
        let domain = entry.trim_start_matches("*.").trim_start_matches('.');
        !domain.is_empty()
            && (host.eq_ignore_ascii_case(domain)
                || (host.len() > domain.len()
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'))
    })
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls_and_hides_the_password_in_errors() {
        let p = Proxy::parse("http://proxy.corp:8080").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.basic.is_none()),
            ("proxy.corp", 8080, true)
        );
        let p = Proxy::parse("http://ann:s%40cret@[fd00::1]/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("fd00::1", 3128));
        assert_eq!(
            p.basic.as_deref(),
            Some(STANDARD.encode("ann:s@cret").as_str())
        );
        assert!(!format!("{p:?}").contains(&STANDARD.encode("ann:s@cret")));
        for bad in [
            "https://proxy:443",
            "socks5://proxy:1080",
            "proxy:3128",
            "http://proxy:0",
            "http://proxy:port",
            "http://proxy/path",
            "http://:3128",
            "http://u:%zz@proxy",
        ] {
            let err = Proxy::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("%zz"), "{err}");
        }
        let err = Proxy::parse("https://ann:hunter2@proxy")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only http://") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_and_no_proxy_choose() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let set = env(&[
            ("https_proxy", "http://p:3128"),
            ("NO_PROXY", "localhost, .lan,10.0.0.7:443"),
        ]);
        assert_eq!(
            choose(None, true, "orch.example", set)
                .unwrap()
                .unwrap()
                .host,
            "p"
        );
        assert!(
            choose(None, false, "orch.example", set).unwrap().is_none(),
            "http_proxy unset"
        );
        for direct in ["localhost", "nas.lan", "LAN", "10.0.0.7"] {
            assert!(
                choose(None, true, direct, set).unwrap().is_none(),
                "{direct}"
            );
        }
        assert!(choose(None, true, "evillan", set).unwrap().is_some());
        // --proxy wins, NO_PROXY or not.
        let given = choose(Some("http://q:1"), true, "localhost", set)
            .unwrap()
            .unwrap();
        assert_eq!((given.host.as_str(), given.port), ("q", 1));
        assert!(bypassed("*", "anything"));
        assert!(bypassed("[::1]", "::1"));
        assert!(!bypassed("", "orch"));
    }
}
