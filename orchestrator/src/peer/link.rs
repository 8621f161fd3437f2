//! One replica's HTTP/1.1 connections to another: kept alive and reused,
//! so a relayed command costs a round trip on an open connection, not a
//! TCP and TLS handshake. Any number of requests may be in flight; each
//! takes an idle connection or opens one, and gives it back once its
//! answer is read.
//!
//! A request written on a pooled connection that the peer had just closed
//! is sent again on a fresh one only when hyper hands it back unsent: a
//! command is never written twice.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_lite::FutureExt;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smol_hyper::rt::FuturesIo;

/// Idle connections kept per peer; more are closed once answered.
const MAX_IDLE: usize = 64;

/// Opening a connection to a peer (TCP and TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The most a peer's answer may hold. A relayed command's answer is one
/// reply (at most one protocol message, as the relay's own request is)
/// and the events before it (at most `MAX_EVENT_BYTES`, and a separator
/// each), with room for the few fields around them; anything longer is no
/// answer of a replica of this store, and is not read on.
pub(crate) const MAX_ANSWER: usize =
    protocol::MAX_TEXT_FRAME + super::MAX_EVENT_BYTES + super::MAX_EVENT_BYTES / 8 + 64 * 1024;

/// Why a call to a peer replica failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("replica address {url:?} is not http(s)://host:port: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot connect to replica {authority}: {detail}")]
    Connect { authority: String, detail: String },
    #[error("HTTP exchange with replica {authority} failed: {source}")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("replica {authority} did not answer within {after:?}")]
    Timeout { authority: String, after: Duration },
    #[error("replica {authority} answered {status}: {body}")]
    Status {
        authority: String,
        status: StatusCode,
        body: String,
    },
    #[error("replica {authority} answered with more than {limit} bytes")]
    TooBig { authority: String, limit: usize },
    #[error("replica {authority} answered with a body that does not decode: {source}")]
    Decode {
        authority: String,
        #[source]
        source: serde_json::Error,
    },
}

type Sender = SendRequest<Full<Bytes>>;

/// A connection to a peer: TCP, or TLS over it.
pub(crate) trait Io:
    futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send
{
}

impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send> Io for T {}

/// The connections to one peer, by its advertised URL.
pub(crate) struct Link {
    host: String,
    port: u16,
    authority: String,
    tls: Option<futures_rustls::TlsConnector>,
    auth: HeaderValue,
    idle: Mutex<Vec<Sender>>,
}

impl Link {
    /// A link to `url` (`http://host:port` or `https://host:port`),
    /// presenting `auth` (an `Authorization` value); `connector` for https.
    pub(crate) fn new(
        url: &str,
        connector: &futures_rustls::TlsConnector,
        auth: HeaderValue,
    ) -> Result<Self, LinkError> {
        let bad = |reason| LinkError::Url {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (Some(connector.clone()), rest),
            (None, Some(rest)) => (None, rest),
            (None, None) => return Err(bad("the scheme is neither http nor https")),
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || authority.contains('/') {
            return Err(bad("no host, or a path"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            tls,
            auth,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// POST `body` as JSON to `path` and read the JSON answer, waiting at
    /// most `timeout` for it. Any status but 200 is [`LinkError::Status`];
    /// an answer over [`MAX_ANSWER`] bytes is [`LinkError::TooBig`].
    pub(crate) async fn post<T: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
        timeout: Duration,
    ) -> Result<R, LinkError> {
        let payload =
            Bytes::from(
                serde_json::to_vec(body).map_err(|source| LinkError::Decode {
                    authority: self.authority.clone(),
                    source,
                })?,
            );
        let exchange = self.exchange(path, payload);
        let late = async {
            smol::Timer::after(timeout).await;
            Err(LinkError::Timeout {
                authority: self.authority.clone(),
                after: timeout,
            })
        };
        let (status, bytes) = exchange.or(late).await?;
        if status != StatusCode::OK {
            return Err(LinkError::Status {
                authority: self.authority.clone(),
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| LinkError::Decode {
            authority: self.authority.clone(),
            source,
        })
    }

    async fn exchange(&self, path: &str, payload: Bytes) -> Result<(StatusCode, Bytes), LinkError> {
        let http = |source| LinkError::Http {
            authority: self.authority.clone(),
            source,
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.authority.as_str())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|_| LinkError::Url {
                url: path.to_owned(),
                reason: "not a valid request path",
            })?;
        loop {
            let (mut sender, pooled) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let read = Limited::new(resp.into_body(), MAX_ANSWER).collect().await;
                    // Over the bound: the connection, mid-answer, is dropped.
                    let bytes = match read {
                        Ok(collected) => collected.to_bytes(),
                        Err(error) => match error.downcast::<hyper::Error>() {
                            Ok(error) => return Err(http(*error)),
                            Err(_) => {
                                return Err(LinkError::TooBig {
                                    authority: self.authority.clone(),
                                    limit: MAX_ANSWER,
                                })
                            }
                        },
                    };
                    self.give_back(sender);
                    return Ok((status, bytes));
                }
                Err(mut error) => match error.take_message() {
                    // Never written: the pooled connection had closed.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(http(error.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.is_ready() && idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<Sender, LinkError> {
        let io = self.open().await?;
        self.handshake(io).await
    }

    /// A new connection to the peer (TCP, and TLS for https), verified as
    /// the pooled ones are: for a stream of its own (a relayed terminal).
    pub(super) async fn open(&self) -> Result<Box<dyn Io>, LinkError> {
        let failed = |detail: String| LinkError::Connect {
            authority: self.authority.clone(),
            detail,
        };
        let tcp = smol::net::TcpStream::connect((self.host.as_str(), self.port))
            .or(async {
                smol::Timer::after(CONNECT_TIMEOUT).await;
                Err(std::io::ErrorKind::TimedOut.into())
            })
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| failed(format!("{:?} is not a TLS server name", self.host)))?;
                let stream = connector
                    .connect(name, tcp)
                    .or(async {
                        smol::Timer::after(CONNECT_TIMEOUT).await;
                        Err(std::io::ErrorKind::TimedOut.into())
                    })
                    .await
                    .map_err(|e| failed(format!("TLS handshake: {e}")))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// The peer's `host:port`.
    pub(super) fn authority(&self) -> &str {
        &self.authority
    }

    /// The `Authorization` value this link presents.
    pub(super) fn auth(&self) -> &HeaderValue {
        &self.auth
    }

    async fn handshake<IO>(&self, io: IO) -> Result<Sender, LinkError>
    where
        IO: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(io))
            .await
            .map_err(|source| LinkError::Http {
                authority: self.authority.clone(),
                source,
            })?;
        // The connection's driver lives as long as the connection: it ends
        // when the last sender is dropped or the peer closes.
        smol::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "peer connection ended with an error");
            }
        })
        .detach();
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(url: &str) -> Result<Link, LinkError> {
        let connector = crate::tls::connector(None).unwrap();
        Link::new(url, &connector, HeaderValue::from_static("Bearer x"))
    }

    #[test]
    fn an_address_is_a_scheme_a_host_and_a_port() {
        let l = link("https://10.0.0.2:8443").unwrap();
        assert_eq!(
            (l.host.as_str(), l.port, l.tls.is_some()),
            ("10.0.0.2", 8443, true)
        );
        let l = link("http://[::1]:7000/").unwrap();
        assert_eq!(
            (l.host.as_str(), l.port, l.tls.is_some()),
            ("::1", 7000, false)
        );
        for bad in [
            "10.0.0.2:8443",
            "https://host",
            "https://host:x",
            "https://:1",
            "https://h:1/p",
        ] {
            assert!(link(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_replica_that_is_not_there_is_a_connect_error() {
        // A port nothing listens on: bound, then dropped.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let l = link(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = smol::block_on(l.post::<_, serde_json::Value>(
            "/x",
            &serde_json::json!({}),
            Duration::from_secs(5),
        ))
        .unwrap_err();
        assert!(matches!(err, LinkError::Connect { .. }), "{err}");
    }
}
