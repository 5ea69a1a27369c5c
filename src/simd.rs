//! Runtime SIMD dispatch for the engine's hot loops.

/// Runs `f` with the best SIMD instruction set of this CPU enabled (AVX2 + FMA where present,
/// detected at run time with `pulp`, so one binary serves every x86-64 CPU; NEON on aarch64,
/// where it is baseline and the compiler already uses it everywhere).
///
/// Only code inlined into `f` is compiled for that instruction set: closures passed here and
/// the loops they call are `#[inline(always)]`, and use plain `for` loops rather than iterator
/// adaptors such as `for_each` (which are not `inline(always)`).
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}
