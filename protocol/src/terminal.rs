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
