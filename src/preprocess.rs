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

use crate::frame::{FrameRef, PixelFormat};
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

/// `planes[c][y * w + x] = pixel(x, y)[offset of c] / 255` for a frame of `BPP` bytes per
/// pixel with red, green, blue at bytes `R`, `G`, `B`, and planes of the frame's size.
fn deinterleave<const BPP: usize, const R: usize, const G: usize, const B: usize>(
    frame: &FrameRef<'_>,
    planes: &mut [&mut [f32]; 3],
) {
    let (bpp, ro, go, bo) = (BPP, R, G, B);
    let w = frame.width();
    let [r_plane, g_plane, b_plane] = planes;
    simd(
        #[inline(always)]
        || {
            for y in 0..frame.height() {
                let row = &frame.row(y)[..w * bpp];
                let span = y * w..(y + 1) * w;
                let (r, g, b) = (
                    &mut r_plane[span.clone()],
                    &mut g_plane[span.clone()],
                    &mut b_plane[span],
                );
                for (((p, r), g), b) in row
                    .chunks_exact(bpp)
                    .zip(r.iter_mut())
                    .zip(g.iter_mut())
                    .zip(b.iter_mut())
                {
                    *r = p[ro] as f32 / 255.0;
                    *g = p[go] as f32 / 255.0;
                    *b = p[bo] as f32 / 255.0;
                }
            }
        },
    );
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
        if (frame.width(), frame.height()) == (w, h) {
            // The frame is already at the model size (the OBS worker's capture): every tap
            // is the pixel itself with weight 0 on its neighbour, so the general path below
            // would compute `v / 255` exactly; a plain deinterleave gives the same bits at a
            // fraction of the cost.
            match frame.format() {
                PixelFormat::Bgra => deinterleave::<4, 2, 1, 0>(frame, &mut planes),
                PixelFormat::Rgba => deinterleave::<4, 0, 1, 2>(frame, &mut planes),
                PixelFormat::Rgb => deinterleave::<3, 0, 1, 2>(frame, &mut planes),
            }
            return &self.input;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    /// The documented bilinear convention, written out per output value.
    fn reference(frame: &FrameRef<'_>, w: usize, h: usize) -> Vec<f32> {
        let (xa, ya) = (
            BilinearAxis::new(frame.width(), w),
            BilinearAxis::new(frame.height(), h),
        );
        let bpp = frame.format().bytes_per_pixel();
        let mut out = vec![0.0; 3 * w * h];
        for (c, off) in frame.format().rgb_offsets().into_iter().enumerate() {
            for (y, &(y0, y1, fy)) in ya.taps.iter().enumerate() {
                for (x, &(x0, x1, fx)) in xa.taps.iter().enumerate() {
                    let v =
                        |yy: u32, xx: u32| frame.row(yy as usize)[xx as usize * bpp + off] as f32;
                    let top = v(y0, x0) * (1.0 - fx) + v(y0, x1) * fx;
                    let bottom = v(y1, x0) * (1.0 - fx) + v(y1, x1) * fx;
                    out[c * w * h + y * w + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
                }
            }
        }
        out
    }

    #[test]
    fn model_sized_frames_give_the_bits_of_the_bilinear_convention() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/obs/ccp-webcam-0001.jpg");
        let (w, h) = (256, 144);
        let rgba = image::open(path)
            .unwrap()
            .resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
            .to_rgba8();
        let bgra: Vec<u8> = rgba
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0], p[3]])
            .collect();
        let rgb: Vec<u8> = rgba
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let mut pre = Preprocessor::new(w, h);
        let mut results = Vec::new();
        for (data, format) in [
            (rgba.as_raw().as_slice(), PixelFormat::Rgba),
            (&bgra, PixelFormat::Bgra),
            (&rgb, PixelFormat::Rgb),
        ] {
            let frame = FrameRef::packed(data, w, h, format).unwrap();
            let got = pre.run(&frame).to_vec();
            let want = reference(&frame, w, h);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format:?}"
            );
            results.push(got);
        }
        assert_eq!(results[0], results[1], "BGRA and RGBA give the same planes");
        assert_eq!(results[0], results[2], "RGB and RGBA give the same planes");
        // Not a constant picture: the planes carry the photo.
        let r = &results[0][..w * h];
        assert!(
            r.iter().cloned().fold(0.0, f32::max) - r.iter().cloned().fold(1.0, f32::min) > 0.5
        );
    }
}
