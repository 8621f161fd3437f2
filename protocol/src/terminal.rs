//! Terminal commands. Keystrokes and screen output never travel as JSON:
//! they are binary frames ([`crate::frame`]) carrying the `sessionId`.

use serde::{Deserialize, Serialize};

/// `terminal.open`: a PTY running `command` (default: the container's shell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalOpen {
    pub container_id: String,
    pub cols: u16,
    pub rows: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

/// Result of `terminal.open`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalOpened {
    /// Names the session in binary frames; below 2^53 so JavaScript keeps it exact.
    pub session_id: u64,
}

/// `terminal.resize`: the new window size, delivered to the program as SIGWINCH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalResize {
    pub session_id: u64,
    pub cols: u16,
    pub rows: u16,
}

/// `terminal.attach`: stream this session's output again, starting at byte
/// `offset` of its output stream. Sent by the orchestrator after a reconnect
/// for every session it still serves (the agent lists them in
/// `worker.inventory`). The agent replays from its scrollback: from `offset`,
/// or from the oldest byte it still holds if `offset` fell out of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalAttach {
    pub session_id: u64,
    pub offset: u64,
}

/// Result of `terminal.attach`: where the replay starts and how much output
/// the session has produced so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalAttached {
    pub session_id: u64,
    /// First byte that will be sent; above the requested offset only when the
    /// bytes in between left the scrollback.
    pub offset: u64,
    /// Bytes of output produced so far.
    pub end: u64,
    /// Bytes of input written so far: the next input frame's offset. An
    /// orchestrator that restarted learns here where to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_end: Option<u64>,
}

/// One live terminal session in `worker.inventory`, so an orchestrator that
/// lost its link (or restarted) can attach again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalInfo {
    pub session_id: u64,
    pub container_id: String,
    /// Bytes of output produced so far.
    pub output_end: u64,
    /// Bytes of input received so far: the next input frame's offset.
    pub input_end: u64,
}

/// `terminal.close`: hang up the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalClose {
    pub session_id: u64,
}

/// `terminal.exited` (agent -> orchestrator): the session is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalExited {
    pub session_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended, for humans: `exited`, `closed`, `container stopped`.
    pub reason: String,
}
