//! The one error shape of the protocol: a machine-readable code, a human
//! message, and the `requestId` of the message it answers (in the envelope).

use serde::{Deserialize, Serialize};

/// What went wrong, for programs. Humans read [`ErrorReply::message`].
///
/// Codes are stable strings (`snake_case` on the wire). A receiver that meets
/// a code it does not know reads it as [`ErrorCode::Unknown`], so new codes
/// never break old peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text was not JSON, or a field had the wrong type.
    MalformedMessage,
    /// The envelope's `type` is not one this peer knows.
    UnknownType,
    /// A message exceeded [`crate::MAX_TEXT_FRAME`] or [`crate::MAX_BINARY_FRAME`].
    TooLarge,
    /// A message other than `worker.register` arrived before registration.
    NotRegistered,
    /// `worker.register` arrived twice on one connection.
    AlreadyRegistered,
    /// The agent's protocol version is outside the orchestrator's range.
    UnsupportedVersion,
    /// A field's value is out of range or does not match its pattern.
    InvalidArgument,
    /// The named container, image, session or handle does not exist.
    NotFound,
    /// The object exists in a state that does not allow the operation.
    Conflict,
    /// The worker's security floor or another rule refuses the request.
    Forbidden,
    /// The command is known but this agent does not implement it.
    Unsupported,
    /// The container engine failed; the message carries the tail of its stderr.
    EngineFailed,
    /// The operation did not finish within its deadline.
    Timeout,
    /// Reserved: neither side sends it today (the orchestrator closes the link
    /// with 4008 instead; PROTOCOL.md section 2).
    RateLimited,
    /// The agent cannot take this work now: it already runs its limit of
    /// terminal sessions or background commands.
    Unavailable,
    /// A bug or an unexpected condition on the replying side.
    Internal,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"not_found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedMessage => "malformed_message",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::NotRegistered => "not_registered",
            Self::AlreadyRegistered => "already_registered",
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::Unsupported => "unsupported",
            Self::EngineFailed => "engine_failed",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of an `error` message. The envelope's `requestId` names the
/// request it answers; it is absent only when the failing message had none
/// (or could not be read far enough to find it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

/// A field failed validation: which one, and why. Produced by the
/// `validate` methods of the message types; maps to
/// [`ErrorCode::InvalidArgument`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Invalid> for ErrorReply {
    fn from(e: Invalid) -> Self {
        ErrorReply::new(ErrorCode::InvalidArgument, e.to_string())
    }
}
