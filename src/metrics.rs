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
fn dilate_disk(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let r = BOUNDARY_TOLERANCE_PX;
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
/// 1 when both boundaries are empty, 0 when exactly one is.
pub fn boundary_f(pred: &[bool], gt: &[bool], w: usize, h: usize) -> f64 {
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
    let near_gt = dilate_disk(&bg, w, h);
    let near_pred = dilate_disk(&bp, w, h);
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
}
