//! The JSON envelope of every text message, and the typed [`Body`] it carries.
//!
//! On the wire: `{"type": "...", "requestId": "...", "data": {...}}`.
//! `type` names the message; `requestId` ties a command to its one reply
//! (`<command>.result` or `error`) and is absent on heartbeats; `data` is the
//! typed body (absent means `{}`). Decoding is two-step so that a message of
//! unknown type, or with a bad body, still yields its `requestId` for the
//! error reply: never a panic, always a [`DecodeError`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::container::*;
use crate::error::{ErrorCode, ErrorReply};
use crate::exec::*;
use crate::image::*;
use crate::terminal::*;
use crate::worker::*;

/// One text message: its body and, for commands and replies, its `requestId`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub request_id: Option<String>,
    pub body: Body,
}

/// Why a text message could not be read. Carries whatever was recovered,
/// so the receiver can answer with an `error` naming the request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// Not `{"type": string, "requestId"?: string, "data"?: ...}`; the
    /// `requestId` is still recovered when the text is a JSON object
    /// whose `requestId` is a valid one.
    #[error("not a protocol envelope: {source}")]
    NotAnEnvelope {
        request_id: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown message type {ty:?}")]
    UnknownType {
        ty: String,
        request_id: Option<String>,
    },
    #[error("bad data for {ty}: {source}")]
    BadData {
        ty: &'static str,
        request_id: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("requestId must be 1 to 64 printable ASCII characters")]
    BadRequestId,
}

impl DecodeError {
    /// The `requestId` of the offending message, when it could be read.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::UnknownType { request_id, .. }
            | Self::BadData { request_id, .. }
            | Self::NotAnEnvelope { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The error reply this failure deserves.
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::UnknownType { .. } => ErrorCode::UnknownType,
            Self::NotAnEnvelope { .. } | Self::BadData { .. } | Self::BadRequestId => {
                ErrorCode::MalformedMessage
            }
        };
        ErrorReply::new(code, self.to_string())
    }
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "type")]
    ty: String,
    #[serde(rename = "requestId", default)]
    request_id: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct OutEnvelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    data: &'a T,
}

/// What a message is in an exchange, declared beside its wire name in the
/// table below: receivers route by it, never by the spelling of `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// `worker.register` and its answer `worker.accepted`: the exchange
    /// that opens a connection, before any other.
    Handshake,
    /// A command, answered by its `<type>.result` or `error` with the
    /// same `requestId`.
    Command,
    /// The `<command>.result` that ends a request.
    Result,
    /// `error`: ends a request (or answers a message that had none).
    Error,
    /// An event carrying the `requestId` of a request still running
    /// (`images.build.progress`); it does not end the request.
    Progress,
    /// An event of its own (heartbeat, inventory, `terminal.exited`).
    Event,
}

impl MessageKind {
    /// Whether a message of this kind ends the request it names.
    pub fn ends_request(self) -> bool {
        matches!(self, Self::Result | Self::Error)
    }
}

/// Declares [`Body`], its wire names, kinds and its codec from one table,
/// so they can never disagree.
macro_rules! messages {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal => $kind:ident, )*) => {
        /// Every message of the protocol, by its `type`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Body {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// Every `type` this build knows, in declaration order.
        pub const MESSAGE_TYPES: &[&str] = &[$($name),*];

        impl Body {
            /// The wire name of this message, e.g. `"worker.register"`.
            pub fn type_name(&self) -> &'static str {
                match self { $( Body::$variant(_) => $name, )* }
            }

            /// What this message is in an exchange: a command, its
            /// result, an error, progress of a request, or an event.
            pub fn kind(&self) -> MessageKind {
                match self { $( Body::$variant(_) => MessageKind::$kind, )* }
            }

            fn decode_data(
                ty: &str,
                data: &str,
                request_id: Option<String>,
            ) -> Result<Body, DecodeError> {
                match ty {
                    $( $name => serde_json::from_str::<$ty>(data)
                        .map(Body::$variant)
                        .map_err(|source| DecodeError::BadData { ty: $name, request_id, source }), )*
                    _ => Err(DecodeError::UnknownType { ty: ty.to_owned(), request_id }),
                }
            }

            fn encode_with(&self, request_id: Option<&str>) -> String {
                match self {
                    $( Body::$variant(data) => encode_out($name, request_id, data), )*
                }
            }
        }
    };
}

fn encode_out<T: Serialize>(ty: &'static str, request_id: Option<&str>, data: &T) -> String {
    let out = OutEnvelope {
        ty,
        request_id,
        data,
    };
    // Serializing these plain structs into a String cannot fail: no maps with
    // non-string keys, no failing Serialize impls.
    serde_json::to_string(&out).unwrap_or_else(|e| unreachable!("encoding {ty}: {e}"))
}

messages! {
    // Worker lifecycle.
    /// Agent -> orchestrator, first on every connection; needs a `requestId`.
    Register(Register) = "worker.register" => Handshake,
    /// Orchestrator -> agent, the answer to a good register.
    Accepted(Accepted) = "worker.accepted" => Handshake,
    /// Agent -> orchestrator, periodically; no `requestId`.
    Heartbeat(Heartbeat) = "worker.heartbeat" => Event,
    /// Agent -> orchestrator, after every accept; no `requestId`.
    Inventory(Inventory) = "worker.inventory" => Event,
    /// Orchestrator -> agent: store this new credential, then answer.
    RotateCredential(RotateCredential) = "worker.rotate-credential" => Command,

    // Commands (orchestrator -> agent), each answered by `<type>.result` or `error`.
    ContainerCreate(ContainerCreate) = "container.create" => Command,
    ContainerSetup(ContainerSetup) = "container.setup" => Command,
    ContainerStart(ContainerRef) = "container.start" => Command,
    ContainerStop(ContainerStop) = "container.stop" => Command,
    ContainerRemove(ContainerRemove) = "container.remove" => Command,
    ContainerList(ContainerList) = "container.list" => Command,
    ContainerListAll(Empty) = "container.list-all" => Command,
    ContainerStats(ContainerStatsRequest) = "container.stats" => Command,
    Exec(Exec) = "container.exec" => Command,
    ExecBackground(ExecBackground) = "container.exec.background" => Command,
    BackgroundCapture(BackgroundCapture) = "container.exec.background.capture" => Command,
    BackgroundKill(BackgroundKill) = "container.exec.background.kill" => Command,
    ImagesList(Empty) = "images.list" => Command,
    ImageBuild(ImageBuild) = "images.build" => Command,
    TerminalOpen(TerminalOpen) = "terminal.open" => Command,
    TerminalResize(TerminalResize) = "terminal.resize" => Command,
    TerminalClose(TerminalClose) = "terminal.close" => Command,
    TerminalAttach(TerminalAttach) = "terminal.attach" => Command,

    // Results (agent -> orchestrator), carrying the command's `requestId`.
    /// The new credential is stored; the next connection presents it.
    CredentialRotated(Empty) = "worker.rotate-credential.result" => Result,
    ContainerCreated(ContainerCreated) = "container.create.result" => Result,
    ContainerSetupDone(ContainerSetupDone) = "container.setup.result" => Result,
    ContainerStarted(ContainerStatus) = "container.start.result" => Result,
    ContainerStopped(ContainerStatus) = "container.stop.result" => Result,
    ContainerRemoved(ContainerStatus) = "container.remove.result" => Result,
    ContainerListed(ContainerListing) = "container.list.result" => Result,
    ContainerListedAll(ContainerListing) = "container.list-all.result" => Result,
    ContainerStatsResult(ContainerStatsList) = "container.stats.result" => Result,
    ExecDone(ExecResult) = "container.exec.result" => Result,
    BackgroundStarted(BackgroundStarted) = "container.exec.background.result" => Result,
    BackgroundOutput(BackgroundOutput) = "container.exec.background.capture.result" => Result,
    BackgroundKilled(BackgroundKilled) = "container.exec.background.kill.result" => Result,
    ImagesListed(ImageListing) = "images.list.result" => Result,
    ImageBuilt(ImageBuilt) = "images.build.result" => Result,
    TerminalOpened(TerminalOpened) = "terminal.open.result" => Result,
    TerminalResized(Empty) = "terminal.resize.result" => Result,
    TerminalClosed(Empty) = "terminal.close.result" => Result,
    TerminalAttached(TerminalAttached) = "terminal.attach.result" => Result,

    // Events (agent -> orchestrator).
    /// One line of build output, with the build's `requestId`.
    BuildProgress(BuildProgress) = "images.build.progress" => Progress,
    /// A terminal session ended.
    TerminalExited(TerminalExited) = "terminal.exited" => Event,

    /// The one failure reply, either direction, with the failed request's id.
    Error(ErrorReply) = "error" => Error,
}

impl Envelope {
    /// A command or reply tied to `request_id`.
    pub fn request(request_id: impl Into<String>, body: Body) -> Self {
        Self {
            request_id: Some(request_id.into()),
            body,
        }
    }

    /// A message without a `requestId` (heartbeat, inventory, events).
    pub fn event(body: Body) -> Self {
        Self {
            request_id: None,
            body,
        }
    }

    /// An `error` reply to `request_id` (if known).
    pub fn error(request_id: Option<String>, error: ErrorReply) -> Self {
        Self {
            request_id,
            body: Body::Error(error),
        }
    }

    /// Read one text message. Rejects oversized input before parsing it.
    pub fn decode(text: &str) -> Result<Self, DecodeError> {
        if text.len() > crate::MAX_TEXT_FRAME {
            return Err(DecodeError::TooLarge {
                len: text.len(),
                max: crate::MAX_TEXT_FRAME,
            });
        }
        let raw: RawEnvelope<'_> =
            serde_json::from_str(text).map_err(|source| DecodeError::NotAnEnvelope {
                request_id: request_id_only(text),
                source,
            })?;
        if let Some(id) = &raw.request_id {
            if !valid_request_id(id) {
                return Err(DecodeError::BadRequestId);
            }
        }
        let data = raw.data.map_or("{}", RawValue::get);
        let data = if data == "null" { "{}" } else { data };
        let body = Body::decode_data(&raw.ty, data, raw.request_id.clone())?;
        Ok(Self {
            request_id: raw.request_id,
            body,
        })
    }

    /// Write this message as one line of JSON.
    pub fn encode(&self) -> String {
        self.body.encode_with(self.request_id.as_deref())
    }
}

/// The valid `requestId` of a JSON object that is not an envelope (e.g.
/// no `type`, or a `type` that is not a string), if it has one.
fn request_id_only(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(rename = "requestId", default)]
        request_id: Option<String>,
    }
    serde_json::from_str::<IdOnly>(text)
        .ok()?
        .request_id
        .filter(|id| valid_request_id(id))
}

/// A `requestId` is 1 to 64 printable ASCII characters.
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}
