//! The frames the agent writes to the in-container PTY helper's stdin
//! (`/.crops/crops-pty`, see [`super::helper`]): keyboard input and window
//! sizes, in one ordered byte stream. The other direction needs no framing:
//! the helper's stdout is the raw PTY output.
//!
//! Every frame is a 3-byte header and a payload:
//!
//! ```text
//! offset  size  field
//! 0       1     kind: 0 = input, 1 = resize; others are skipped whole
//! 1       2     payload length n, big-endian (0 ..= 65535)
//! 3       n     payload
//! ```
//!
//! * **input** (kind 0): the payload is bytes typed, written to the PTY as
//!   they are. Longer input is split into several frames.
//! * **resize** (kind 1): the payload is `cols` then `rows`, each a
//!   big-endian u16 (n = 4); the helper sets the window size (TIOCSWINSZ),
//!   and the kernel sends SIGWINCH to the foreground process group. Sizes of
//!   0 are ignored.
//!
//! A kind the helper does not know is skipped by its length, so a newer
//! agent may add kinds an older helper (still mounted in a container created
//! earlier) ignores. The end of the stream (EOF) means "hang up".

/// Frame kind: keyboard input.
pub const KIND_INPUT: u8 = 0;
/// Frame kind: a new window size.
pub const KIND_RESIZE: u8 = 1;
/// Bytes before every payload.
pub const HEADER: usize = 3;
/// The largest payload one frame carries.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Input(&'a [u8]),
    Resize {
        cols: u16,
        rows: u16,
    },
    /// A kind this side does not know (or a resize of the wrong length).
    Unknown {
        kind: u8,
        len: usize,
    },
}

/// Append `bytes` as input frames to `out` (none for no bytes).
pub fn encode_input(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_PAYLOAD) {
        out.push(KIND_INPUT);
        // Cannot truncate: chunks are at most MAX_PAYLOAD bytes.
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Append a resize frame to `out`.
pub fn encode_resize(cols: u16, rows: u16, out: &mut Vec<u8>) {
    out.push(KIND_RESIZE);
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&cols.to_be_bytes());
    out.extend_from_slice(&rows.to_be_bytes());
}

/// Decode the first complete frame of `buf`: the frame and the bytes it
/// took, or `None` while `buf` holds less than a whole frame.
pub fn decode(buf: &[u8]) -> Option<(Message<'_>, usize)> {
    if buf.len() < HEADER {
        return None;
    }
    let kind = buf[0];
    let len = usize::from(u16::from_be_bytes([buf[1], buf[2]]));
    let payload = buf.get(HEADER..HEADER + len)?;
    let msg = match (kind, payload) {
        (KIND_INPUT, p) => Message::Input(p),
        (KIND_RESIZE, &[c0, c1, r0, r1]) => Message::Resize {
            cols: u16::from_be_bytes([c0, c1]),
            rows: u16::from_be_bytes([r0, r1]),
        },
        _ => Message::Unknown { kind, len },
    };
    Some((msg, HEADER + len))
}

/// A byte stream cut into frames: bytes go in as they are read, whole
/// frames come out; a partial frame waits for the rest.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first undecoded byte in `buf`.
    at: usize,
}

impl Decoder {
    /// Add bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 64 * 1024 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if there is one.
    pub fn next_frame(&mut self) -> Option<Message<'_>> {
        let (msg, used) = decode(&self.buf[self.at..])?;
        self.at += used;
        Some(msg)
    }

    /// Bytes held that do not yet make a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded frame that owns its bytes, to collect and compare.
    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Input(Vec<u8>),
        Resize(u16, u16),
        Unknown(u8, usize),
    }

    fn all(d: &mut Decoder) -> Vec<Owned> {
        let mut v = Vec::new();
        while let Some(m) = d.next_frame() {
            v.push(match m {
                Message::Input(b) => Owned::Input(b.to_vec()),
                Message::Resize { cols, rows } => Owned::Resize(cols, rows),
                Message::Unknown { kind, len } => Owned::Unknown(kind, len),
            });
        }
        v
    }

    #[test]
    fn input_and_resize_round_trip_in_order() {
        let mut wire = Vec::new();
        encode_input(b"echo hi\r", &mut wire);
        encode_resize(132, 43, &mut wire);
        encode_input(b"\x03", &mut wire);
        assert_eq!(&wire[..3], &[0, 0, 8], "kind, then the length big-endian");
        assert_eq!(&wire[11..18], &[1, 0, 4, 0, 132, 0, 43]);
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(
            all(&mut d),
            vec![
                Owned::Input(b"echo hi\r".to_vec()),
                Owned::Resize(132, 43),
                Owned::Input(b"\x03".to_vec()),
            ]
        );
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_once_complete() {
        let mut wire = Vec::new();
        encode_input(b"abc", &mut wire);
        encode_resize(80, 24, &mut wire);
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            got.extend(all(&mut d));
        }
        assert_eq!(
            got,
            vec![Owned::Input(b"abc".to_vec()), Owned::Resize(80, 24)]
        );
        d.push(&[0, 0]);
        assert_eq!(d.next_frame(), None, "a header alone is no frame");
        assert_eq!(d.pending(), 2);
    }

    #[test]
    fn long_input_is_split_into_frames_that_rejoin_exactly() {
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        encode_input(&big, &mut wire);
        assert_eq!(wire.len(), big.len() + 4 * HEADER, "four frames");
        let mut d = Decoder::default();
        let mut joined = Vec::new();
        for chunk in wire.chunks(7_777) {
            d.push(chunk);
            while let Some(m) = d.next_frame() {
                match m {
                    Message::Input(b) => joined.extend_from_slice(b),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(joined, big);
        let mut none = Vec::new();
        encode_input(b"", &mut none);
        assert!(none.is_empty(), "no input, no frame");
    }

    #[test]
    fn unknown_kinds_and_odd_resizes_are_skipped_by_length() {
        let mut wire = vec![9, 0, 2, 0xaa, 0xbb];
        wire.extend_from_slice(&[KIND_RESIZE, 0, 1, 7]);
        encode_input(b"x", &mut wire);
        let mut d = Decoder::default();
        d.push(&wire);
        assert_eq!(
            all(&mut d),
            vec![
                Owned::Unknown(9, 2),
                Owned::Unknown(KIND_RESIZE, 1),
                Owned::Input(b"x".to_vec()),
            ]
        );
    }
}
