//! A minimal HTTP/1.1 JSON client of the orchestrator's API, for the admin
//! subcommands of the CLI: one connection per request, optional TLS.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use smol_hyper::rt::FuturesIo;

use orchestrator::tls::{self, TlsError};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid orchestrator URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid server name {host:?} for TLS")]
    ServerName { host: String },
    #[error("TLS handshake with {authority} failed: {source}")]
    Handshake {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the orchestrator answered {status}: {code}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("the orchestrator answered {status} with a body that is not JSON: {source}")]
    NotJson {
        status: StatusCode,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the orchestrator is and how to talk to it.
pub struct Client {
    tls: Option<futures_rustls::TlsConnector>,
    host: String,
    port: u16,
    authority: String,
    admin_token: Option<String>,
}

impl Client {
    /// A client of `url` (`http://host[:port]` or `https://host[:port]`).
    pub fn new(
        url: &str,
        admin_token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let bad = |reason| ClientError::Url {
            url: url.to_owned(),
            reason,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        let (host, port) = split_authority(authority).ok_or_else(|| bad("has an invalid port"))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            tls: if tls {
                Some(tls::connector(ca_file)?)
            } else {
                None
            },
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            admin_token,
        })
    }

    /// Send one request and read its JSON answer; an error status becomes
    /// [`ClientError::Api`] with the server's code and message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let body = body.map(|json| (Bytes::from(json.to_string()), "application/json"));
        self.call_raw(method, path, body).await
    }

    /// [`Client::call`] with a raw body of the given content type.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<serde_json::Value, ClientError> {
        let tcp = smol::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        match &self.tls {
            None => self.exchange(tcp, method, path, body).await,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|_| {
                    ClientError::ServerName {
                        host: self.host.clone(),
                    }
                })?;
                let stream = connector.connect(name, tcp).await.map_err(|source| {
                    ClientError::Handshake {
                        authority: self.authority.clone(),
                        source,
                    }
                })?;
                self.exchange(stream, method, path, body).await
            }
        }
    }

    async fn exchange<IO>(
        &self,
        io: IO,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<serde_json::Value, ClientError>
    where
        IO: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| ClientError::Http {
            authority: self.authority.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(FuturesIo::new(io))
            .await
            .map_err(http)?;
        let driver = smol::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "client connection ended with an error");
            }
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.authority.as_str());
        if let Some(token) = &self.admin_token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|e| ClientError::Request(e.into()))?;
            builder = builder.header(AUTHORIZATION, value);
        }
        let payload = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(payload))
            .map_err(ClientError::Request)?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
        drop(sender);
        driver.cancel().await;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|source| ClientError::NotJson { status, source })?;
        if status.is_success() {
            return Ok(value);
        }
        let field = |name: &str| value["error"][name].as_str().unwrap_or("(none)").to_owned();
        Err(ClientError::Api {
            status,
            code: field("code"),
            message: field("message"),
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`. `None` if the port is bad.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(split_authority("a.b:8080"), Some(("a.b", Some(8080))));
        assert_eq!(split_authority("a.b"), Some(("a.b", None)));
        assert_eq!(split_authority("[::1]:9"), Some(("::1", Some(9))));
        assert_eq!(split_authority("[::1]"), Some(("::1", None)));
        assert_eq!(split_authority("a:b"), None);
        assert!(Client::new("ftp://x", None, None).is_err());
        assert!(Client::new("http://", None, None).is_err());
        let c = Client::new("http://127.0.0.1:7/", None, None).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 7));
    }
}
