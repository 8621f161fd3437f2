//! A placement's candidates kept for the next one: building them (every
//! string of 1,000 workers interned) was a fifth of a placement, and
//! consecutive placements mostly see the same fleet with other numbers.
//!
//! The last [`Candidates`] are checked against the new workers string by
//! string (each against the one value it must equal, a cheaper walk than
//! interning); when every id, tenant, platform, arch, region, label and
//! image is unchanged, only the numbers and flags are copied in. Any
//! difference, or another count, builds them afresh. It is only a cache:
//! the guest sees exactly what [`Candidates::new`] would give it.

use std::sync::Mutex;

use super::types::WorkerInput;
use super::wire::{Candidates, TextRef};

/// The last candidates lowered, if no other decision holds them.
#[derive(Default)]
pub(super) struct Reuse {
    last: Mutex<Option<Candidates>>,
}

impl Reuse {
    /// The candidates for `workers`: the last ones refreshed when the fleet's
    /// strings are unchanged (and no concurrent decision took them), else new.
    pub fn candidates(&self, workers: &[WorkerInput]) -> Candidates {
        let last = self.last.try_lock().ok().and_then(|mut last| last.take());
        match last {
            Some(mut c) => match refresh(&mut c, workers) {
                true => {
                    c.pack_numbers();
                    c
                }
                false => Candidates::new(workers),
            },
            None => Candidates::new(workers),
        }
    }

    /// Keep `candidates` for the next decision.
    pub fn keep(&self, candidates: Candidates) {
        if let Ok(mut last) = self.last.try_lock() {
            *last = Some(candidates);
        }
    }
}

/// Copy the numbers of `workers` into `c`'s entries if all their strings
/// are those `c` was built from; false (and `c` half updated) otherwise.
/// The caller packs the numbers again (`Candidates::pack_numbers`).
fn refresh(c: &mut Candidates, workers: &[WorkerInput]) -> bool {
    if c.entries.len() != workers.len() {
        return false;
    }
    let text = c.wit.text.as_bytes();
    let is = |r: TextRef, s: &str| {
        let start = r.start as usize;
        text.get(start..start + r.len as usize)
            .is_some_and(|t| same(t, s.as_bytes()))
    };
    for (p, w) in c.entries.iter_mut().zip(workers) {
        let labels = c.label_sets.get(p.labels as usize).is_some_and(|set| {
            set.len() == w.labels.len()
                && set
                    .iter()
                    .zip(&w.labels)
                    .all(|(&(k, v), (wk, wv))| is(k, wk) && is(v, wv))
        });
        let images = c.image_sets.get(p.images as usize).is_some_and(|set| {
            set.len() == w.images.len() && set.iter().zip(&w.images).all(|(&r, s)| is(r, s))
        });
        let same = is(p.id, &w.id)
            && is(p.tenant_id, &w.tenant_id)
            && is(p.platform, &w.platform)
            && is(p.arch, &w.arch)
            && is(p.region, &w.region)
            && labels
            && images;
        if !same {
            return false;
        }
        p.mode = w.mode;
        p.cpu_count = w.cpu_count;
        p.memory_total = w.memory_total;
        p.memory_free = w.memory_free;
        p.disk_free = w.disk_free;
        p.cpu_load_permille = w.cpu_load_permille;
        p.containers_running = w.containers_running;
        p.security_floor = w.security_floor;
        p.drained = w.drained;
        p.cordoned = w.cordoned;
        p.online = w.online;
    }
    true
}

/// `a == b`, inline: the strings are short (most under 16 bytes), and a
/// `memcmp` call per string was most of the walk.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        let mut w = [0; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    }
    fn half(s: &[u8], at: usize) -> u32 {
        let mut w = [0; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            // Whole words, then the last (overlapping) one.
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::cases::tests_support::worker;
    use crate::policy::types::{Profile, WorkerMode};

    fn fleet() -> Vec<WorkerInput> {
        let mut ws: Vec<WorkerInput> = (0..30).map(worker).collect();
        for (i, w) in ws.iter_mut().enumerate() {
            w.tenant_id = format!("t{}", i % 4);
            w.region = ["eu", "us"][i % 2].into();
            w.labels = vec![("tier".into(), format!("{}", i % 3))];
            w.images = vec![format!("localhost/img{}:1", i % 5)];
        }
        ws
    }

    /// What the guest would be given: everything `Candidates` lowers.
    fn lowered(c: &Candidates) -> String {
        format!("{} {} {:?}", c.wit.count, c.wit.text, c.wit.table)
    }

    #[test]
    fn same_is_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "linux",
            "x86_64",
            "aarch64",
            "eu-west-1",
        ];
        let long = "0b4f6a0e-3c1d-4e2a-9f00-000000000042";
        for a in words.iter().chain([&long]) {
            for b in words.iter().chain([&long]) {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
            // One byte changed anywhere.
            for i in 0..a.len() {
                let mut c = a.as_bytes().to_vec();
                c[i] ^= 1;
                assert!(!same(a.as_bytes(), &c), "{a:?} at {i}");
            }
        }
    }

    #[test]
    fn new_numbers_reuse_the_strings_and_lower_as_built_afresh() {
        let reuse = Reuse::default();
        let mut ws = fleet();
        reuse.keep(reuse.candidates(&ws));
        for (i, w) in ws.iter_mut().enumerate() {
            w.memory_free += i as u64;
            w.cpu_load_permille = 999 - i as u32;
            w.online = i % 2 == 0;
            w.mode = WorkerMode::Byom;
            w.security_floor = Profile::Strict;
            w.disk_free = None;
        }
        let mut last = reuse.last.lock().expect("lock").take().expect("kept");
        let text = last.wit.text.as_ptr();
        assert!(refresh(&mut last, &ws), "same strings");
        last.pack_numbers();
        assert_eq!(last.wit.text.as_ptr(), text, "the text was reused");
        assert_eq!(lowered(&last), lowered(&Candidates::new(&ws)));
    }

    #[test]
    fn any_changed_string_builds_them_afresh() {
        let reuse = Reuse::default();
        let changes: [fn(&mut WorkerInput); 8] = [
            |w| w.id.push('x'),
            |w| w.tenant_id = "t9".into(),
            |w| w.platform = "windows".into(),
            |w| w.arch = "riscv64".into(),
            |w| w.region = "ap".into(),
            |w| w.labels[0].1 = "2".into(),
            |w| w.labels.push(("a".into(), "b".into())),
            |w| w.images.clear(),
        ];
        for change in changes {
            let mut ws = fleet();
            reuse.keep(reuse.candidates(&ws));
            change(&mut ws[7]);
            let c = reuse.candidates(&ws);
            assert_eq!(lowered(&c), lowered(&Candidates::new(&ws)));
        }
        let ws = fleet();
        reuse.keep(reuse.candidates(&ws));
        let fewer = reuse.candidates(&ws[..29]);
        assert_eq!(lowered(&fewer), lowered(&Candidates::new(&ws[..29])));
    }
}
