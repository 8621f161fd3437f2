//! The page's end of `GET /v1/containers/{id}/terminal` for the terminal
//! tests: connect with headers (or a subprotocol token) and see the HTTP
//! refusal when there is one; read the server's JSON messages, output
//! (checked to continue where the last message ended) and close frames;
//! send input, acks and control messages as xterm.js's page would.

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderName;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::{FutureExt, StreamExt};
use serde_json::{json, Value};
use smol::net::TcpStream;

use crate::harness::*;

/// What the orchestrator sent a browser.
#[derive(Debug, PartialEq)]
pub enum ToBrowser {
    Json(Value),
    Output(u64, Vec<u8>),
    Closed(u16, String),
}

/// The page's end of the terminal socket.
pub struct Browser {
    ws: WebSocketStream<TcpStream>,
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The last `{"type":"viewers","count":N}` seen (`recv` takes those
    /// messages aside: they come whenever someone joins or leaves).
    pub viewers: Option<u64>,
}

impl Browser {
    /// Open the terminal socket at `path` (query included) with `headers`;
    /// the HTTP refusal (status, body) if there was one.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, (u16, Value)> {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let tcp = TcpStream::connect(addr).await.unwrap();
        let handshake = async_tungstenite::client_async(req, tcp);
        match within(Duration::from_secs(10), "the terminal handshake", handshake).await {
            Ok((ws, resp)) => {
                let protocol = resp
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| v.to_str().unwrap().to_owned());
                Ok(Self {
                    ws,
                    protocol,
                    viewers: None,
                })
            }
            Err(WsError::Http(resp)) => {
                let body = resp.body().as_deref().unwrap_or_default();
                let json = serde_json::from_slice(body).unwrap_or(Value::Null);
                Err((resp.status().as_u16(), json))
            }
            Err(other) => panic!("terminal handshake failed: {other}"),
        }
    }

    /// Open with the admin token as a header.
    pub async fn admin(addr: SocketAddr, path: &str) -> Self {
        let bearer = format!("Bearer {ADMIN}");
        Self::connect(addr, path, &[("Authorization", &bearer)])
            .await
            .unwrap_or_else(|(status, body)| panic!("refused {status}: {body}"))
    }

    /// The next message (pings and viewer counts skipped), within 5 s.
    pub async fn recv(&mut self) -> ToBrowser {
        let viewers = &mut self.viewers;
        let ws = &mut self.ws;
        within(Duration::from_secs(5), "a message to the browser", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["type"] == "viewers" {
                            *viewers = v["count"].as_u64();
                            continue;
                        }
                        return ToBrowser::Json(v);
                    }
                    Some(Ok(Message::Binary(b))) => {
                        let offset = u64::from_be_bytes(b[..8].try_into().unwrap());
                        return ToBrowser::Output(offset, b[8..].to_vec());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                        return ToBrowser::Closed(code, reason);
                    }
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return ToBrowser::Closed(1006, String::new()),
                }
            }
        })
        .await
    }

    /// The next message, which must be JSON of `ty`.
    pub async fn expect_json(&mut self, ty: &str) -> Value {
        match self.recv().await {
            ToBrowser::Json(v) if v["type"] == ty => v,
            other => panic!("expected {ty}, got {other:?}"),
        }
    }

    /// Read output until `want` bytes arrived, checking each message starts
    /// where the previous ended (from `from`); nothing else may come between.
    pub async fn expect_output(&mut self, from: u64, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            match self.recv().await {
                ToBrowser::Output(offset, bytes) => {
                    assert_eq!(offset, from + got.len() as u64, "output out of order");
                    got.extend_from_slice(&bytes);
                }
                other => panic!("expected output, got {other:?} after {got:?}"),
            }
        }
        assert_eq!(got.len(), want, "more output than expected: {got:?}");
        got
    }

    /// The close frame, after any messages that match `skip`.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                ToBrowser::Closed(code, reason) => return (code, reason),
                ToBrowser::Json(v) if v["type"] == "error" => {}
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn input(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// Wait (bounded) until the server says the session has `n` viewers.
    pub async fn expect_viewers(&mut self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.viewers != Some(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "viewers {:?}, not {n}",
                self.viewers
            );
            let viewers = &mut self.viewers;
            let ws = &mut self.ws;
            let next = async { ws.next().await };
            let got = next
                .or(async {
                    smol::Timer::after(Duration::from_millis(100)).await;
                    None
                })
                .await;
            match got {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "viewers", "while waiting for a count: {v}");
                    *viewers = v["count"].as_u64();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) | None => {}
                other => panic!("while waiting for a viewer count: {other:?}"),
            }
        }
    }

    /// Close the socket as a browser closing its tab would (a close frame).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        within(Duration::from_secs(5), "the browser socket to end", async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    pub async fn ack(&mut self, offset: u64) {
        self.send_json(json!({ "type": "ack", "offset": offset }))
            .await;
    }

    /// Send without failing if the server already closed.
    pub async fn try_send(&mut self, message: Message) -> Result<(), WsError> {
        self.ws.send(message).await
    }
}
