//! A session's output as a byte stream with absolute offsets: the bounded
//! scrollback ring that keeps its newest bytes, and the flow-control
//! arithmetic (produced, sent, acked, window) that decides when the PTY may
//! be read again.
//!
//! Offsets count every byte the session ever produced, so a viewer that
//! reconnects names exactly where it stopped. The ring keeps the last
//! [`SCROLLBACK`] bytes; because the reader never lets more than
//! [`OUTPUT_WINDOW`] bytes go un-acked and the window is no larger than
//! the ring, bytes not yet acked are always still held.

use std::collections::VecDeque;

use protocol::frame::OUTPUT_WINDOW;

/// Output kept per session, bytes.
pub const SCROLLBACK: usize = 1024 * 1024;

// The guarantee above needs the window to fit in the ring.
const _: () = assert!(OUTPUT_WINDOW as usize <= SCROLLBACK);

/// The newest bytes of one output stream, addressed by absolute offset.
#[derive(Debug)]
pub struct Scrollback {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes produced so far: the offset one past the newest byte.
    end: u64,
}

impl Scrollback {
    /// An empty ring holding at most `cap` bytes (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap: cap.max(1),
            end: 0,
        }
    }

    /// Offset of the oldest byte still held (equal to [`Self::end`] when empty).
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    /// Bytes produced so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Append output; the oldest bytes fall out beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        let keep = if bytes.len() > self.cap {
            &bytes[bytes.len() - self.cap..]
        } else {
            bytes
        };
        let overflow = (self.buf.len() + keep.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(keep);
    }

    /// Up to `max` bytes starting at `from` (moved up to [`Self::start`] if
    /// those bytes are gone). Returns the offset of the first byte returned.
    pub fn read(&self, from: u64, max: usize) -> (u64, Vec<u8>) {
        let from = from.clamp(self.start(), self.end);
        let skip = usize::try_from(from - self.start()).unwrap_or(usize::MAX);
        let stop = skip + max.min(self.buf.len() - skip);
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(stop - skip);
        if skip < a.len() {
            bytes.extend_from_slice(&a[skip..stop.min(a.len())]);
        }
        if stop > a.len() {
            bytes.extend_from_slice(&b[skip.saturating_sub(a.len())..stop - a.len()]);
        }
        (from, bytes)
    }

    /// The last non-empty line held, as text (for an error message).
    pub fn last_line(&self) -> String {
        let tail: Vec<u8> = self
            .buf
            .iter()
            .skip(self.buf.len().saturating_sub(4096))
            .copied()
            .collect();
        let text = String::from_utf8_lossy(&tail);
        text.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or_default()
            .to_owned()
    }
}

/// How far one session's output has gone: produced (the scrollback's end),
/// handed to the link, and acknowledged by the orchestrator.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Next offset to send on the attached link.
    pub sent: u64,
    /// Output the orchestrator has consumed.
    pub acked: u64,
}

impl Flow {
    /// Bytes the reader may take from the PTY now: the window minus what is
    /// produced and not yet acked.
    pub fn room(&self, end: u64) -> u64 {
        OUTPUT_WINDOW.saturating_sub(end.saturating_sub(self.acked))
    }

    /// An ack of everything below `offset`. Acks never go backwards, and
    /// never past what was produced. Returns whether the window grew.
    pub fn ack(&mut self, offset: u64, end: u64) -> bool {
        let offset = offset.min(end);
        if offset > self.acked {
            self.acked = offset;
            return true;
        }
        false
    }

    /// A (re)attach asking for output from `offset`: the replay starts there,
    /// or at the oldest byte held if that is later (never past `end`).
    /// Bytes before the replay will not be sent again, so they count as acked.
    pub fn attach(&mut self, offset: u64, start: u64, end: u64) -> u64 {
        let from = offset.clamp(start, end);
        self.sent = from;
        self.acked = self.acked.max(from);
        from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sb: &Scrollback, from: u64) -> (u64, String) {
        let (at, bytes) = sb.read(from, usize::MAX);
        (at, String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn offsets_stay_absolute_as_old_bytes_fall_out() {
        let mut sb = Scrollback::new(8);
        assert_eq!((sb.start(), sb.end()), (0, 0));
        sb.push(b"hello");
        assert_eq!(text(&sb, 0), (0, "hello".into()));
        sb.push(b" world");
        // 11 bytes produced, the newest 8 kept.
        assert_eq!((sb.start(), sb.end()), (3, 11));
        assert_eq!(text(&sb, 0), (3, "lo world".into()));
        assert_eq!(text(&sb, 6), (6, "world".into()));
        assert_eq!(text(&sb, 11), (11, String::new()));
        assert_eq!(text(&sb, 99), (11, String::new()), "clamped to the end");
        assert_eq!(sb.read(3, 2), (3, b"lo".to_vec()));
    }

    #[test]
    fn a_push_larger_than_the_ring_keeps_its_tail() {
        let mut sb = Scrollback::new(4);
        sb.push(b"ab");
        sb.push(b"0123456789");
        assert_eq!((sb.start(), sb.end()), (8, 12));
        assert_eq!(text(&sb, 0), (8, "6789".into()));
    }

    #[test]
    fn reads_match_the_whole_stream_as_the_ring_wraps() {
        let mut sb = Scrollback::new(37);
        let mut all = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..500 {
            let chunk: Vec<u8> = (0..rng.usize(0..50)).map(|_| rng.u8(..)).collect();
            sb.push(&chunk);
            all.extend_from_slice(&chunk);
            let from = rng.u64(0..=sb.end() + 3);
            let max = rng.usize(0..60);
            let (at, bytes) = sb.read(from, max);
            let at_i = at as usize;
            assert_eq!(at, from.clamp(sb.start(), sb.end()));
            assert_eq!(bytes, &all[at_i..(at_i + max).min(all.len())]);
        }
    }

    #[test]
    fn the_last_line_skips_blank_ones() {
        let mut sb = Scrollback::new(64);
        sb.push(b"hello\r\nError: no such container\r\n\r\n");
        assert_eq!(sb.last_line(), "Error: no such container");
        assert_eq!(Scrollback::new(4).last_line(), "");
    }

    #[test]
    fn the_window_closes_at_256_kib_unacked_and_acks_reopen_it() {
        let mut flow = Flow::default();
        assert_eq!(flow.room(0), OUTPUT_WINDOW);
        assert_eq!(flow.room(OUTPUT_WINDOW - 10), 10);
        assert_eq!(flow.room(OUTPUT_WINDOW), 0);
        assert!(flow.ack(1000, OUTPUT_WINDOW));
        assert_eq!(flow.room(OUTPUT_WINDOW), 1000);
        assert!(!flow.ack(500, OUTPUT_WINDOW), "acks never go backwards");
        assert_eq!(flow.acked, 1000);
        flow.ack(u64::MAX, OUTPUT_WINDOW);
        assert_eq!(flow.acked, OUTPUT_WINDOW, "never past what was produced");
        assert_eq!(flow.room(OUTPUT_WINDOW), OUTPUT_WINDOW);
    }

    #[test]
    fn attach_replays_from_the_offset_or_the_oldest_byte_held() {
        let mut flow = Flow {
            sent: 900,
            acked: 500,
        };
        // Asked for bytes still held: replay from there; acks unchanged below it.
        assert_eq!(flow.attach(700, 100, 1000), 700);
        assert_eq!(
            flow,
            Flow {
                sent: 700,
                acked: 700
            }
        );
        // Asked for bytes gone from the ring: start at the oldest held.
        assert_eq!(flow.attach(50, 100, 1000), 100);
        assert_eq!(flow.sent, 100);
        assert_eq!(flow.acked, 700, "acks never go backwards");
        // Asked beyond the end: nothing to replay.
        assert_eq!(flow.attach(5000, 100, 1000), 1000);
        assert_eq!(
            flow,
            Flow {
                sent: 1000,
                acked: 1000
            }
        );
    }

    #[test]
    fn unacked_bytes_are_always_held() {
        // Drive a reader that obeys the window against a ring the size of the
        // real one, acking in uneven steps: what is un-acked is never gone.
        let mut sb = Scrollback::new(SCROLLBACK);
        let mut flow = Flow::default();
        let mut n = 0u64;
        for step in 0..2000u64 {
            let room = flow.room(sb.end());
            let chunk = room.min(1 + (step * 7919) % 70_000);
            sb.push(&vec![b'x'; chunk as usize]);
            n += chunk;
            assert!(sb.start() <= flow.acked, "un-acked bytes fell out");
            if step % 3 == 0 {
                flow.ack(flow.acked + (step * 104_729) % 300_000, sb.end());
            }
        }
        assert_eq!(sb.end(), n);
        assert!(n > 10 * SCROLLBACK as u64, "the test went around the ring");
    }
}
