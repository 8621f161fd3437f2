//! The Crops worker protocol: every message an agent and the orchestrator exchange.
//!
//! This crate is the wire, and nothing else: serde types, the JSON envelope
//! ([`envelope`]), the binary frame layout for terminal and stream bytes
//! ([`frame`]), the error shape ([`error`]) and the size limits below.
//! It does no I/O and knows no async runtime; the agent and the orchestrator
//! each own the socket plumbing around it. `PROTOCOL.md` at the repository
//! root is the document a third party implements from; the golden fixtures
//! under `tests/fixtures/` pin every message's JSON.
//!
//! ```
//! use protocol::{Envelope, Body, worker::Heartbeat};
//! let hb = Envelope::event(Body::Heartbeat(Heartbeat {
//!     cpu_usage: 12.5,
//!     memory_free: 1 << 30,
//!     disk_total: None,
//!     disk_free: None,
//!     containers_running: 2,
//!     gateway_status: None,
//!     gateway_status_detail: None,
//! }));
//! let text = hb.encode();
//! assert_eq!(Envelope::decode(&text).unwrap(), hb);
//! ```

pub mod check;
pub mod container;
pub mod domains;
pub mod envelope;
pub mod error;
pub mod exec;
pub mod frame;
pub mod image;
pub mod terminal;
pub mod validate;
pub mod worker;

pub use envelope::{Body, DecodeError, Envelope, MessageKind};
pub use error::{ErrorCode, ErrorReply};
pub use frame::{Frame, FrameError, FrameKind};

/// The protocol version this crate speaks. Sent by the agent in
/// `worker.register`; the orchestrator accepts the range
/// [`MIN_PROTOCOL_VERSION`]..=[`PROTOCOL_VERSION`] and refuses anything else
/// with [`ErrorCode::UnsupportedVersion`] and close code [`close::UNSUPPORTED_VERSION`].
///
/// Adding an optional field or a new message type does not bump the version
/// (receivers ignore unknown fields and answer unknown types with
/// `unknown_type`); changing or removing anything does.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version an orchestrator built from this crate accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Largest text (JSON) WebSocket message either side sends or accepts, in bytes.
pub const MAX_TEXT_FRAME: usize = 4 * 1024 * 1024;
/// Largest payload of one binary frame, in bytes (the header comes on top).
pub const MAX_BINARY_PAYLOAD: usize = 64 * 1024;
/// Largest binary WebSocket message: header plus payload.
pub const MAX_BINARY_FRAME: usize = frame::HEADER_LEN + MAX_BINARY_PAYLOAD;

/// The agent's WebSocket endpoint on the orchestrator, relative to its base URL.
pub const AGENT_PATH: &str = "/v1/agent";
/// The heartbeat interval the product documents; the orchestrator may ask
/// for another in `worker.accepted`.
pub const DEFAULT_HEARTBEAT_SECS: u32 = 10;
/// A worker is offline after this many heartbeat intervals without one.
pub const MISSED_HEARTBEATS_OFFLINE: u32 = 3;

/// WebSocket close codes the orchestrator uses (4000-4999 is the private range).
/// The close reason is a human sentence; the code is what programs match.
pub mod close {
    /// A message was malformed, of an unknown kind where that is fatal, or out of order.
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The credential was revoked while connected.
    pub const REVOKED: u16 = 4001;
    /// The agent's protocol version is outside the orchestrator's range.
    pub const UNSUPPORTED_VERSION: u16 = 4002;
    /// No `worker.register` arrived within the registration deadline.
    pub const REGISTER_TIMEOUT: u16 = 4003;
    /// The peer sent messages faster than its allowance.
    pub const RATE_LIMITED: u16 = 4008;
    /// A newer connection of the same worker replaced this one.
    pub const REPLACED: u16 = 4009;
    /// No pong or any other message arrived within the liveness deadline.
    pub const TIMEOUT: u16 = 4010;
}
