//! One WebSocket to the orchestrator, spoken in protocol terms: `open` dials
//! and upgrades with the Bearer credential (a refused upgrade becomes a
//! readable reason), `read_msg` yields decoded envelopes, binary frames and
//! control events, `write_msg` sends an envelope as one text message.

use std::time::Duration;

use std::sync::Arc;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncReadExt, FutureExt, StreamExt};
use protocol::{DecodeError, Envelope};

use crate::net::{Endpoint, NetError, Stream};

/// Why the socket could not be opened or failed. Carries what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Dial(#[from] NetError),
    #[error("WebSocket handshake with {url} failed: {source}")]
    Handshake {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    #[error("WebSocket handshake with {url}: no answer within {}s", .timeout.as_secs())]
    HandshakeTimeout { url: String, timeout: Duration },
    /// The HTTP upgrade was answered with something other than 101.
    #[error("orchestrator refused the connection: {status}: {reason}")]
    Refused {
        /// Code and reason phrase, e.g. `401 Unauthorized`.
        status: String,
        /// The orchestrator's explanation from the response body.
        reason: String,
    },
    #[error("the credential holds characters that cannot go in an HTTP header")]
    BadCredential,
    #[error("reading from the orchestrator: {0}")]
    Read(#[source] tungstenite::Error),
    #[error("sending {what} to the orchestrator: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: tungstenite::Error,
    },
}

/// What one read produced.
#[derive(Debug)]
pub enum Incoming {
    /// A text message, decoded (or the reason it could not be).
    Envelope(Result<Envelope, DecodeError>),
    /// A binary message (terminal bytes), not yet decoded.
    Binary(Vec<u8>),
    /// A ping or pong: proof of life, nothing to do (pongs are automatic).
    Control,
    /// The orchestrator sent a message over [`protocol::MAX_TEXT_FRAME`]:
    /// the reader stopped inside it, so the socket is good only for
    /// [`Connection::refuse_too_big`] now.
    TooBig(String),
    /// The orchestrator closed: its code and reason, if it gave them.
    Close(Option<(u16, String)>),
    /// The socket ended without a close frame.
    Ended,
}

/// The WebSocket limits both sides agree on: [`protocol::MAX_TEXT_FRAME`].
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_TEXT_FRAME))
        .max_frame_size(Some(protocol::MAX_TEXT_FRAME))
}

/// An established agent socket.
pub struct Connection {
    ws: WebSocketStream<Stream>,
    /// The leaf certificate this connection was shown (`crate::gateway`).
    pub certificate_sha256: Option<String>,
}

impl Connection {
    /// Dial `endpoint` and upgrade to the WebSocket at `url`, presenting
    /// `credential` as a Bearer token. The dial and the upgrade are each
    /// bounded by `timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        url: &str,
        tls: &Arc<rustls::ClientConfig>,
        credential: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectionError> {
        let stream = endpoint.dial(tls, timeout).await?;
        let certificate_sha256 = stream.certificate_sha256();
        let mut request =
            url.into_client_request()
                .map_err(|source| ConnectionError::Handshake {
                    url: url.to_owned(),
                    source,
                })?;
        let bearer = HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| ConnectionError::BadCredential)?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let handshake = async {
            async_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .map_err(|e| refusal_or_failure(url, e))
        };
        let timed_out = async {
            smol::Timer::after(timeout).await;
            Err(ConnectionError::HandshakeTimeout {
                url: url.to_owned(),
                timeout,
            })
        };
        let (ws, _response) = handshake.or(timed_out).await?;
        Ok(Self {
            ws,
            certificate_sha256,
        })
    }

    /// The next message. Cancel-safe: dropping the future loses nothing.
    pub async fn read_msg(&mut self) -> Result<Incoming, ConnectionError> {
        let Some(msg) = self.ws.next().await else {
            return Ok(Incoming::Ended);
        };
        let msg = match msg {
            Ok(m) => m,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(Incoming::Ended)
            }
            Err(tungstenite::Error::Capacity(detail)) => {
                return Ok(Incoming::TooBig(detail.to_string()))
            }
            Err(e) => return Err(ConnectionError::Read(e)),
        };
        Ok(match msg {
            Message::Text(text) => Incoming::Envelope(Envelope::decode(text.as_str())),
            Message::Binary(bytes) => Incoming::Binary(bytes.to_vec()),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
            Message::Close(frame) => {
                Incoming::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
            }
        })
    }

    /// Send one envelope as a text message.
    pub async fn write_msg(&mut self, envelope: &Envelope) -> Result<(), ConnectionError> {
        let text = envelope.encode();
        tracing::trace!(ty = envelope.body.type_name(), len = text.len(), "sending");
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|source| ConnectionError::Write {
                what: envelope.body.type_name(),
                source,
            })
    }

    /// Send one binary frame (already encoded with [`protocol::Frame`]).
    pub async fn write_binary(&mut self, bytes: Vec<u8>) -> Result<(), ConnectionError> {
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(|source| ConnectionError::Write {
                what: "binary frame",
                source,
            })
    }

    /// Send a WebSocket ping.
    pub async fn ping(&mut self) -> Result<(), ConnectionError> {
        self.ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .map_err(|source| ConnectionError::Write {
                what: "ping",
                source,
            })
    }

    /// Send a close frame and wait, at most `grace`, for the orchestrator to
    /// answer it (the closing handshake). Errors here are only logged: the
    /// connection is going away either way.
    pub async fn close(&mut self, code: u16, reason: &str, grace: Duration) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let handshake = async {
            if let Err(e) = self.ws.close(Some(frame)).await {
                tracing::debug!(error = %e, "sending close frame");
                return;
            }
            self.drain().await;
        };
        let done = async {
            handshake.await;
            true
        }
        .or(async {
            smol::Timer::after(grace).await;
            false
        })
        .await;
        if !done {
            tracing::debug!("orchestrator did not complete the close handshake in time");
        }
    }

    /// A message over the size limit arrived (PROTOCOL.md section 2): close
    /// with 1009, as the orchestrator does, then read and discard the raw
    /// bytes it is still writing (at most twice the limit, at most `grace`)
    /// so that it can finish the write and read the close frame rather than
    /// meet a reset.
    pub async fn refuse_too_big(&mut self, grace: Duration) {
        let frame = CloseFrame {
            code: CloseCode::Size,
            reason: "message too big".into(),
        };
        let refuse = async {
            if let Err(e) = self.ws.close(Some(frame)).await {
                tracing::debug!(error = %e, "sending close frame");
                return;
            }
            // The frame reader is stuck inside the big message: read bytes.
            let io = self.ws.get_mut();
            let mut buf = vec![0u8; 16 * 1024];
            let mut seen = 0usize;
            while seen < 2 * protocol::MAX_TEXT_FRAME {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        };
        refuse
            .or(async {
                smol::Timer::after(grace).await;
            })
            .await;
    }

    /// After a close frame arrived: let the library answer it, at most `grace`.
    pub async fn finish_close(&mut self, grace: Duration) {
        self.drain()
            .or(async {
                smol::Timer::after(grace).await;
            })
            .await;
    }

    /// Read (and discard) until the socket ends.
    async fn drain(&mut self) {
        while let Some(msg) = self.ws.next().await {
            if msg.is_err() {
                break;
            }
        }
    }
}

/// A non-101 answer to the upgrade is a refusal, with the body's reason.
fn refusal_or_failure(url: &str, e: tungstenite::Error) -> ConnectionError {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let status = match status.canonical_reason() {
                Some(phrase) => format!("{} {phrase}", status.as_u16()),
                None => status.as_u16().to_string(),
            };
            let body = response.body().as_deref().unwrap_or_default();
            ConnectionError::Refused {
                status,
                reason: reason_from_body(body),
            }
        }
        source => ConnectionError::Handshake {
            url: url.to_owned(),
            source,
        },
    }
}

/// The `message` of an `{"error":{"code","message"}}` body, or the body as text.
fn reason_from_body(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned));
    match message {
        Some(m) if !m.trim().is_empty() => m.trim().to_owned(),
        _ => crate::enroll::body_text(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_come_from_the_error_body() {
        assert_eq!(
            reason_from_body(
                br#"{"error":{"code":"unauthorized","message":"credential revoked"}}"#
            ),
            "credential revoked"
        );
        assert_eq!(reason_from_body(b"go away\r\n"), "go away");
        assert_eq!(reason_from_body(b""), "(no explanation given)");
    }

    #[test]
    fn a_refusal_reads_as_one_clear_line() {
        let e = ConnectionError::Refused {
            status: "401 Unauthorized".into(),
            reason: "credential revoked".into(),
        };
        assert_eq!(
            e.to_string(),
            "orchestrator refused the connection: 401 Unauthorized: credential revoked"
        );
    }

    #[test]
    fn ws_limits_follow_the_protocol() {
        let c = ws_config();
        assert_eq!(c.max_message_size, Some(protocol::MAX_TEXT_FRAME));
        assert_eq!(c.max_frame_size, Some(protocol::MAX_TEXT_FRAME));
    }
}
