//! Evaluation on a folder of images with ground-truth masks (`images/<id>.jpg`,
//! `masks/<id>.png`), as `tools/eval_tflite.py` does for the TFLite reference.

use crate::files::load_image;
use crate::frame::{FrameRef, PixelFormat};
use crate::metrics::{iou, score, ImageScore, TemporalMeter, TemporalScore};
use crate::pipeline::{MaskPipeline, PipelineSettings};
use crate::video::{Decoder, VideoError};
use std::path::{Path, PathBuf};

/// Image extensions an evaluation folder may hold.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Errors of an evaluation run; each message is one complete line.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The images or masks folder cannot be listed.
    #[error("cannot read folder {0}: {1}")]
    Folder(PathBuf, String),
    /// No images in the folder.
    #[error("no images (.jpg, .jpeg, .png) in {0}")]
    Empty(PathBuf),
    /// An image without a mask.
    #[error("no mask for {image}: expected {expected}")]
    MissingMask {
        /// The image.
        image: PathBuf,
        /// The mask path looked for.
        expected: PathBuf,
    },
    /// A mask whose size differs from its image.
    #[error("mask {mask} is {mask_w}x{mask_h} but its image is {image_w}x{image_h}")]
    SizeMismatch {
        /// The mask.
        mask: PathBuf,
        /// Mask width.
        mask_w: u32,
        /// Mask height.
        mask_h: u32,
        /// Image width.
        image_w: u32,
        /// Image height.
        image_h: u32,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
    /// A video could not be decoded.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A keyed mask folder whose count of masks differs from the clip's frames.
    #[error("{folder} holds {masks} masks (.png) but the clip has {frames} frames")]
    KeyCount {
        /// The mask folder.
        folder: PathBuf,
        /// PNG files in it.
        masks: usize,
        /// Frames of the clip.
        frames: usize,
    },
}

/// One image and its ground-truth mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// File stem shared by image and mask.
    pub id: String,
    /// The image.
    pub image: PathBuf,
    /// The mask (`<masks>/<id>.png`).
    pub mask: PathBuf,
}

/// Lists the images of `images` (sorted by name) with their masks in `masks`.
///
/// # Errors
/// [`EvalError::Folder`], [`EvalError::Empty`], [`EvalError::MissingMask`].
pub fn find_pairs(images: &Path, masks: &Path) -> Result<Vec<Pair>, EvalError> {
    let entries = std::fs::read_dir(images)
        .map_err(|e| EvalError::Folder(images.to_path_buf(), e.to_string()))?;
    if !masks.is_dir() {
        return Err(EvalError::Folder(
            masks.to_path_buf(),
            "not a folder".to_string(),
        ));
    }
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    if paths.is_empty() {
        return Err(EvalError::Empty(images.to_path_buf()));
    }
    paths.sort();
    paths
        .into_iter()
        .map(|image| {
            let id = image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mask = masks.join(format!("{id}.png"));
            if !mask.is_file() {
                return Err(EvalError::MissingMask {
                    image,
                    expected: mask,
                });
            }
            Ok(Pair { id, image, mask })
        })
        .collect()
}

/// Segments one image and scores the prediction (person where the probability at image size is
/// `>= threshold`) against its mask (person where `>= 128`).
///
/// The pipeline is reset first, so images do not influence each other.
///
/// # Errors
/// [`EvalError::SizeMismatch`], [`EvalError::Engine`] (an unreadable, truncated or corrupt
/// image or mask: [`crate::EngineError::Image`]).
pub fn evaluate_pair(
    pipeline: &mut MaskPipeline,
    pair: &Pair,
    settings: &PipelineSettings,
    threshold: f32,
) -> Result<ImageScore, EvalError> {
    // Both upright (EXIF orientation applied), format from content: see `files::load_image`.
    let rgb = load_image(&pair.image)?.to_rgb8();
    let gt = load_image(&pair.mask)?.to_luma8();
    if gt.dimensions() != rgb.dimensions() {
        return Err(EvalError::SizeMismatch {
            mask: pair.mask.clone(),
            mask_w: gt.width(),
            mask_h: gt.height(),
            image_w: rgb.width(),
            image_h: rgb.height(),
        });
    }
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let frame = FrameRef::packed(rgb.as_raw(), w, h, PixelFormat::Rgb)?;
    pipeline.reset();
    let prob = pipeline.process(&frame, settings)?;
    let pred: Vec<bool> = prob.data.iter().map(|&p| p >= threshold).collect();
    let truth: Vec<bool> = gt.pixels().map(|p| p[0] >= 128).collect();
    Ok(score(&pair.id, &pred, &truth, w, h))
}

/// Scores of one clip from [`evaluate_clip`].
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct ClipScore {
    /// The pipeline at the settings asked for.
    pub smoothed: TemporalScore,
    /// The raw model (smoothing 0) on the same frames, when asked for.
    pub raw: Option<TemporalScore>,
    /// Lowest IoU over the frames between the hard mask at the settings and the raw one of the
    /// same frame (how closely smoothing follows motion), when the raw model ran.
    pub worst_iou_vs_raw: Option<f64>,
}

/// Runs every frame of the video `clip` through `pipeline` (as `ai-background apply` does) and
/// measures the temporal stability of the hard mask at `threshold` ([`TemporalMeter`]).
///
/// With `raw`, a second pipeline on the same segmenter runs the same frames at smoothing 0, for
/// the ratio of the two flicker rates from one run. With `key`, a folder of one PNG per frame
/// (sorted by name; the alpha channel, or the grey value of images without one, `>= 128` =
/// person) gives the mean IoU.
///
/// # Errors
/// [`EvalError::Video`] for an unreadable clip, [`EvalError::Folder`] /
/// [`EvalError::KeyCount`] / [`EvalError::SizeMismatch`] / [`EvalError::Engine`] (an
/// unreadable mask: [`crate::EngineError::Image`]) for a bad key folder.
pub fn evaluate_clip(
    pipeline: &mut MaskPipeline,
    clip: &Path,
    settings: &PipelineSettings,
    threshold: f32,
    raw: bool,
    key: Option<&Path>,
) -> Result<ClipScore, EvalError> {
    let info = crate::video::probe(clip)?;
    let (w, h) = (info.width, info.height);
    let keys = key.map(list_pngs).transpose()?;
    let mut decoder = Decoder::open(clip, &info)?;
    let mut raw_pipeline = raw.then(|| MaskPipeline::new(pipeline.backend().clone()));
    let raw_settings = PipelineSettings {
        smoothing: 0.0,
        ..*settings
    };
    pipeline.reset();
    let (mut meter, mut raw_meter) = (TemporalMeter::new(threshold), TemporalMeter::new(threshold));
    let mut worst = 1.0f64;
    let mut buf = Vec::new();
    let mut frames = 0usize;
    while decoder.next_frame(&mut buf)? {
        let truth = match &keys {
            // Too few masks: count the rest of the frames for the error message.
            Some(paths) if frames >= paths.len() => {
                frames += 1;
                continue;
            }
            Some(paths) => Some(read_key(&paths[frames], w, h)?),
            None => None,
        };
        let frame = FrameRef::packed(&buf, w, h, PixelFormat::Rgba)?;
        let prob = pipeline.process(&frame, settings)?;
        meter.push(&buf, &prob.data, w, h, truth.as_deref());
        if let Some(rp) = raw_pipeline.as_mut() {
            let raw_prob = rp.process(&frame, &raw_settings)?;
            raw_meter.push(&buf, &raw_prob.data, w, h, truth.as_deref());
            let a: Vec<bool> = prob.data.iter().map(|&p| p >= threshold).collect();
            let b: Vec<bool> = raw_prob.data.iter().map(|&p| p >= threshold).collect();
            worst = worst.min(iou(&a, &b));
        }
        frames += 1;
    }
    decoder.finish()?;
    if let (Some(paths), Some(folder)) = (&keys, key) {
        if paths.len() != frames {
            return Err(EvalError::KeyCount {
                folder: folder.to_path_buf(),
                masks: paths.len(),
                frames,
            });
        }
    }
    Ok(ClipScore {
        smoothed: meter.finish(),
        raw: raw.then(|| raw_meter.finish()),
        worst_iou_vs_raw: raw.then_some(worst),
    })
}

/// The `.png` files of `folder`, sorted by name.
fn list_pngs(folder: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let entries = std::fs::read_dir(folder)
        .map_err(|e| EvalError::Folder(folder.to_path_buf(), e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// A keyed mask: the alpha channel (or the grey value without one) `>= 128`, `w` x `h`.
fn read_key(path: &Path, w: usize, h: usize) -> Result<Vec<bool>, EvalError> {
    let img = load_image(path)?;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(EvalError::SizeMismatch {
            mask: path.to_path_buf(),
            mask_w: img.width(),
            mask_h: img.height(),
            image_w: w as u32,
            image_h: h as u32,
        });
    }
    Ok(if img.color().has_alpha() {
        img.to_rgba8().pixels().map(|p| p[3] >= 128).collect()
    } else {
        img.to_luma8().pixels().map(|p| p[0] >= 128).collect()
    })
}
