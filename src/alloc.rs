//! The crate's global allocator: mimalloc, counting allocations (per thread and in all).
//!
//! mimalloc for the Rust allocations of this crate (in OBS: only this module's): glibc
//! returned freed pages to the kernel and faulted them back in on every frame (page-fault
//! time in a profile of `ai-background bench`). The counters let `tests/no_alloc.rs` check
//! that a warm frame allocates nothing; they cost a thread-local increment and a relaxed
//! atomic increment per allocation, which a warm frame does not make.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static THREAD: Cell<u64> = const { Cell::new(0) };
}
static TOTAL: AtomicU64 = AtomicU64::new(0);

/// mimalloc plus the counters of [`thread_allocations`] and [`total_allocations`].
pub struct CountingMiMalloc;

impl CountingMiMalloc {
    #[inline(always)]
    fn count() {
        // `try_with`: a thread's counter may be gone while it exits.
        let _ = THREAD.try_with(|c| c.set(c.get() + 1));
        TOTAL.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; the counters do not allocate.
unsafe impl GlobalAlloc for CountingMiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

/// Heap allocations (including reallocations) made by the calling thread so far.
pub fn thread_allocations() -> u64 {
    THREAD.try_with(Cell::get).unwrap_or(0)
}

/// Heap allocations (including reallocations) made by all threads of the process so far.
pub fn total_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}
