//! [`Connection`]: one server WebSocket, written once for both sockets the
//! orchestrator serves (agents on `/v1/agent`, browsers on a container's
//! terminal). It owns the socket's I/O and framing: the check of the
//! upgrade request ([`accept_key`]), the 101 and the upgraded connection
//! ([`upgrade`]), reading one message, writing one within a time limit,
//! and closing with a code and a reason (the close frame, then the peer's
//! answer, each bounded in time).
//!
//! hyper 1 has its own I/O traits (`hyper::rt::Read`/`Write`, with a
//! `ReadBuf` cursor); async-tungstenite wants the futures-io ones:
//! [`UpgradedIo`] translates one call to the other, without `unsafe`
//! (reads go through a `ReadBuf` over the caller's initialised slice).
//!
//! What a message means is the endpoint's business (`agent_socket`,
//! `terminal::viewer`); here a message is a tungstenite [`Message`], and a
//! failed read is a [`ReadError`] each endpoint maps to its close code.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::rt::ReadBuf;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, StatusCode};

/// How long the close handshake may take, each way.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A close reason must fit in a control frame (123 bytes).
const MAX_REASON: usize = 120;

/// The buffers and size limits of one socket.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// tungstenite's read buffer, allocated per connection up front; bigger
    /// messages grow it as they come.
    pub read_buffer: usize,
    /// Bytes written before a write flushes (0: every write flushes);
    /// `None` keeps tungstenite's default.
    pub write_buffer: Option<usize>,
    /// Largest message (and frame) the peer may send.
    pub max_message: usize,
}

/// Why a request is not a WebSocket upgrade we accept (a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

/// Why a read gave no message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream ended (after the peer's close, or without one).
    #[error("the connection ended")]
    Ended,
    /// A message over [`Limits::max_message`]: the reader is mid-message.
    #[error("message over the size limit: {0}")]
    TooBig(String),
    /// The connection went without a closing handshake.
    #[error("connection reset without a closing handshake")]
    Reset,
    #[error("WebSocket protocol violation: {0}")]
    Protocol(String),
    #[error("text message is not UTF-8")]
    NotUtf8,
    /// Any other failure of the connection.
    #[error("the connection broke: {0}")]
    Broken(String),
}

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write failed: {0}")]
    Failed(#[source] WsError),
    #[error("write timed out after {0:?}")]
    TimedOut(Duration),
}

/// One server WebSocket over an upgraded HTTP connection.
pub struct Connection {
    ws: WebSocketStream<UpgradedIo>,
}

/// The sending half of a [`Connection`] split for a reader and a writer
/// running at once (see [`Connection::split`]).
pub struct Writer(WebSocketSender<UpgradedIo>);

/// The receiving half of a split [`Connection`].
pub struct Reader(WebSocketReceiver<UpgradedIo>);

/// The 101 answering a checked upgrade request (naming `subprotocol`, if
/// any), and the upgraded connection to come, or the error if the upgrade
/// never completes: the endpoint awaits it on a task of its own.
pub fn upgrade(
    req: &mut Request<Incoming>,
    accept_key: HeaderValue,
    subprotocol: Option<&'static str>,
) -> (
    Response<Full<Bytes>>,
    impl Future<Output = Result<UpgradedIo, hyper::Error>> + Send + 'static,
) {
    let on_upgrade = hyper::upgrade::on(req);
    let upgraded = async move { on_upgrade.await.map(UpgradedIo) };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept_key);
    if let Some(subprotocol) = subprotocol {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(subprotocol),
        );
    }
    (resp, upgraded)
}

/// The `Sec-WebSocket-Accept` value, if this is a WebSocket upgrade request:
/// the check both endpoints make before anything else of theirs.
pub fn accept_key(req: &Request<Incoming>) -> Result<HeaderValue, Refused> {
    let h = req.headers();
    let has = |name, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(UPGRADE, "websocket") || !has(CONNECTION, "upgrade") {
        return Err(Refused("expected a WebSocket upgrade request"));
    }
    if h.get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .ok_or(Refused("missing Sec-WebSocket-Key"))?;
    HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|_| Refused("unusable Sec-WebSocket-Key"))
}

/// An upgraded HTTP connection speaking futures-io.
pub struct UpgradedIo(Upgraded);

impl std::fmt::Debug for UpgradedIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradedIo")
    }
}

impl futures_lite::AsyncRead for UpgradedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut read_buf = ReadBuf::new(buf);
        match hyper::rt::Read::poll_read(Pin::new(&mut self.get_mut().0), cx, read_buf.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read_buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_lite::AsyncWrite for UpgradedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut self.get_mut().0), cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}

/// Read and discard what the peer still sends, until it closes, `max_bytes`
/// have gone by, or `deadline` passes, whichever comes first.
async fn drain(io: &mut UpgradedIo, max_bytes: usize, deadline: Duration) {
    let read_all = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut seen = 0usize;
        while seen < max_bytes {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    read_all
        .or(async {
            smol::Timer::after(deadline).await;
        })
        .await;
}

impl Connection {
    /// The server side of a WebSocket over `io`, within `limits`.
    pub async fn accept(io: UpgradedIo, limits: Limits) -> Self {
        let mut config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer)
            .max_message_size(Some(limits.max_message))
            .max_frame_size(Some(limits.max_message));
        if let Some(size) = limits.write_buffer {
            config = config.write_buffer_size(size);
        }
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        Self { ws }
    }

    /// The next message. Pings are answered, and a peer's close frame
    /// answered, by the framing itself; both still come through.
    pub async fn read(&mut self) -> Result<Message, ReadError> {
        read_result(self.ws.next().await)
    }

    /// Send one message, giving up after `limit`.
    pub async fn write(&mut self, message: Message, limit: Duration) -> Result<(), WriteError> {
        bounded(self.ws.send(message), limit).await
    }

    /// Split into a writer and a reader, for a task that reads and writes
    /// at once; [`Connection::reunite`] puts them back for the close.
    pub fn split(self) -> (Writer, Reader) {
        let (sink, source) = self.ws.split();
        (Writer(sink), Reader(source))
    }

    /// The connection `writer` and `reader` were split from (`None` if
    /// they are halves of two different ones).
    pub fn reunite(writer: Writer, reader: Reader) -> Option<Self> {
        WebSocketStream::reunite(writer.0, reader.0)
            .ok()
            .map(|ws| Self { ws })
    }

    /// Close with `code` and `reason`: send the close frame, then read
    /// until the peer answers it (or gives up), each bounded in time.
    pub async fn close(mut self, code: u16, reason: &str) {
        if self.close_frame(code, reason).await {
            let ws = &mut self.ws;
            let _ = async { while let Some(Ok(_)) = ws.next().await {} }
                .or(async {
                    smol::Timer::after(CLOSE_TIMEOUT).await;
                })
                .await;
        }
    }

    /// Close after [`ReadError::TooBig`]: the reader is mid-message, so
    /// after the close frame our half is shut down and up to `max_bytes`
    /// of what the peer still sends are drained, so it can finish writing
    /// and read our close instead of meeting a reset.
    pub async fn close_draining(mut self, code: u16, reason: &str, max_bytes: usize) {
        if self.close_frame(code, reason).await {
            let mut io = self.ws.into_inner();
            let _ = io.close().await;
            drain(&mut io, max_bytes, CLOSE_TIMEOUT).await;
        }
    }

    async fn close_frame(&mut self, code: u16, reason: &str) -> bool {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: truncate(reason, MAX_REASON).to_owned().into(),
        };
        bounded(self.ws.close(Some(frame)), CLOSE_TIMEOUT)
            .await
            .is_ok()
    }
}

impl Writer {
    /// Send one message, giving up after `limit`.
    pub async fn write(&mut self, message: Message, limit: Duration) -> Result<(), WriteError> {
        bounded(self.0.send(message), limit).await
    }
}

impl Reader {
    /// The next message, as [`Connection::read`].
    pub async fn read(&mut self) -> Result<Message, ReadError> {
        read_result(self.0.next().await)
    }
}

fn read_result(next: Option<Result<Message, WsError>>) -> Result<Message, ReadError> {
    match next {
        Some(Ok(message)) => Ok(message),
        None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
            Err(ReadError::Ended)
        }
        Some(Err(WsError::Capacity(detail))) => Err(ReadError::TooBig(detail.to_string())),
        Some(Err(WsError::Utf8(_))) => Err(ReadError::NotUtf8),
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            Err(ReadError::Reset)
        }
        Some(Err(WsError::Protocol(detail))) => Err(ReadError::Protocol(detail.to_string())),
        Some(Err(other)) => Err(ReadError::Broken(other.to_string())),
    }
}

async fn bounded(
    send: impl Future<Output = Result<(), WsError>>,
    limit: Duration,
) -> Result<(), WriteError> {
    let sent = async { Some(send.await) }
        .or(async {
            smol::Timer::after(limit).await;
            None
        })
        .await;
    match sent {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(WriteError::Failed(error)),
        None => Err(WriteError::TimedOut(limit)),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_truncated_on_char_boundaries() {
        assert_eq!(truncate("abc", 120), "abc");
        let long = "é".repeat(100);
        let t = truncate(&long, 121);
        assert_eq!(t.len(), 120);
    }
}
