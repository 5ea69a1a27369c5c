//! Segmentation metrics: IoU and boundary F-score, with the definitions of
//! `tools/eval_tflite.py` (so the candle and TFLite evaluations are comparable).

use serde::Serialize;

/// Tolerance of the boundary F-score in pixels (the DAVIS-style boundary measure of
/// Perazzi et al., CVPR 2016, with a fixed 3 px disk).
pub const BOUNDARY_TOLERANCE_PX: i32 = 3;

/// Scores of one prediction against its ground truth.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ImageScore {
    /// Image id (file stem).
    pub id: String,
    /// Pixels in both masks.
    pub intersection: u64,
    /// Pixels in either mask.
    pub union: u64,
    /// Intersection over union (1 when the union is empty).
    pub iou: f64,
    /// Boundary F-score at [`BOUNDARY_TOLERANCE_PX`].
    pub boundary_f: f64,
}

/// Scores `pred` against `gt`, both `w * h` booleans (true = person).
///
/// # Panics
/// When the slices are not `w * h` long (callers check image sizes first).
pub fn score(id: &str, pred: &[bool], gt: &[bool], w: usize, h: usize) -> ImageScore {
    assert_eq!(pred.len(), w * h);
    assert_eq!(gt.len(), w * h);
    let (mut intersection, mut union) = (0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gt) {
        intersection += (p && g) as u64;
        union += (p || g) as u64;
    }
    ImageScore {
        id: id.to_string(),
        intersection,
        union,
        iou: if union == 0 {
            1.0
        } else {
            intersection as f64 / union as f64
        },
        boundary_f: boundary_f(pred, gt, w, h),
    }
}

/// Pixels of `mask` that have at least one 4-neighbour inside the image outside `mask`.
pub fn boundary(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !mask[i] {
                continue;
            }
            out[i] = (x > 0 && !mask[i - 1])
                || (x + 1 < w && !mask[i + 1])
                || (y > 0 && !mask[i - w])
                || (y + 1 < h && !mask[i + w]);
        }
    }
    out
}

/// Pixels within Euclidean distance [`BOUNDARY_TOLERANCE_PX`] of a set pixel of `mask`.
fn dilate_disk(mask: &[bool], w: usize, h: usize, r: i32) -> Vec<bool> {
    let offsets: Vec<(i32, i32)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|(dx, dy)| dx * dx + dy * dy <= r * r)
        .collect();
    let mut out = vec![false; w * h];
    for y in 0..h as i32 {
        for x in 0..w as i32 {
            if !mask[y as usize * w + x as usize] {
                continue;
            }
            for &(dx, dy) in &offsets {
                let (xx, yy) = (x + dx, y + dy);
                if xx >= 0 && yy >= 0 && (xx as usize) < w && (yy as usize) < h {
                    out[yy as usize * w + xx as usize] = true;
                }
            }
        }
    }
    out
}

/// Boundary F-score: precision = predicted boundary pixels within the tolerance of a
/// ground-truth boundary pixel, recall the converse, F = 2PR / (P + R) (0 when P + R = 0);
/// 1 when both boundaries are empty, 0 when exactly one is. Tolerance
/// [`BOUNDARY_TOLERANCE_PX`].
pub fn boundary_f(pred: &[bool], gt: &[bool], w: usize, h: usize) -> f64 {
    boundary_f_with_tolerance(pred, gt, w, h, BOUNDARY_TOLERANCE_PX)
}

/// [`boundary_f`] with a tolerance disk of `tolerance` pixels (for images scaled up from
/// the annotated size: the tolerance scaled likewise).
pub fn boundary_f_with_tolerance(
    pred: &[bool],
    gt: &[bool],
    w: usize,
    h: usize,
    tolerance: i32,
) -> f64 {
    let bp = boundary(pred, w, h);
    let bg = boundary(gt, w, h);
    let (np, ng) = (
        bp.iter().filter(|&&b| b).count(),
        bg.iter().filter(|&&b| b).count(),
    );
    match (np, ng) {
        (0, 0) => return 1.0,
        (0, _) | (_, 0) => return 0.0,
        _ => {}
    }
    let near_gt = dilate_disk(&bg, w, h, tolerance);
    let near_pred = dilate_disk(&bp, w, h, tolerance);
    let matched_p = bp.iter().zip(&near_gt).filter(|(&b, &n)| b && n).count();
    let matched_g = bg.iter().zip(&near_pred).filter(|(&b, &n)| b && n).count();
    let precision = matched_p as f64 / np as f64;
    let recall = matched_g as f64 / ng as f64;
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Intersection over union of two masks (1 when both are empty).
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Erodes a `w` x `h` mask by `r` pixels with a square structuring element (a pixel stays set
/// when every pixel within Chebyshev distance `r` inside the image is set). Separable.
pub fn erode(mask: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut tmp = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r).min(w - 1));
            tmp[y * w + x] = (x0..=x1).all(|xx| mask[y * w + xx]);
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let (y0, y1) = (y.saturating_sub(r), (y + r).min(h - 1));
            out[y * w + x] = (y0..=y1).all(|yy| tmp[yy * w + x]);
        }
    }
    out
}

/// Image detail over a region: the mean squared 4-neighbour Laplacian of the Rec. 601 luma
/// (0..255) of an RGBA8 image (`w * h * 4` bytes), over the interior pixels of `region`. A
/// blur removes most of it; how much is the measure of background blur used by the tests.
pub fn laplacian_energy(rgba: &[u8], w: usize, h: usize, region: &[bool]) -> f64 {
    let luma: Vec<f32> = rgba
        .chunks_exact(4)
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            if region[i] {
                let v = 4.0 * luma[i] - luma[i - 1] - luma[i + 1] - luma[i - w] - luma[i + w];
                sum += (v * v) as f64;
                n += 1;
            }
        }
    }
    sum / n.max(1) as f64
}

/// Mean absolute RGB difference (0..255, the mean of the three channels) of two RGBA8 images
/// of the same size over the pixels set in `region` (one bool per pixel); 0 for an empty
/// region. How far the tests' outputs are from an expected picture.
pub fn mean_abs_rgb_diff(a: &[u8], b: &[u8], region: &[bool]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for ((pa, pb), _) in a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .zip(region)
        .filter(|(_, &r)| r)
    {
        sum += (0..3)
            .map(|c| (f64::from(pa[c]) - f64::from(pb[c])).abs())
            .sum::<f64>()
            / 3.0;
        n += 1;
    }
    sum / n.max(1) as f64
}

/// Aggregate scores over a set of images.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Mean of the per-image IoU.
    pub mean_iou: f64,
    /// Sum of intersections over sum of unions.
    pub pooled_iou: f64,
    /// Mean of the per-image boundary F-score.
    pub boundary_f: f64,
    /// Number of images.
    pub count: usize,
}

impl Summary {
    /// Summarises per-image scores (all zero for an empty set).
    pub fn of(scores: &[ImageScore]) -> Self {
        let n = scores.len().max(1) as f64;
        let inter: u64 = scores.iter().map(|s| s.intersection).sum();
        let union: u64 = scores.iter().map(|s| s.union).sum();
        Self {
            mean_iou: scores.iter().map(|s| s.iou).sum::<f64>() / n,
            pooled_iou: if union == 0 {
                1.0
            } else {
                inter as f64 / union as f64
            },
            boundary_f: scores.iter().map(|s| s.boundary_f).sum::<f64>() / n,
            count: scores.len(),
        }
    }
}

/// Luma change (0..1, after a 3x3 mean) below which a pixel counts as still in
/// [`TemporalMeter`]: 3/255, a step of compression noise on a locked-off camera.
pub const STILL_LUMA_CHANGE: f32 = 3.0 / 255.0;

/// Temporal stability of a video's hard mask, from [`TemporalMeter::finish`].
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TemporalScore {
    /// Frames seen.
    pub frames: usize,
    /// Mean over the steps (frame pairs) of the share (0..1) of pixels whose label
    /// (person / background at the threshold) changed.
    pub flicker_rate: f64,
    /// The same over the still pixels only (luma change below [`STILL_LUMA_CHANGE`] after a
    /// 3x3 mean, in that step), pooled: label changes in still pixels over still pixels, all
    /// steps together.
    pub still_flicker_rate: f64,
    /// Share (0..1) of pixel-steps that were still.
    pub still_share: f64,
    /// Mean absolute change of the probability (0..1) between consecutive frames.
    pub mean_abs_dp: f64,
    /// Mean IoU against the keyed alpha masks, when given.
    pub mean_iou: Option<f64>,
}

/// Accumulates [`TemporalScore`] over the frames of a video: feed every frame's RGBA8 pixels
/// and person probability (both at frame size) with [`TemporalMeter::push`].
#[derive(Clone, Debug, Default)]
pub struct TemporalMeter {
    threshold: f32,
    size: (usize, usize),
    luma: Vec<f32>,
    prev_luma: Vec<f32>,
    change: Vec<f32>,
    change3: Vec<f32>,
    prev_prob: Vec<f32>,
    boxf: crate::postprocess::BoxFilter,
    frames: usize,
    flicker_sum: f64,
    still_flips: u64,
    still_pixels: u64,
    dp_sum: f64,
    iou_sum: f64,
    iou_count: usize,
}

impl TemporalMeter {
    /// A meter labelling pixels as person where the probability is `>= threshold`.
    pub fn new(threshold: f32) -> Self {
        Self {
            threshold,
            ..Self::default()
        }
    }

    /// Adds one frame: `rgba` (`w * h * 4` bytes), its person probability `prob`
    /// (`w * h`, 0..1), and optionally the true person mask (`w * h`) for the IoU.
    ///
    /// # Panics
    /// When the sizes do not match `w` x `h` or change between frames (callers check).
    pub fn push(&mut self, rgba: &[u8], prob: &[f32], w: usize, h: usize, truth: Option<&[bool]>) {
        assert_eq!(rgba.len(), w * h * 4);
        assert_eq!(prob.len(), w * h);
        if self.frames > 0 {
            assert_eq!(self.size, (w, h), "frame size changed");
        }
        self.size = (w, h);
        self.luma.clear();
        self.luma.extend(rgba.chunks_exact(4).map(|p| {
            (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * (1.0 / 255.0)
        }));
        let t = self.threshold;
        if self.frames > 0 {
            crate::postprocess::abs_diff(&self.luma, &self.prev_luma, &mut self.change);
            self.change3.resize(w * h, 0.0);
            self.boxf.apply(&self.change, &mut self.change3, w, h, 1);
            let (mut flips, mut still_flips, mut still, mut dp) = (0u64, 0u64, 0u64, 0.0f64);
            for ((&p, &q), &c) in prob.iter().zip(&self.prev_prob).zip(&self.change3) {
                let flip = (p >= t) != (q >= t);
                flips += flip as u64;
                dp += (p - q).abs() as f64;
                if c < STILL_LUMA_CHANGE {
                    still += 1;
                    still_flips += flip as u64;
                }
            }
            let n = (w * h) as f64;
            self.flicker_sum += flips as f64 / n;
            self.dp_sum += dp / n;
            self.still_flips += still_flips;
            self.still_pixels += still;
        }
        if let Some(truth) = truth {
            let pred: Vec<bool> = prob.iter().map(|&p| p >= t).collect();
            self.iou_sum += iou(&pred, truth);
            self.iou_count += 1;
        }
        std::mem::swap(&mut self.luma, &mut self.prev_luma);
        self.prev_prob.clear();
        self.prev_prob.extend_from_slice(prob);
        self.frames += 1;
    }

    /// The scores so far (rates 0 with fewer than two frames).
    pub fn finish(&self) -> TemporalScore {
        let steps = self.frames.saturating_sub(1).max(1) as f64;
        let (w, h) = self.size;
        TemporalScore {
            frames: self.frames,
            flicker_rate: self.flicker_sum / steps,
            still_flicker_rate: self.still_flips as f64 / self.still_pixels.max(1) as f64,
            still_share: self.still_pixels as f64 / (steps * (w * h).max(1) as f64),
            mean_abs_dp: self.dp_sum / steps,
            mean_iou: (self.iou_count > 0).then(|| self.iou_sum / self.iou_count as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_difference_counts_the_region_and_ignores_alpha() {
        let a = [10, 20, 30, 255, 0, 0, 0, 0];
        let b = [13, 20, 36, 0, 255, 255, 255, 255];
        assert_eq!(mean_abs_rgb_diff(&a, &b, &[true, false]), 3.0);
        assert_eq!(
            mean_abs_rgb_diff(&a, &b, &[true, true]),
            (3.0 + 255.0) / 2.0
        );
        assert_eq!(mean_abs_rgb_diff(&a, &b, &[false, false]), 0.0);
    }

    fn rect(w: usize, h: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<bool> {
        (0..w * h)
            .map(|i| (x0..x1).contains(&(i % w)) && (y0..y1).contains(&(i / w)))
            .collect()
    }

    #[test]
    fn iou_of_overlapping_rectangles() {
        let (w, h) = (20, 20);
        let a = rect(w, h, 0, 0, 10, 10); // 100 px
        let b = rect(w, h, 5, 0, 15, 10); // 100 px, 50 shared
        let s = score("x", &a, &b, w, h);
        assert_eq!((s.intersection, s.union), (50, 150));
        assert!((s.iou - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn boundary_ignores_the_image_border() {
        // A mask touching the left border has no boundary there.
        let (w, h) = (8, 6);
        let m = rect(w, h, 0, 1, 4, 5);
        let b = boundary(&m, w, h);
        assert!(!b[2 * w]); // x = 0, inside: left neighbour is outside the image
        assert!(b[2 * w + 3]); // right edge of the rectangle
        assert!(b[w + 1]); // top edge
    }

    #[test]
    fn boundary_f_tolerates_three_pixels_only() {
        let (w, h) = (40, 40);
        let gt = rect(w, h, 10, 10, 30, 30);
        let near = rect(w, h, 13, 10, 33, 30); // shifted 3 px: every boundary pixel within 3
        let far = rect(w, h, 18, 10, 38, 30); // shifted 8 px: vertical edges miss
        assert!((boundary_f(&near, &gt, w, h) - 1.0).abs() < 1e-12);
        let f = boundary_f(&far, &gt, w, h);
        assert!(f < 0.8, "{f}");
        assert_eq!(boundary_f(&vec![false; w * h], &gt, w, h), 0.0);
        assert_eq!(
            boundary_f(&vec![false; w * h], &vec![false; w * h], w, h),
            1.0
        );
    }

    #[test]
    fn temporal_meter_counts_flips_in_still_and_moving_pixels() {
        let (w, h) = (8, 4);
        let grey = vec![100u8; w * h * 4];
        // Second frame: the right half changes luma strongly (motion).
        let mut moved = grey.clone();
        for y in 0..h {
            for x in w / 2..w {
                moved[(y * w + x) * 4..(y * w + x) * 4 + 3].fill(200);
            }
        }
        let p0 = vec![0.4f32; w * h];
        // Column 0 (still) and column 7 (moving) flip to person.
        let p1: Vec<f32> = (0..w * h)
            .map(|i| if i % w == 0 || i % w == 7 { 0.6 } else { 0.4 })
            .collect();
        let mut m = TemporalMeter::new(0.5);
        m.push(&grey, &p0, w, h, None);
        m.push(&moved, &p1, w, h, Some(&vec![true; w * h]));
        let s = m.finish();
        assert_eq!(s.frames, 2);
        assert!((s.flicker_rate - 2.0 / 8.0).abs() < 1e-9, "{s:?}");
        // Still: columns 0..=2 (column 3's 3x3 mean sees the change); one of them flipped.
        assert!((s.still_share - 3.0 / 8.0).abs() < 1e-9, "{s:?}");
        assert!((s.still_flicker_rate - 1.0 / 3.0).abs() < 1e-9, "{s:?}");
        assert!((s.mean_abs_dp - 0.2 * 2.0 / 8.0).abs() < 1e-6, "{s:?}");
        assert!((s.mean_iou.unwrap() - 2.0 / 8.0).abs() < 1e-9, "{s:?}");
    }
}
