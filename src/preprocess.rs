//! Pre-processing: any 8-bit frame to the model input, and the bilinear resampling shared by
//! every resize in the engine.
//!
//! Resampling convention (the same in `tools/eval_tflite.py`, so the candle and TFLite
//! evaluations see identical inputs): output pixel `x` samples the source at
//! `sx = (x + 0.5) * src / dst - 0.5`, clamped to `[0, src - 1]`, and interpolates linearly
//! between `floor(sx)` and `floor(sx) + 1` (clamped), rows first:
//! `top = v00 * (1 - fx) + v01 * fx`, `bottom = v10 * (1 - fx) + v11 * fx`,
//! `out = top * (1 - fy) + bottom * fy`, in `f32`. This is TensorFlow's `half_pixel_centers`
//! and OpenCV's `INTER_LINEAR`, without antialiasing.

use crate::frame::FrameRef;

/// Precomputed sample positions for one axis of a bilinear resize.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BilinearAxis {
    /// Source length this table was built for.
    pub src: usize,
    /// Destination length.
    pub dst: usize,
    /// Per destination index: (first source index, second source index, weight of the second).
    pub taps: Vec<(u32, u32, f32)>,
}

impl BilinearAxis {
    /// Builds the table for resampling `src` samples to `dst` samples.
    pub fn new(src: usize, dst: usize) -> Self {
        let scale = src as f32 / dst as f32;
        let last = src.saturating_sub(1) as f32;
        let taps = (0..dst)
            .map(|i| {
                let s = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, last);
                let i0 = s.floor();
                let i1 = (i0 + 1.0).min(last);
                (i0 as u32, i1 as u32, s - i0)
            })
            .collect();
        Self { src, dst, taps }
    }

    /// Rebuilds the table only if the sizes changed (no allocation when they did not).
    pub fn ensure(&mut self, src: usize, dst: usize) {
        if self.src != src || self.dst != dst {
            *self = Self::new(src, dst);
        }
    }
}

/// Resizes single-channel `f32` planes with the bilinear convention of this module, keeping its
/// sample tables and two horizontally resampled rows between calls so that repeated resizes of
/// the same sizes do not allocate.
#[derive(Clone, Debug, Default)]
pub struct PlaneResizer {
    axes: (BilinearAxis, BilinearAxis),
    rows: Vec<f32>,
}

impl PlaneResizer {
    /// Resizes `src` (`src_size.0 * src_size.1`, row-major) into `dst`
    /// (`dst_size.0 * dst_size.1`).
    ///
    /// # Panics
    /// When a slice's length does not match its size.
    pub fn resize(
        &mut self,
        src: &[f32],
        (src_w, src_h): (usize, usize),
        dst: &mut [f32],
        (dst_w, dst_h): (usize, usize),
    ) {
        assert_eq!(src.len(), src_w * src_h, "source plane size");
        assert_eq!(dst.len(), dst_w * dst_h, "destination plane size");
        self.axes.0.ensure(src_w, dst_w);
        self.axes.1.ensure(src_h, dst_h);
        self.rows.resize(2 * dst_w, 0.0);
        let (row_a, row_b) = self.rows.split_at_mut(dst_w);
        let x_taps = &self.axes.0.taps;
        let horizontal = |y: usize, out: &mut [f32]| {
            let line = &src[y * src_w..(y + 1) * src_w];
            for (o, &(x0, x1, fx)) in out.iter_mut().zip(x_taps) {
                *o = line[x0 as usize] * (1.0 - fx) + line[x1 as usize] * fx;
            }
        };
        // Rows currently held in row_a / row_b, so consecutive output rows reuse them.
        let (mut have_a, mut have_b) = (usize::MAX, usize::MAX);
        for (y, out) in dst.chunks_exact_mut(dst_w).enumerate() {
            let (y0, y1, fy) = self.axes.1.taps[y];
            let (y0, y1) = (y0 as usize, y1 as usize);
            if have_a != y0 {
                if have_b == y0 {
                    row_a.copy_from_slice(row_b);
                } else {
                    horizontal(y0, row_a);
                }
                have_a = y0;
            }
            if have_b != y1 {
                horizontal(y1, row_b);
                have_b = y1;
            }
            for ((o, &a), &b) in out.iter_mut().zip(row_a.iter()).zip(row_b.iter()) {
                *o = a * (1.0 - fy) + b * fy;
            }
        }
    }
}

/// Turns frames into model input: bilinear stretch to the model size, RGB, 0..1, planar
/// NCHW `[1, 3, H, W]`.
///
/// The output buffer and the resampling tables are kept between frames: once warm (same
/// frame size), [`Preprocessor::run`] does not allocate.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    width: usize,
    height: usize,
    axes: (BilinearAxis, BilinearAxis),
    input: Vec<f32>,
}

impl Preprocessor {
    /// A pre-processor for a model input of `width` x `height` pixels.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            axes: Default::default(),
            input: vec![0.0; 3 * width * height],
        }
    }

    /// Model input `(width, height)`.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Resamples `frame` into the model input and returns it: `3 * W * H` values, the R
    /// plane, then G, then B, each row-major, in 0..1.
    pub fn run(&mut self, frame: &FrameRef<'_>) -> &[f32] {
        let (w, h) = (self.width, self.height);
        self.axes.0.ensure(frame.width(), w);
        self.axes.1.ensure(frame.height(), h);
        let bpp = frame.format().bytes_per_pixel();
        let offsets = frame.format().rgb_offsets();
        let (r_plane, rest) = self.input.split_at_mut(w * h);
        let (g_plane, b_plane) = rest.split_at_mut(w * h);
        let mut planes = [r_plane, g_plane, b_plane];
        let (x_taps, y_taps) = (&self.axes.0.taps, &self.axes.1.taps);
        crate::simd::simd(
            #[inline(always)]
            || {
                for (y, &(y0, y1, fy)) in y_taps.iter().enumerate() {
                    let row0 = frame.row(y0 as usize);
                    let row1 = frame.row(y1 as usize);
                    for (x, &(x0, x1, fx)) in x_taps.iter().enumerate() {
                        let (p0, p1) = (x0 as usize * bpp, x1 as usize * bpp);
                        for (plane, &off) in planes.iter_mut().zip(&offsets) {
                            let a = row0[p0 + off] as f32;
                            let b = row0[p1 + off] as f32;
                            let c = row1[p0 + off] as f32;
                            let d = row1[p1 + off] as f32;
                            let top = a * (1.0 - fx) + b * fx;
                            let bottom = c * (1.0 - fx) + d * fx;
                            plane[y * w + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
                        }
                    }
                }
            },
        );
        &self.input
    }
}
