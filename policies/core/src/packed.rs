//! The Rust SDK for a placement's packed candidates (`candidates` in
//! `crops:policy@0.2.0`): [`workers`] decodes them into plain [`Worker`]
//! records that borrow the call's text and table, copying nothing. The
//! layout is documented in policies/sdk/README.md.

use crate::{Mode, Profile, Worker};

/// Bytes of one worker entry in the table.
pub const ENTRY: usize = 96;

/// The table is shorter than `count` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub count: u32,
    pub table: usize,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} workers need {} table bytes; {} were sent",
            self.count,
            self.count as usize * ENTRY,
            self.table
        )
    }
}

impl std::error::Error for Malformed {}

/// The call's strings: text refs resolved against `text`.
#[derive(Clone, Copy)]
struct Text<'a> {
    text: &'a str,
    table: &'a [u8],
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

#[inline(always)]
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl<'a> Text<'a> {
    /// The string the ref at `b[at..]` names ("" if it names nothing).
    #[inline(always)]
    fn get(self, b: &[u8], at: usize) -> &'a str {
        let (start, len) = (u32_at(b, at) as usize, u32_at(b, at + 4) as usize);
        self.text
            .get(start..start.saturating_add(len))
            .unwrap_or("")
    }

    /// The `n` bytes of `table` from `at` that `n` refs of `size` need
    /// (empty if out of range).
    fn run(self, at: u32, n: u32, size: usize) -> &'a [u8] {
        let at = at as usize;
        (n as usize)
            .checked_mul(size)
            .and_then(|len| self.table.get(at..at.checked_add(len)?))
            .unwrap_or(&[])
    }
}

/// A worker's strings (its images), packed or plain.
#[derive(Clone, Copy)]
pub struct Strs<'a>(StrsRepr<'a>);

#[derive(Clone, Copy)]
enum StrsRepr<'a> {
    Plain(&'a [&'a str]),
    Packed(Text<'a>, &'a [u8]),
}

impl<'a> Strs<'a> {
    pub const fn plain(s: &'a [&'a str]) -> Self {
        Self(StrsRepr::Plain(s))
    }

    pub fn len(&self) -> usize {
        match self.0 {
            StrsRepr::Plain(s) => s.len(),
            StrsRepr::Packed(_, refs) => refs.len() / 8,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (plain, packed) = match self.0 {
            StrsRepr::Plain(s) => (s, None),
            StrsRepr::Packed(t, refs) => (&[][..], Some((t, refs))),
        };
        let packed = packed
            .into_iter()
            .flat_map(|(t, refs)| (0..refs.len() / 8).map(move |i| t.get(refs, i * 8)));
        plain.iter().copied().chain(packed)
    }

    pub fn contains(&self, s: &str) -> bool {
        self.iter().any(|x| x == s)
    }
}

/// A worker's labels (key, value), packed or plain.
#[derive(Clone, Copy)]
pub struct Pairs<'a>(PairsRepr<'a>);

#[derive(Clone, Copy)]
enum PairsRepr<'a> {
    Plain(&'a [(&'a str, &'a str)]),
    Packed(Text<'a>, &'a [u8]),
}

impl<'a> Pairs<'a> {
    pub const fn plain(s: &'a [(&'a str, &'a str)]) -> Self {
        Self(PairsRepr::Plain(s))
    }

    pub fn len(&self) -> usize {
        match self.0 {
            PairsRepr::Plain(s) => s.len(),
            PairsRepr::Packed(_, refs) => refs.len() / 16,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (plain, packed) = match self.0 {
            PairsRepr::Plain(s) => (s, None),
            PairsRepr::Packed(t, refs) => (&[][..], Some((t, refs))),
        };
        let packed = packed.into_iter().flat_map(|(t, refs)| {
            (0..refs.len() / 16).map(move |i| (t.get(refs, i * 16), t.get(refs, i * 16 + 8)))
        });
        plain.iter().copied().chain(packed)
    }

    /// The value of `key`, if the worker has that label.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

macro_rules! eq_and_debug {
    ($t:ident) => {
        impl PartialEq for $t<'_> {
            fn eq(&self, other: &Self) -> bool {
                self.len() == other.len() && self.iter().eq(other.iter())
            }
        }

        impl std::fmt::Debug for $t<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_list().entries(self.iter()).finish()
            }
        }
    };
}
eq_and_debug!(Strs);
eq_and_debug!(Pairs);

/// The `count` workers of `table`, in order, as plain records borrowing
/// `text` and `table`. A ref out of range reads as "" (or an empty set):
/// the host never sends one.
pub fn workers<'a>(
    count: u32,
    text: &'a str,
    table: &'a [u8],
) -> Result<impl ExactSizeIterator<Item = Worker<'a>> + 'a, Malformed> {
    let entries = (count as usize)
        .checked_mul(ENTRY)
        .and_then(|n| table.get(..n))
        .ok_or(Malformed {
            count,
            table: table.len(),
        })?;
    let t = Text { text, table };
    Ok(entries.chunks_exact(ENTRY).map(move |e| worker(t, e)))
}

const PROFILES: [Profile; 4] = [
    Profile::Open,
    Profile::Standard,
    Profile::Strict,
    Profile::Offline,
];

#[inline(always)]
fn worker<'a>(t: Text<'a>, e: &[u8]) -> Worker<'a> {
    let flags = e[94];
    Worker {
        id: t.get(e, 0),
        mode: if e[92] == 0 { Mode::Byom } else { Mode::Fleet },
        tenant_id: t.get(e, 8),
        platform: t.get(e, 16),
        arch: t.get(e, 24),
        region: t.get(e, 32),
        labels: Pairs(PairsRepr::Packed(
            t,
            t.run(u32_at(e, 40), u32_at(e, 44), 16),
        )),
        images: Strs(StrsRepr::Packed(t, t.run(u32_at(e, 48), u32_at(e, 52), 8))),
        memory_total: u64_at(e, 56),
        memory_free: u64_at(e, 64),
        disk_free: (flags & 8 != 0).then(|| u64_at(e, 72)),
        cpu_count: u32_at(e, 80),
        cpu_load_permille: u32_at(e, 84),
        containers_running: u32_at(e, 88),
        // An unknown profile is the strongest (it rejects the most).
        security_floor: PROFILES[usize::from(e[93]).min(3)],
        drained: flags & 1 != 0,
        cordoned: flags & 2 != 0,
        online: flags & 4 != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: &mut Vec<u8>, start: u32, len: u32) {
        b.extend(start.to_le_bytes());
        b.extend(len.to_le_bytes());
    }

    /// Two workers sharing one image set, as the host would pack them.
    #[test]
    fn decodes_the_documented_layout() {
        let text = "w1w2linuxeuk\u{e9}vlocalhost/a:1";
        let mut table = Vec::new();
        let sets = 2 * ENTRY as u32;
        for (i, id) in [(0u32, 0u32), (1, 2)] {
            r(&mut table, id, 2);
            r(&mut table, 0, 0);
            r(&mut table, 4, 5);
            r(&mut table, 0, 0);
            r(&mut table, 9, 2);
            r(&mut table, sets, i); // labels: none for w1, one pair for w2
            r(&mut table, sets + 16, 1);
            table.extend((16u64 << 30).to_le_bytes());
            table.extend((8u64 << 30).to_le_bytes());
            table.extend(u64::MAX.to_le_bytes());
            table.extend(8u32.to_le_bytes());
            table.extend(500u32.to_le_bytes());
            table.extend(2u32.to_le_bytes());
            table.extend([i as u8, 2, if i == 0 { 4 | 8 } else { 1 | 2 }, 0]);
        }
        r(&mut table, 11, 1); // "k"
        r(&mut table, 12, 3); // "év"... "\u{e9}v" is 3 bytes
        r(&mut table, 15, 13);
        let ws: Vec<_> = workers(2, text, &table).expect("whole").collect();
        assert_eq!(ws.len(), 2);
        let (a, b) = (&ws[0], &ws[1]);
        assert_eq!((a.id, b.id), ("w1", "w2"));
        assert_eq!((a.mode, b.mode), (Mode::Byom, Mode::Fleet));
        assert_eq!((a.platform, a.arch, a.region), ("linux", "", "eu"));
        assert!(a.labels.is_empty());
        assert_eq!(b.labels.get("k"), Some("\u{e9}v"));
        assert_eq!(a.images, Strs::plain(&["localhost/a:1"]));
        assert!(b.images.contains("localhost/a:1"));
        assert_eq!(a.disk_free, Some(u64::MAX));
        assert_eq!(b.disk_free, None);
        assert_eq!((a.memory_total, a.memory_free), (16 << 30, 8 << 30));
        assert_eq!(
            (a.cpu_count, a.cpu_load_permille, a.containers_running),
            (8, 500, 2)
        );
        assert_eq!(a.security_floor, Profile::Strict);
        assert!(a.online && !a.drained && !a.cordoned);
        assert!(!b.online && b.drained && b.cordoned);
    }

    #[test]
    fn a_short_table_is_malformed_and_bad_refs_read_empty() {
        assert!(workers(2, "", &[0; ENTRY]).is_err());
        let mut e = vec![0u8; ENTRY];
        e[0..4].copy_from_slice(&7u32.to_le_bytes());
        e[4..8].copy_from_slice(&9u32.to_le_bytes());
        e[48..52].copy_from_slice(&1000u32.to_le_bytes());
        e[52..56].copy_from_slice(&3u32.to_le_bytes());
        let w = workers(1, "short", &e)
            .expect("one")
            .next()
            .expect("worker");
        assert_eq!(w.id, "");
        assert!(w.images.is_empty());
    }
}
