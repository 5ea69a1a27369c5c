//! The aarch64 (NEON) GEMM block of the 1x1 convolutions, the counterpart of the AVX2 + FMA
//! block in [`super::kernels`].
//!
//! NEON (Advanced SIMD) is part of the baseline of every Rust `aarch64-*` target (the
//! `neon` target feature is on by default: Armv8-A application processors and the AAPCS64
//! procedure-call standard, which passes floats in its registers, assume it), so there is no
//! run-time detection: this block is the only one compiled for aarch64.

use super::kernels::POINTWISE_ROWS;
use std::arch::aarch64::*;

/// Pixels per register block (four 128-bit registers per row), as the AVX2 block's 2 x 256.
const COLS: usize = 16;

/// `acc[r][i] = sum_k w[k * 4 + r] * x[k * hw + j + i]` for one block of 4 output rows x 16
/// pixels, overwriting `acc`: `w` is one packed row block (`[cin][4]`, from
/// `kernels::pack_pointwise`), `x` the `[cin, hw]` input. 16 accumulator registers (4 rows x
/// 4 x 4 lanes); per input channel one load of the 4 weights and four of the pixels, and 16
/// fused multiply-adds by lane (`fmla v.4s, v.4s, v.s[r]`). Sums are fused, so results can
/// differ from the scalar block's by rounding (a few ulps).
///
/// # Panics
/// If `w` holds fewer than `4 * cin` values, `x` fewer than `cin * hw`, or `j + 16 > hw`.
#[inline(always)]
pub(crate) fn gemm_block_neon(
    w: &[f32],
    x: &[f32],
    cin: usize,
    hw: usize,
    j: usize,
    acc: &mut [[f32; COLS]; POINTWISE_ROWS],
) {
    assert!(w.len() >= 4 * cin && j + COLS <= hw && x.len() >= cin * hw);
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    // SAFETY: NEON is baseline on aarch64; the assertion keeps every load in bounds:
    // k * hw + j + 16 <= cin * hw and 4 * k + 4 <= 4 * cin.
    unsafe {
        let mut a = [vdupq_n_f32(0.0); 16];
        for k in 0..cin {
            let row = xp.add(k * hw + j);
            let xs = [
                vld1q_f32(row),
                vld1q_f32(row.add(4)),
                vld1q_f32(row.add(8)),
                vld1q_f32(row.add(12)),
            ];
            let wk = vld1q_f32(wp.add(4 * k));
            for (i, &xv) in xs.iter().enumerate() {
                a[i] = vfmaq_laneq_f32::<0>(a[i], xv, wk);
                a[4 + i] = vfmaq_laneq_f32::<1>(a[4 + i], xv, wk);
                a[8 + i] = vfmaq_laneq_f32::<2>(a[8 + i], xv, wk);
                a[12 + i] = vfmaq_laneq_f32::<3>(a[12 + i], xv, wk);
            }
        }
        for (r, out) in acc.iter_mut().enumerate() {
            for i in 0..4 {
                vst1q_f32(out.as_mut_ptr().add(4 * i), a[4 * r + i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::gemm_block_scalar;
    use super::*;

    /// The NEON block equals the scalar block (up to the rounding of fused multiply-adds) on
    /// the channel counts of this network's 1x1 layers and an offset column block.
    #[test]
    fn neon_block_matches_scalar() {
        for &(cin, hw, j) in &[
            (1, 16, 0),
            (16, 64, 16),
            (72, 96, 48),
            (96, 48, 32),
            (3, 40, 24),
        ] {
            let w: Vec<f32> = (0..4 * cin)
                .map(|i| ((i * 13 % 29) as f32 / 14.0) - 1.0)
                .collect();
            let x: Vec<f32> = (0..cin * hw)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let mut scalar = [[0f32; COLS]; POINTWISE_ROWS];
            gemm_block_scalar(&w, &x, cin, hw, j, &mut scalar);
            // Garbage in `acc`: the NEON block overwrites it.
            let mut neon = [[7f32; COLS]; POINTWISE_ROWS];
            gemm_block_neon(&w, &x, cin, hw, j, &mut neon);
            // |w|, |x| <= 1: a sum of `cin` products rounds by at most ~cin ulps of 1.
            let tol = 1e-6 * cin as f32;
            for r in 0..POINTWISE_ROWS {
                for i in 0..COLS {
                    let (s, n) = (scalar[r][i], neon[r][i]);
                    assert!(
                        (s - n).abs() <= tol,
                        "cin={cin} j={j} [{r}][{i}]: scalar {s}, neon {n}"
                    );
                }
            }
            // Not all zeros: the comparison above compares real sums.
            assert!(scalar.iter().flatten().any(|v| v.abs() > 0.1), "cin={cin}");
        }
    }
}
