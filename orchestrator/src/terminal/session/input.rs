//! The input side of a session's state: input held while its link is away
//! or attaching, the newest input sent (kept to send again what a dropped
//! link lost in flight), where the input stream resumes after an attach,
//! and the notes that tell viewers what was not delivered.
//!
//! Exactly once: every input byte gets its offset when it leaves on a
//! link, and the agent drops bytes below what it already wrote. After an
//! attach the agent's `inputEnd` says what arrived; the bytes between it
//! and what was sent are sent again from the kept copy (when they are
//! older than the copy, viewers are told how many were lost). Only the
//! attach's own answer decides what goes again: an inventory's `inputEnd`
//! may be older than input sent since on the same connection, and sending
//! that again at the newer offset would type it twice.

use super::{State, MAX_HELD_INPUT};

/// At most this many characters of undelivered input are quoted back.
const EXCERPT: usize = 40;

impl State {
    /// Keep `bytes` until the session is attached; the bytes not kept
    /// (all of them, once [`MAX_HELD_INPUT`] are held) come back.
    pub(super) fn hold_input(&mut self, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        if self.held_input.len() + bytes.len() > MAX_HELD_INPUT {
            return Err(bytes);
        }
        self.held_input.extend_from_slice(&bytes);
        Ok(())
    }

    /// Input leaving on the live link now: any held input first, then
    /// `bytes`, as frames with their offsets; a copy of the newest is kept.
    pub(super) fn send_input(&mut self, bytes: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        let mut all = std::mem::take(&mut self.held_input);
        all.extend_from_slice(&bytes);
        if self.sent_end != self.input_offset {
            // Not contiguous with the copy; settle_input aligns the two
            // before a link goes online, so this is a guard, not a path.
            self.sent_input.clear();
        }
        let mut chunks = Vec::new();
        for chunk in all.chunks(protocol::MAX_BINARY_PAYLOAD) {
            chunks.push((self.input_offset, chunk.to_vec()));
            self.input_offset += chunk.len() as u64;
        }
        self.sent_input.extend(&all);
        self.sent_end = self.input_offset;
        let excess = self.sent_input.len().saturating_sub(MAX_HELD_INPUT);
        self.sent_input.drain(..excess);
        chunks
    }

    /// The agent says its input stream ends at `end`: input continues
    /// there. Nothing is sent again yet ([`Self::settle_input`] does, once
    /// attached), so a later, newer `end` still counts.
    pub(super) fn resume_input(&mut self, end: u64) {
        if end >= self.sent_end {
            // All that was sent arrived (or another stream went on).
            self.sent_input.clear();
            self.sent_end = end;
        }
        self.input_offset = end;
    }

    /// Attached: bytes sent beyond where the agent's input ends were lost
    /// with a link. They go out again, before anything held, if the kept
    /// copy still has them; else viewers are told.
    pub(super) fn settle_input(&mut self) {
        let missing = self.sent_end.saturating_sub(self.input_offset);
        if missing > 0 {
            let kept = self.sent_input.len() as u64;
            if missing <= kept {
                let from = usize::try_from(kept - missing).unwrap_or(0);
                let mut again: Vec<u8> = self.sent_input.range(from..).copied().collect();
                again.append(&mut self.held_input);
                self.held_input = again;
            } else {
                tracing::warn!(missing, "input lost with a link, older than the copy kept");
                self.note_all(format!(
                    "{missing} bytes typed were lost with the worker's connection"
                ));
            }
        }
        self.sent_input.clear();
        self.sent_end = self.input_offset;
    }

    /// Tell every viewer `text` (as an `error` message).
    pub(super) fn note_all(&mut self, text: String) {
        for slot in &mut self.slots {
            slot.notes.push(text.clone());
            let _ = slot.wake.try_send(());
        }
    }
}

/// Printable, short: what the user typed, quoted back.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .chars()
        .take(EXCERPT)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > EXCERPT {
        out.push('…');
    }
    out
}

/// What a viewer is told when its typing could not be kept.
pub(crate) fn not_delivered(bytes: &[u8]) -> String {
    format!(
        "input not delivered: the worker is away and {MAX_HELD_INPUT} bytes already wait for it; {} bytes dropped: \"{}\"",
        bytes.len(),
        excerpt(bytes)
    )
}

/// What viewers are told when a session ends with typing still held.
pub(super) fn ended_with(held: &[u8]) -> String {
    format!(
        "input not delivered: the session ended before the worker was back; {} bytes dropped: \"{}\"",
        held.len(),
        excerpt(held)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_quote_what_was_typed_escaped_and_short() {
        let note = not_delivered(b"ls -la\r");
        assert!(note.contains("7 bytes dropped: \"ls -la\\r\""), "{note}");
        let long = vec![b'x'; 100];
        let note = ended_with(&long);
        assert!(
            note.contains(&format!("\"{}…\"", "x".repeat(EXCERPT))),
            "{note}"
        );
        assert!(note.contains("session ended"), "{note}");
    }
}
