//! A bump allocator for the guests: every decision runs in a fresh
//! instance that is thrown away afterwards, so nothing ever needs freeing,
//! and an allocation is an add and a compare instead of a dlmalloc walk
//! (the host lowers every string of every candidate through
//! `cabi_realloc`, thousands per placement).
//!
//! It starts with the free part of the initial memory (from `__heap_base`)
//! and then grows by at least 1 MiB at a time: a placement over 1,000
//! workers grows once instead of page by page, and each `memory.grow` is an
//! `mprotect` in the host. (A larger initial memory instead, so that a
//! placement never grows, made every fresh instance slower: the host's
//! reset scans the whole initial memory of a pool slot.) When the host's
//! memory cap refuses a grow, it traps (or allocation fails and the guest
//! aborts): either way the host reports the decision as over its cap.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 65536;
/// The least a grow asks for, in pages (1 MiB).
const MIN_GROW_PAGES: usize = 16;

extern "C" {
    /// The first byte after the data and the stack (set by wasm-ld).
    static __heap_base: u8;
}

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

impl Bump {
    /// Take the free part of the initial memory, once.
    fn start(&self) {
        if self.end.get() == 0 {
            // Only the symbol's address is taken, never its value.
            let base = core::ptr::addr_of!(__heap_base) as usize;
            self.next.set(base);
            self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
        }
    }
}

// SAFETY: every block handed out lies inside linear memory above
// `__heap_base` (initial or from `memory.grow`), is aligned as asked, and
// never overlaps another (the cursor only moves forward). `dealloc` does
// nothing, which is allowed.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.start();
        let (size, align) = (layout.size(), layout.align());
        let mut start = align_up(self.next.get(), align);
        if start
            .checked_add(size)
            .is_none_or(|end| end > self.end.get())
        {
            let pages = (size + align).div_ceil(PAGE).max(MIN_GROW_PAGES);
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
