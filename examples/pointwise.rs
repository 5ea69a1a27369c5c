//! The 1x1 convolution kernel (`kernels::pointwise_gemm`) alone on the layer shapes of the
//! landscape network and the largest ones of the square network (at 16384 and 4096 pixels), in
//! cache: best of 5 repetitions, milliseconds per call and GMAC/s.
//!
//! ```text
//! cargo run --release --no-default-features --example pointwise
//! ```
//!
//! The 16 -> 16 layers at 9216 pixels (1/2 size of a landscape frame) and 1024 pixels have
//! planes a multiple of 4 KiB apart; the kernel copies their input blocks into a contiguous
//! panel first (see `pointwise_gemm`). Figures drift 10-30 % on a shared VM: compare shapes
//! within one run.

use obs_ai_background::model::kernels::{pack_pointwise, pointwise_gemm, Activation};
use obs_ai_background::simd::simd;
use std::time::Instant;

fn main() {
    // (input channels, output channels, pixels)
    let shapes = [
        (16usize, 16usize, 9216usize),
        (16, 16, 2304),
        (16, 72, 2304),
        (24, 88, 576),
        (16, 16, 1024),
        (16, 16, 16384),
        (16, 72, 4096),
    ];
    for (cin, cout, hw) in shapes {
        let x: Vec<f32> = (0..cin * hw).map(|i| (i % 7) as f32 * 0.1).collect();
        let weight: Vec<f32> = (0..cin * cout).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut packed = Vec::new();
        pack_pointwise(&weight, cout, cin, None, None, &mut packed);
        let bias = vec![0.1f32; cout];
        let mut out = vec![0f32; cout * hw];
        let reps = (200_000_000 / (cin * cout * hw)).max(1);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..reps {
                simd(
                    #[inline(always)]
                    || {
                        pointwise_gemm(
                            &packed,
                            &bias,
                            Activation::Relu,
                            &x,
                            cin,
                            hw,
                            None,
                            &mut out,
                        )
                    },
                );
            }
            best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let macs = (cin * cout * hw) as f64;
        println!(
            "{cin:>3} -> {cout:>3} channels x {hw:>5} pixels: {:.4} ms, {:.1} GMAC/s",
            best * 1e3,
            macs / best / 1e9
        );
    }
}
