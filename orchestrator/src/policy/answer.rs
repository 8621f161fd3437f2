//! A placement's answer lifted out of the guest in one pass.
//!
//! wasmtime's derived lifting of `list<verdict>` decodes each record field
//! by field, working out the canonical-ABI offsets and looking the string
//! encoding up again for every element; over 1,000 candidates that was a
//! tenth of a placement. [`Verdicts`] reads each 24-byte record straight
//! from the guest's memory with the same checks (bounds, alignment, valid
//! UTF-8) and the same charge against the call's data-copy fuel.
//! A component whose strings are not UTF-8 takes wasmtime's own path.

use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift};

use super::types::raw;

/// The WIT `placement` record, as the engine lifts it.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(super) struct Answer {
    pub verdicts: Verdicts,
    pub chosen: Option<u32>,
    pub reason: String,
}

impl Answer {
    pub fn into_raw(self) -> raw::Placement {
        raw::Placement {
            verdicts: self.verdicts.0,
            chosen: self.chosen,
            reason: self.reason,
        }
    }
}

/// A `list<verdict>`, lifted in one pass.
pub(super) struct Verdicts(pub Vec<raw::Verdict>);

type Derived = Vec<raw::Verdict>;

// SAFETY: the type, ABI and flat lowering are `Vec<raw::Verdict>`'s.
unsafe impl ComponentType for Verdicts {
    type Lower = <Derived as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <Derived as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <Derived as ComponentType>::typecheck(ty, types)
    }
}

fn out_of_bounds(what: &str) -> wasmtime::Error {
    wasmtime::format_err!("{what} pointer/length out of bounds of memory")
}

fn word(bytes: &[u8], at: usize) -> usize {
    let mut w = [0; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(w) as usize
}

// SAFETY: reads only within the guest memory `cx` lends, bounds-checked.
unsafe impl Lift for Verdicts {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        Derived::linear_lift_from_flat(cx, ty, src).map(Verdicts)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        if cx.options().string_encoding != StringEncoding::Utf8 {
            return Derived::linear_lift_from_memory(cx, ty, bytes).map(Verdicts);
        }
        let (ptr, len) = (word(bytes, 0), word(bytes, 4));
        let size = <raw::Verdict as ComponentType>::SIZE32;
        let memory = cx.memory();
        let list = len
            .checked_mul(size)
            .and_then(|n| ptr.checked_add(n))
            .and_then(|end| memory.get(ptr..end))
            .ok_or_else(|| out_of_bounds("list"))?;
        cx.consume_fuel_array(len, std::mem::size_of::<raw::Verdict>())?;
        if ptr % <raw::Verdict as ComponentType>::ALIGN32 as usize != 0 {
            return Err(wasmtime::format_err!("list pointer is not aligned"));
        }
        let (feasible_at, reason_at, score_at) = offsets();
        let mut verdicts = Vec::with_capacity(len);
        for v in list.chunks_exact(size) {
            // As wasmtime lifts a `bool`: any non-zero byte is true.
            let feasible = v[feasible_at] != 0;
            let (at, n) = (word(v, reason_at), word(v, reason_at + 4));
            let text = at
                .checked_add(n)
                .and_then(|end| memory.get(at..end))
                .ok_or_else(|| out_of_bounds("string"))?;
            cx.consume_fuel(n)?;
            let reason = match n {
                0 => String::new(),
                _ => std::str::from_utf8(text)?.to_owned(),
            };
            let mut score = [0; 8];
            score.copy_from_slice(&v[score_at..score_at + 8]);
            verdicts.push(raw::Verdict {
                feasible,
                reason,
                score: i64::from_le_bytes(score),
            });
        }
        Ok(Verdicts(verdicts))
    }
}

/// Where `feasible`, `reason` and `score` lie in a `verdict` record.
fn offsets() -> (usize, usize, usize) {
    let mut at = 0;
    let feasible = <bool as ComponentType>::ABI.next_field32_size(&mut at);
    let reason = <String as ComponentType>::ABI.next_field32_size(&mut at);
    let score = <i64 as ComponentType>::ABI.next_field32_size(&mut at);
    (feasible, reason, score)
}

#[cfg(test)]
mod tests {
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Engine, Store};

    use super::*;

    /// `answer() -> placement`: three verdicts (one with a reason) and a
    /// choice, as written by `init` (offset 0: the record; 1024: the list).
    fn answering(init: &str) -> Vec<u8> {
        let types = crate::policy::hostile::CONTRACT_TYPES;
        wat::parse_str(format!(
            r#"(component
  (core module $m
    (memory (export "memory") 1)
    (data (i32.const 2048) "offline\u{{e9}}")
    (func (export "answer") (result i32)
      (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 3))
      (i32.store8 (i32.const 8) (i32.const 1)) (i32.store (i32.const 12) (i32.const 2))
      (i32.store (i32.const 16) (i32.const 2048)) (i32.store (i32.const 20) (i32.const 9))
      (i32.store8 (i32.const 1024) (i32.const 1)) (i64.store (i32.const 1040) (i64.const -5))
      (i32.store (i32.const 1052) (i32.const 2048)) (i32.store (i32.const 1056) (i32.const 7))
      (i32.store8 (i32.const 1072) (i32.const 1))
      (i64.store (i32.const 1088) (i64.const 0x7fffffffffffffff))
      {init}
      (i32.const 0)))
  (core instance $i (instantiate $m))
  {types}
  (func $answer (result $placement)
    (canon lift (core func $i "answer") (memory (core memory $i "memory"))))
  (export "answer" (func $answer)))"#
        ))
        .expect("answer WAT parses")
    }

    type Lifted = (Vec<(bool, String, i64)>, Option<u32>, String);

    /// The answer lifted by [`Answer`] and by wasmtime's derived types.
    fn both(init: &str) -> (wasmtime::Result<Lifted>, wasmtime::Result<Lifted>) {
        let engine = Engine::default();
        let component = Component::new(&engine, answering(init)).expect("compiles");
        let mut store = Store::new(&engine, ());
        let instance = Linker::new(&engine)
            .instantiate(&mut store, &component)
            .expect("instantiates");
        let plain = |p: raw::Placement| {
            let vs = p.verdicts.into_iter();
            let vs = vs.map(|v| (v.feasible, v.reason, v.score)).collect();
            (vs, p.chosen, p.reason)
        };
        let fast = instance
            .get_typed_func::<(), (Answer,)>(&mut store, "answer")
            .expect("one-pass types check")
            .call(&mut store, ())
            .map(|(a,)| plain(a.into_raw()));
        let derived = instance
            .get_typed_func::<(), (raw::Placement,)>(&mut store, "answer")
            .expect("derived types check")
            .call(&mut store, ())
            .map(|(p,)| plain(p));
        (fast, derived)
    }

    #[test]
    fn verdicts_lift_as_the_derived_records_do() {
        let (fast, derived) = both("");
        let fast = fast.expect("one-pass lift");
        assert_eq!(fast, derived.expect("derived lift"));
        assert_eq!(fast.0[1], (false, "offline".to_string(), 0));
        assert_eq!(fast.0[2].2, i64::MAX);
        assert_eq!((fast.1, fast.2.as_str()), (Some(2), "offline\u{e9}"));
    }

    #[test]
    fn malformed_verdicts_fail_as_the_derived_lift_does() {
        for init in [
            // A reason outside memory.
            "(i32.store (i32.const 1052) (i32.const 65530))",
            // Not UTF-8: half of the two-byte character.
            "(i32.store (i32.const 1056) (i32.const 8))",
            // A list outside memory, and a misaligned one.
            "(i32.store (i32.const 4) (i32.const 4000))",
            "(i32.store (i32.const 0) (i32.const 1020))",
        ] {
            let (fast, derived) = both(init);
            let (fast, derived) = (fast.expect_err(init), derived.expect_err(init));
            assert_eq!(fast.to_string(), derived.to_string(), "{init}");
        }
    }
}
