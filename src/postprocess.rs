//! Mask post-processing, the CPU reference: temporal smoothing, scene-cut detection,
//! threshold and feather, and guided-filter edge refinement.
//!
//! The OBS filter runs smoothing and refinement on its worker thread with these functions, and
//! does threshold and feather per pixel in its effect with exactly [`threshold_feather`].

use crate::simd::simd;

/// Hermite smoothstep: 0 below `e0`, 1 above `e1`, `u * u * (3 - 2u)` in between with
/// `u = (x - e0) / (e1 - e0)` (GLSL/HLSL `smoothstep`).
#[inline(always)]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let u = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    u * u * (3.0 - 2.0 * u)
}

/// Person alpha from person probability: `smoothstep(t - f/2, t + f/2, p)`, a hard step
/// (`p >= t`) when `feather` is 0.
///
/// `threshold` and `feather` are in 0..1 (probability units). The filter's effect computes
/// the same expression per pixel.
#[inline(always)]
pub fn threshold_feather(p: f32, threshold: f32, feather: f32) -> f32 {
    if feather <= 0.0 {
        if p >= threshold {
            1.0
        } else {
            0.0
        }
    } else {
        smoothstep(threshold - 0.5 * feather, threshold + 0.5 * feather, p)
    }
}

/// Applies [`threshold_feather`] to every value of `probability`, writing alpha into `alpha`.
pub fn apply_threshold_feather(
    probability: &[f32],
    alpha: &mut [f32],
    threshold: f32,
    feather: f32,
) {
    simd(
        #[inline(always)]
        || {
            for (a, &p) in alpha.iter_mut().zip(probability) {
                *a = threshold_feather(p, threshold, feather);
            }
        },
    );
}

/// Person probabilities under this (2^-20, under a sixteenth of a 16-bit mask step) are set
/// to 0 by [`flush_tiny`].
pub const FLUSH_BELOW: f32 = 1.0 / (1u32 << 20) as f32;

/// Sets every value of `probability` (0..1) under [`FLUSH_BELOW`] to 0.
///
/// In confident background the network's output is 0 or tiny: the fused sigmoid's smallest
/// value above 0 is 1.6e-38 ([`crate::model::kernels::SIGMOID_ZERO_ABOVE`]; 6e-39 before that
/// cut-off), candle's sigmoid on a GPU gives subnormals itself, and bilinear weights carry tiny
/// values into subnormals: before both changes 521 098 of the 2 073 600 values of a 1920x1080
/// mask of the demo photo were subnormal. Arithmetic on subnormals costs about a hundred cycles
/// a value on Intel cores: on a Xeon of the lent H200 machine (4 December) the 1080p
/// post-process took 17.9 ms with the CPU network against 2.8 ms with the CUDA one, whose
/// output has none (`scripts/gpu-check.sh`). XNNPACK's sigmoid flushes its subnormal outputs
/// for the same reason.
pub fn flush_tiny(probability: &mut [f32]) {
    simd(
        #[inline(always)]
        || {
            for p in probability.iter_mut() {
                *p = if *p < FLUSH_BELOW { 0.0 } else { *p };
            }
        },
    );
}

/// Largest weight the previous state gets in [`TemporalSmoother::apply`] (no picture to gate
/// by; at strength 1 and no change of probability), so that even full smoothing follows motion
/// within a few frames.
pub const MAX_SMOOTHING_WEIGHT: f32 = 0.9;

/// Per-pixel change of probability (0..1) at which [`TemporalSmoother::apply`] stops
/// smoothing and follows the new frame at once: changes this large are motion, not flicker.
pub const MOTION_CHANGE: f32 = 0.7;

/// Change of the model input's luma (0..1, mean absolute change over a 3x3 window at the model
/// resolution) since the previous frame up to which a pixel of [`TemporalSmoother`] counts as
/// fully still.
pub const STILL_CHANGE: f32 = 3.0 / 255.0;

/// Luma change since the previous frame (0..1, as [`STILL_CHANGE`]) from which a pixel counts
/// as fully moving; in between the still gate falls off as a smoothstep.
pub const MOVING_CHANGE: f32 = 12.0 / 255.0;

/// Half-width (probability units) of the hysteresis band of a fully still pixel at smoothing
/// strength 1: [`still_band`].
pub const MAX_STILL_BAND: f32 = 1.8;

/// Half-width (probability units) of the hysteresis band of a fully still pixel at smoothing
/// strength `strength` (0..1): `MAX_STILL_BAND * strength`, 0.9 at the default 0.5: a still pixel then keeps its
/// value unless the network's moves more than 0.9 from it or the IoU bound
/// ([`MIN_IOU_VS_RAW`]) lets it go. At 0.25 (band 0.45) the desk clip keeps 0.34x of the raw
/// model's still-area flicker, at 0.5 0.29x (`docs/obs-plugin.md`, "Temporal stability").
pub fn still_band(strength: f32) -> f32 {
    MAX_STILL_BAND * strength.clamp(0.0, 1.0)
}

/// Lowest IoU that [`TemporalSmoother`] lets its mask keep with the network's mask of the same
/// frame (both as hard labels at [`BUDGET_THRESHOLD`], at the model resolution): where holding
/// still pixels would cost more, the band is narrowed for that frame until it does not. 0.975
/// keeps the full-resolution IoU against raw (after bilinear upsampling) at 0.971 to 0.974 on
/// three shared clips and 0.969 on the low-resolution room clip (`docs/obs-plugin.md`,
/// "Temporal stability").
pub const MIN_IOU_VS_RAW: f64 = 0.975;

/// Probability at which [`TemporalSmoother`] labels pixels for [`MIN_IOU_VS_RAW`]: the
/// filter's and the CLI's default threshold. (The pipeline does not know the threshold a
/// compositor will use; with another threshold the bound holds less tightly.)
pub const BUDGET_THRESHOLD: f32 = 0.5;

/// Motion-gated hysteresis of the person probability at the model resolution, with a bound on
/// how far the mask may stray from the network's.
///
/// Flicker of a segmentation mask on a webcam is mostly the network changing its mind about
/// pixels whose picture did not change (its receptive field spans the frame, so a moving hand
/// shifts a still shoulder's edge, and compression noise moves edge pixels back and forth across
/// the threshold). So each pixel keeps its previous value for as long as the network's new
/// value stays within a band around it, and moves only as far as it must to stay within the
/// band (backlash, or play, hysteresis); the band is as wide as the pixel's own picture is
/// still, measured on the model input (NCHW RGB, Rec. 601 luma) as the mean absolute change
/// over a 3x3 window since the previous frame, `c`:
///
/// - still gate `g = 1 - smoothstep(STILL_CHANGE, MOVING_CHANGE, c)`;
/// - band `b = k * g * still_band(strength)`;
/// - `p = clamp(p_prev, p_new - b, p_new + b)`;
/// - `k = 1`, unless the hard mask (at [`BUDGET_THRESHOLD`]) would then have an IoU below
///   [`MIN_IOU_VS_RAW`] with the network's own of this frame: then `k` in 0..1 is the largest
///   (by bisection, 8 steps) that keeps it, 0 (the network's values) at worst.
///
/// A pixel whose picture moved (`g = 0`) takes the network's value as it is, so motion is
/// followed without lag; a still pixel never ends further than `b` from the network's value, so
/// its label differs from the raw model's only where that value is within `b` of the
/// threshold. Flicker smaller than the band is removed; a lasting change of the network's mind
/// larger than the band is followed at once (less the band), and one that would leave a large
/// region of the mask behind (the network redrawing the hair, a slow lean across a flat wall)
/// is followed as far as the IoU bound needs. This is the issue's "hysteresis around the
/// threshold" and "a pixel whose picture did not change keeps its value", applied to the
/// probability (so feathered edges stay still too), with the trust in the new value taken from
/// the frame's own change as in MediaPipe's `SegmentationSmoothingCalculator` (which takes it
/// from the new value's entropy). Without an input ([`TemporalSmoother::apply`]) the earlier
/// motion-adaptive average is used.
///
/// Measured with `ai-background eval-video CLIP --raw` (table, trade-off and command in
/// `docs/obs-plugin.md`, "Temporal stability").
///
/// The state resets when the size changes and on [`TemporalSmoother::reset`] (scene cuts).
#[derive(Clone, Debug, Default)]
pub struct TemporalSmoother {
    state: Vec<f32>,
    luma: Vec<f32>,
    prev_luma: Vec<f32>,
    change: Vec<f32>,
    gate: Vec<f32>,
    flips: Vec<[f32; 3]>,
    boxf: BoxFilter,
}

impl TemporalSmoother {
    /// Forgets the previous frames.
    pub fn reset(&mut self) {
        self.state.clear();
        self.prev_luma.clear();
    }

    /// Smooths `probability` in place against the previous frame and remembers the result,
    /// treating every pixel as moving (no picture to gate by): an average with the previous
    /// value of weight `MAX_SMOOTHING_WEIGHT * strength * max(0, 1 - (d / MOTION_CHANGE)^2)`,
    /// `d` the change of probability. `strength` is in 0..1.
    pub fn apply(&mut self, probability: &mut [f32], strength: f32) {
        let strength = strength.clamp(0.0, 1.0);
        if self.state.len() != probability.len() || strength == 0.0 {
            self.state.clear();
            self.state.extend_from_slice(probability);
            return;
        }
        let k = MAX_SMOOTHING_WEIGHT * strength;
        for (p, s) in probability.iter_mut().zip(self.state.iter_mut()) {
            let d = (*p - *s) * (1.0 / MOTION_CHANGE);
            let w = k * (1.0 - d * d).max(0.0);
            *p = w * *s + (1.0 - w) * *p;
            *s = *p;
        }
    }

    /// Smooths `probability` (`w` x `h`, 0..1) in place, gated by the change of `input`, the
    /// model input it was computed from (NCHW `[1, 3, h, w]` RGB 0..1), and remembers both.
    /// `strength` is in 0..1 (0: the network's values pass unchanged).
    ///
    /// # Panics
    /// When `probability` is not `w * h` or `input` not `3 * w * h` long.
    pub fn apply_gated(
        &mut self,
        probability: &mut [f32],
        input: &[f32],
        w: usize,
        h: usize,
        strength: f32,
    ) {
        let mut luma = std::mem::take(&mut self.luma);
        input_luma(input, w * h, &mut luma);
        self.luma = luma;
        self.gate_and_hold(probability, w, h, strength);
    }

    /// [`TemporalSmoother::apply_gated`] with the model input's luma given
    /// ([`input_luma`] of it, `w * h` values), for a caller that has it already.
    ///
    /// # Panics
    /// When `probability` or `luma` is not `w * h` long.
    pub fn apply_gated_luma(
        &mut self,
        probability: &mut [f32],
        luma: &[f32],
        w: usize,
        h: usize,
        strength: f32,
    ) {
        assert_eq!(luma.len(), w * h);
        self.luma.clear();
        self.luma.extend_from_slice(luma);
        self.gate_and_hold(probability, w, h, strength);
    }

    /// The smoothing itself, with this frame's luma in `self.luma`.
    fn gate_and_hold(&mut self, probability: &mut [f32], w: usize, h: usize, strength: f32) {
        let n = w * h;
        assert_eq!(probability.len(), n);
        assert_eq!(self.luma.len(), n);
        let band = still_band(strength);
        let warm = self.prev_luma.len() == n && self.state.len() == n;
        if warm && band > 0.0 {
            abs_diff(&self.luma, &self.prev_luma, &mut self.change);
            self.gate.resize(n, 0.0);
            self.boxf.apply(&self.change, &mut self.gate, w, h, 1);
            // From here on `gate` holds each pixel's band at k = 1.
            let gate = &mut self.gate;
            simd(
                #[inline(always)]
                || {
                    for g in gate.iter_mut() {
                        *g = band * (1.0 - smoothstep(STILL_CHANGE, MOVING_CHANGE, *g));
                    }
                },
            );
            let k = widest_bounded_scale(
                probability,
                &self.state,
                &self.gate,
                MIN_IOU_VS_RAW,
                &mut self.flips,
            );
            hold_within(probability, &mut self.state, &self.gate, k);
        } else {
            self.state.clear();
            self.state.extend_from_slice(probability);
            // Size now what the next frames compare with, so they allocate nothing.
            self.change.resize(n, 0.0);
            self.gate.resize(n, 0.0);
            self.flips.clear();
            self.flips.reserve(n);
            self.boxf.apply(&self.luma, &mut self.gate, w, h, 1);
        }
        std::mem::swap(&mut self.prev_luma, &mut self.luma);
        self.luma.clear();
        self.luma.reserve(n);
    }
}

/// `out[i] = |a[i] - b[i]|` (`out` resized to the inputs' length).
pub(crate) fn abs_diff(a: &[f32], b: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(a.len().min(b.len()), 0.0);
    simd(
        #[inline(always)]
        || {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = (x - y).abs();
            }
        },
    );
}

/// Rec. 601 luma `0.299 R + 0.587 G + 0.114 B` of a model input (NCHW `[1, 3, h, w]` RGB
/// 0..1, `n = h * w` pixels) into `out` (`n` values, 0..1): what [`TemporalSmoother`] gates
/// by and [`SceneCutDetector`] thumbnails, computed once per frame by the pipeline.
///
/// # Panics
/// When `input` holds fewer than `3 * n` values.
pub fn input_luma(input: &[f32], n: usize, out: &mut Vec<f32>) {
    let (r, rest) = input[..3 * n].split_at(n);
    let (g, b) = rest.split_at(n);
    out.clear();
    out.resize(n, 0.0);
    simd(
        #[inline(always)]
        || {
            for (((o, &r), &g), &b) in out.iter_mut().zip(r).zip(g).zip(b) {
                *o = 0.299 * r + 0.587 * g + 0.114 * b;
            }
        },
    );
}

/// Mean absolute change (0..1) of a coarse luma thumbnail above which a frame is a scene cut
/// (a camera switch, a scene change): temporal state is then dropped instead of blended.
///
/// On the four clips of `../shared/videos` (`cargo test --test eval scene_cut -- --nocapture`
/// prints the figures): between consecutive frames of one clip at most 0.045, between the first
/// frames of two different clips 0.16 to 0.47. 0.1 sits between the two.
pub const SCENE_CUT_CHANGE: f32 = 0.1;

/// Thumbnail size (width, height) compared by [`SceneCutDetector`].
const THUMB: (usize, usize) = (16, 9);

/// Detects scene cuts by comparing a 16x9 luma thumbnail of consecutive model inputs.
#[derive(Clone, Debug, Default)]
pub struct SceneCutDetector {
    previous: Vec<f32>,
    current: Vec<f32>,
    luma: Vec<f32>,
    /// Per input column, the sum of its luma over the rows of the current thumbnail row.
    columns: Vec<f32>,
    /// Input size the cell sizes were computed for, and 1 / pixels per cell.
    size: (usize, usize),
    inv_cell: Vec<f32>,
}

impl SceneCutDetector {
    /// Forgets the previous frame.
    pub fn reset(&mut self) {
        self.previous.clear();
    }

    /// Feeds one model input (NCHW `[1, 3, h, w]` RGB 0..1) and returns whether it differs
    /// from the previous one by more than [`SCENE_CUT_CHANGE`]. The first frame is not a cut.
    pub fn is_cut(&mut self, input: &[f32], w: usize, h: usize) -> bool {
        self.change(input, w, h)
            .is_some_and(|change| change > SCENE_CUT_CHANGE)
    }

    /// Feeds one model input and returns the mean absolute change (0..1) of its 16x9 luma
    /// thumbnail from the previous input's (`None` for the first frame or a new size).
    pub fn change(&mut self, input: &[f32], w: usize, h: usize) -> Option<f32> {
        let mut luma = std::mem::take(&mut self.luma);
        input_luma(input, w * h, &mut luma);
        let change = self.change_luma(&luma, w, h);
        self.luma = luma;
        change
    }

    /// [`SceneCutDetector::is_cut`] with the input's luma given ([`input_luma`], `w * h`
    /// values).
    pub fn is_cut_luma(&mut self, luma: &[f32], w: usize, h: usize) -> bool {
        self.change_luma(luma, w, h)
            .is_some_and(|change| change > SCENE_CUT_CHANGE)
    }

    /// [`SceneCutDetector::change`] with the input's luma given ([`input_luma`], `w * h`
    /// values): each thumbnail cell is the mean of the pixels `(x, y)` with
    /// `x * 16 / w, y * 9 / h` on it.
    ///
    /// # Panics
    /// When `luma` is not `w * h` long.
    pub fn change_luma(&mut self, luma: &[f32], w: usize, h: usize) -> Option<f32> {
        assert_eq!(luma.len(), w * h);
        let (tw, th) = THUMB;
        self.current.clear();
        self.current.resize(tw * th, 0.0);
        self.columns.clear();
        self.columns.resize(w, 0.0);
        let (current, columns) = (&mut self.current, &mut self.columns);
        // Column sums over the rows of one thumbnail row (vectorised), then per cell.
        simd(
            #[inline(always)]
            || {
                for (y, row) in luma.chunks_exact(w).enumerate() {
                    for (c, &v) in columns.iter_mut().zip(row) {
                        *c += v;
                    }
                    let ty = y * th / h;
                    if y + 1 == h || (y + 1) * th / h != ty {
                        for (x, c) in columns.iter_mut().enumerate() {
                            current[ty * tw + x * tw / w] += *c;
                            *c = 0.0;
                        }
                    }
                }
            },
        );
        if self.size != (w, h) {
            // Pixels per thumbnail cell, counted once per input size.
            let cols = |c: usize| (0..w).filter(|x| x * tw / w == c).count();
            let rows = |c: usize| (0..h).filter(|y| y * th / h == c).count();
            self.inv_cell = (0..tw * th)
                .map(|i| 1.0 / (cols(i % tw) * rows(i / tw)).max(1) as f32)
                .collect();
            self.size = (w, h);
            self.previous.clear();
        }
        for (v, k) in self.current.iter_mut().zip(&self.inv_cell) {
            *v *= k;
        }
        let change = (self.previous.len() == self.current.len()).then(|| {
            self.previous
                .iter()
                .zip(&self.current)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / (tw * th) as f32
        });
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
        self.current.reserve(tw * th);
        change
    }
}

/// Box filter of radius `r` (window `2r + 1`, clipped at the borders and normalised by the
/// number of pixels inside), keeping its scratch buffers between calls.
///
/// The horizontal pass adds `2r + 1` shifted copies of a zero-padded row and the vertical pass
/// keeps running column sums, so both vectorise across a row; the guided filter only uses
/// small radii (it subsamples first), where this beats a serial running sum.
#[derive(Clone, Debug, Default)]
pub struct BoxFilter {
    tmp: Vec<f32>,
    padded: Vec<f32>,
    inv_x: Vec<f32>,
    sums: Vec<f32>,
}

impl BoxFilter {
    /// Filters the `w` x `h` plane `src` into `dst`.
    pub fn apply(&mut self, src: &[f32], dst: &mut [f32], w: usize, h: usize, r: usize) {
        assert_eq!(src.len(), w * h);
        assert_eq!(dst.len(), w * h);
        self.prepare(w, h, r, 1);
        let Self {
            tmp,
            padded,
            inv_x,
            sums,
        } = self;
        simd(
            #[inline(always)]
            || {
                for (row, out) in src.chunks_exact(w).zip(tmp.chunks_exact_mut(w)) {
                    padded[r..r + w].copy_from_slice(row);
                    box_row(padded, r, inv_x, out);
                }
                for (y, d) in dst.chunks_exact_mut(w).enumerate() {
                    box_column_row(tmp, sums, w, h, r, y, d);
                }
            },
        );
    }

    /// Sizes the scratch for `k` planes of `w` x `h` at radius `r`: `k` horizontally
    /// filtered planes in `tmp`, `k` zero-padded rows of `w + 2r` in `padded` (zero borders),
    /// `k` column-sum rows in `sums`.
    fn prepare(&mut self, w: usize, h: usize, r: usize, k: usize) {
        self.tmp.resize(k * w * h, 0.0);
        self.padded.clear();
        self.padded.resize(k * (w + 2 * r), 0.0);
        self.inv_x.clear();
        self.inv_x
            .extend((0..w).map(|x| 1.0 / ((x + r).min(w - 1) - x.saturating_sub(r) + 1) as f32));
        self.sums.clear();
        self.sums.resize(k * w, 0.0);
    }
}

/// The first `K` parts of `len` values of `v`.
///
/// # Panics
/// When `v` holds fewer than `K * len` values.
#[inline(always)]
fn parts<const K: usize>(v: &mut [f32], len: usize) -> [&mut [f32]; K] {
    let mut it = v.chunks_exact_mut(len);
    std::array::from_fn(|_| it.next().expect("scratch sized for K parts"))
}

/// The horizontal pass of [`BoxFilter`] for one row: `out[x]` is the sum of `padded[x..=x + 2r]`
/// (the row with `r` zeros on each side), in that order, times `inv_x[x]`.
#[inline(always)]
fn box_row(padded: &[f32], r: usize, inv_x: &[f32], out: &mut [f32]) {
    let w = out.len();
    out.fill(0.0);
    for t in 0..=2 * r {
        for (o, &v) in out.iter_mut().zip(&padded[t..t + w]) {
            *o += v;
        }
    }
    for (o, &k) in out.iter_mut().zip(inv_x) {
        *o *= k;
    }
}

/// The vertical pass of [`BoxFilter`] for output row `y` (rows in increasing order from 0) of
/// the horizontally filtered plane `tmp` (`w` x `h`): running column sums in `sums` (`w`
/// values, started at row 0), `out` the sums over the rows of the window divided by their
/// count.
#[inline(always)]
fn box_column_row(
    tmp: &[f32],
    sums: &mut [f32],
    w: usize,
    h: usize,
    r: usize,
    y: usize,
    out: &mut [f32],
) {
    if y == 0 {
        sums.fill(0.0);
        for row in tmp.chunks_exact(w).take(r + 1) {
            for (s, &v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    let inv = 1.0 / ((y + r).min(h - 1) - y.saturating_sub(r) + 1) as f32;
    for (d, &s) in out.iter_mut().zip(sums.iter()) {
        *d = s * inv;
    }
    if y + r + 1 < h {
        let add = &tmp[(y + r + 1) * w..(y + r + 2) * w];
        for (s, &v) in sums.iter_mut().zip(add) {
            *s += v;
        }
    }
    if y >= r {
        let sub = &tmp[(y - r) * w..(y - r + 1) * w];
        for (s, &v) in sums.iter_mut().zip(sub) {
            *s -= v;
        }
    }
}

/// Settings of the guided-filter edge refinement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefineSettings {
    /// Window radius in pixels of the refinement capture ([`RefineSettings::capture_size`]);
    /// 0 picks one from the capture-to-model scale (see [`RefineSettings::radius_for`]).
    pub radius: usize,
    /// Regularisation epsilon (variance of the 0..1 guide below which edges are smoothed
    /// away). He et al. use 1e-4 .. 1e-2 for matting; 1e-3 suits 8-bit webcam noise.
    pub epsilon: f32,
    /// The coefficients `(A, b)` are computed at the model input size times this (at most
    /// the frame size); the OBS filter captures at that size.
    pub capture_scale: usize,
}

impl Default for RefineSettings {
    fn default() -> Self {
        Self {
            radius: 0,
            epsilon: DEFAULT_REFINE_EPSILON,
            capture_scale: REFINE_CAPTURE_SCALE,
        }
    }
}

/// Default guided-filter epsilon.
pub const DEFAULT_REFINE_EPSILON: f32 = 1e-3;
/// Largest guided-filter radius the command line accepts, in frame pixels (the automatic
/// radius is twice the upscale factor: 30 px for 2160p from the 144-row model).
pub const MAX_REFINE_RADIUS: usize = 64;
/// Range of the guided-filter epsilon the command line accepts: above 0 (at 0 a flat guide
/// window divides 0 by 0) and at most 1 (the largest variance a 0..1 guide can have is 0.25,
/// so larger values only smooth).
pub const REFINE_EPSILON_RANGE: (f32, f32) = (1e-6, 1.0);

/// Default [`RefineSettings::capture_scale`]: the coefficients at the model input size
/// (256x144 for the landscape model). With the guide applied at full resolution this scores
/// as well as a 2x capture (`cargo test --test eval guided_upsampling -- --ignored`) and
/// keeps the OBS worker's CPU time per frame to the network and a small guided filter;
/// `docs/obs-plugin.md` ("Edge refinement") has the figures.
pub const REFINE_CAPTURE_SCALE: usize = 1;

impl RefineSettings {
    /// The radius to use for a capture `capture_h` pixels high refined from a model output
    /// `model_h` pixels high: the configured one, or three times the upscale factor (at
    /// least 3; 3 at the default 1x capture: on ccp-webcam-dev it lifts boundary F from
    /// 0.8057 at radius 2 to 0.8079, `docs/obs-plugin.md`).
    pub fn radius_for(&self, capture_h: usize, model_h: usize) -> usize {
        if self.radius > 0 {
            self.radius
        } else {
            (3 * capture_h).div_ceil(model_h.max(1)).max(3)
        }
    }

    /// Size (width, height) at which the coefficients are computed for a model input of
    /// `model` and a frame of `frame` pixels: `model * capture_scale`, at most the frame.
    pub fn capture_size(&self, model: (usize, usize), frame: (usize, usize)) -> (usize, usize) {
        let k = self.capture_scale.max(1);
        ((model.0 * k).min(frame.0), (model.1 * k).min(frame.1))
    }
}

/// Guided filter with a grey guide (He, Sun and Tang, "Guided Image Filtering", TPAMI 2013,
/// Algorithm 1), in its fast form (He and Sun, "Fast Guided Filter", arXiv:1505.00996, 2015):
/// the linear coefficients are computed on a copy subsampled by `s = max(1, r / 4)` and
/// upsampled bilinearly. It snaps the upsampled person probability to the edges of the frame.
///
/// [`GuidedFilter::coefficients`] is the first half alone: the mean coefficients `(A, b)` at
/// the size of its inputs, which the OBS worker computes at the capture size and the effect
/// (and [`GuidedUpsampler`] on the CPU) applies as `q = A * I + b` with the full-resolution
/// frame as guide.
///
/// All buffers are kept between calls, so a warm filter does not allocate.
#[derive(Clone, Debug, Default)]
pub struct GuidedFilter {
    guide_small: Vec<f32>,
    p_small: Vec<f32>,
    /// One row each of mean I, mean p, mean I*I, mean I*p.
    rows: Vec<f32>,
    /// Column sums of the a and b planes.
    ab_sums: Vec<f32>,
    /// Mean A and mean b (the result).
    corr: Vec<f32>,
    prod: Vec<f32>,
    /// The a and b planes, horizontally filtered.
    ab_tmp: Vec<f32>,
    boxf: BoxFilter,
    up: GuidedUpsampler,
}

impl GuidedFilter {
    /// Refines `p` (`w` x `h`, 0..1) in place with the grey `guide` (`w` x `h`, 0..1).
    pub fn apply(
        &mut self,
        guide: &[f32],
        p: &mut [f32],
        w: usize,
        h: usize,
        radius: usize,
        eps: f32,
    ) {
        let s = (radius / 4).max(1);
        let (sw, sh) = (w.div_ceil(s), h.div_ceil(s));
        let r = (radius / s).max(1);
        // At s = 1 the filter works on the inputs directly: no subsampled copies.
        if s == 1 {
            self.p_small.clear();
            self.p_small.extend_from_slice(p);
            let p_small = std::mem::take(&mut self.p_small);
            self.coefficients(guide, &p_small, sw, sh, r, eps);
            self.p_small = p_small;
        } else {
            let (mut g, mut ps) = (
                std::mem::take(&mut self.guide_small),
                std::mem::take(&mut self.p_small),
            );
            downsample_box(guide, w, h, s, &mut g);
            downsample_box(p, w, h, s, &mut ps);
            self.coefficients(&g, &ps, sw, sh, r, eps);
            self.guide_small = g;
            self.p_small = ps;
        }
        let (mean_a, mean_b) = (
            std::mem::take(&mut self.corr),
            std::mem::take(&mut self.prod),
        );
        self.up.apply(&mean_a, &mean_b, (sw, sh), guide, (w, h), p);
        self.corr = mean_a;
        self.prod = mean_b;
    }

    /// The mean linear coefficients of the guided filter of `p` (`w` x `h`, 0..1) with the
    /// grey `guide` (`w` x `h`, 0..1), window radius `r` pixels and regularisation `eps`:
    /// returns `(mean A, mean b)`, `w * h` values each, such that `q = A * I + b` is the
    /// filtered `p` (He et al. 2013, Algorithm 1, steps 1-4).
    pub fn coefficients(
        &mut self,
        guide: &[f32],
        p: &[f32],
        w: usize,
        h: usize,
        r: usize,
        eps: f32,
    ) -> (&[f32], &[f32]) {
        let n = w * h;
        assert_eq!(guide.len(), n);
        assert_eq!(p.len(), n);
        // Fused: the same [`BoxFilter`] arithmetic element for element (so the same bits as
        // six separate box filters), in two sweeps over the rows instead of six plus four
        // element-wise passes. Sweep 1 filters I, p, I*I and I*p horizontally (products
        // formed on the fly); sweep 2 runs their vertical sums row by row, turns each row of
        // means into (a, b) and filters those horizontally at once; a last vertical pass
        // gives mean A and mean b.
        self.corr.resize(n, 0.0);
        self.prod.resize(n, 0.0);
        self.ab_tmp.resize(2 * n, 0.0);
        self.rows.resize(4 * w, 0.0);
        self.ab_sums.resize(2 * w, 0.0);
        self.boxf.prepare(w, h, r, 4);
        let BoxFilter {
            tmp,
            padded,
            inv_x,
            sums,
        } = &mut self.boxf;
        let (ab_tmp, rows, ab_sums) = (&mut self.ab_tmp, &mut self.rows, &mut self.ab_sums);
        let (mean_a, mean_b) = (&mut self.corr, &mut self.prod);
        let pw = w + 2 * r;
        simd(
            #[inline(always)]
            || {
                let [t_i, t_p, t_ii, t_ip] = parts(tmp, n);
                let [pad_i, pad_p, pad_ii, pad_ip] = parts(padded, pw);
                for y in 0..h {
                    let (gi, pv) = (&guide[y * w..(y + 1) * w], &p[y * w..(y + 1) * w]);
                    pad_i[r..r + w].copy_from_slice(gi);
                    pad_p[r..r + w].copy_from_slice(pv);
                    for (((ii, ip), &i), &v) in pad_ii[r..r + w]
                        .iter_mut()
                        .zip(pad_ip[r..r + w].iter_mut())
                        .zip(gi)
                        .zip(pv)
                    {
                        *ii = i * i;
                        *ip = i * v;
                    }
                    let row = y * w..(y + 1) * w;
                    box_row(pad_i, r, inv_x, &mut t_i[row.clone()]);
                    box_row(pad_p, r, inv_x, &mut t_p[row.clone()]);
                    box_row(pad_ii, r, inv_x, &mut t_ii[row.clone()]);
                    box_row(pad_ip, r, inv_x, &mut t_ip[row]);
                }
                let [s_i, s_p, s_ii, s_ip] = parts(sums, w);
                let [m_i, m_p, m_ii, m_ip] = parts(rows, w);
                // The (a, b) rows go straight into the first two padded rows.
                let [pad_a, pad_b] = parts(padded, pw);
                let [ta, tb] = parts(ab_tmp, n);
                for y in 0..h {
                    box_column_row(t_i, s_i, w, h, r, y, m_i);
                    box_column_row(t_p, s_p, w, h, r, y, m_p);
                    box_column_row(t_ii, s_ii, w, h, r, y, m_ii);
                    box_column_row(t_ip, s_ip, w, h, r, y, m_ip);
                    // var_I = mean(I*I) - mean_I^2 ; cov_Ip = mean(I*p) - mean_I * mean_p.
                    for (k, (av, bv)) in pad_a[r..r + w]
                        .iter_mut()
                        .zip(pad_b[r..r + w].iter_mut())
                        .enumerate()
                    {
                        let var = m_ii[k] - m_i[k] * m_i[k];
                        let cov = m_ip[k] - m_i[k] * m_p[k];
                        let a = cov / (var + eps);
                        *av = a;
                        *bv = m_p[k] - a * m_i[k];
                    }
                    let row = y * w..(y + 1) * w;
                    box_row(pad_a, r, inv_x, &mut ta[row.clone()]);
                    box_row(pad_b, r, inv_x, &mut tb[row]);
                }
                let [sa, sb] = parts(ab_sums, w);
                for (y, (da, db)) in mean_a
                    .chunks_exact_mut(w)
                    .zip(mean_b.chunks_exact_mut(w))
                    .enumerate()
                {
                    box_column_row(ta, sa, w, h, r, y, da);
                    box_column_row(tb, sb, w, h, r, y, db);
                }
            },
        );
        (&self.corr, &self.prod)
    }
}

/// The second half of the fast guided filter: samples the coefficient planes `(A, b)`
/// bilinearly (half-pixel centres, clamp-to-edge: [`crate::preprocess::PlaneResizer`]) at
/// every pixel of the full-resolution grey guide `I` and writes `q = clamp(A * I + b, 0, 1)`.
/// The OBS effect (`data/ai_background.effect`, `person_probability`) computes the same per
/// pixel.
#[derive(Clone, Debug, Default)]
pub struct GuidedUpsampler {
    up_a: Vec<f32>,
    up_b: Vec<f32>,
    resizer: crate::preprocess::PlaneResizer,
}

impl GuidedUpsampler {
    /// `a`, `b`: `small` = (width, height) planes; `guide`, `out`: `size` planes, guide 0..1.
    pub fn apply(
        &mut self,
        a: &[f32],
        b: &[f32],
        small: (usize, usize),
        guide: &[f32],
        size: (usize, usize),
        out: &mut [f32],
    ) {
        let n = size.0 * size.1;
        assert_eq!(guide.len(), n);
        assert_eq!(out.len(), n);
        let (mean_a, mean_b): (&[f32], &[f32]) = if small == size {
            (a, b)
        } else {
            self.up_a.resize(n, 0.0);
            self.up_b.resize(n, 0.0);
            self.resizer.resize(a, small, &mut self.up_a, size);
            self.resizer.resize(b, small, &mut self.up_b, size);
            (&self.up_a, &self.up_b)
        };
        simd(
            #[inline(always)]
            || {
                for ((q, &i), (&a, &b)) in out.iter_mut().zip(guide).zip(mean_a.iter().zip(mean_b))
                {
                    *q = (a * i + b).clamp(0.0, 1.0);
                }
            },
        );
    }
}

/// Half-width (probability units) of [`RefinedHold`]'s band for a fully still pixel at
/// smoothing strength 1: [`refined_band`]. Chosen by measurement on the four shared clips
/// (`docs/obs-plugin.md`, "Temporal stability": `eval-video --raw --refine` for several bands).
pub const MAX_REFINED_BAND: f32 = 0.8;

/// Lowest IoU that [`RefinedHold::apply_bounded`] lets the held mask keep with the refined
/// mask of the same frame it holds (hard labels at [`BUDGET_THRESHOLD`]), measured at the
/// refinement capture size, where the pipeline runs it to find the band for the
/// full-resolution hold. Chosen by measurement (`docs/obs-plugin.md`, "Temporal stability").
pub const MIN_REFINED_IOU: f64 = 0.975;

/// Half-width (probability units) of [`RefinedHold`]'s band for a fully still pixel at
/// smoothing strength `strength` (0..1): `MAX_REFINED_BAND * strength`, scaled like
/// [`still_band`].
pub fn refined_band(strength: f32) -> f32 {
    MAX_REFINED_BAND * strength.clamp(0.0, 1.0)
}

/// Motion-gated backlash hysteresis of the refined person probability: the guided filter's
/// output `q = clamp(A * Y + b, 0, 1)` ([`GuidedUpsampler`]) held per pixel, the
/// [`TemporalSmoother`]'s rule moved after the guided filter.
///
/// The guided filter spreads each small probability change over its window, so refined still
/// edges flicker more than the probability they come from (`docs/obs-plugin.md`, "Temporal
/// stability"). This holds `q` where the picture is still. State per pixel: the held `q` and
/// the 3x3 mean `m` of the frame's luma `Y` (Rec. 601, 0..1; window clipped at the borders).
/// Per frame, with `m_prev` the mean stored:
///
/// - still gate `g = 1 - smoothstep(STILL_CHANGE, MOVING_CHANGE, |m - m_prev|)` (the same
///   3/255 .. 12/255 ramp as [`TemporalSmoother`]);
/// - band `g * band` (`band` in probability units, given per frame);
/// - `q_out = clamp(q_held, q - g * band, q + g * band)`; the state becomes `(q_out, m)`.
///
/// A held pixel never ends further than the band from the frame's own refined value. With
/// `band` 0, after a size change and after [`RefinedHold::reset`], `q` passes unchanged and
/// only fills the state. The OBS effect (`data/ai_background.effect`, `PSHold`) runs
/// [`RefinedHold::apply`] per pixel; the band comes from [`RefinedHold::apply_bounded`] run at
/// the refinement capture size (`MaskPipeline`).
#[derive(Clone, Debug, Default)]
pub struct RefinedHold {
    held: Vec<f32>,
    mean: Vec<f32>,
    mean_now: Vec<f32>,
    gate: Vec<f32>,
    flips: Vec<[f32; 3]>,
    size: (usize, usize),
    boxf: BoxFilter,
}

impl RefinedHold {
    /// Forgets the previous frame: the next call passes its values through.
    pub fn reset(&mut self) {
        self.held.clear();
    }

    /// Holds `q` (a `size` = (width, height) plane of refined probabilities, 0..1) in place
    /// with the band `band` (probability units, >= 0) for fully still pixels, gated by the
    /// change of `luma` (same size, 0..1), and remembers both.
    ///
    /// # Panics
    /// When `q` or `luma` is not `width * height` long.
    pub fn apply(&mut self, q: &mut [f32], luma: &[f32], size: (usize, usize), band: f32) {
        if self.prepare(q, luma, size, band) {
            self.hold(q, 1.0);
        }
        self.finish(q, size);
    }

    /// As [`RefinedHold::apply`], but narrows the band for this frame (bisection on a factor
    /// `k` in 0..1, 8 steps, as [`TemporalSmoother`]) until the hard mask (at
    /// [`BUDGET_THRESHOLD`]) keeps an IoU of at least `min_iou` with that of the `q` given.
    /// Returns the band used, `k * band` (0 when the state was empty).
    ///
    /// # Panics
    /// When `q` or `luma` is not `width * height` long.
    pub fn apply_bounded(
        &mut self,
        q: &mut [f32],
        luma: &[f32],
        size: (usize, usize),
        band: f32,
        min_iou: f64,
    ) -> f32 {
        let mut used = 0.0;
        if self.prepare(q, luma, size, band) {
            let k = widest_bounded_scale(q, &self.held, &self.gate, min_iou, &mut self.flips);
            self.hold(q, k);
            used = k * band;
        }
        self.finish(q, size);
        used
    }

    /// The 3x3 mean of `luma` and, when the state is warm and `band > 0`, each pixel's band in
    /// `gate`; returns whether to hold.
    fn prepare(&mut self, q: &[f32], luma: &[f32], size: (usize, usize), band: f32) -> bool {
        let (w, h) = size;
        let n = w * h;
        assert_eq!(q.len(), n);
        assert_eq!(luma.len(), n);
        self.mean_now.resize(n, 0.0);
        self.boxf.apply(luma, &mut self.mean_now, w, h, 1);
        let warm = self.held.len() == n && self.size == size && self.mean.len() == n;
        if !warm || band <= 0.0 {
            // Size now what the next frames use, so they allocate nothing.
            self.gate.clear();
            self.gate.reserve(n);
            self.flips.clear();
            self.flips.reserve(n);
            return false;
        }
        self.gate.clear();
        self.gate
            .extend(self.mean_now.iter().zip(&self.mean).map(|(&m, &mp)| {
                band * (1.0 - smoothstep(STILL_CHANGE, MOVING_CHANGE, (m - mp).abs()))
            }));
        true
    }

    fn hold(&mut self, q: &mut [f32], k: f32) {
        hold_within(q, &mut self.held, &self.gate, k);
    }

    fn finish(&mut self, q: &[f32], size: (usize, usize)) {
        self.held.clear();
        self.held.extend_from_slice(q);
        self.size = size;
        std::mem::swap(&mut self.mean, &mut self.mean_now);
        self.mean_now.clear();
        self.mean_now.reserve(q.len());
    }
}

/// Averages `s` x `s` blocks of a `w` x `h` plane into `ceil(w/s)` x `ceil(h/s)` (edge blocks
/// average the pixels that exist).
pub fn downsample_box(src: &[f32], w: usize, h: usize, s: usize, dst: &mut Vec<f32>) {
    let (sw, sh) = (w.div_ceil(s), h.div_ceil(s));
    dst.clear();
    dst.resize(sw * sh, 0.0);
    if s == 1 {
        dst.copy_from_slice(src);
        return;
    }
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let out = &mut dst[(y / s) * sw..(y / s + 1) * sw];
        for (x, &v) in row.iter().enumerate() {
            out[x / s] += v;
        }
    }
    for by in 0..sh {
        let rows = (h - by * s).min(s);
        for bx in 0..sw {
            let cols = (w - bx * s).min(s);
            dst[by * sw + bx] /= (rows * cols) as f32;
        }
    }
}

/// The widest band scale `k` in 0..1 for which `keeps(k)` holds: 1 if it holds there,
/// else 8 bisection steps from (0, 1) (resolution 1/256), 0 if no tried scale holds. Used by
/// both hysteresis smoothers to narrow their band until the IoU bound is kept.
fn widest_scale(mut keeps: impl FnMut(f32) -> bool) -> f32 {
    if keeps(1.0) {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f32, 1.0f32);
    for _ in 0..8 {
        let mid = 0.5 * (lo + hi);
        if keeps(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The hysteresis step of both smoothers: each value becomes its `state` clamped to within
/// `k * gate` of it, and the state becomes that value (`gate` >= 0, one band per pixel).
fn hold_within(values: &mut [f32], state: &mut [f32], gate: &[f32], k: f32) {
    simd(
        #[inline(always)]
        || {
            for ((p, s), &b) in values.iter_mut().zip(state.iter_mut()).zip(gate) {
                let b = k * b;
                // `clamp` without its `min <= max` check, which keeps the loop from
                // vectorising (b >= 0, so the same value).
                *p = s.max(*p - b).min(*p + b);
                *s = *p;
            }
        },
    );
}

/// The widest band scale `k` ([`widest_scale`]) at which the hard masks (at
/// [`BUDGET_THRESHOLD`]) of `raw` and of the hold `clamp(state, raw - k * gate, raw + k *
/// gate)` keep an IoU of at least `min_iou` (1 when both masks are empty). All three planes
/// have one value per pixel; `gate` >= 0 is each pixel's band at `k = 1`.
///
/// A pixel's held label can differ from its raw one only where `state` lies on the other
/// side of the threshold and its band is > 0: otherwise the clamp of `state` towards `raw`
/// stays on `raw`'s side for every `k` (exactly, in floating point too). Those pixels are
/// collected once into `flips` (reused, no allocation once it has the capacity) and every
/// bisection step counts only them: the same `k` as counting every pixel at every step, for a
/// small fraction of the work (an edge band, not the frame).
fn widest_bounded_scale(
    raw: &[f32],
    state: &[f32],
    gate: &[f32],
    min_iou: f64,
    flips: &mut Vec<[f32; 3]>,
) -> f32 {
    let t = BUDGET_THRESHOLD;
    flips.clear();
    flips.reserve(raw.len());
    let mut ones = 0usize;
    for ((&p, &s), &b) in raw.iter().zip(state).zip(gate) {
        let r = p >= t;
        if r != (s >= t) && b > 0.0 {
            flips.push([p, s, b]);
        } else {
            ones += r as usize;
        }
    }
    let flips = &*flips;
    widest_scale(|k| {
        let (mut inter, mut union) = (ones, ones);
        for &[p, s, b] in flips {
            let b = k * b;
            let a = s.max(p - b).min(p + b) >= t;
            let r = p >= t;
            inter += (a & r) as usize;
            union += (a | r) as usize;
        }
        union == 0 || inter as f64 / union as f64 >= min_iou
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`widest_bounded_scale`] against counting every pixel at every bisection step, on
    /// random planes around the threshold (a fixed-seed LCG; 300 cases).
    #[test]
    fn bounded_scale_equals_counting_every_pixel() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut flips = Vec::new();
        let mut narrowed = 0;
        for case in 0..300 {
            let n = 1 + case % 97 * 13;
            let raw: Vec<f32> = (0..n).map(|_| next()).collect();
            let state: Vec<f32> = raw
                .iter()
                .map(|&p| (p + (next() - 0.5) * 0.6).clamp(0.0, 1.0))
                .collect();
            let gate: Vec<f32> = (0..n)
                .map(|_| if next() < 0.2 { 0.0 } else { next() * 0.8 })
                .collect();
            let min_iou = 0.9 + 0.09 * f64::from(next());
            let brute = widest_scale(|k| {
                let t = BUDGET_THRESHOLD;
                let (mut inter, mut union) = (0usize, 0usize);
                for ((&p, &s), &b) in raw.iter().zip(&state).zip(&gate) {
                    let b = k * b;
                    let a = s.clamp(p - b, p + b) >= t;
                    let r = p >= t;
                    inter += (a && r) as usize;
                    union += (a || r) as usize;
                }
                union == 0 || inter as f64 / union as f64 >= min_iou
            });
            let fast = widest_bounded_scale(&raw, &state, &gate, min_iou, &mut flips);
            assert_eq!(fast.to_bits(), brute.to_bits(), "case {case}");
            narrowed += (brute < 1.0) as usize;
        }
        // Most cases must exercise the bisection, not just k = 1.
        assert!(
            narrowed > 150,
            "only {narrowed} of 300 cases narrowed the band"
        );
    }

    #[test]
    fn threshold_feather_is_smoothstep_around_threshold() {
        assert_eq!(threshold_feather(0.49, 0.5, 0.0), 0.0);
        assert_eq!(threshold_feather(0.5, 0.5, 0.0), 1.0);
        assert_eq!(threshold_feather(0.39, 0.5, 0.2), 0.0);
        assert_eq!(threshold_feather(0.61, 0.5, 0.2), 1.0);
        assert!((threshold_feather(0.5, 0.5, 0.2) - 0.5).abs() < 1e-6);
        // u = 0.25 -> 0.0625 * 2.5 = 0.15625
        assert!((threshold_feather(0.45, 0.5, 0.2) - 0.15625).abs() < 1e-6);
    }

    /// The guided filter's steps 1-4 as six separate box filters and element-wise passes
    /// (the code before the fused sweeps): the fused version must give the same bits.
    fn unfused_coefficients(
        guide: &[f32],
        p: &[f32],
        w: usize,
        h: usize,
        r: usize,
        eps: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let n = w * h;
        let mut bf = BoxFilter::default();
        let boxed = |bf: &mut BoxFilter, src: &[f32]| {
            let mut out = vec![0.0; n];
            bf.apply(src, &mut out, w, h, r);
            out
        };
        let mean_i = boxed(&mut bf, guide);
        let mean_p = boxed(&mut bf, p);
        let ii: Vec<f32> = guide.iter().map(|i| i * i).collect();
        let ip: Vec<f32> = guide.iter().zip(p).map(|(i, v)| i * v).collect();
        let corr = boxed(&mut bf, &ii);
        let mean_ip = boxed(&mut bf, &ip);
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        for k in 0..n {
            let var = corr[k] - mean_i[k] * mean_i[k];
            let cov = mean_ip[k] - mean_i[k] * mean_p[k];
            a[k] = cov / (var + eps);
            b[k] = mean_p[k] - a[k] * mean_i[k];
        }
        (boxed(&mut bf, &a), boxed(&mut bf, &b))
    }

    #[test]
    fn fused_guided_coefficients_equal_separate_box_filters() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let (w, h) = (256, 144);
        // A real photo as the guide and its person mask, scaled down (soft edges), as `p`.
        let plane = |name: &str| -> Vec<f32> {
            image::open(dir.join(name))
                .unwrap()
                .resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
                .to_luma8()
                .pixels()
                .map(|p| p[0] as f32 / 255.0)
                .collect()
        };
        let guide = plane("obs/ccp-webcam-0001.jpg");
        let p = plane("obs/ccp-webcam-0001.mask.png");
        let mut gf = GuidedFilter::default();
        for (r, eps) in [(3, 1e-3), (1, 1e-2), (6, 1e-4)] {
            let (ra, rb) = unfused_coefficients(&guide, &p, w, h, r, eps);
            let (a, b) = gf.coefficients(&guide, &p, w, h, r, eps);
            assert!(
                a.iter().zip(&ra).all(|(x, y)| x.to_bits() == y.to_bits()),
                "A, r {r}"
            );
            assert!(
                b.iter().zip(&rb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "b, r {r}"
            );
            assert!(
                a.iter().any(|&v| v.abs() > 0.1),
                "the guide shapes A somewhere"
            );
        }
    }

    #[test]
    fn box_filter_equals_brute_force() {
        let (w, h, r) = (13, 7, 2);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 31) % 17) as f32).collect();
        let mut dst = vec![0.0; w * h];
        BoxFilter::default().apply(&src, &mut dst, w, h, r);
        for y in 0..h {
            for x in 0..w {
                let (mut sum, mut n) = (0.0, 0);
                for yy in y.saturating_sub(r)..=(y + r).min(h - 1) {
                    for xx in x.saturating_sub(r)..=(x + r).min(w - 1) {
                        sum += src[yy * w + xx];
                        n += 1;
                    }
                }
                assert!((dst[y * w + x] - sum / n as f32).abs() < 1e-4, "({x},{y})");
            }
        }
    }

    #[test]
    fn smoother_damps_flicker_but_follows_motion() {
        let mut s = TemporalSmoother::default();
        let mut frame = vec![0.5, 0.0];
        s.apply(&mut frame, 1.0);
        // Pixel 0 flickers by 0.1: damped. Pixel 1 jumps 0 -> 1 (motion): followed at once.
        let mut frame = vec![0.6, 1.0];
        s.apply(&mut frame, 1.0);
        assert!(frame[0] > 0.5 && frame[0] < 0.55, "{}", frame[0]);
        assert_eq!(frame[1], 1.0);
        // Strength 0 is a pass-through.
        let mut frame = vec![0.9, 0.0];
        s.apply(&mut frame, 0.0);
        assert_eq!(frame, vec![0.9, 0.0]);
    }

    #[test]
    fn gated_smoother_holds_still_pixels_and_follows_moving_ones() {
        let (w, h) = (40, 8);
        let n = w * h;
        let grey = vec![0.5f32; 3 * n];
        // Second picture: the right half brightens (motion); the left half is unchanged.
        let mut moved = grey.clone();
        for c in 0..3 {
            for i in 0..n {
                if i % w >= w / 2 {
                    moved[c * n + i] = 0.9;
                }
            }
        }
        // A person everywhere (0.9) but two pixels on the threshold, one still (column 0), one
        // moving (column w - 1).
        let frame = |edge: f32| {
            let mut p = vec![0.9f32; n];
            p[0] = edge;
            p[w - 1] = edge;
            p
        };
        // Band 0.36: narrower than the default's, so that a swing past it can be shown.
        let strength = 0.2;
        let mut s = TemporalSmoother::default();
        let mut p = frame(0.45);
        s.apply_gated(&mut p, &grey, w, h, strength);
        // The network flips both to 0.55 (just across the threshold).
        let mut p = frame(0.55);
        s.apply_gated(&mut p, &moved, w, h, strength);
        // The still pixel keeps its value ...
        assert_eq!(p[0], 0.45);
        // ... the moving one takes the new value as it is.
        assert_eq!(p[w - 1], 0.55);
        // A lasting change of the network's mind beyond the band is followed at once, less
        // the band, and the held value then stays there while the network's does.
        let band = still_band(strength);
        for _ in 0..3 {
            let mut p = frame(0.9);
            s.apply_gated(&mut p, &moved, w, h, strength);
            assert!((p[0] - (0.9 - band)).abs() < 1e-6, "{}", p[0]);
        }
        // Strength 0 passes the network's values through.
        let mut p = vec![0.3f32; n];
        s.apply_gated(&mut p, &moved, w, h, 0.0);
        assert_eq!(p, vec![0.3f32; n]);
    }

    #[test]
    fn gated_smoother_keeps_its_iou_with_the_raw_mask() {
        // A still picture on which the network moves a whole region (here: everything) across
        // the threshold: holding it would leave the mask with IoU 0 against the network's, so
        // the band is narrowed until the bound holds.
        let (w, h) = (16, 8);
        let n = w * h;
        let grey = vec![0.5f32; 3 * n];
        let mut s = TemporalSmoother::default();
        let mut p = vec![0.45f32; n];
        s.apply_gated(&mut p, &grey, w, h, 1.0);
        let mut p = vec![0.55f32; n];
        s.apply_gated(&mut p, &grey, w, h, 1.0);
        let held = p.iter().filter(|&&v| v < BUDGET_THRESHOLD).count();
        assert!(
            held as f64 <= (1.0 - MIN_IOU_VS_RAW) * n as f64,
            "{held} of {n} pixels held"
        );
    }

    #[test]
    fn refined_hold_holds_still_pixels_within_the_band_and_follows_moving_ones() {
        let (w, h) = (8, 4);
        let n = w * h;
        let still = vec![0.5f32; n];
        // The right half's picture changes by 20/255: moving.
        let moved: Vec<f32> = (0..n)
            .map(|i| {
                if i % w >= w / 2 {
                    0.5 + 20.0 / 255.0
                } else {
                    0.5
                }
            })
            .collect();
        let mut hold = RefinedHold::default();
        let mut q = vec![0.4f32; n];
        hold.apply(&mut q, &still, (w, h), 0.3);
        assert!(q.iter().all(|&v| v == 0.4), "first frame passes through");
        let mut q = vec![0.6f32; n];
        hold.apply(&mut q, &still, (w, h), 0.3);
        assert!(q.iter().all(|&v| v == 0.4), "still: held within the band");
        let mut q = vec![0.9f32; n];
        hold.apply(&mut q, &moved, (w, h), 0.3);
        for y in 0..h {
            // Left columns 0..3 are still (column 3's 3x3 window sees the change: partly).
            assert!(
                (q[y * w] - 0.6).abs() < 1e-6,
                "still: follows to the band's edge"
            );
            assert_eq!(q[y * w + w - 1], 0.9, "moving: the new value");
        }
        // Band 0 passes through and restarts.
        let mut q = vec![0.1f32; n];
        hold.apply(&mut q, &moved, (w, h), 0.0);
        assert!(q.iter().all(|&v| v == 0.1));
    }

    #[test]
    fn refined_hold_bound_keeps_the_iou_with_the_frame() {
        let (w, h) = (16, 16);
        let n = w * h;
        let luma = vec![0.5f32; n];
        let mut hold = RefinedHold::default();
        // The whole frame was person at 0.55; now the network says 0.45 everywhere: holding
        // would keep every pixel a person (IoU 0 with an empty mask: bounded to none).
        let mut q = vec![0.55f32; n];
        hold.apply_bounded(&mut q, &luma, (w, h), 0.4, 0.975);
        let mut q: Vec<f32> = (0..n).map(|i| if i < n / 2 { 0.45 } else { 0.9 }).collect();
        let band = hold.apply_bounded(&mut q, &luma, (w, h), 0.4, 0.975);
        let kept = q.iter().filter(|&&v| v >= 0.5).count();
        let iou = (n / 2) as f64 / kept as f64;
        assert!(iou >= 0.975, "IoU {iou}");
        assert!((0.0..0.4).contains(&band), "band narrowed to {band}");
    }

    #[test]
    fn guided_filter_snaps_a_blurry_edge_to_the_guide() {
        // Guide: a sharp vertical edge at x = 20. Input: the same edge, blurred over 10 px.
        let (w, h) = (40, 16);
        let guide: Vec<f32> = (0..w * h)
            .map(|i| if i % w < 20 { 0.9 } else { 0.1 })
            .collect();
        let mut p: Vec<f32> = (0..w * h)
            .map(|i| ((25.0 - (i % w) as f32) / 10.0).clamp(0.0, 1.0))
            .collect();
        GuidedFilter::default().apply(&guide, &mut p, w, h, 4, 1e-3);
        let row = &p[h / 2 * w..(h / 2 + 1) * w];
        // The input drops 0.1 per pixel; refined, most of the drop happens across the guide's
        // edge (between x = 19 and x = 20), and the sides move towards 1 and 0.
        let step = row[19] - row[20];
        assert!(step > 0.3, "step across the edge {step}: {row:?}");
        // Input there: 0.8 and 0.2.
        assert!(row[17] > 0.8 && row[23] < 0.2, "{row:?}");
    }
}
