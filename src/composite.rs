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
use crate::postprocess::{downsample_box, threshold_feather};
use crate::preprocess::{resize_plane, BilinearAxis};
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

impl Default for AlphaSettings {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            feather: DEFAULT_FEATHER,
        }
    }
}

/// The compositor; keeps its working buffers between frames.
#[derive(Debug, Default)]
pub struct Compositor {
    alpha: Vec<f32>,
    /// Premultiplied background, 4 values per pixel.
    background: Vec<f32>,
    planes: [Vec<f32>; 4],
    small: [Vec<f32>; 4],
    blurred: [Vec<f32>; 4],
    tmp: Vec<f32>,
    axes: (BilinearAxis, BilinearAxis),
    scratch: Vec<f32>,
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
        self.alpha.clear();
        self.alpha.extend(
            probability
                .data
                .iter()
                .map(|&p| threshold_feather(p, alpha.threshold, alpha.feather)),
        );
        self.background.clear();
        self.background.resize(4 * w * h, 0.0);
        match background {
            Background::Transparent => {}
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
            Background::Image { image, fit } => fill_image(&mut self.background, w, h, image, fit),
            Background::Blur { sigma } => self.fill_blur(frame, sigma),
        }
        if out.dimensions() != (w as u32, h as u32) {
            *out = RgbaImage::new(w as u32, h as u32);
        }
        let bpp = frame.format().bytes_per_pixel();
        let [ro, go, bo] = frame.format().rgb_offsets();
        for y in 0..h {
            let row = frame.row(y);
            for x in 0..w {
                let i = y * w + x;
                let p = &row[x * bpp..];
                let ia = if bpp == 4 { p[3] as f32 / 255.0 } else { 1.0 };
                let a = self.alpha[i];
                let b = &self.background[4 * i..4 * i + 4];
                let oa = a * ia + (1.0 - a) * b[3];
                let mut o = [0u8; 4];
                if oa > 0.0 {
                    for (c, off) in [ro, go, bo].into_iter().enumerate() {
                        let premul = a * (p[off] as f32 / 255.0) * ia + (1.0 - a) * b[c];
                        o[c] = to_u8(premul / oa);
                    }
                    o[3] = to_u8(oa);
                }
                out.put_pixel(x as u32, y as u32, image::Rgba(o));
            }
        }
    }

    /// Fills `self.background` with the halo-free blur of the frame's background.
    fn fill_blur(&mut self, frame: &FrameRef<'_>, sigma: f32) {
        let (w, h) = (frame.width(), frame.height());
        let bpp = frame.format().bytes_per_pixel();
        let [ro, go, bo] = frame.format().rgb_offsets();
        // Premultiplied-by-weight planes P = (I.rgb * w, w), w = (1 - a) * I.a.
        for plane in &mut self.planes {
            plane.clear();
            plane.reserve(w * h);
        }
        for y in 0..h {
            for (x, p) in frame.row(y).chunks_exact(bpp).enumerate() {
                let ia = if bpp == 4 { p[3] as f32 / 255.0 } else { 1.0 };
                let wt = (1.0 - self.alpha[y * w + x]) * ia;
                self.planes[0].push(p[ro] as f32 / 255.0 * wt);
                self.planes[1].push(p[go] as f32 / 255.0 * wt);
                self.planes[2].push(p[bo] as f32 / 255.0 * wt);
                self.planes[3].push(wt);
            }
        }
        if sigma > 0.0 {
            let d = ((sigma / 4.0).round() as usize).clamp(1, MAX_BLUR_REDUCTION);
            let (sw, sh) = (w.div_ceil(d), h.div_ceil(d));
            let kernel = gaussian_kernel(sigma / d as f32);
            for c in 0..4 {
                downsample_box(&self.planes[c], w, h, d, &mut self.small[c]);
                gaussian_separable(&mut self.small[c], &mut self.tmp, sw, sh, &kernel);
                self.blurred[c].resize(w * h, 0.0);
                resize_plane(
                    &self.small[c],
                    sw,
                    sh,
                    &mut self.blurred[c],
                    w,
                    h,
                    &mut self.axes,
                    &mut self.scratch,
                );
            }
        } else {
            for c in 0..4 {
                self.blurred[c].clone_from(&self.planes[c]);
            }
        }
        for y in 0..h {
            for (x, p) in frame.row(y).chunks_exact(bpp).enumerate() {
                let i = y * w + x;
                let ia = if bpp == 4 { p[3] as f32 / 255.0 } else { 1.0 };
                let wt = self.blurred[3][i];
                let rgb = if wt > MIN_BLUR_WEIGHT {
                    [
                        self.blurred[0][i] / wt,
                        self.blurred[1][i] / wt,
                        self.blurred[2][i] / wt,
                    ]
                } else {
                    [
                        p[ro] as f32 / 255.0,
                        p[go] as f32 / 255.0,
                        p[bo] as f32 / 255.0,
                    ]
                };
                let b = &mut self.background[4 * i..4 * i + 4];
                b[0] = rgb[0] * ia;
                b[1] = rgb[1] * ia;
                b[2] = rgb[2] * ia;
                b[3] = ia;
            }
        }
    }
}

/// Person alpha as an opaque grey image (the "show mask" view).
pub fn mask_view(probability: &Mask, alpha: AlphaSettings) -> image::GrayImage {
    let mut m = probability.clone();
    for v in &mut m.data {
        *v = threshold_feather(*v, alpha.threshold, alpha.feather);
    }
    m.to_gray8()
}

#[inline]
fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
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

/// Separable convolution of a `w` x `h` plane with `kernel` (odd length), clamp-to-edge,
/// in place; `tmp` is scratch.
pub fn gaussian_separable(
    plane: &mut [f32],
    tmp: &mut Vec<f32>,
    w: usize,
    h: usize,
    kernel: &[f32],
) {
    let r = (kernel.len() / 2) as isize;
    tmp.resize(w * h, 0.0);
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        for x in 0..w {
            let mut acc = 0.0;
            for (k, &kv) in kernel.iter().enumerate() {
                let xx = (x as isize + k as isize - r).clamp(0, w as isize - 1) as usize;
                acc += kv * row[xx];
            }
            tmp[y * w + x] = acc;
        }
    }
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (k, &kv) in kernel.iter().enumerate() {
                let yy = (y as isize + k as isize - r).clamp(0, h as isize - 1) as usize;
                acc += kv * tmp[yy * w + x];
            }
            plane[y * w + x] = acc;
        }
    }
}

/// Fills the premultiplied background with `image` fitted to a `w` x `h` frame.
fn fill_image(bg: &mut [f32], w: usize, h: usize, image: &RgbaImage, fit: Fit) {
    let (iw, ih) = (image.width() as usize, image.height() as usize);
    let (sx, sy, ox, oy) = fit.mapping((w, h), (iw, ih));
    let px = |x: usize, y: usize| image.get_pixel(x as u32, y as u32).0;
    for y in 0..h {
        let v = (y as f32 + 0.5) * sy + oy; // continuous image position
        for x in 0..w {
            let u = (x as f32 + 0.5) * sx + ox;
            let out = &mut bg[4 * (y * w + x)..4 * (y * w + x) + 4];
            if u < 0.0 || v < 0.0 || u > iw as f32 || v > ih as f32 {
                out.copy_from_slice(&[0.0, 0.0, 0.0, 1.0]);
                continue;
            }
            // Bilinear with half-pixel centres and clamp-to-edge.
            let fx = (u - 0.5).clamp(0.0, (iw - 1) as f32);
            let fy = (v - 0.5).clamp(0.0, (ih - 1) as f32);
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(iw - 1), (y0 + 1).min(ih - 1));
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let (p00, p01, p10, p11) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
            // Interpolate premultiplied values so transparent texels do not bleed colour.
            let mut acc = [0f32; 4];
            for (p, wgt) in [
                (p00, (1.0 - tx) * (1.0 - ty)),
                (p01, tx * (1.0 - ty)),
                (p10, (1.0 - tx) * ty),
                (p11, tx * ty),
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
