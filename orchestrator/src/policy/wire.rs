//! A placement's candidates packed for a guest (WIT `candidates`; the
//! layout is policies/sdk/README.md, which the SDKs decode): every
//! distinct string once in one `text`, label and image sets shared, and
//! every worker a fixed 96-byte entry of one byte `table`. Lowering them is
//! two copies, where 1,000 plain `worker` records cost about ten guest
//! allocations each (measured: 430 us per call, more than twice a whole
//! decision).
//!
//! [`Candidates`] keeps the interned form ([`Entry`]s of text refs and set
//! numbers) beside the packed value, so `policy::reuse` can check a new
//! fleet against it string by string and copy only the numbers in.

use std::collections::HashMap;

use super::bindings::types;
use super::types::{Profile, WorkerInput, WorkerMode};

/// Bytes of one worker entry.
pub const ENTRY: usize = 96;

/// A string of `text`: bytes `start .. start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRef {
    pub start: u32,
    pub len: u32,
}

/// One worker, interned: its strings as refs, its sets by number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub id: TextRef,
    pub mode: WorkerMode,
    pub tenant_id: TextRef,
    pub platform: TextRef,
    pub arch: TextRef,
    pub region: TextRef,
    /// Index into [`Candidates::label_sets`].
    pub labels: u32,
    pub cpu_count: u32,
    pub memory_total: u64,
    pub memory_free: u64,
    pub disk_free: Option<u64>,
    pub cpu_load_permille: u32,
    pub containers_running: u32,
    /// Index into [`Candidates::image_sets`].
    pub images: u32,
    pub security_floor: Profile,
    pub drained: bool,
    pub cordoned: bool,
    pub online: bool,
}

/// A placement's candidates: interned, and packed as the guest gets them.
pub struct Candidates {
    /// The WIT value (`count`, `text`, `table`); `table` is written by
    /// [`Candidates::pack`].
    pub wit: types::Candidates,
    pub label_sets: Vec<Vec<(TextRef, TextRef)>>,
    pub image_sets: Vec<Vec<TextRef>>,
    pub entries: Vec<Entry>,
}

/// How many distinct values are compared one by one before hashing.
const LINEAR: usize = 8;

/// Numbers distinct values: the first few by comparison (the usual
/// case: a handful of platforms, regions, label sets), then a map.
struct Interner<'a, K: ?Sized> {
    seen: Vec<&'a K>,
    more: HashMap<&'a K, u32>,
}

impl<'a, K: ?Sized + Eq + std::hash::Hash> Interner<'a, K> {
    fn new() -> Self {
        Self {
            seen: Vec::new(),
            more: HashMap::new(),
        }
    }

    /// The number of `k`, and whether it is new.
    fn get(&mut self, k: &'a K) -> (u32, bool) {
        if let Some(i) = self.seen.iter().position(|s| *s == k) {
            return (i as u32, false);
        }
        let next = (self.seen.len() + self.more.len()) as u32;
        if self.seen.len() < LINEAR {
            self.seen.push(k);
            return (next, true);
        }
        match self.more.entry(k) {
            std::collections::hash_map::Entry::Occupied(e) => (*e.get(), false),
            std::collections::hash_map::Entry::Vacant(e) => (*e.insert(next), true),
        }
    }
}

/// One field's distinct values (each field has few, so its own list
/// finds them in a comparison or two).
struct Field<'a> {
    ids: Interner<'a, str>,
    refs: Vec<TextRef>,
}

impl<'a> Field<'a> {
    fn new() -> Self {
        Self {
            ids: Interner::new(),
            refs: Vec::new(),
        }
    }

    /// `s`, sent once however many workers use it.
    fn get(&mut self, t: &mut String, s: &'a str) -> TextRef {
        let (i, new) = self.ids.get(s);
        if new {
            self.refs.push(push(t, s));
        }
        self.refs[i as usize]
    }
}

/// Append `s` without looking for it (worker ids are unique).
fn push(text: &mut String, s: &str) -> TextRef {
    let r = TextRef {
        start: text.len() as u32,
        len: s.len() as u32,
    };
    text.push_str(s);
    r
}

impl Candidates {
    pub fn new(workers: &[WorkerInput]) -> Self {
        let mut t = String::with_capacity(workers.len() * 40);
        let (mut tenants, mut platforms, mut arches, mut regions, mut other) = (
            Field::new(),
            Field::new(),
            Field::new(),
            Field::new(),
            Field::new(),
        );
        let mut labels = Interner::<[(String, String)]>::new();
        let mut label_sets = Vec::new();
        let mut images = Interner::<[String]>::new();
        let mut image_sets = Vec::new();
        let mut entries = Vec::with_capacity(workers.len());
        for w in workers {
            let (l, new) = labels.get(&w.labels);
            if new {
                let set = w
                    .labels
                    .iter()
                    .map(|(k, v)| (other.get(&mut t, k), other.get(&mut t, v)));
                label_sets.push(set.collect());
            }
            let (i, new) = images.get(&w.images);
            if new {
                image_sets.push(w.images.iter().map(|s| other.get(&mut t, s)).collect());
            }
            entries.push(Entry {
                id: push(&mut t, &w.id),
                mode: w.mode,
                tenant_id: tenants.get(&mut t, &w.tenant_id),
                platform: platforms.get(&mut t, &w.platform),
                arch: arches.get(&mut t, &w.arch),
                region: regions.get(&mut t, &w.region),
                labels: l,
                cpu_count: w.cpu_count,
                memory_total: w.memory_total,
                memory_free: w.memory_free,
                disk_free: w.disk_free,
                cpu_load_permille: w.cpu_load_permille,
                containers_running: w.containers_running,
                images: i,
                security_floor: w.security_floor,
                drained: w.drained,
                cordoned: w.cordoned,
                online: w.online,
            });
        }
        let mut c = Self {
            wit: types::Candidates {
                count: 0,
                text: t,
                table: Vec::new(),
            },
            label_sets,
            image_sets,
            entries,
        };
        c.pack();
        c
    }

    /// Write the entries' numbers and flags again, for entries whose
    /// strings and sets are those the table was packed with.
    pub fn pack_numbers(&mut self) {
        let entries = self.wit.table.chunks_exact_mut(ENTRY);
        for (e, out) in self.entries.iter().zip(entries) {
            encode_numbers(e, out);
        }
    }

    /// Write `wit.table` (and `count`) from the entries and sets.
    pub fn pack(&mut self) {
        let table = &mut self.wit.table;
        table.clear();
        let sets_at = self.entries.len() * ENTRY;
        // Where each set starts: label pairs first, then image refs.
        let mut at = sets_at;
        let label_at: Vec<u32> = (self.label_sets.iter())
            .map(|s| {
                let here = at as u32;
                at += s.len() * 16;
                here
            })
            .collect();
        let image_at: Vec<u32> = (self.image_sets.iter())
            .map(|s| {
                let here = at as u32;
                at += s.len() * 8;
                here
            })
            .collect();
        table.resize(at, 0);
        let (entries, sets) = table.split_at_mut(sets_at);
        for (e, out) in self.entries.iter().zip(entries.chunks_exact_mut(ENTRY)) {
            let labels = self.label_sets.get(e.labels as usize);
            let images = self.image_sets.get(e.images as usize);
            encode(
                e,
                (label_at[e.labels as usize], labels.map_or(0, Vec::len)),
                (image_at[e.images as usize], images.map_or(0, Vec::len)),
                out,
            );
        }
        let mut out = sets;
        let mut put = |r: TextRef| {
            let (head, rest) = std::mem::take(&mut out).split_at_mut(8);
            head[..4].copy_from_slice(&r.start.to_le_bytes());
            head[4..].copy_from_slice(&r.len.to_le_bytes());
            out = rest;
        };
        for &(k, v) in self.label_sets.iter().flatten() {
            put(k);
            put(v);
        }
        for &r in self.image_sets.iter().flatten() {
            put(r);
        }
        self.wit.count = self.entries.len() as u32;
    }
}

fn put<const N: usize>(out: &mut [u8], at: usize, bytes: [u8; N]) {
    out[at..at + N].copy_from_slice(&bytes);
}

/// `e` as the 96-byte entry of the documented layout, into `out`.
fn encode(e: &Entry, labels: (u32, usize), images: (u32, usize), out: &mut [u8]) {
    let text = |out: &mut [u8], at: usize, r: TextRef| {
        put(out, at, r.start.to_le_bytes());
        put(out, at + 4, r.len.to_le_bytes());
    };
    text(out, 0, e.id);
    text(out, 8, e.tenant_id);
    text(out, 16, e.platform);
    text(out, 24, e.arch);
    text(out, 32, e.region);
    put(out, 40, labels.0.to_le_bytes());
    put(out, 44, (labels.1 as u32).to_le_bytes());
    put(out, 48, images.0.to_le_bytes());
    put(out, 52, (images.1 as u32).to_le_bytes());
    encode_numbers(e, out);
}

/// The numbers and flags of `e` (bytes 56-95 of its entry), into `out`.
fn encode_numbers(e: &Entry, out: &mut [u8]) {
    put(out, 56, e.memory_total.to_le_bytes());
    put(out, 64, e.memory_free.to_le_bytes());
    put(out, 72, e.disk_free.unwrap_or(0).to_le_bytes());
    put(out, 80, e.cpu_count.to_le_bytes());
    put(out, 84, e.cpu_load_permille.to_le_bytes());
    put(out, 88, e.containers_running.to_le_bytes());
    out[92] = match e.mode {
        WorkerMode::Byom => 0,
        WorkerMode::Fleet => 1,
    };
    out[93] = e.security_floor as u8;
    out[94] = u8::from(e.drained)
        | u8::from(e.cordoned) << 1
        | u8::from(e.online) << 2
        | u8::from(e.disk_free.is_some()) << 3;
    out[95] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cases::tests_support::worker;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn str_at<'a>(c: &'a types::Candidates, b: &[u8], at: usize) -> &'a str {
        let (start, len) = (u32_at(b, at) as usize, u32_at(b, at + 4) as usize);
        &c.text[start..start + len]
    }

    /// The table as policies/sdk/README.md lays it out.
    #[test]
    fn workers_pack_as_documented() {
        let mut ws: Vec<WorkerInput> = (0..3).map(worker).collect();
        ws[1].mode = WorkerMode::Byom;
        ws[1].tenant_id = "t\u{e9}".into();
        ws[1].platform = "windows".into();
        ws[1].labels = vec![("tier".into(), "gold".into())];
        ws[1].images = vec!["localhost/a:1".into(), "localhost/b:2".into()];
        ws[1].disk_free = None;
        ws[1].security_floor = Profile::Strict;
        (ws[1].drained, ws[1].cordoned, ws[1].online) = (true, true, false);
        ws[2].images = ws[0].images.clone();
        ws[2].disk_free = Some(u64::MAX);
        ws[2].memory_total = u64::MAX - 1;
        let c = Candidates::new(&ws);
        let (w, t) = (&c.wit, &c.wit.table);
        assert_eq!(w.count, 3);
        let e = |i: usize| &t[i * ENTRY..(i + 1) * ENTRY];
        for (i, input) in ws.iter().enumerate() {
            let e = e(i);
            assert_eq!(str_at(w, e, 0), input.id);
            assert_eq!(str_at(w, e, 8), input.tenant_id);
            assert_eq!(str_at(w, e, 16), input.platform);
            assert_eq!(str_at(w, e, 24), input.arch);
            assert_eq!(str_at(w, e, 32), input.region);
            let (at, n) = (u32_at(e, 40) as usize, u32_at(e, 44) as usize);
            let labels: Vec<_> = (0..n)
                .map(|k| {
                    let at = at + 16 * k;
                    (
                        str_at(w, t, at).to_string(),
                        str_at(w, t, at + 8).to_string(),
                    )
                })
                .collect();
            assert_eq!(labels, input.labels);
            let (at, n) = (u32_at(e, 48) as usize, u32_at(e, 52) as usize);
            let images: Vec<_> = (0..n).map(|k| str_at(w, t, at + 8 * k)).collect();
            assert_eq!(images, input.images);
            let u64_at = |at| u64::from_le_bytes(e[at..at + 8].try_into().expect("8"));
            assert_eq!(u64_at(56), input.memory_total);
            assert_eq!(u64_at(64), input.memory_free);
            assert_eq!((e[94] & 8 != 0).then(|| u64_at(72)), input.disk_free);
            assert_eq!(u32_at(e, 80), input.cpu_count);
            assert_eq!(u32_at(e, 84), input.cpu_load_permille);
            assert_eq!(u32_at(e, 88), input.containers_running);
            assert_eq!(e[92], (input.mode == WorkerMode::Fleet) as u8);
            assert_eq!(e[93], input.security_floor as u8);
            let flags = [input.drained, input.cordoned, input.online];
            assert_eq!([e[94] & 1 != 0, e[94] & 2 != 0, e[94] & 4 != 0], flags);
        }
        // Workers with equal sets share them.
        assert_eq!(u32_at(e(0), 48), u32_at(e(2), 48));
        assert_eq!(u32_at(e(0), 40), u32_at(e(2), 40));
        assert_eq!(t.len(), 3 * ENTRY + 2 * 16 + 3 * 8);
    }
}
