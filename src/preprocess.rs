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
use crate::simd::simd;

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

/// Resizes `f32` planes (one channel, or several interleaved) with the bilinear convention of
/// this module, one output row at a time or whole. It keeps its sample tables and the two
/// horizontally resampled source rows that consecutive output rows share, so repeated resizes
/// of the same sizes do not allocate.
#[derive(Clone, Debug, Default)]
pub struct PlaneResizer {
    axes: (BilinearAxis, BilinearAxis),
    channels: usize,
    /// Horizontally resampled source rows, and which source row each holds.
    rows: [Vec<f32>; 2],
    held: [usize; 2],
    out: Vec<f32>,
}

impl PlaneResizer {
    /// Prepares to resample a `src_size` plane of `channels` interleaved values per pixel to
    /// `dst_size` with [`PlaneResizer::row`]; forgets the rows of the previous source.
    pub fn start(&mut self, src_size: (usize, usize), dst_size: (usize, usize), channels: usize) {
        self.axes.0.ensure(src_size.0, dst_size.0);
        self.axes.1.ensure(src_size.1, dst_size.1);
        self.channels = channels;
        self.held = [usize::MAX; 2];
        for r in &mut self.rows {
            r.resize(dst_size.0 * channels, 0.0);
        }
        self.out.resize(dst_size.0 * channels, 0.0);
    }

    /// Output row `y` (`dst_w * channels` values) of `src`, the plane given to the last
    /// [`PlaneResizer::start`]. Rows are cheapest in increasing order.
    pub fn row(&mut self, src: &[f32], y: usize) -> &[f32] {
        let mut out = std::mem::take(&mut self.out);
        self.row_into(src, y, &mut out);
        self.out = out;
        &self.out
    }

    /// Writes output row `y` into `out` (see [`PlaneResizer::row`]).
    fn row_into(&mut self, src: &[f32], y: usize, out: &mut [f32]) {
        let (y0, y1, fy) = self.axes.1.taps[y];
        for (slot, want) in [(0, y0 as usize), (1, y1 as usize)] {
            if self.held[slot] == want {
                continue;
            }
            let (first, second) = self.rows.split_at_mut(1);
            let (dst, other) = if slot == 0 {
                (&mut first[0], &second[0])
            } else {
                (&mut second[0], &first[0])
            };
            if self.held[1 - slot] == want {
                dst.copy_from_slice(other);
            } else {
                let ch = self.channels;
                let line = &src[want * self.axes.0.src * ch..(want + 1) * self.axes.0.src * ch];
                match ch {
                    1 => horizontal::<1>(line, &self.axes.0.taps, dst),
                    4 => horizontal::<4>(line, &self.axes.0.taps, dst),
                    _ => horizontal_any(ch, line, &self.axes.0.taps, dst),
                }
            }
            self.held[slot] = want;
        }
        let (r0, r1) = (&self.rows[0], &self.rows[1]);
        simd(
            #[inline(always)]
            || {
                for ((o, &a), &b) in out.iter_mut().zip(r0.iter()).zip(r1.iter()) {
                    *o = a * (1.0 - fy) + b * fy;
                }
            },
        );
    }

    /// Resizes the single-channel plane `src` (`src_size.0 * src_size.1`, row-major) into `dst`
    /// (`dst_size.0 * dst_size.1`).
    ///
    /// # Panics
    /// When a slice's length does not match its size.
    pub fn resize(
        &mut self,
        src: &[f32],
        src_size: (usize, usize),
        dst: &mut [f32],
        dst_size: (usize, usize),
    ) {
        assert_eq!(src.len(), src_size.0 * src_size.1, "source plane size");
        assert_eq!(dst.len(), dst_size.0 * dst_size.1, "destination plane size");
        self.start(src_size, dst_size, 1);
        for (y, out) in dst.chunks_exact_mut(dst_size.0).enumerate() {
            self.row_into(src, y, out);
        }
    }
}

/// One source row resampled horizontally (`channels` interleaved values per pixel). Plain
/// scalar code: under the AVX2 dispatch this gather compiled to slower gather instructions.
fn horizontal<const C: usize>(line: &[f32], taps: &[(u32, u32, f32)], dst: &mut [f32]) {
    horizontal_any(C, line, taps, dst)
}

#[inline(always)]
fn horizontal_any(ch: usize, line: &[f32], taps: &[(u32, u32, f32)], dst: &mut [f32]) {
    for (o, &(x0, x1, fx)) in dst.chunks_exact_mut(ch).zip(taps) {
        let (a, b) = (&line[x0 as usize * ch..], &line[x1 as usize * ch..]);
        for c in 0..ch {
            o[c] = a[c] * (1.0 - fx) + b[c] * fx;
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
        simd(
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
