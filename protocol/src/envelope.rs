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

/// Declares [`Body`], its wire names and its codec from one table, so the
/// three can never disagree.
macro_rules! messages {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, )*) => {
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
    Register(Register) = "worker.register",
    /// Orchestrator -> agent, the answer to a good register.
    Accepted(Accepted) = "worker.accepted",
    /// Agent -> orchestrator, periodically; no `requestId`.
    Heartbeat(Heartbeat) = "worker.heartbeat",
    /// Agent -> orchestrator, after every accept; no `requestId`.
    Inventory(Inventory) = "worker.inventory",
    /// Orchestrator -> agent: store this new credential, then answer.
    RotateCredential(RotateCredential) = "worker.rotate-credential",

    // Commands (orchestrator -> agent), each answered by `<type>.result` or `error`.
    ContainerCreate(ContainerCreate) = "container.create",
    ContainerSetup(ContainerSetup) = "container.setup",
    ContainerStart(ContainerRef) = "container.start",
    ContainerStop(ContainerStop) = "container.stop",
    ContainerRemove(ContainerRemove) = "container.remove",
    ContainerList(ContainerList) = "container.list",
    ContainerListAll(Empty) = "container.list-all",
    ContainerStats(ContainerStatsRequest) = "container.stats",
    Exec(Exec) = "container.exec",
    ExecBackground(ExecBackground) = "container.exec.background",
    BackgroundCapture(BackgroundCapture) = "container.exec.background.capture",
    BackgroundKill(BackgroundKill) = "container.exec.background.kill",
    ImagesList(Empty) = "images.list",
    ImageBuild(ImageBuild) = "images.build",
    TerminalOpen(TerminalOpen) = "terminal.open",
    TerminalResize(TerminalResize) = "terminal.resize",
    TerminalClose(TerminalClose) = "terminal.close",
    TerminalAttach(TerminalAttach) = "terminal.attach",

    // Results (agent -> orchestrator), carrying the command's `requestId`.
    /// The new credential is stored; the next connection presents it.
    CredentialRotated(Empty) = "worker.rotate-credential.result",
    ContainerCreated(ContainerCreated) = "container.create.result",
    ContainerSetupDone(ContainerSetupDone) = "container.setup.result",
    ContainerStarted(ContainerStatus) = "container.start.result",
    ContainerStopped(ContainerStatus) = "container.stop.result",
    ContainerRemoved(ContainerStatus) = "container.remove.result",
    ContainerListed(ContainerListing) = "container.list.result",
    ContainerListedAll(ContainerListing) = "container.list-all.result",
    ContainerStatsResult(ContainerStatsList) = "container.stats.result",
    ExecDone(ExecResult) = "container.exec.result",
    BackgroundStarted(BackgroundStarted) = "container.exec.background.result",
    BackgroundOutput(BackgroundOutput) = "container.exec.background.capture.result",
    BackgroundKilled(BackgroundKilled) = "container.exec.background.kill.result",
    ImagesListed(ImageListing) = "images.list.result",
    ImageBuilt(ImageBuilt) = "images.build.result",
    TerminalOpened(TerminalOpened) = "terminal.open.result",
    TerminalResized(Empty) = "terminal.resize.result",
    TerminalClosed(Empty) = "terminal.close.result",
    TerminalAttached(TerminalAttached) = "terminal.attach.result",

    // Events (agent -> orchestrator).
    /// One line of build output, with the build's `requestId`.
    BuildProgress(BuildProgress) = "images.build.progress",
    /// A terminal session ended.
    TerminalExited(TerminalExited) = "terminal.exited",

    /// The one failure reply, either direction, with the failed request's id.
    Error(ErrorReply) = "error",
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
