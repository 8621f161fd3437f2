//! A placement's candidates as they are lowered into a guest (WIT
//! `candidates`): every distinct string once in one `text`, label and
//! image sets shared, so each worker record is mostly scalars and the whole
//! call costs a handful of guest allocations instead of ten per worker.
//!
//! The workers list is lowered in one pass ([`Packed`]): every record is
//! encoded straight into the guest's memory at the canonical ABI offsets,
//! instead of wasmtime's field-by-field stores (each looking up the memory
//! again), which were a quarter of a placement's host time.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::LazyLock;

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::types::{Profile, WorkerInput, WorkerMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct TextRef {
    pub start: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub struct Worker {
    pub id: TextRef,
    pub mode: WorkerMode,
    #[component(name = "tenant-id")]
    pub tenant_id: TextRef,
    pub platform: TextRef,
    pub arch: TextRef,
    pub region: TextRef,
    pub labels: u32,
    #[component(name = "cpu-count")]
    pub cpu_count: u32,
    #[component(name = "memory-total")]
    pub memory_total: u64,
    #[component(name = "memory-free")]
    pub memory_free: u64,
    #[component(name = "disk-free")]
    pub disk_free: Option<u64>,
    #[component(name = "cpu-load-permille")]
    pub cpu_load_permille: u32,
    #[component(name = "containers-running")]
    pub containers_running: u32,
    pub images: u32,
    #[component(name = "security-floor")]
    pub security_floor: Profile,
    pub drained: bool,
    pub cordoned: bool,
    pub online: bool,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub struct Candidates {
    pub text: String,
    #[component(name = "label-sets")]
    pub label_sets: Vec<Vec<(TextRef, TextRef)>>,
    #[component(name = "image-sets")]
    pub image_sets: Vec<Vec<TextRef>>,
    pub workers: Vec<Packed>,
}

/// A [`Worker`] whose list is lowered in one pass. Its type and its flat
/// lowering are `Worker`'s (derived); only storing a list differs.
#[repr(transparent)]
pub struct Packed(pub Worker);

// SAFETY: every item is `Worker`'s, which the derive made consistent.
unsafe impl ComponentType for Packed {
    type Lower = <Worker as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Worker as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Worker as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: writes only within `items.len() * SIZE32` bytes at `offset`,
// which wasmtime allocated for this list (and bounds-checks the slice).
unsafe impl Lower for Packed {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        self.0.linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        self.0.linear_lower_to_memory(cx, ty, offset)
    }

    fn linear_store_list_to_memory<T>(
        cx: &mut LowerContext<'_, T>,
        _ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let size = Self::SIZE32;
        let len = items.len().checked_mul(size).ok_or_else(|| {
            wasmtime::format_err!("{} workers do not fit in guest memory", items.len())
        })?;
        let memory = cx.as_slice_mut();
        let out = offset
            .checked_add(len)
            .and_then(|end| memory.get_mut(offset..end))
            .ok_or_else(|| wasmtime::format_err!("the workers list is out of guest memory"))?;
        let at = &*OFFSETS;
        for (item, out) in items.iter().zip(out.chunks_exact_mut(size)) {
            at.encode(&item.0, out);
        }
        Ok(())
    }
}

/// Where each field of a `worker` record lies, per the canonical ABI.
struct Offsets {
    id: usize,
    mode: usize,
    tenant_id: usize,
    platform: usize,
    arch: usize,
    region: usize,
    labels: usize,
    cpu_count: usize,
    memory_total: usize,
    memory_free: usize,
    disk_free: usize,
    /// Of `disk_free`'s payload, from the option's start.
    disk_free_payload: usize,
    cpu_load_permille: usize,
    containers_running: usize,
    images: usize,
    security_floor: usize,
    drained: usize,
    cordoned: usize,
    online: usize,
}

static OFFSETS: LazyLock<Offsets> = LazyLock::new(|| {
    let mut at = 0;
    let mut next = |abi: &CanonicalAbiInfo| abi.next_field32_size(&mut at);
    let text = &<TextRef as ComponentType>::ABI;
    let flag = &<bool as ComponentType>::ABI;
    let (byte, word, long) = (
        &<u8 as ComponentType>::ABI,
        &<u32 as ComponentType>::ABI,
        &<u64 as ComponentType>::ABI,
    );
    Offsets {
        id: next(text),
        mode: next(&<WorkerMode as ComponentType>::ABI),
        tenant_id: next(text),
        platform: next(text),
        arch: next(text),
        region: next(text),
        labels: next(word),
        cpu_count: next(word),
        memory_total: next(long),
        memory_free: next(long),
        disk_free: next(&<Option<u64> as ComponentType>::ABI),
        // An option is a one-byte discriminant, then its payload aligned.
        disk_free_payload: {
            let mut o = 0;
            byte.next_field32_size(&mut o);
            long.next_field32_size(&mut o)
        },
        cpu_load_permille: next(word),
        containers_running: next(word),
        images: next(word),
        security_floor: next(&<Profile as ComponentType>::ABI),
        drained: next(flag),
        cordoned: next(flag),
        online: next(flag),
    }
});

impl Offsets {
    /// `w` as the canonical ABI lays out a `worker` record, into `out`
    /// (exactly `Worker::SIZE32` bytes).
    fn encode(&self, w: &Worker, out: &mut [u8]) {
        fn put<const N: usize>(out: &mut [u8], at: usize, bytes: [u8; N]) {
            out[at..at + N].copy_from_slice(&bytes);
        }
        let text = |out: &mut [u8], at: usize, r: TextRef| {
            put(out, at, r.start.to_le_bytes());
            put(out, at + 4, r.len.to_le_bytes());
        };
        text(out, self.id, w.id);
        put(out, self.mode, [w.mode as u8]);
        text(out, self.tenant_id, w.tenant_id);
        text(out, self.platform, w.platform);
        text(out, self.arch, w.arch);
        text(out, self.region, w.region);
        put(out, self.labels, w.labels.to_le_bytes());
        put(out, self.cpu_count, w.cpu_count.to_le_bytes());
        put(out, self.memory_total, w.memory_total.to_le_bytes());
        put(out, self.memory_free, w.memory_free.to_le_bytes());
        put(out, self.disk_free, [u8::from(w.disk_free.is_some())]);
        put(
            out,
            self.disk_free + self.disk_free_payload,
            w.disk_free.unwrap_or(0).to_le_bytes(),
        );
        put(
            out,
            self.cpu_load_permille,
            w.cpu_load_permille.to_le_bytes(),
        );
        put(
            out,
            self.containers_running,
            w.containers_running.to_le_bytes(),
        );
        put(out, self.images, w.images.to_le_bytes());
        put(out, self.security_floor, [w.security_floor as u8]);
        put(out, self.drained, [u8::from(w.drained)]);
        put(out, self.cordoned, [u8::from(w.cordoned)]);
        put(out, self.online, [u8::from(w.online)]);
    }
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

struct Text {
    text: String,
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
    fn get(&mut self, t: &mut Text, s: &'a str) -> TextRef {
        let (i, new) = self.ids.get(s);
        if new {
            self.refs.push(t.push(s));
        }
        self.refs[i as usize]
    }
}

impl Text {
    /// Append `s` without looking for it (worker ids are unique).
    fn push(&mut self, s: &str) -> TextRef {
        let r = TextRef {
            start: self.text.len() as u32,
            len: s.len() as u32,
        };
        self.text.push_str(s);
        r
    }
}

impl Candidates {
    pub fn new(workers: &[WorkerInput]) -> Self {
        let mut t = Text {
            text: String::with_capacity(workers.len() * 40),
        };
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
        let mut out = Vec::with_capacity(workers.len());
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
            out.push(Packed(Worker {
                id: t.push(&w.id),
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
            }));
        }
        Self {
            text: t.text,
            label_sets,
            image_sets,
            workers: out,
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Engine, Store};

    use super::*;
    use crate::policy::cases::tests_support::worker;

    /// `echo(workers) -> list<u8>`: the bytes the host lowered, as they are.
    fn echo() -> Vec<u8> {
        let size = <Worker as ComponentType>::SIZE32;
        let types = crate::policy::hostile::CONTRACT_TYPES;
        wat::parse_str(format!(
            r#"(component
  (core module $m
    (memory (export "memory") 4)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "echo") (param i32 i32) (result i32)
      (i32.store (i32.const 0) (local.get 0))
      (i32.store (i32.const 4) (i32.mul (local.get 1) (i32.const {size})))
      (i32.const 0)))
  (core instance $i (instantiate $m))
  {types}
  (func $echo (param "workers" (list $worker)) (result (list u8))
    (canon lift (core func $i "echo") (memory (core memory $i "memory"))
      (realloc (core func $i "realloc"))))
  (export "echo" (func $echo)))"#
        ))
        .expect("echo WAT parses")
    }

    #[test]
    fn packed_workers_lower_to_the_bytes_the_derived_records_do() {
        let mut inputs: Vec<WorkerInput> = (0..40).map(worker).collect();
        for (i, w) in inputs.iter_mut().enumerate() {
            w.mode = [WorkerMode::Byom, WorkerMode::Fleet][i % 2];
            w.tenant_id = format!("t{}", i % 3);
            w.security_floor = [Profile::Open, Profile::Strict, Profile::Offline][i % 3];
            w.disk_free = (i % 4 != 0).then_some(u64::MAX - i as u64);
            w.memory_total = u64::MAX - 7 * i as u64;
        }
        let candidates = Candidates::new(&inputs);
        let derived: Vec<Worker> = candidates.workers.iter().map(|Packed(w)| *w).collect();
        let engine = Engine::default();
        let component = Component::new(&engine, echo()).expect("compiles");
        let mut store = Store::new(&engine, ());
        let instance = Linker::new(&engine)
            .instantiate(&mut store, &component)
            .expect("instantiates");
        let slow = instance
            .get_typed_func::<(&[Worker],), (Vec<u8>,)>(&mut store, "echo")
            .expect("derived types check");
        let (expected,) = slow.call(&mut store, (&derived,)).expect("derived");
        let fast = instance
            .get_typed_func::<(&[Packed],), (Vec<u8>,)>(&mut store, "echo")
            .expect("packed types check");
        let (got,) = fast
            .call(&mut store, (&candidates.workers,))
            .expect("packed");
        assert_eq!(got.len(), 40 * <Worker as ComponentType>::SIZE32);
        // Each list is in fresh (zeroed) guest memory, so padding agrees too.
        let size = <Worker as ComponentType>::SIZE32;
        for (i, (a, b)) in got.chunks(size).zip(expected.chunks(size)).enumerate() {
            assert_eq!(a, b, "worker {i}");
        }
    }
}
