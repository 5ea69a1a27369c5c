//! The CPU reference compositor: person over a blurred, replaced, coloured or transparent
//! background. The OBS filter's effect (`data/ai_background.effect`) implements the same
//! maths on the GPU.
//!
//! Conventions: colours are used as stored (sRGB-encoded, no linearisation), in 0..1. The
//! frame `I` has straight alpha. Person alpha `a = threshold_feather(p)` with `p` the person
//! probability at the pixel. The background `B` is premultiplied. The output is
//! `O = a * (I.rgb * I.a, I.a) + (1 - a) * B` (premultiplied), written as straight-alpha RGBA8
//! (`rgb = O.rgb / O.a`).
//!
//! Backgrounds:
//! - colour `c` (straight RGBA): `B = (c.rgb * c.a, c.a)`;
//! - image: sampled bilinearly at the fit-mapped position ([`Fit`]); outside the image
//!   (`contain` bars) opaque black;
//! - transparent: `B = 0`;
//! - blur, halo-free by normalised convolution (Knutsson and Westin, CVPR 1993): with the
//!   background weight `w = (1 - a) * I.a` and `P = (I.rgb * w, w)`, `P` is reduced by
//!   `d = clamp(round(sigma / 4), 1, 8)` with d x d box averaging, blurred by a separable
//!   Gaussian of `sigma / d` (radius `ceil(3 sigma / d)`, clamp-to-edge), upsampled
//!   bilinearly to `P~`, and `B = (P~.rgb / P~.w * I.a, I.a)` (or `I` where `P~.w <= 1e-4`).
//!   Only background pixels feed the blur, so the person leaves no halo.

use crate::frame::FrameRef;
use crate::mask::Mask;
use crate::postprocess::apply_threshold_feather;
use crate::preprocess::PlaneResizer;
use crate::simd::simd;
use image::RgbaImage;
use std::str::FromStr;

/// Blurred background weight below which the blur falls back to the frame itself.
pub const MIN_BLUR_WEIGHT: f32 = 1e-4;

/// Largest reduction factor of the blur.
pub const MAX_BLUR_REDUCTION: usize = 8;

/// How a background image is fitted to the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scaled to cover the frame, centred, overflow cropped (aspect kept).
    #[default]
    Cover,
    /// Scaled to fit inside the frame, centred, opaque black bars (aspect kept).
    Contain,
    /// Stretched to the frame.
    Stretch,
}

impl FromStr for Fit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cover" => Ok(Fit::Cover),
            "contain" => Ok(Fit::Contain),
            "stretch" => Ok(Fit::Stretch),
            _ => Err(format!(
                "unknown fit '{s}' (expected cover, contain or stretch)"
            )),
        }
    }
}

impl Fit {
    /// Maps the frame to image coordinates: returns `(scale_x, scale_y, offset_x, offset_y)`
    /// such that frame position `fx` (pixels, continuous) shows image position
    /// `fx * scale_x + offset_x` (pixels, continuous).
    pub fn mapping(self, frame: (usize, usize), image: (usize, usize)) -> (f32, f32, f32, f32) {
        let (fw, fh) = (frame.0 as f32, frame.1 as f32);
        let (iw, ih) = (image.0 as f32, image.1 as f32);
        let (sx, sy) = match self {
            Fit::Stretch => (iw / fw, ih / fh),
            Fit::Cover => {
                let s = (fw / iw).max(fh / ih);
                (1.0 / s, 1.0 / s)
            }
            Fit::Contain => {
                let s = (fw / iw).min(fh / ih);
                (1.0 / s, 1.0 / s)
            }
        };
        // Centre the frame on the image.
        (sx, sy, iw / 2.0 - fw / 2.0 * sx, ih / 2.0 - fh / 2.0 * sy)
    }
}

/// What replaces the background.
#[derive(Clone, Copy, Debug)]
pub enum Background<'a> {
    /// The frame itself, blurred with a Gaussian of `sigma` pixels (0 = no blur).
    Blur {
        /// Standard deviation in output pixels.
        sigma: f32,
    },
    /// An image, fitted to the frame.
    Image {
        /// The image (straight alpha).
        image: &'a RgbaImage,
        /// How it is fitted.
        fit: Fit,
    },
    /// A solid colour, straight RGBA 0..255.
    Color([u8; 4]),
    /// Nothing: the background becomes transparent.
    Transparent,
}

/// Threshold and feather applied to the probability (see
/// [`crate::postprocess::threshold_feather`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlphaSettings {
    /// Probability at which a pixel counts as person, 0..1.
    pub threshold: f32,
    /// Width of the soft edge in probability units, 0..1.
    pub feather: f32,
}

/// Default threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Default feather.
pub const DEFAULT_FEATHER: f32 = 0.2;
/// Range of the blur strength (Gaussian sigma, output pixels), the same as the OBS filter's
/// `BLUR_RANGE` slider: 0 = no blur; 100 px already turns a 1080p room into colour fields.
/// The command line refuses values outside it.
pub const BLUR_SIGMA_RANGE: (f32, f32) = (0.0, 100.0);

impl Default for AlphaSettings {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            feather: DEFAULT_FEATHER,
        }
    }
}

/// The compositor; keeps its working buffers between frames, so a warm compositor does not
/// allocate.
///
/// It works row by row: a row of person alpha, a row of premultiplied background, then the
/// output row. The blur keeps `P = (I.rgb * w, w)` interleaved at the reduced size, so both
/// Gaussian passes are runs of contiguous row updates, and upsamples it one output row at a
/// time.
#[derive(Debug, Default)]
pub struct Compositor {
    alpha: Vec<f32>,
    /// Premultiplied background of the current row, 4 values per pixel.
    background: Vec<f32>,
    /// Reduced `P`, then blurred: `sh` rows of `sw * 4` values.
    small: Vec<f32>,
    /// Horizontally blurred `P`.
    tmp: Vec<f32>,
    /// One clamp-padded row for the horizontal pass.
    padded: Vec<f32>,
    /// Upsamples the blurred `P` one output row at a time.
    resizer: PlaneResizer,
    kernel: Vec<f32>,
}

impl Compositor {
    /// Composites `frame` over `background` with the person alpha from `probability`
    /// (same size as the frame) into `out` (resized to the frame; straight-alpha RGBA8).
    ///
    /// # Panics
    /// When the probability's size differs from the frame's.
    pub fn composite(
        &mut self,
        frame: &FrameRef<'_>,
        probability: &Mask,
        alpha: AlphaSettings,
        background: Background<'_>,
        out: &mut RgbaImage,
    ) {
        let (w, h) = (frame.width(), frame.height());
        assert_eq!(
            (probability.width, probability.height),
            (w, h),
            "probability must have the frame's size"
        );
        if out.dimensions() != (w as u32, h as u32) {
            *out = RgbaImage::new(w as u32, h as u32);
        }
        self.alpha.resize(w * h, 0.0);
        self.background.resize(4 * w, 0.0);
        apply_threshold_feather(
            &probability.data,
            &mut self.alpha,
            alpha.threshold,
            alpha.feather,
        );
        let blurred = match background {
            Background::Blur { sigma } if sigma > 0.0 => {
                self.prepare_blur(frame, sigma);
                true
            }
            _ => false,
        };
        // Constant backgrounds: one row serves every row.
        match background {
            Background::Transparent => self.background.fill(0.0),
            Background::Color(c) => {
                let a = c[3] as f32 / 255.0;
                let px = [
                    c[0] as f32 / 255.0 * a,
                    c[1] as f32 / 255.0 * a,
                    c[2] as f32 / 255.0 * a,
                    a,
                ];
                for b in self.background.chunks_exact_mut(4) {
                    b.copy_from_slice(&px);
                }
            }
            _ => {}
        }
        let image_map = match background {
            Background::Image { image, fit } => {
                let (sx, sy, ox, oy) =
                    fit.mapping((w, h), (image.width() as usize, image.height() as usize));
                Some((image, sx, sy, ox, oy))
            }
            _ => None,
        };
        let bpp = frame.format().bytes_per_pixel();
        let offsets = frame.format().rgb_offsets();
        let out_raw: &mut [u8] = out;
        for (y, out_row) in out_raw.chunks_exact_mut(4 * w).enumerate() {
            let in_row = frame.row(y);
            match background {
                Background::Transparent | Background::Color(_) => {}
                Background::Image { .. } => {
                    let (image, sx, sy, ox, oy) = image_map.expect("set for image backgrounds");
                    image_row(&mut self.background, y, image, sx, sy, ox, oy);
                }
                Background::Blur { .. } if blurred => self.blur_row(y, in_row, bpp, offsets),
                Background::Blur { .. } => {
                    frame_row_premultiplied(&mut self.background, in_row, bpp, offsets)
                }
            }
            let alpha_row = &self.alpha[y * w..(y + 1) * w];
            blend_row(out_row, in_row, bpp, offsets, alpha_row, &self.background);
        }
    }

    /// Reduces `P = (I.rgb * w, w)` by `d`, blurs it and prepares its upsampling.
    fn prepare_blur(&mut self, frame: &FrameRef<'_>, sigma: f32) {
        let (w, h) = (frame.width(), frame.height());
        let d = ((sigma / 4.0).round() as usize).clamp(1, MAX_BLUR_REDUCTION);
        let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
        self.small.clear();
        self.small.resize(4 * sw * sh, 0.0);
        let bpp = frame.format().bytes_per_pixel();
        let [ro, go, bo] = frame.format().rgb_offsets();
        let (alpha, small) = (&self.alpha, &mut self.small);
        simd(
            #[inline(always)]
            || {
                for y in 0..h {
                    let acc = &mut small[(y / d) * sw * 4..(y / d + 1) * sw * 4];
                    let a_row = &alpha[y * w..(y + 1) * w];
                    for (x, (p, &a)) in frame.row(y).chunks_exact(bpp).zip(a_row).enumerate() {
                        let ia = if bpp == 4 {
                            p[3] as f32 * (1.0 / 255.0)
                        } else {
                            1.0
                        };
                        let wt = (1.0 - a) * ia * (1.0 / 255.0);
                        let cell = &mut acc[(x / d) * 4..(x / d) * 4 + 4];
                        cell[0] += p[ro] as f32 * wt;
                        cell[1] += p[go] as f32 * wt;
                        cell[2] += p[bo] as f32 * wt;
                        cell[3] += wt * 255.0;
                    }
                }
                // Edge blocks average only the pixels that exist.
                for by in 0..sh {
                    let rows = (h - by * d).min(d);
                    for bx in 0..sw {
                        let inv = 1.0 / (rows * (w - bx * d).min(d)) as f32;
                        for v in &mut small[(by * sw + bx) * 4..(by * sw + bx) * 4 + 4] {
                            *v *= inv;
                        }
                    }
                }
            },
        );
        self.kernel = gaussian_kernel(sigma / d as f32);
        blur_interleaved(
            &mut self.small,
            &mut self.tmp,
            &mut self.padded,
            sw,
            sh,
            &self.kernel,
        );
        self.resizer.start((sw, sh), (w, h), 4);
    }

    /// Fills `self.background` with row `y` of the blurred background.
    fn blur_row(&mut self, y: usize, in_row: &[u8], bpp: usize, [ro, go, bo]: [usize; 3]) {
        let p_row = self.resizer.row(&self.small, y);
        let bg = &mut self.background;
        simd(
            #[inline(always)]
            || {
                for ((b, p), v) in bg
                    .chunks_exact_mut(4)
                    .zip(in_row.chunks_exact(bpp))
                    .zip(p_row.chunks_exact(4))
                {
                    let ia = if bpp == 4 {
                        p[3] as f32 * (1.0 / 255.0)
                    } else {
                        1.0
                    };
                    if v[3] > MIN_BLUR_WEIGHT {
                        let k = ia / v[3];
                        b[0] = v[0] * k;
                        b[1] = v[1] * k;
                        b[2] = v[2] * k;
                    } else {
                        let k = ia * (1.0 / 255.0);
                        b[0] = p[ro] as f32 * k;
                        b[1] = p[go] as f32 * k;
                        b[2] = p[bo] as f32 * k;
                    }
                    b[3] = ia;
                }
            },
        );
    }
}

/// Separable Gaussian blur of an interleaved 4-channel `sw` x `sh` buffer, clamp-to-edge, in
/// place. Both passes are sums of whole shifted rows, so the inner loops vectorise.
fn blur_interleaved(
    data: &mut [f32],
    tmp: &mut Vec<f32>,
    padded: &mut Vec<f32>,
    sw: usize,
    sh: usize,
    kernel: &[f32],
) {
    let r = kernel.len() / 2;
    let row_len = 4 * sw;
    tmp.clear();
    tmp.resize(row_len * sh, 0.0);
    padded.resize(4 * (sw + 2 * r), 0.0);
    simd(
        #[inline(always)]
        || {
            // Horizontal: pad each row by r pixels of its edge values, then out += k[t] * shift.
            for y in 0..sh {
                let row = &data[y * row_len..(y + 1) * row_len];
                let (first, last) = (&row[..4], &row[row_len - 4..]);
                for i in 0..r {
                    padded[4 * i..4 * i + 4].copy_from_slice(first);
                    padded[4 * (r + sw + i)..4 * (r + sw + i) + 4].copy_from_slice(last);
                }
                padded[4 * r..4 * r + row_len].copy_from_slice(row);
                let out = &mut tmp[y * row_len..(y + 1) * row_len];
                for (t, &k) in kernel.iter().enumerate() {
                    for (o, &v) in out.iter_mut().zip(&padded[4 * t..4 * t + row_len]) {
                        *o += k * v;
                    }
                }
            }
            // Vertical: out row y = sum_t k[t] * row clamp(y + t - r).
            data.fill(0.0);
            for y in 0..sh {
                let out = &mut data[y * row_len..(y + 1) * row_len];
                for (t, &k) in kernel.iter().enumerate() {
                    let src_y = (y + t).saturating_sub(r).min(sh - 1);
                    for (o, &v) in out
                        .iter_mut()
                        .zip(&tmp[src_y * row_len..(src_y + 1) * row_len])
                    {
                        *o += k * v;
                    }
                }
            }
        },
    );
}

/// Row `y` of the frame itself, premultiplied (blur strength 0).
fn frame_row_premultiplied(bg: &mut [f32], in_row: &[u8], bpp: usize, [ro, go, bo]: [usize; 3]) {
    for (b, p) in bg.chunks_exact_mut(4).zip(in_row.chunks_exact(bpp)) {
        let ia = if bpp == 4 { p[3] as f32 / 255.0 } else { 1.0 };
        b[0] = p[ro] as f32 / 255.0 * ia;
        b[1] = p[go] as f32 / 255.0 * ia;
        b[2] = p[bo] as f32 / 255.0 * ia;
        b[3] = ia;
    }
}

/// `O = a * (I.rgb * I.a, I.a) + (1 - a) * B`, written as straight-alpha RGBA8.
fn blend_row(
    out: &mut [u8],
    in_row: &[u8],
    bpp: usize,
    [ro, go, bo]: [usize; 3],
    alpha: &[f32],
    bg: &[f32],
) {
    simd(
        #[inline(always)]
        || {
            for (((o, p), &a), b) in out
                .chunks_exact_mut(4)
                .zip(in_row.chunks_exact(bpp))
                .zip(alpha)
                .zip(bg.chunks_exact(4))
            {
                let ia = if bpp == 4 {
                    p[3] as f32 * (1.0 / 255.0)
                } else {
                    1.0
                };
                let oa = a * ia + (1.0 - a) * b[3];
                if oa <= 0.0 {
                    o.copy_from_slice(&[0, 0, 0, 0]);
                    continue;
                }
                // Straight colour = premultiplied / alpha, in 0..255.
                let fg = a * ia;
                let k = 255.0 / oa;
                o[0] = to_u8((fg * p[ro] as f32 * (1.0 / 255.0) + (1.0 - a) * b[0]) * k);
                o[1] = to_u8((fg * p[go] as f32 * (1.0 / 255.0) + (1.0 - a) * b[1]) * k);
                o[2] = to_u8((fg * p[bo] as f32 * (1.0 / 255.0) + (1.0 - a) * b[2]) * k);
                o[3] = to_u8(oa * 255.0);
            }
        },
    );
}

/// Person alpha as an opaque grey image (the "show mask" view).
pub fn mask_view(probability: &Mask, alpha: AlphaSettings) -> image::GrayImage {
    let mut m = probability.clone();
    apply_threshold_feather(
        &probability.data,
        &mut m.data,
        alpha.threshold,
        alpha.feather,
    );
    m.to_gray8()
}

/// Rounds a 0..255 value to a byte (half up; no libm call, unlike `f32::round` on baseline
/// x86-64).
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// Normalised Gaussian taps for `sigma` (pixels), radius `ceil(3 sigma)`: `2r + 1` weights.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(0.0) as i32;
    let mut k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// Bilinear taps `(i0, i1, weight of i1)` for the continuous position `pos` (pixels) in an axis
/// of `len` texels: half-pixel centres, clamp-to-edge; `None` outside `0..=len`.
fn fit_tap(pos: f32, len: usize) -> Option<(usize, usize, f32)> {
    if pos < 0.0 || pos > len as f32 {
        return None;
    }
    let f = (pos - 0.5).clamp(0.0, (len - 1) as f32);
    let i0 = f.floor() as usize;
    Some((i0, (i0 + 1).min(len - 1), f - i0 as f32))
}

/// Fills `bg` (one row, 4 values per pixel) with row `y` of `image` fitted by the mapping
/// `(sx, sy, ox, oy)` of [`Fit::mapping`]: bilinear with half-pixel centres and clamp-to-edge on
/// premultiplied texels, opaque black outside the image.
fn image_row(bg: &mut [f32], y: usize, image: &RgbaImage, sx: f32, sy: f32, ox: f32, oy: f32) {
    const OUTSIDE: [f32; 4] = [0.0, 0.0, 0.0, 1.0];
    let (iw, ih) = (image.width() as usize, image.height() as usize);
    // Continuous image position of the row.
    let Some((y0, y1, ty)) = fit_tap((y as f32 + 0.5) * sy + oy, ih) else {
        for b in bg.chunks_exact_mut(4) {
            b.copy_from_slice(&OUTSIDE);
        }
        return;
    };
    let raw: &[u8] = image;
    let (row0, row1) = (
        &raw[y0 * iw * 4..(y0 + 1) * iw * 4],
        &raw[y1 * iw * 4..(y1 + 1) * iw * 4],
    );
    for (x, out) in bg.chunks_exact_mut(4).enumerate() {
        let Some((x0, x1, tx)) = fit_tap((x as f32 + 0.5) * sx + ox, iw) else {
            out.copy_from_slice(&OUTSIDE);
            continue;
        };
        // Interpolate premultiplied values so transparent texels do not bleed colour.
        let mut acc = [0f32; 4];
        for (p, wgt) in [
            (&row0[4 * x0..4 * x0 + 4], (1.0 - tx) * (1.0 - ty)),
            (&row0[4 * x1..4 * x1 + 4], tx * (1.0 - ty)),
            (&row1[4 * x0..4 * x0 + 4], (1.0 - tx) * ty),
            (&row1[4 * x1..4 * x1 + 4], tx * ty),
        ] {
            let a = p[3] as f32 / 255.0;
            acc[0] += wgt * p[0] as f32 / 255.0 * a;
            acc[1] += wgt * p[1] as f32 / 255.0 * a;
            acc[2] += wgt * p[2] as f32 / 255.0 * a;
            acc[3] += wgt * a;
        }
        out.copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_mappings() {
        // 200x100 frame, 100x100 image.
        let (sx, _, ox, oy) = Fit::Cover.mapping((200, 100), (100, 100));
        // Cover scales by 2: frame x 0..200 shows image x 0..100, y 25..75.
        assert_eq!((sx, ox, oy), (0.5, 0.0, 25.0));
        let (sx, _, ox, _) = Fit::Contain.mapping((200, 100), (100, 100));
        // Contain scales by 1: image centred, frame x 50 shows image x 0.
        assert_eq!((sx, ox), (1.0, -50.0));
        let (sx, sy, ox, oy) = Fit::Stretch.mapping((200, 100), (100, 100));
        assert_eq!((sx, sy, ox, oy), (0.5, 1.0, 0.0, 0.0));
    }

    #[test]
    fn gaussian_kernel_is_normalised() {
        let k = gaussian_kernel(2.0);
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(k[6] > k[5] && k[5] > k[4]);
    }
}
