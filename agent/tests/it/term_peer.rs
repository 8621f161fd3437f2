//! A fake orchestrator that speaks terminals: the agent under test runs
//! `agent::run` against a socket this test accepted, and [`Peer`] sends
//! commands, types input frames, acks output and collects every session's
//! output stream, checking that each output frame starts exactly where the
//! previous one ended (no byte lost, none twice).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::{FutureExt, StreamExt};
use protocol::frame::{Frame, FrameKind};
use protocol::terminal::TerminalExited;
use protocol::{Body, Envelope};
use smol::net::TcpListener;

use crate::{accept_ws, fast_settings, listen, register_and_accept, scratch_dir, send, Ws};
use agent::{Shutdown, ShutdownTrigger};

/// Heartbeat interval the peer asks for, seconds.
pub const HEARTBEAT_SECS: u32 = 1;

/// Fails loudly (never skips) without the environment the Makefile sets.
/// Containers created from here on carry the PTY helper (see
/// [`static_agent`]), as a static agent's do, so terminals run their PTY
/// inside the container.
pub fn need_podman() {
    assert!(
        std::env::var_os("CONTAINERS_CONF").is_some(),
        "export CONTAINERS_CONF={} (as the Makefile does)",
        crate::support::containers_conf()
    );
    crate::support::ensure_image();
    let exe = static_agent();
    agent::pty_helper::set_pty_helper(&exe)
        .unwrap_or_else(|e| panic!("the static agent as PTY helper: {e}"));
}

/// The static agent build that containers mount as their PTY helper: the
/// agent under test runs in this process, which is no static binary.
/// `CROPS_AGENT_BIN` (as the Makefile sets it), else the musl build in the
/// default target directory (`make agent-static`).
pub fn static_agent() -> std::path::PathBuf {
    let exe = std::env::var_os("CROPS_AGENT_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/x86_64-unknown-linux-musl/agent/crops-agent"
            )
            .into()
        });
    let exe = exe.canonicalize().unwrap_or_else(|e| {
        panic!(
            "no static agent at {} ({e}): run `make agent-static` or set CROPS_AGENT_BIN",
            exe.display()
        )
    });
    exe
}

/// The agent under test, its listener, and how to stop it.
pub struct Agent {
    pub listener: TcpListener,
    trigger: ShutdownTrigger,
    task: smol::Task<Result<(), agent::RunError>>,
    data: std::path::PathBuf,
}

impl Agent {
    /// Start `agent::run` with terminals hung up after `grace` unlinked,
    /// and accept its first connection.
    pub async fn start(grace: Duration) -> (Self, Peer) {
        let (listener, port) = listen().await;
        let (trigger, shutdown) = Shutdown::new();
        let data = scratch_dir("term-data");
        let mut settings = fast_settings(port);
        settings.data_dir = data.clone();
        settings.terminal_grace = grace;
        let task = smol::spawn(agent::run(settings, shutdown));
        let agent = Self {
            listener,
            trigger,
            task,
            data,
        };
        let peer = agent.accept().await;
        (agent, peer)
    }

    /// Accept the agent's next connection and register it.
    pub async fn accept(&self) -> Peer {
        let (mut ws, _) = accept_ws(&self.listener).await;
        register_and_accept(&mut ws, HEARTBEAT_SECS).await;
        Peer::new(ws)
    }

    pub async fn stop(self) {
        self.trigger.trigger();
        self.task.await.unwrap();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One session's output as received: contiguous from `start`.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub start: u64,
    /// Received bytes held (the oldest are dropped past a few MiB).
    pub bytes: Vec<u8>,
    /// Bytes dropped from the front of `bytes`.
    pub dropped: u64,
    pub frames: u64,
}

impl Stream {
    /// Offset one past the last byte received.
    pub fn end(&self) -> u64 {
        self.start + self.dropped + self.bytes.len() as u64
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The orchestrator's side of one connection.
pub struct Peer {
    pub ws: Ws,
    pub out: HashMap<u64, Stream>,
    /// Text messages read but not yet asked for.
    pub inbox: VecDeque<Envelope>,
    /// Next input offset per session.
    pub input_at: HashMap<u64, u64>,
    /// Ack every output frame as it arrives.
    pub auto_ack: bool,
    /// Sessions whose open or attach reply came on this connection: output
    /// for any other (e.g. ahead of its reply) fails the test.
    pub known: HashSet<u64>,
    next_request: u64,
}

impl Peer {
    pub fn new(ws: Ws) -> Self {
        Self {
            ws,
            out: HashMap::new(),
            inbox: VecDeque::new(),
            input_at: HashMap::new(),
            auto_ack: true,
            known: HashSet::new(),
            next_request: 0,
        }
    }

    /// Read one message: text to the inbox, output frames to their stream.
    pub async fn pump(&mut self) {
        let msg = self.ws.next().await;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let env = Envelope::decode(t.as_str()).expect("the agent sends valid envelopes");
                match &env.body {
                    Body::TerminalOpened(o) => self.known.insert(o.session_id),
                    Body::TerminalAttached(a) => self.known.insert(a.session_id),
                    _ => false,
                };
                self.inbox.push_back(env);
            }
            Some(Ok(Message::Binary(bytes))) => {
                let frame = Frame::decode(&bytes).expect("the agent sends valid frames");
                assert_eq!(
                    frame.kind,
                    FrameKind::TerminalOutput,
                    "agent sent {frame:?}"
                );
                assert!(!frame.payload.is_empty(), "empty output frame");
                let id = frame.session_id;
                assert!(
                    self.known.contains(&id),
                    "output of session {id} before its open or attach reply"
                );
                let stream = self.out.entry(id).or_insert_with(|| Stream {
                    start: frame.offset,
                    ..Stream::default()
                });
                assert_eq!(
                    frame.offset,
                    stream.end(),
                    "session {id}: output frame does not continue the stream"
                );
                stream.bytes.extend_from_slice(frame.payload);
                stream.frames += 1;
                if stream.bytes.len() > 8 << 20 {
                    let cut = stream.bytes.len() - (1 << 20);
                    stream.bytes.drain(..cut);
                    stream.dropped += cut as u64;
                }
                let end = stream.end();
                if self.auto_ack {
                    self.ack(id, end).await;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a message from the agent, got {other:?}"),
        }
    }

    /// The first text message satisfying `want` (others stay in the inbox).
    pub async fn wait_for(&mut self, want: impl Fn(&Envelope) -> bool) -> Envelope {
        loop {
            if let Some(i) = self.inbox.iter().position(&want) {
                return self.inbox.remove(i).unwrap();
            }
            self.pump().await;
        }
    }

    /// Send a command (`data` is JSON) with a fresh requestId; return its id.
    pub async fn send_command(&mut self, ty: &str, data: &str) -> String {
        self.next_request += 1;
        let id = format!("t-{}", self.next_request);
        send(
            &mut self.ws,
            &format!(r#"{{"type":"{ty}","requestId":"{id}","data":{data}}}"#),
        )
        .await;
        id
    }

    /// Send a command and wait for its one reply.
    pub async fn request(&mut self, ty: &str, data: &str) -> Body {
        let id = self.send_command(ty, data).await;
        self.reply(&id).await
    }

    pub async fn reply(&mut self, request_id: &str) -> Body {
        self.wait_for(|e| e.request_id.as_deref() == Some(request_id))
            .await
            .body
    }

    /// Open a terminal; its session id.
    pub async fn open(&mut self, container_id: &str, cols: u16, rows: u16) -> u64 {
        let data = format!(r#"{{"containerId":"{container_id}","cols":{cols},"rows":{rows}}}"#);
        match self.request("terminal.open", &data).await {
            Body::TerminalOpened(o) => {
                assert!(o.session_id < 1 << 53, "session ids fit JavaScript");
                o.session_id
            }
            other => panic!("terminal.open: {other:?}"),
        }
    }

    /// Type `text` into session `id` (one input frame at the next offset).
    pub async fn type_text(&mut self, id: u64, text: &str) {
        let at = self.input_at.entry(id).or_insert(0);
        let offset = *at;
        *at += text.len() as u64;
        self.input_frame(id, offset, text.as_bytes()).await;
    }

    /// Send one input frame at an explicit offset.
    pub async fn input_frame(&mut self, id: u64, offset: u64, payload: &[u8]) {
        let frame = Frame {
            kind: FrameKind::TerminalInput,
            session_id: id,
            offset,
            payload,
        };
        let bytes = frame.encode().unwrap();
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    pub async fn ack(&mut self, id: u64, offset: u64) {
        let frame = Frame {
            kind: FrameKind::TerminalAck,
            session_id: id,
            offset,
            payload: &[],
        };
        let bytes = frame.encode().unwrap();
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    pub fn text(&self, id: u64) -> String {
        self.out.get(&id).map(Stream::text).unwrap_or_default()
    }

    /// Output of session `id` received so far (offset one past the last byte).
    pub fn received(&self, id: u64) -> u64 {
        self.out.get(&id).map_or(0, Stream::end)
    }

    /// Read until session `id`'s output contains `needle`; after a minute,
    /// fail with what did arrive.
    pub async fn wait_output(&mut self, id: u64, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.text(id).contains(needle) {
            let step = async {
                self.pump().await;
                true
            }
            .or(async {
                smol::Timer::at(deadline).await;
                false
            })
            .await;
            assert!(
                step,
                "session {id}: no {needle:?} within a minute; output so far: {:?}; inbox: {:?}",
                self.text(id),
                self.inbox
            );
        }
    }

    /// Read until session `id`'s `terminal.exited`.
    pub async fn exited(&mut self, id: u64) -> TerminalExited {
        let env = self
            .wait_for(|e| matches!(&e.body, Body::TerminalExited(x) if x.session_id == id))
            .await;
        let Body::TerminalExited(x) = env.body else {
            unreachable!()
        };
        x
    }
}

/// `echo` a marker so that only the command's output, not its echo as typed,
/// contains `marker`: `mark` + `er` is typed as `mark''er`.
pub fn echo_split(marker: &str) -> String {
    let (a, b) = marker.split_at(marker.len() / 2);
    format!("echo {a}''{b}\r")
}
