//! A per-thread counter of the tensor operations a forward pass issues.
//!
//! Each candle call that produces new storage (a kernel launch on a GPU) counts once; a
//! `cat` of `n` tensors counts `n` (candle copies each input separately), views (`reshape`,
//! `narrow`, `t`) count nothing. The network code reports its operations through [`count`];
//! [`counted`] runs a closure and returns how many it issued on this thread.

use std::cell::Cell;

thread_local! {
    static OPS: Cell<usize> = const { Cell::new(0) };
}

/// Adds `n` operations to this thread's counter and passes `value` through.
#[inline]
pub fn count<T>(n: usize, value: T) -> T {
    OPS.with(|c| c.set(c.get() + n));
    value
}

/// Runs `f` and returns its result with the number of operations it counted on this thread.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = OPS.with(Cell::get);
    let out = f();
    (out, OPS.with(Cell::get) - before)
}
