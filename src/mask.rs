//! A single-channel `f32` plane: person probability or alpha, 0..1.

use crate::{EngineError, Result};
use std::path::Path;

/// A `width` x `height` plane of values in 0..1, row-major (person probability, or alpha
/// after threshold and feather).
#[derive(Debug, Default, PartialEq)]
pub struct Mask {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` values, row-major.
    pub data: Vec<f32>,
}

impl Clone for Mask {
    fn clone(&self) -> Self {
        Self {
            width: self.width,
            height: self.height,
            data: self.data.clone(),
        }
    }

    /// Copies into the existing buffer (no allocation when it is large enough): the OBS
    /// worker publishes every mask this way.
    fn clone_from(&mut self, source: &Self) {
        self.width = source.width;
        self.height = source.height;
        self.data.clone_from(&source.data);
    }
}

impl Mask {
    /// A mask filled with `value`.
    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Resizes to `width` x `height` (contents unspecified when the size changes; no
    /// allocation when it does not grow).
    pub fn set_size(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.data.resize(width * height, 0.0);
    }

    /// Converts to an 8-bit grey image (value * 255, rounded).
    pub fn to_gray8(&self) -> image::GrayImage {
        let px = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        image::GrayImage::from_raw(self.width as u32, self.height as u32, px)
            .expect("buffer matches size")
    }

    /// Builds a mask from an 8-bit grey image (value / 255).
    pub fn from_gray8(img: &image::GrayImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.pixels().map(|p| p[0] as f32 / 255.0).collect(),
        }
    }

    /// Reads a mask image (any format `image` decodes, upright: [`crate::files::load_image`];
    /// converted to 8-bit grey).
    ///
    /// # Errors
    /// [`EngineError::Image`] if the file cannot be read or decoded.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::from_gray8(
            &crate::files::load_image(path)?.to_luma8(),
        ))
    }

    /// Writes the mask as an 8-bit grey PNG.
    ///
    /// # Errors
    /// [`EngineError::Image`] if the file cannot be written.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        self.to_gray8()
            .save_with_format(path, image::ImageFormat::Png)
            .map_err(|e| EngineError::Image {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }
}
