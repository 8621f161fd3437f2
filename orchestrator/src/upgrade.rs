//! hyper's `Upgraded` connection as futures-io `AsyncRead`/`AsyncWrite`, so
//! async-tungstenite can run a WebSocket over it.
//!
//! hyper 1 has its own I/O traits (`hyper::rt::Read`/`Write`, with a
//! `ReadBuf` cursor); async-tungstenite wants the futures-io ones. The
//! adapter below translates one call to the other, without `unsafe`: reads
//! go through a `ReadBuf` over the caller's initialised slice. It also
//! offers a bounded [`drain`] used after an oversized message, so the peer
//! can finish writing and read our close frame instead of meeting a reset,
//! and [`websocket_accept_key`], the check of an upgrade request that both
//! WebSocket endpoints (agents, browser terminals) make.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_lite::{AsyncReadExt, FutureExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::rt::ReadBuf;
use hyper::upgrade::Upgraded;
use hyper::Request;

use crate::http::ApiError;

/// An upgraded HTTP connection speaking futures-io.
pub struct UpgradedIo(Upgraded);

impl UpgradedIo {
    pub fn new(upgraded: Upgraded) -> Self {
        Self(upgraded)
    }
}

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
pub async fn drain(io: &mut UpgradedIo, max_bytes: usize, deadline: Duration) {
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

/// The `Sec-WebSocket-Accept` value, if this is a WebSocket upgrade request.
pub fn websocket_accept_key(req: &Request<Incoming>) -> Result<HeaderValue, ApiError> {
    let h = req.headers();
    let has = |name, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(UPGRADE, "websocket") || !has(CONNECTION, "upgrade") {
        return Err(ApiError::bad_request(
            "expected a WebSocket upgrade request",
        ));
    }
    if h.get(SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|_| ApiError::bad_request("unusable Sec-WebSocket-Key"))
}
