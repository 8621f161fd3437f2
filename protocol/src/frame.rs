//! The binary frame: terminal and stream bytes without JSON or base64.
//!
//! Layout of one binary WebSocket message (all integers big-endian):
//!
//! ```text
//! offset  size  field
//! 0       1     kind        1 = terminal output (agent -> orchestrator)
//!                           2 = terminal input  (orchestrator -> agent)
//!                           3 = terminal ack    (orchestrator -> agent):
//!                               output consumed up to `offset`; no payload
//! 1       8     sessionId   the session from terminal.open
//! 9       8     offset      position of the payload's first byte in the
//!                           session's stream (output: bytes produced so far;
//!                           input: bytes sent so far)
//! 17      n     payload     0 ..= MAX_BINARY_PAYLOAD bytes
//! ```
//!
//! The offset lets a viewer that reconnects ask for exactly the bytes it
//! missed, and lets the receiver drop a duplicate after a retry. Acks are the
//! flow control: an agent keeps at most [`OUTPUT_WINDOW`] bytes of a
//! session's output un-acked and stops reading its PTY until an ack arrives,
//! so a flood blocks the program that writes it, not the link.

/// Output bytes a session may have in flight (produced, not yet acked): the
/// agent's whole scrollback, so un-acked bytes are always still held. It
/// has to cover the bandwidth-delay product of the longest path (agent,
/// orchestrator, browser and the ack back): 256 KiB held a local `cat` at
/// about 45 MB/s; 1 MiB lets it run at 56-58 MB/s (BENCHMARKS.md).
pub const OUTPUT_WINDOW: u64 = 1024 * 1024;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 17;

/// What a binary frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    TerminalOutput,
    TerminalInput,
    TerminalAck,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::TerminalOutput => 1,
            Self::TerminalInput => 2,
            Self::TerminalAck => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::TerminalOutput),
            2 => Some(Self::TerminalInput),
            3 => Some(Self::TerminalAck),
            _ => None,
        }
    }
}

/// One decoded binary frame, borrowing its payload from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    pub session_id: u64,
    pub offset: u64,
    pub payload: &'a [u8],
}

/// Why a binary message is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("binary frame of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("binary frame payload of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("unknown binary frame kind {0}")]
    UnknownKind(u8),
}

impl<'a> Frame<'a> {
    /// Read a frame from one binary WebSocket message.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::Short(bytes.len()));
        };
        if payload.len() > crate::MAX_BINARY_PAYLOAD {
            return Err(FrameError::TooLarge {
                len: payload.len(),
                max: crate::MAX_BINARY_PAYLOAD,
            });
        }
        let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[1..9]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&header[9..17]);
        Ok(Self {
            kind,
            session_id: u64::from_be_bytes(id),
            offset: u64::from_be_bytes(offset),
            payload,
        })
    }

    /// Write this frame as one binary WebSocket message.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        if self.payload.len() > crate::MAX_BINARY_PAYLOAD {
            return Err(FrameError::TooLarge {
                len: self.payload.len(),
                max: crate::MAX_BINARY_PAYLOAD,
            });
        }
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(self.payload);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let f = Frame {
            kind: FrameKind::TerminalOutput,
            session_id: 0x0102_0304_0506_0708,
            offset: 42,
            payload: b"hello\x00\xff",
        };
        let bytes = f.encode().unwrap();
        assert_eq!(&bytes[..9], &[1, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Frame::decode(&bytes).unwrap(), f);
    }

    #[test]
    fn short_unknown_and_oversized_frames_are_errors() {
        assert_eq!(Frame::decode(&[1, 2, 3]), Err(FrameError::Short(3)));
        let mut bad = vec![9u8; HEADER_LEN];
        assert_eq!(Frame::decode(&bad), Err(FrameError::UnknownKind(9)));
        bad[0] = 1;
        bad.resize(HEADER_LEN + crate::MAX_BINARY_PAYLOAD + 1, 0);
        assert!(matches!(
            Frame::decode(&bad),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn empty_payload_is_a_frame() {
        let f = Frame::decode(&[2; HEADER_LEN]).unwrap();
        assert_eq!(f.kind, FrameKind::TerminalInput);
        assert!(f.payload.is_empty());
    }
}
