//! The mirror: the most recent output of one session (1 MiB), with the byte
//! offset of its first byte in the session's output stream, so a viewer can
//! be served from any offset the mirror still holds.
//!
//! Frames from the agent carry the offset of their first byte. A frame
//! overlapping what the mirror holds adds only its new tail (a replay after
//! `terminal.attach` repeats bytes we have); a frame starting beyond the end
//! means the bytes in between are gone for good (they left the agent's
//! scrollback): the mirror starts again at the frame. Bytes below the
//! mirror's start (a replay asked for an older viewer) are not kept here:
//! the session hands them to the viewers that asked (see `session`).

use std::collections::VecDeque;

/// How much output a mirror keeps: the agent's scrollback size.
pub const MIRROR_CAPACITY: usize = 1 << 20;

/// What a frame did to the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// This many new bytes were appended.
    Appended(usize),
    /// Nothing new: the frame lies within (or below) what is held.
    Old,
    /// The frame started past the end: `lost` bytes never arrived, and the
    /// mirror now starts at the frame.
    Gap { lost: u64 },
}

/// A bounded window `[start, end)` of a session's output stream.
#[derive(Debug)]
pub struct Mirror {
    start: u64,
    data: VecDeque<u8>,
    capacity: usize,
}

impl Mirror {
    /// An empty mirror whose next byte is at `start`.
    pub fn new(start: u64) -> Self {
        Self::with_capacity(start, MIRROR_CAPACITY)
    }

    pub fn with_capacity(start: u64, capacity: usize) -> Self {
        Self {
            start,
            data: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset just past the newest byte held.
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// Forget everything; the next byte is at `start`.
    pub fn reset(&mut self, start: u64) {
        self.data.clear();
        self.start = start;
    }

    /// Take one frame of output whose first byte is at `offset`.
    pub fn push(&mut self, offset: u64, bytes: &[u8]) -> Pushed {
        let end = self.end();
        let outcome = if offset > end {
            self.reset(offset);
            self.data.extend(bytes);
            Pushed::Gap { lost: offset - end }
        } else {
            let frame_end = offset.saturating_add(bytes.len() as u64);
            if frame_end <= end {
                return Pushed::Old;
            }
            // `end - offset` < `bytes.len()` here, so it fits a usize.
            let skip = usize::try_from(end - offset).unwrap_or(bytes.len());
            let new = &bytes[skip.min(bytes.len())..];
            self.data.extend(new);
            Pushed::Appended(new.len())
        };
        if self.data.len() > self.capacity {
            let excess = self.data.len() - self.capacity;
            self.data.drain(..excess);
            self.start += excess as u64;
        }
        outcome
    }

    /// Up to `max` bytes from `pos`, if the mirror holds `pos` and there is
    /// something after it.
    pub fn read(&self, pos: u64, max: usize) -> Option<Vec<u8>> {
        if pos < self.start || pos >= self.end() || max == 0 {
            return None;
        }
        let from = usize::try_from(pos - self.start).ok()?;
        let to = from.saturating_add(max).min(self.data.len());
        let (a, b) = self.data.as_slices();
        let mut out = Vec::with_capacity(to - from);
        if from < a.len() {
            out.extend_from_slice(&a[from..to.min(a.len())]);
        }
        if to > a.len() {
            out.extend_from_slice(&b[from.saturating_sub(a.len())..to - a.len()]);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_from_any_held_offset() {
        let mut m = Mirror::new(0);
        assert_eq!(m.push(0, b"hello "), Pushed::Appended(6));
        assert_eq!(m.push(6, b"world"), Pushed::Appended(5));
        assert_eq!((m.start(), m.end()), (0, 11));
        assert_eq!(m.read(0, 100).unwrap(), b"hello world");
        assert_eq!(m.read(6, 3).unwrap(), b"wor");
        assert_eq!(m.read(11, 10), None);
        assert_eq!(m.read(12, 10), None);
    }

    #[test]
    fn a_replay_adds_only_its_new_tail() {
        let mut m = Mirror::new(0);
        m.push(0, b"abcdef");
        assert_eq!(m.push(2, b"cd"), Pushed::Old);
        assert_eq!(m.push(4, b"efgh"), Pushed::Appended(2));
        assert_eq!(m.read(0, 100).unwrap(), b"abcdefgh");
    }

    #[test]
    fn a_gap_starts_again_at_the_frame() {
        let mut m = Mirror::new(0);
        m.push(0, b"abc");
        assert_eq!(m.push(10, b"xyz"), Pushed::Gap { lost: 7 });
        assert_eq!((m.start(), m.end()), (10, 13));
        assert_eq!(m.read(0, 10), None);
        assert_eq!(m.read(10, 10).unwrap(), b"xyz");
    }

    #[test]
    fn keeps_only_its_capacity_across_the_ring_seam() {
        let mut m = Mirror::with_capacity(0, 8);
        for chunk in [&b"0123"[..], b"4567", b"89ab", b"cd"] {
            let at = m.end();
            m.push(at, chunk);
        }
        assert_eq!((m.start(), m.end()), (6, 14));
        assert_eq!(m.read(5, 100), None);
        assert_eq!(m.read(6, 100).unwrap(), b"6789abcd");
        assert_eq!(m.read(9, 4).unwrap(), b"9abc");
        // One frame bigger than the mirror keeps its tail.
        m.push(14, b"ABCDEFGHIJKL");
        assert_eq!(m.read(m.start(), 100).unwrap(), b"EFGHIJKL");
    }

    #[test]
    fn a_mirror_can_start_anywhere() {
        let mut m = Mirror::new(1_000);
        assert_eq!(m.push(1_000, b"x"), Pushed::Appended(1));
        assert_eq!(m.read(1_000, 1).unwrap(), b"x");
        m.reset(5);
        assert_eq!((m.start(), m.end()), (5, 5));
    }
}
