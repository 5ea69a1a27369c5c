//! Evaluation on a folder of images with ground-truth masks (`images/<id>.jpg`,
//! `masks/<id>.png`), as `tools/eval_tflite.py` does for the TFLite reference.

use crate::files::load_image;
use crate::frame::{FrameRef, PixelFormat};
use crate::metrics::{score, ImageScore};
use crate::pipeline::{MaskPipeline, PipelineSettings};
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
