//! A bump allocator for the guests: every decision runs in a fresh
//! instance that is thrown away afterwards, so nothing ever needs freeing,
//! and an allocation is an add and a compare instead of a dlmalloc walk
//! (the host lowers every string of every candidate through
//! `cabi_realloc`, thousands per placement). Memory comes from
//! `memory.grow`; when the host's memory cap refuses, allocation fails and
//! the guest aborts (a trap the host reports).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 65536;

pub struct Bump {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a component instance runs on one thread; nothing else can
// observe these cells.
unsafe impl Sync for Bump {}

fn align_up(at: usize, align: usize) -> usize {
    (at + align - 1) & !(align - 1)
}

// SAFETY: every block handed out lies inside linear memory obtained from
// `memory.grow`, is aligned as asked, and never overlaps another (the
// cursor only moves forward). `dealloc` does nothing, which is allowed.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let mut start = align_up(self.next.get(), align);
        if start + size > self.end.get() || self.end.get() == 0 {
            let pages = (size + align).div_ceil(PAGE);
            let old = core::arch::wasm32::memory_grow(0, pages);
            if old == usize::MAX {
                return core::ptr::null_mut();
            }
            let base = old * PAGE;
            if base != self.end.get() {
                // Not contiguous with the current region: start afresh.
                start = align_up(base, align);
            }
            self.end.set(base + pages * PAGE);
        }
        self.next.set(start + size);
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOC: Bump = Bump {
    next: Cell::new(0),
    end: Cell::new(0),
};
