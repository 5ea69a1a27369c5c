//! Fine-tuning the segmenter on the user's own images (`ai-background train`).
//!
//! Training runs on candle's autograd through [`TrainableNet`] (the network's differentiable
//! form, batched), from the embedded weights or a `--from` file, and writes safetensors with
//! the embedded weights' keys and shapes (float32), so `--weights` and the OBS filter load the
//! result unchanged.
//!
//! One step:
//! - **data**: `batch` pairs drawn at random from the `--data` folders (`images/<id>.jpg`,
//!   `masks/<id>.png`, as `../shared/datasets`), each augmented: a framing (with probability
//!   `whole` the whole image, as inference sees a frame; otherwise a window of the image's
//!   aspect, 16:9 or square, 70-100 % of the largest that fits, at a random place),
//!   stretched to the model input with the inference pre-processing
//!   ([`Preprocessor`]), a horizontal flip (p = 0.5), a background swap using the mask
//!   (p = 0.25; another training image upside down, or a two-colour gradient), colour jitter
//!   (brightness +-0.1, contrast and saturation x0.75..1.25);
//! - **loss**: numerically stable binary cross-entropy on the logits,
//!   `relu(x) - x*y + log(1 + exp(-|x|))` (candle's `binary_cross_entropy_with_logit` takes
//!   `log(sigmoid(x))` and gives inf/NaN on this model's logits, up to +-300), weighted by
//!   `1 + edge_weight` within 2 px of the mask's edge at model resolution, plus
//!   `dice_weight` times the soft Dice loss `1 - (2 sum(p*y) + 1) / (sum p + sum y + 1)` per
//!   image (Milletari et al., "V-Net", 2016);
//! - **not forgetting**: `keep_batch` frames from `--keep` (unlabelled images or video frames;
//!   by default the demo photo shipped in `assets/demo`), augmented the same way (no
//!   background swap), are distilled towards the *original* model's probabilities on the
//!   same input (soft-target BCE, weight `keep_weight`; Hinton et al., "Distilling the
//!   Knowledge in a Neural Network", 2015), and optionally `l2 * sum((w - w0)^2)` pulls every
//!   weight towards its starting value (L2-SP, Li et al., 2018);
//! - **optimiser**: AdamW (Loshchilov and Hutter, 2019; candle-nn's, weight decay 0: the
//!   pull above replaces decay towards zero), learning rate `lr * min(1, (step+1)/warmup) *
//!   (1 + cos(pi * f)) / 2` with `f` the fraction of the budget (steps or minutes) spent.
//!
//! Every `val_every` steps and at the end the current weights go through the inference path
//! ([`Segmenter::from_bytes`], fused CPU kernels) and the `eval` code ([`evaluate_pair`]) on
//! `--val`; the best score (by `--best-by`, default mean IoU) is written to `--out` at once, atomically
//! (a temporary file in the same folder, renamed), so stopping (Ctrl-C) keeps the best so far.
//! Step 0 is validated too: the file written is never worse on `--val` than the start.
//! Without `--val` the last weights are written at the end and at each validation interval.

use crate::eval::{evaluate_pair, find_pairs, EvalError, Pair};
use crate::files::{refuse_same_file, AtomicOutput};
use crate::frame::{FrameRef, PixelFormat};
use crate::metrics::Summary;
use crate::model::trainable::TrainableNet;
use crate::model::{Preset, SegmentationBackend, Segmenter};
use crate::pipeline::{MaskPipeline, PipelineSettings};
use crate::preprocess::{PlaneResizer, Preprocessor};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use image::{GrayImage, RgbImage};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of a training run; each message is one complete line.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A data folder without `images/` and `masks/`, or one that cannot be read.
    #[error(transparent)]
    Data(#[from] EvalError),
    /// An argument that cannot work (no budget, output over an input, ...).
    #[error("{0}")]
    Config(String),
    /// A file that cannot be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, String),
    /// A failure inside candle or the engine.
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The engine failed (loading weights for validation or distillation).
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
}

/// Unlabelled frames for distillation (`--keep`).
#[derive(Clone, Debug, PartialEq)]
pub enum KeepSource {
    /// None: no distillation.
    None,
    /// The demo material in the source tree (`assets/demo`); skipped with a log line when the
    /// binary runs without its source tree.
    Demo,
    /// A folder of images or a video file (one frame a second, at most
    /// [`MAX_KEEP_FRAMES`]).
    Path(PathBuf),
}

/// Most frames read from a `--keep` folder or video.
pub const MAX_KEEP_FRAMES: usize = 120;

/// Everything a training run needs. [`TrainConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Folders with `images/` and `masks/`.
    pub data: Vec<PathBuf>,
    /// Validation folder (`images/`, `masks/`), or none.
    pub val: Option<PathBuf>,
    /// Output `.safetensors`.
    pub out: PathBuf,
    /// Starting weights (default: the embedded ones of `preset`).
    pub from: Option<PathBuf>,
    /// Which network (input size) to train.
    pub preset: Preset,
    /// Budget in steps (one batch each) ...
    pub steps: Option<usize>,
    /// ... or in minutes of wall time (the first that is given; both: whichever ends first).
    pub minutes: Option<f64>,
    /// Labelled images per step (default 8).
    pub batch: usize,
    /// Peak learning rate (default 2e-4: on the dev-set person split it gained about as much
    /// mean IoU as 4e-4 in 30 minutes and kept 99.7 % agreement with the shipped model on
    /// videos, with distillation on; docs/training.md. The PyTorch runs: 5e-5 kept
    /// about 70 % of the gain with no forgetting).
    pub lr: f64,
    /// Linear warm-up steps (default 100).
    pub warmup: usize,
    /// Validate every this many steps (default 200).
    pub val_every: usize,
    /// Extra BCE weight within 2 px of a mask edge (default 4: edge pixels count 5x).
    pub edge_weight: f32,
    /// Weight of the soft Dice term (default 1).
    pub dice_weight: f32,
    /// Frames to distil the original model on.
    pub keep: KeepSource,
    /// Unlabelled frames per step (default 4).
    pub keep_batch: usize,
    /// Weight of the distillation loss (default 1).
    pub keep_weight: f32,
    /// Weight of the L2 pull to the starting weights (default 0: off).
    pub l2: f64,
    /// Random seed of sampling and augmentation.
    pub seed: u64,
    /// Decay of an exponential moving average of the weights (0: off). When on, validation
    /// and the written file use the average, not the last step's weights (Polyak and
    /// Juditsky, 1992; the decay ramps as `min(ema, (1 + t) / (10 + t))` at step `t`, as
    /// TensorFlow's `ExponentialMovingAverage` with `num_updates`).
    pub ema: f64,
    /// Share of labelled and keep samples framed as the whole image, stretched to the model
    /// input exactly as inference (and `eval`) sees a frame, 0..1; the rest get a random
    /// window (see the module doc).
    pub whole: f32,
    /// Which validation score picks the checkpoint that is kept (default mean IoU).
    pub best_by: BestBy,
}

/// The validation score that decides which checkpoint `train` keeps ([`TrainConfig::best_by`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BestBy {
    /// Mean IoU (ties: boundary F), the headline figure of `eval`. On the dev-set person
    /// split the sum let a checkpoint with +0.0026 boundary F and -0.0009 mean IoU win over
    /// the one that met both of the targets (docs/training.md, run J), hence the
    /// default.
    #[default]
    MeanIou,
    /// Boundary F (ties: mean IoU).
    BoundaryF,
    /// Mean IoU + boundary F.
    Sum,
}

impl BestBy {
    /// Whether `new` is better than `old` by this criterion (strictly: the first of equal
    /// scores is kept).
    pub fn better(self, new: &Summary, old: &Summary) -> bool {
        let key = |s: &Summary| match self {
            BestBy::MeanIou => (s.mean_iou, s.boundary_f),
            BestBy::BoundaryF => (s.boundary_f, s.mean_iou),
            BestBy::Sum => (s.mean_iou + s.boundary_f, 0.0),
        };
        key(new) > key(old)
    }
}

/// Default share of samples framed as the whole image ([`TrainConfig::whole`]): on the
/// dev-set person split, 0.5 and 0.85 both gained about +0.0013 mean IoU and +0.007
/// boundary F over 0 (random windows only; docs/training.md, runs C, F and G).
pub const DEFAULT_WHOLE: f32 = 0.5;

/// Default extra BCE weight of the pixels within 2 px of a mask edge ([`TrainConfig::edge_weight`]).
pub const DEFAULT_EDGE_WEIGHT: f32 = 4.0;

impl TrainConfig {
    /// Defaults for training `preset` on `data`, writing `out`; no budget yet (set `steps`
    /// or `minutes`).
    pub fn new(data: Vec<PathBuf>, out: PathBuf, preset: Preset) -> Self {
        Self {
            data,
            val: None,
            out,
            from: None,
            preset,
            steps: None,
            minutes: None,
            batch: 8,
            lr: 2e-4,
            warmup: 100,
            val_every: 200,
            edge_weight: DEFAULT_EDGE_WEIGHT,
            dice_weight: 1.0,
            keep: KeepSource::Demo,
            keep_batch: 4,
            keep_weight: 1.0,
            l2: 0.0,
            seed: 0x5eed,
            ema: 0.0,
            whole: DEFAULT_WHOLE,
            best_by: BestBy::default(),
        }
    }
}

/// Where the time of the steps went (wall time, summed over the run).
#[derive(Clone, Copy, Debug, Default)]
pub struct StepTimes {
    /// Decoding, augmentation, teacher probabilities of the keep frames.
    pub data: Duration,
    /// Forward pass and loss.
    pub forward: Duration,
    /// `backward()`.
    pub backward: Duration,
    /// AdamW update.
    pub update: Duration,
    /// Validation and checkpoint writing.
    pub validation: Duration,
}

/// The state of a run, passed to the progress callback after every step.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Fraction of the budget spent, 0..1.
    pub fraction: f64,
    /// Time since the start.
    pub elapsed: Duration,
    /// Loss of the last step (labelled part: weighted BCE + Dice).
    pub loss: f32,
    /// The last validation, if any.
    pub val: Option<Summary>,
    /// The best validation so far and its step.
    pub best: Option<(usize, Summary)>,
}

/// What a finished (or stopped) run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Steps done.
    pub steps: usize,
    /// The labelled loss of every step.
    pub losses: Vec<f32>,
    /// The distillation loss of every step (empty without keep frames).
    pub keep_losses: Vec<f32>,
    /// Validation of the starting weights.
    pub start: Option<Summary>,
    /// The best validation and its step (0: the starting weights were kept).
    pub best: Option<(usize, Summary)>,
    /// Every validation: `(step, summary)`.
    pub history: Vec<(usize, Summary)>,
    /// Whether the stop flag ended the run.
    pub interrupted: bool,
    /// Labelled images per step.
    pub batch: usize,
    /// Keep frames per step (0 without distillation).
    pub keep_batch: usize,
    /// Time spent, by kind.
    pub times: StepTimes,
    /// The labelled loss on up to 8 training pairs (whole images, no augmentation) with the
    /// starting weights ...
    pub fit_before: f32,
    /// ... and with the final weights.
    pub fit_after: f32,
}

impl TrainReport {
    /// Seconds of forward + backward + update per image (labelled and keep frames).
    pub fn seconds_per_image(&self) -> f64 {
        let t = self.times.forward + self.times.backward + self.times.update;
        t.as_secs_f64() / (self.steps * (self.batch + self.keep_batch)).max(1) as f64
    }
}

/// One labelled pair, kept encoded in memory.
struct Encoded {
    image: Vec<u8>,
    mask: Vec<u8>,
    name: PathBuf,
}

/// A model-input sample: planar RGB `3*W*H` in 0..1, target `W*H` in 0..1.
struct Sample {
    input: Vec<f32>,
    target: Vec<f32>,
}

/// Augmentation state: the resamplers are reused between samples.
struct Augmenter {
    size: (usize, usize),
    pre: Preprocessor,
    resizer: PlaneResizer,
    rng: fastrand::Rng,
    /// Share of samples framed as the whole image (as inference sees a frame), 0..1.
    whole: f32,
}

impl Augmenter {
    fn new(preset: Preset, seed: u64, whole: f32) -> Self {
        let (w, h) = preset.input_size();
        Self {
            size: (w, h),
            pre: Preprocessor::new(w, h),
            resizer: PlaneResizer::default(),
            rng: fastrand::Rng::with_seed(seed),
            whole,
        }
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.rng.f32()
    }

    /// A random window `(x, y, w, h)` of a `iw`x`ih` image: whole, 16:9 or square.
    fn framing(&mut self, iw: usize, ih: usize) -> (usize, usize, usize, usize) {
        if self.whole > 0.0 && self.rng.f32() < self.whole {
            return (0, 0, iw, ih);
        }
        let aspect = match self.rng.usize(0..3) {
            0 => iw as f32 / ih as f32,
            1 => 16.0 / 9.0,
            _ => 1.0,
        };
        let s = self.uniform(0.7, 1.0);
        let mut cw = (iw as f32).min(ih as f32 * aspect) * s;
        let mut ch = cw / aspect;
        cw = cw.clamp(16.0, iw as f32);
        ch = ch.clamp(16.0, ih as f32);
        let (cw, ch) = (cw as usize, ch as usize);
        let x = self.rng.usize(0..=iw - cw);
        let y = self.rng.usize(0..=ih - ch);
        (x, y, cw, ch)
    }

    /// `rgb` (and `mask`) cropped to a random framing and stretched to the model input.
    fn sample(&mut self, rgb: &RgbImage, mask: Option<&GrayImage>) -> Sample {
        let (iw, ih) = (rgb.width() as usize, rgb.height() as usize);
        let (x, y, cw, ch) = self.framing(iw, ih);
        let (w, h) = self.size;
        let raw = rgb.as_raw();
        let frame = FrameRef::new(&raw[(y * iw + x) * 3..], cw, ch, iw * 3, PixelFormat::Rgb)
            .expect("window inside the image");
        let input = self.pre.run(&frame).to_vec();
        let target = match mask {
            Some(m) => {
                let crop: Vec<f32> = (y..y + ch)
                    .flat_map(|r| {
                        let row = &m.as_raw()[r * iw + x..r * iw + x + cw];
                        row.iter().map(|&v| v as f32 / 255.0)
                    })
                    .collect();
                let mut t = vec![0f32; w * h];
                self.resizer.resize(&crop, (cw, ch), &mut t, (w, h));
                t
            }
            None => Vec::new(),
        };
        Sample { input, target }
    }

    /// Flip and colour jitter in place.
    fn photometric(&mut self, s: &mut Sample) {
        let (w, h) = self.size;
        if self.rng.bool() {
            for plane in s.input.chunks_exact_mut(w * h) {
                plane.chunks_exact_mut(w).for_each(<[f32]>::reverse);
            }
            if !s.target.is_empty() {
                s.target.chunks_exact_mut(w).for_each(<[f32]>::reverse);
            }
        }
        let bright = self.uniform(-0.1, 0.1);
        let contrast = self.uniform(0.75, 1.25);
        let sat = self.uniform(0.75, 1.25);
        let n = w * h;
        let mean = s.input.iter().sum::<f32>() / s.input.len() as f32;
        for i in 0..n {
            let (r, g, b) = (s.input[i], s.input[n + i], s.input[2 * n + i]);
            let grey = 0.299 * r + 0.587 * g + 0.114 * b;
            for (c, v) in [r, g, b].into_iter().enumerate() {
                let v = grey + (v - grey) * sat;
                let v = mean + (v - mean) * contrast + bright;
                s.input[c * n + i] = v.clamp(0.0, 1.0);
            }
        }
    }

    /// Replaces the background (`1 - target`) with `bg` (planar RGB at model size).
    fn swap_background(&mut self, s: &mut Sample, bg: &[f32]) {
        let n = self.size.0 * self.size.1;
        for c in 0..3 {
            for i in 0..n {
                let m = s.target[i];
                s.input[c * n + i] = m * s.input[c * n + i] + (1.0 - m) * bg[c * n + i];
            }
        }
    }

    /// A background: another image upside down (its person no longer reads as one), or a
    /// two-colour vertical gradient.
    fn background(&mut self, other: Option<&RgbImage>) -> Vec<f32> {
        let (w, h) = self.size;
        match other {
            Some(img) if self.rng.bool() => {
                let mut s = self.sample(img, None);
                for plane in s.input.chunks_exact_mut(w * h) {
                    let rows: Vec<&[f32]> = plane.chunks_exact(w).rev().collect();
                    let flipped: Vec<f32> = rows.concat();
                    plane.copy_from_slice(&flipped);
                }
                s.input
            }
            _ => {
                let top: [f32; 3] = [self.rng.f32(), self.rng.f32(), self.rng.f32()];
                let bottom: [f32; 3] = [self.rng.f32(), self.rng.f32(), self.rng.f32()];
                let mut out = vec![0f32; 3 * w * h];
                for c in 0..3 {
                    for y in 0..h {
                        let t = y as f32 / (h - 1) as f32;
                        let v = top[c] * (1.0 - t) + bottom[c] * t;
                        out[c * w * h + y * w..c * w * h + (y + 1) * w].fill(v);
                    }
                }
                out
            }
        }
    }
}

/// `1 + extra` within `r` pixels (Chebyshev) of a change of the hard mask `target >= 0.5`,
/// else 1: `w*h` weights.
fn edge_weights(target: &[f32], w: usize, h: usize, r: usize, extra: f32) -> Vec<f32> {
    let hard: Vec<bool> = target.iter().map(|&v| v >= 0.5).collect();
    let mut out = vec![1f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = hard[y * w + x];
            let (y0, y1) = (y.saturating_sub(r), (y + r).min(h - 1));
            let (x0, x1) = (x.saturating_sub(r), (x + r).min(w - 1));
            let edge = (y0..=y1).any(|yy| hard[yy * w + x0..=yy * w + x1].iter().any(|&u| u != v));
            if edge {
                out[y * w + x] = 1.0 + extra;
            }
        }
    }
    out
}

/// Numerically stable binary cross-entropy on logits, per element:
/// `relu(x) - x*y + log(1 + exp(-|x|))` (`y` may be soft).
///
/// # Errors
/// On mismatched shapes.
pub fn bce_with_logits(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let soft = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    (x.relu()? - (x * y)?)? + soft
}

/// Soft Dice loss per image, averaged: `1 - (2 sum(p*y) + 1) / (sum p + sum y + 1)` with
/// `p = sigmoid(x)`; `x`, `y` `[N, 1, H, W]`.
///
/// # Errors
/// On mismatched shapes.
pub fn soft_dice(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let p = candle_nn::ops::sigmoid(x)?.flatten_from(1)?;
    let y = y.flatten_from(1)?;
    let inter = (&p * &y)?.sum(1)?;
    let denom = ((p.sum(1)? + y.sum(1)?)? + 1.0)?;
    let ratio = ((inter * 2.0)? + 1.0)?.div(&denom)?;
    (ratio.neg()? + 1.0)?.mean_all()
}

/// The labelled loss: edge-weighted stable BCE plus `dice_weight` times soft Dice; logits,
/// targets and weights `[N, 1, H, W]`.
///
/// # Errors
/// On mismatched shapes.
pub fn labelled_loss(
    logits: &Tensor,
    target: &Tensor,
    weights: &Tensor,
    dice_weight: f32,
) -> candle_core::Result<Tensor> {
    let bce = (bce_with_logits(logits, target)? * weights)?
        .sum_all()?
        .div(&weights.sum_all()?)?;
    bce + (soft_dice(logits, target)? * dice_weight as f64)?
}

/// [`edge_weights`] of each sample's target, stacked `[N, 1, H, W]`.
fn edge_tensor(
    samples: &[Sample],
    (w, h): (usize, usize),
    extra: f32,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = samples
        .iter()
        .flat_map(|s| edge_weights(&s.target, w, h, 2, extra))
        .collect();
    Tensor::from_vec(v, (samples.len(), 1, h, w), device)
}

fn decode_mask(e: &Encoded) -> Result<GrayImage, TrainError> {
    Ok(image::load_from_memory(&e.mask)
        .map_err(|err| TrainError::Io(e.name.clone(), err.to_string()))?
        .to_luma8())
}

fn read(path: &Path) -> Result<Vec<u8>, TrainError> {
    std::fs::read(path).map_err(|e| TrainError::Io(path.to_path_buf(), e.to_string()))
}

/// Decodes a labelled pair: the photo as RGB and its mask as grey.
///
/// # Errors
/// [`TrainError::Io`] when either does not decode, [`TrainError::Config`] when the mask's
/// size differs from the photo's.
fn decode_pair(e: &Encoded) -> Result<(RgbImage, GrayImage), TrainError> {
    let rgb = decode_rgb(&e.image, &e.name)?;
    let mask = decode_mask(e)?;
    if mask.dimensions() != rgb.dimensions() {
        return Err(TrainError::Config(format!(
            "the mask of {} differs in size from the image",
            e.name.display()
        )));
    }
    Ok((rgb, mask))
}

fn decode_rgb(bytes: &[u8], name: &Path) -> Result<RgbImage, TrainError> {
    Ok(image::load_from_memory(bytes)
        .map_err(|e| TrainError::Io(name.to_path_buf(), e.to_string()))?
        .to_rgb8())
}

/// The labelled pairs of each data folder (`DIR/images`, `DIR/masks`).
///
/// # Errors
/// As [`find_pairs`].
pub fn data_pairs(dir: &Path) -> Result<Vec<Pair>, TrainError> {
    Ok(find_pairs(&dir.join("images"), &dir.join("masks"))?)
}

/// Reads the unlabelled frames of `keep`: a folder's images, or one frame a second of a video;
/// at most [`MAX_KEEP_FRAMES`], evenly spread.
///
/// # Errors
/// [`TrainError::Io`] for an unreadable folder, image or video.
pub fn keep_frames(keep: &KeepSource) -> Result<Vec<RgbImage>, TrainError> {
    let path = match keep {
        KeepSource::None => return Ok(Vec::new()),
        KeepSource::Demo => {
            let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
            if !demo.is_dir() {
                log::warn!(
                    "no demo material at {}: training without distillation",
                    demo.display()
                );
                return Ok(Vec::new());
            }
            demo
        }
        KeepSource::Path(p) => p.clone(),
    };
    let io = |e: String| TrainError::Io(path.clone(), e);
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| io(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    crate::eval::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(io("no images (.jpg, .jpeg, .png) in the folder".into()));
        }
        let stride = files.len().div_ceil(MAX_KEEP_FRAMES);
        return files
            .iter()
            .step_by(stride)
            .map(|f| decode_rgb(&read(f)?, f))
            .collect();
    }
    let info = crate::video::probe(&path).map_err(|e| io(e.to_string()))?;
    let rate = {
        let mut it = info.frame_rate.split('/');
        let num: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(30.0);
        let den: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(1.0);
        (num / den.max(1.0)).round().max(1.0) as u64
    };
    let total = info.frames.unwrap_or(rate * 60);
    let every = rate.max(total.div_ceil(MAX_KEEP_FRAMES as u64));
    let mut dec = crate::video::Decoder::open(&path, &info).map_err(|e| io(e.to_string()))?;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut i = 0u64;
    while dec.next_frame(&mut buf).map_err(|e| io(e.to_string()))? {
        if i % every == 0 && frames.len() < MAX_KEEP_FRAMES {
            let rgba =
                image::RgbaImage::from_raw(info.width as u32, info.height as u32, buf.clone())
                    .ok_or_else(|| io("short frame".into()))?;
            frames.push(image::DynamicImage::ImageRgba8(rgba).to_rgb8());
        }
        i += 1;
    }
    dec.finish().map_err(|e| io(e.to_string()))?;
    if frames.is_empty() {
        return Err(io("no frames".into()));
    }
    Ok(frames)
}

/// Writes `bytes` to `out` atomically ([`AtomicOutput`]: a temporary file in the same
/// folder, renamed over).
///
/// # Errors
/// [`TrainError::Engine`] if the folder is not writable, [`TrainError::Io`] on a write error.
pub fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = AtomicOutput::new(out)?;
    std::fs::write(tmp.path(), bytes)
        .map_err(|e| TrainError::Io(out.to_path_buf(), e.to_string()))?;
    tmp.persist()?;
    Ok(())
}

/// Scores weights (safetensors bytes) on `pairs` through the inference path and the `eval`
/// code (threshold 0.5, no refinement), as `ai-background eval` does.
///
/// # Errors
/// [`TrainError::Engine`] when the bytes do not load, [`TrainError::Data`] for a bad pair.
pub fn validate(bytes: &[u8], preset: Preset, pairs: &[Pair]) -> Result<Summary, TrainError> {
    let seg = Segmenter::from_bytes(bytes, preset, &Device::Cpu, "trained weights")?;
    let mut pipeline = MaskPipeline::new(Arc::new(seg));
    let settings = PipelineSettings {
        smoothing: 0.0,
        ..PipelineSettings::default()
    };
    let scores = pairs
        .iter()
        .map(|p| evaluate_pair(&mut pipeline, p, &settings, 0.5))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Summary::of(&scores))
}

/// Agreement of two weight files on unlabelled frames where the first is confident: over
/// the pixels (at model resolution) where `reference` gives `p <= 0.1` or `p >= 0.9`, the
/// fraction where `other` falls on the same side of 0.5. Returns `(agreement, confident
/// fraction of all pixels)`.
///
/// # Errors
/// [`TrainError::Engine`] when either set of weights does not load.
pub fn agreement(
    reference: &[u8],
    other: &[u8],
    preset: Preset,
    frames: &[RgbImage],
) -> Result<(f64, f64), TrainError> {
    let a = Segmenter::from_bytes(reference, preset, &Device::Cpu, "reference weights")?;
    let b = Segmenter::from_bytes(other, preset, &Device::Cpu, "trained weights")?;
    let (w, h) = preset.input_size();
    let mut pre = Preprocessor::new(w, h);
    let (mut pa, mut pb) = (vec![0f32; w * h], vec![0f32; w * h]);
    let (mut confident, mut agree, mut total) = (0u64, 0u64, 0u64);
    for f in frames {
        let frame = FrameRef::packed(
            f.as_raw(),
            f.width() as usize,
            f.height() as usize,
            PixelFormat::Rgb,
        )?;
        let input = pre.run(&frame);
        a.segment(input, &mut pa)?;
        b.segment(input, &mut pb)?;
        for (&p, &q) in pa.iter().zip(&pb) {
            total += 1;
            if !(0.1..0.9).contains(&p) {
                confident += 1;
                agree += u64::from((p >= 0.5) == (q >= 0.5));
            }
        }
    }
    Ok((
        agree as f64 / confident.max(1) as f64,
        confident as f64 / total.max(1) as f64,
    ))
}

/// Stacks samples into `[N, 3, H, W]` inputs and `[N, 1, H, W]` targets on `device`.
fn stack(
    samples: &[Sample],
    (w, h): (usize, usize),
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let n = samples.len();
    let x: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.input.iter().copied())
        .collect();
    let y: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.target.iter().copied())
        .collect();
    Ok((
        Tensor::from_vec(x, (n, 3, h, w), device)?,
        Tensor::from_vec(y, (n, 1, h, w), device)?,
    ))
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (index 15 in mimalloc 2.x and 3.x,
/// `include/mimalloc.h`).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Tells the process allocator (mimalloc, the crate's `#[global_allocator]`) to keep freed
/// memory instead of returning it to the OS (`purge_delay = -1`). A training step allocates
/// and frees hundreds of MB of tensors; returned pages come back as fresh pages the kernel
/// zeroes on first touch (transparent huge pages: 2 MB each), which took about a quarter of
/// the cycles of a step (`perf record`, docs/training.md). The setting lasts for the process:
/// only `ai-background train` calls this, never the OBS module.
fn keep_freed_memory() {
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: mimalloc's documented runtime option setter; any option and value is valid.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Runs a training run on `device`. `stop` returning true ends it early (Ctrl-C), keeping
/// the best file;
/// `progress` is called after every step.
///
/// # Errors
/// [`TrainError::Config`] for a run without budget or data, or an `out` that is an input;
/// read, decode and write errors; candle failures.
pub fn train(
    cfg: &TrainConfig,
    device: &Device,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainReport, TrainError> {
    if cfg.steps.is_none() && cfg.minutes.is_none() {
        return Err(TrainError::Config("give --steps or --minutes".into()));
    }
    keep_freed_memory();
    if cfg.batch == 0 || cfg.data.is_empty() {
        return Err(TrainError::Config(
            "need at least one --data folder and a batch of at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&cfg.whole) {
        return Err(TrainError::Config(format!(
            "--whole {} must be between 0 and 1",
            cfg.whole
        )));
    }
    if !(0.0..1.0).contains(&cfg.ema) {
        return Err(TrainError::Config(format!(
            "--ema {} must be at least 0 and below 1",
            cfg.ema
        )));
    }
    if cfg.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(TrainError::Config(format!(
            "--out {} must end in .safetensors",
            cfg.out.display()
        )));
    }
    if let Some(from) = &cfg.from {
        refuse_same_file(&cfg.out, &[from])?;
    }
    // Inputs.
    let mut pairs = Vec::new();
    for dir in &cfg.data {
        pairs.extend(data_pairs(dir)?);
    }
    let val_pairs = match &cfg.val {
        Some(dir) => data_pairs(dir)?,
        None => Vec::new(),
    };
    let inputs: Vec<&Path> = pairs
        .iter()
        .chain(&val_pairs)
        .flat_map(|p| [p.image.as_path(), p.mask.as_path()])
        .collect();
    refuse_same_file(&cfg.out, &inputs)?;
    let data: Vec<Encoded> = pairs
        .iter()
        .map(|p| {
            Ok(Encoded {
                image: read(&p.image)?,
                mask: read(&p.mask)?,
                name: p.image.clone(),
            })
        })
        .collect::<Result<_, TrainError>>()?;
    let keep = keep_frames(&cfg.keep)?;
    let keep_batch = if keep.is_empty() || cfg.keep_weight <= 0.0 {
        0
    } else {
        cfg.keep_batch
    };
    let start_bytes = match &cfg.from {
        Some(f) => read(f)?,
        None => cfg.preset.embedded_weights().to_vec(),
    };
    let net = TrainableNet::from_bytes(&start_bytes, device)?;
    let size = cfg.preset.input_size();
    let teacher = if keep_batch > 0 {
        Some(Segmenter::from_bytes(
            &start_bytes,
            cfg.preset,
            &Device::Cpu,
            "starting weights",
        )?)
    } else {
        None
    };
    let start_weights: HashMap<String, Tensor> = net.snapshot()?;
    // A fixed probe batch: the first pairs, whole, unaugmented.
    let probe: Vec<Sample> = {
        let mut pre = Preprocessor::new(size.0, size.1);
        let mut resizer = PlaneResizer::default();
        data.iter()
            .take(8)
            .map(|e| {
                let (rgb, mask) = decode_pair(e)?;
                let (w, h) = (rgb.width() as usize, rgb.height() as usize);
                let frame = FrameRef::packed(rgb.as_raw(), w, h, PixelFormat::Rgb)?;
                let input = pre.run(&frame).to_vec();
                let plane: Vec<f32> = mask.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
                let mut target = vec![0f32; size.0 * size.1];
                resizer.resize(&plane, (w, h), &mut target, size);
                Ok(Sample { input, target })
            })
            .collect::<Result<_, TrainError>>()?
    };
    let probe_loss = |net: &TrainableNet| -> Result<f32, TrainError> {
        let (x, y) = stack(&probe, size, device)?;
        let wt = edge_tensor(&probe, size, cfg.edge_weight, device)?;
        Ok(labelled_loss(&net.logits(&x)?, &y, &wt, cfg.dice_weight)?.to_scalar::<f32>()?)
    };
    let vars: Vec<(String, Var)> = net
        .vars()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;

    let mut aug = Augmenter::new(cfg.preset, cfg.seed, cfg.whole);
    let started = Instant::now();
    let mut report = TrainReport {
        steps: 0,
        losses: Vec::new(),
        keep_losses: Vec::new(),
        start: None,
        best: None,
        history: Vec::new(),
        interrupted: false,
        batch: cfg.batch,
        keep_batch,
        times: StepTimes::default(),
        fit_before: 0.0,
        fit_after: 0.0,
    };
    let budget = |step: usize, elapsed: Duration| -> f64 {
        let by_steps = cfg.steps.map_or(0.0, |n| step as f64 / n.max(1) as f64);
        let by_time = cfg
            .minutes
            .map_or(0.0, |m| elapsed.as_secs_f64() / (m * 60.0).max(1e-9));
        by_steps.max(by_time).min(1.0)
    };
    let mut last_val: Option<Summary> = None;

    // Validates (or, without --val, just saves) the current weights.
    report.fit_before = probe_loss(&net)?;
    // The moving average of the weights (`cfg.ema`), by key; empty when off.
    let mut ema: Vec<(String, Tensor)> = if cfg.ema > 0.0 {
        vars.iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_, TrainError>>()?
    } else {
        Vec::new()
    };
    let checkpoint = |step: usize,
                      report: &mut TrainReport,
                      ema: &[(String, Tensor)]|
     -> Result<Option<Summary>, TrainError> {
        let t = Instant::now();
        let bytes = if ema.is_empty() {
            net.to_safetensors()?
        } else {
            crate::model::trainable::serialize_weights(ema)?
        };
        let result = if val_pairs.is_empty() {
            write_atomically(&cfg.out, &bytes)?;
            None
        } else {
            let s = validate(&bytes, cfg.preset, &val_pairs)?;
            if report
                .best
                .as_ref()
                .is_none_or(|(_, b)| cfg.best_by.better(&s, b))
            {
                write_atomically(&cfg.out, &bytes)?;
                report.best = Some((step, s.clone()));
            }
            report.history.push((step, s.clone()));
            Some(s)
        };
        report.times.validation += t.elapsed();
        Ok(result)
    };

    if !val_pairs.is_empty() {
        let s = checkpoint(0, &mut report, &ema)?;
        report.start = s.clone();
        last_val = s;
    }
    let mut step = 0;
    let mut validated_at = 0;
    loop {
        let fraction = budget(step, started.elapsed());
        if fraction >= 1.0 {
            break;
        }
        if stop() {
            report.interrupted = true;
            break;
        }
        // Data.
        let t = Instant::now();
        let mut samples = Vec::with_capacity(cfg.batch + keep_batch);
        for _ in 0..cfg.batch {
            let e = &data[aug.rng.usize(0..data.len())];
            let (rgb, mask) = decode_pair(e)?;
            let mut s = aug.sample(&rgb, Some(&mask));
            if aug.rng.f32() < 0.25 {
                let o = &data[aug.rng.usize(0..data.len())];
                let other = decode_rgb(&o.image, &o.name)?;
                let bg = aug.background(Some(&other));
                aug.swap_background(&mut s, &bg);
            }
            aug.photometric(&mut s);
            samples.push(s);
        }
        if let Some(teacher) = &teacher {
            let (w, h) = size;
            for _ in 0..keep_batch {
                let frame = &keep[aug.rng.usize(0..keep.len())];
                let mut s = aug.sample(frame, None);
                aug.photometric(&mut s);
                s.target = vec![0f32; w * h];
                teacher.segment(&s.input, &mut s.target)?;
                samples.push(s);
            }
        }
        let (x, y) = stack(&samples, size, device)?;
        let wt = edge_tensor(&samples[..cfg.batch], size, cfg.edge_weight, device)?;
        report.times.data += t.elapsed();

        // Forward and loss.
        let t = Instant::now();
        let logits = net.logits(&x)?;
        let (lx, ly) = (logits.narrow(0, 0, cfg.batch)?, y.narrow(0, 0, cfg.batch)?);
        let bce = (bce_with_logits(&lx, &ly)? * &wt)?
            .sum_all()?
            .div(&wt.sum_all()?)?;
        let labelled = (bce + (soft_dice(&lx, &ly)? * cfg.dice_weight as f64)?)?;
        let mut loss = labelled.clone();
        if keep_batch > 0 {
            let kx = logits.narrow(0, cfg.batch, keep_batch)?;
            let ky = y.narrow(0, cfg.batch, keep_batch)?;
            let kl = bce_with_logits(&kx, &ky)?.mean_all()?;
            report.keep_losses.push(kl.to_scalar::<f32>()?);
            loss = (loss + (kl * cfg.keep_weight as f64)?)?;
        }
        if cfg.l2 > 0.0 {
            let mut pull = Tensor::zeros((), DType::F32, device)?;
            for (k, v) in &vars {
                let d = (v.as_tensor() - &start_weights[k])?;
                pull = (pull + d.sqr()?.sum_all()?)?;
            }
            loss = (loss + (pull * cfg.l2)?)?;
        }
        let value = labelled.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(TrainError::Config(format!(
                "loss is {value} at step {step}; lower --lr"
            )));
        }
        report.times.forward += t.elapsed();
        let t = Instant::now();
        let grads = loss.backward()?;
        report.times.backward += t.elapsed();
        let t = Instant::now();
        let warm = ((step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * fraction).cos());
        opt.set_learning_rate(cfg.lr * warm * cosine);
        opt.step(&grads)?;
        if !ema.is_empty() {
            let d = cfg.ema.min((1.0 + step as f64) / (10.0 + step as f64));
            for ((_, e), (_, v)) in ema.iter_mut().zip(&vars) {
                *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
            }
        }
        report.times.update += t.elapsed();
        step += 1;
        report.steps = step;
        report.losses.push(value);

        if step % cfg.val_every.max(1) == 0 {
            last_val = checkpoint(step, &mut report, &ema)?.or(last_val);
            validated_at = step;
        }
        progress(&Progress {
            step,
            fraction: budget(step, started.elapsed()),
            elapsed: started.elapsed(),
            loss: value,
            val: last_val.clone(),
            best: report.best.clone(),
        });
    }
    if validated_at != step || (step == 0 && val_pairs.is_empty()) {
        checkpoint(step, &mut report, &ema)?;
    }
    report.fit_after = probe_loss(&net)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_by_picks_run_js_checkpoints() {
        // Run J of docs/training.md: step 2,800 against step 4,000 (mean IoU, boundary F).
        let s = |mean_iou, boundary_f| Summary {
            mean_iou,
            pooled_iou: mean_iou,
            boundary_f,
            count: 100,
        };
        let (s2800, s4000) = (s(0.9414, 0.8098), s(0.9423, 0.8072));
        assert!(BestBy::MeanIou.better(&s4000, &s2800));
        assert!(!BestBy::MeanIou.better(&s2800, &s4000));
        assert!(BestBy::Sum.better(&s2800, &s4000));
        assert!(BestBy::BoundaryF.better(&s2800, &s4000));
        // Ties on the first key fall to the second; equal scores keep the first.
        assert!(BestBy::MeanIou.better(&s(0.94, 0.81), &s(0.94, 0.80)));
        assert!(!BestBy::MeanIou.better(&s(0.94, 0.80), &s(0.94, 0.80)));
    }

    #[test]
    fn stable_bce_is_finite_and_exact_on_large_logits() {
        let d = Device::Cpu;
        let x = Tensor::new(&[-300f32, -2.0, 0.0, 3.0, 300.0], &d).unwrap();
        let y = Tensor::new(&[1f32, 0.0, 1.0, 1.0, 0.0], &d).unwrap();
        let got = bce_with_logits(&x, &y).unwrap().to_vec1::<f32>().unwrap();
        let want = [
            300.0,
            (1.0f32 + (-2f32).exp()).ln(),
            2f32.ln(),
            (1.0f32 + (-3f32).exp()).ln(),
            300.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn whole_share_frames_the_whole_image() {
        let mut all = Augmenter::new(Preset::Landscape, 1, 1.0);
        let mut none = Augmenter::new(Preset::Landscape, 1, 0.0);
        for _ in 0..50 {
            assert_eq!(all.framing(640, 480), (0, 0, 640, 480));
            let (_, _, w, h) = none.framing(640, 480);
            assert!(w < 640 || h < 480, "a window, not the whole image: {w}x{h}");
        }
    }

    #[test]
    fn ema_and_whole_out_of_range_are_refused() {
        let dir = std::env::temp_dir();
        for (ema, whole) in [(1.0, 0.0), (-0.1, 0.0), (0.0, 1.5)] {
            let mut cfg = TrainConfig::new(
                vec![dir.clone()],
                dir.join("x.safetensors"),
                Preset::Landscape,
            );
            cfg.steps = Some(1);
            cfg.ema = ema;
            cfg.whole = whole;
            let e = train(&cfg, &Device::Cpu, &|| false, &mut |_| {}).unwrap_err();
            assert!(matches!(e, TrainError::Config(_)), "{e}");
        }
    }

    #[test]
    fn edge_weights_mark_a_band_around_the_edge() {
        let (w, h) = (10, 4);
        let t: Vec<f32> = (0..w * h)
            .map(|i| if i % w < 5 { 1.0 } else { 0.0 })
            .collect();
        let wt = edge_weights(&t, w, h, 2, 4.0);
        let row: Vec<f32> = wt[..w].to_vec();
        assert_eq!(row, vec![1.0, 1.0, 1.0, 5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0]);
    }
}
